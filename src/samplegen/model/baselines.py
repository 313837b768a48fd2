"""The PCA baseline a learned model must beat to earn its complexity.

PCA with as many components as the model's latent size, fitted on the same
normalised training features the model sees (the compressed magnitude,
``features.magnitude_power``); it reconstructs a note by projecting onto
those components.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from samplegen.errors import ParameterError


@dataclass
class PCABaseline:
    """mean : Tensor[D]; components : Tensor[K x D] (orthonormal rows), D = T·F; variance : Tensor[K], the
    training notes' variance along each component (what :meth:`draw_coefficients` scales its Gaussian by)."""

    mean: torch.Tensor
    components: torch.Tensor
    variance: torch.Tensor

    @classmethod
    def fit(cls, feats: torch.Tensor, n_components: int) -> "PCABaseline":
        """Fit on Tensor[N x T x F] (or N x D) features with an exact SVD of the centred data."""
        x = feats.reshape(feats.shape[0], -1).double()
        if not 1 <= n_components <= min(x.shape):
            raise ParameterError(f"n_components={n_components} must be between 1 and {min(x.shape)} for this data")
        mean = x.mean(dim=0)
        # The Gram-matrix route costs N² instead of D² memory: N notes ≪ D spectrogram values.
        centred = x - mean
        gram = centred @ centred.T
        evals, evecs = torch.linalg.eigh(gram)
        order = torch.argsort(evals, descending=True)[:n_components]
        comps = evecs[:, order].T @ centred
        comps = comps / comps.norm(dim=1, keepdim=True).clamp_min(1e-12)
        variance = evals[order].clamp_min(0) / max(1, x.shape[0] - 1)
        return cls(mean=mean.float(), components=comps.float(), variance=variance.float())

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """Tensor[B x ...] → coefficients Tensor[B x K]."""
        return (feats.reshape(feats.shape[0], -1) - self.mean) @ self.components.T

    def decode(self, coeffs: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Coefficients Tensor[B x K] → features of ``shape`` per note."""
        return (coeffs @ self.components + self.mean).reshape(coeffs.shape[0], *shape)

    def draw_coefficients(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` new notes as coefficients Tensor[n x K]: a Gaussian with the training notes' variance per component.

        PCA's counterpart of a VAE's prior draws (:meth:`decode` makes them features).
        """
        return torch.randn(n, len(self.variance), generator=generator) * self.variance.sqrt()

    def reconstruct(self, feats: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(feats), tuple(feats.shape[1:]))
