"""Log-compressed, normalised STFT magnitudes: what the model sees and emits.

Kept apart from `spectral` (which knows nothing of models) so that the
normalisation statistics travel with a run and the same code maps
magnitudes in and out of the model's space on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from samplegen.errors import ParameterError

if TYPE_CHECKING:
    from samplegen.spectral import StftConfig

#: Magnitudes below this are treated as silence before the log.  The corpus
#: is loudness-normalised (peaks near -1 dBFS), so STFT magnitudes of a
#: Hann-windowed 2048-point frame reach ~100; 1e-4 keeps ~120 dB of range.
LOG_FLOOR = 1e-4


def log_magnitude(mag: torch.Tensor) -> torch.Tensor:
    """Natural log of a linear magnitude, floored at :data:`LOG_FLOOR`.

    Parameters
    ----------
    mag : Tensor, linear magnitude (non-negative), any shape

    Returns
    -------
    Tensor of the same shape, log(max(mag, LOG_FLOOR)).
    """
    return torch.log(torch.clamp(mag, min=LOG_FLOOR))


def magnitude_from_log(log_mag: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`log_magnitude` (values at the floor come back as the floor)."""
    return torch.exp(log_mag)


@dataclass
class FeatureStats:
    """Per-frequency-bin mean and standard deviation of the log magnitude.

    Per-bin statistics (over notes and frames) whiten the strong spectral
    tilt of instrument notes, so high bins are not drowned out by the low
    harmonics in a mean-squared-error loss.
    """

    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)

    @classmethod
    def fit(cls, log_mag: torch.Tensor, min_std: float = 1e-2) -> "FeatureStats":
        """Fit on training features.

        Parameters
        ----------
        log_mag : Tensor[N x T x F], frame-major log magnitudes of the training notes
        min_std : floor on the per-bin deviation, so constant bins do not explode
        """
        if log_mag.ndim != 3 or log_mag.shape[0] < 1:
            raise ParameterError(f"log_mag must have shape (N, T, F) with N >= 1, got {tuple(log_mag.shape)}")
        mean = log_mag.mean(dim=(0, 1))
        std = log_mag.std(dim=(0, 1), unbiased=False).clamp(min=min_std)
        return cls(mean=mean.float().contiguous(), std=std.float().contiguous())

    def normalise(self, log_mag: torch.Tensor) -> torch.Tensor:
        """Tensor[B x T x F] log magnitude → zero-mean, unit-variance per bin."""
        return (log_mag - self.mean.to(log_mag)) / self.std.to(log_mag)

    def denormalise(self, feats: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise`."""
        return feats * self.std.to(feats) + self.mean.to(feats)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.contiguous(), "std": self.std.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], n_bins: int) -> "FeatureStats":
        for key in ("mean", "std"):
            if key not in tensors:
                raise ParameterError(f"normalisation statistics lack '{key}'")
            if tuple(tensors[key].shape) != (n_bins,):
                raise ParameterError(
                    f"normalisation '{key}' has shape {tuple(tensors[key].shape)}, expected ({n_bins},)"
                )
            if not torch.isfinite(tensors[key]).all():
                raise ParameterError(f"normalisation '{key}' holds NaN or Inf")
        if (tensors["std"] <= 0).any():
            raise ParameterError("normalisation 'std' must be positive")
        return cls(mean=tensors["mean"].float(), std=tensors["std"].float())


def audio_to_log_features(audio: "np.ndarray | torch.Tensor", stft_cfg: "StftConfig", batch_size: int = 64,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Waveforms → frame-major log magnitudes, computed in batches to bound memory.

    Parameters
    ----------
    audio : float array (N, n_samples) at 44.1 kHz
    stft_cfg : the run's STFT settings

    Returns
    -------
    Tensor[N x T x F] float32 on ``device``
    """
    from samplegen.spectral import magnitude

    wav = torch.as_tensor(audio, dtype=torch.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise ParameterError(f"audio must have shape (N, n_samples), got {tuple(wav.shape)}")
    chunks = []
    for start in range(0, wav.shape[0], batch_size):
        mag = magnitude(wav[start : start + batch_size].to(device), stft_cfg)
        chunks.append(log_magnitude(mag).transpose(1, 2).contiguous())
    return torch.cat(chunks)
