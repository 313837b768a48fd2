"""Compressed, normalised STFT magnitudes: what the model sees and emits.

Kept apart from `spectral` (which knows nothing of models) so that the
normalisation statistics travel with a run and the same code maps
magnitudes in and out of the model's space on any device.

Two layers, so the feature cache and every run share one stored quantity:

- stored and cached: the natural log of the linear magnitude, floored at
  :data:`LOG_FLOOR` (:func:`audio_to_log_features`);
- the model's space: that magnitude compressed by the run's
  :class:`FeatureConfig` (``magnitude**p``, or the log for ``p = 0``), then
  whitened per frequency bin (:class:`FeatureStats`).

Why a power and not the log: the model blends sounds by averaging features.
The mean of two notes' *logs* is quieter than either where their energy does
not overlap in time or frequency (a short pluck and a long pad), so a model
trained on log magnitudes interpolates through dips in level: 28 % of random
corpus pairs dip by more than 6 dB when their log magnitudes are averaged
(``benchmarks/log_interpolation_dips.py``).  A blend
``((1 − t)·a**p + t·b**p)**(1/p)`` keeps, bin by bin, at least
``(1 − t)**(2/p)·a² + t**(2/p)·b²`` of the energy when ``2/p ≥ 1``, so from
``p = 2/3`` on no blend falls more than 6 dB below the quieter end, whatever
the overlap (tests/test_features.py).  The default, 0.7, was chosen by
measurement (BENCHMARKS.md): no dipping paths and no unhealthy draws, at the
cost of a higher log-spectral distance than the log (quiet bins weigh less).
With per-bin whitening, ``magnitude**p`` is the Box–Cox transform
``(m**p − 1)/p`` up to an affine map, whose limit at ``p → 0`` is the log:
one family, one number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from samplegen.errors import ParameterError
from samplegen.spectral.stft import StftConfig, magnitude

#: Magnitudes below this are treated as silence before the log.  The corpus
#: is loudness-normalised (peaks near -1 dBFS), so STFT magnitudes of a
#: Hann-windowed 2048-point frame reach ~100; 1e-4 keeps ~120 dB of range.
LOG_FLOOR = 1e-4
#: Compression of runs whose config predates the choice (run format 1): the log.
LEGACY_MAGNITUDE_POWER = 0.0
#: The default compression of new runs (see BENCHMARKS.md, "Evaluation and generation health").
DEFAULT_MAGNITUDE_POWER = 0.7


@dataclass(frozen=True)
class FeatureConfig:
    """How magnitudes are compressed before the per-bin normalisation.

    magnitude_power : p in [0, 1]; the model sees ``max(magnitude, LOG_FLOOR)**p``, and for
        ``p = 0`` the natural log of it (the Box–Cox limit, the representation of format-1
        runs).  From 2/3 on, averaging two notes never dips more than 6 dB below the quieter
        one; 1 is the linear magnitude.  Lower values weigh quiet bins more (a lower
        log-spectral distance) and blend with deeper dips.

    Example
    -------
    >>> FeatureConfig().magnitude_power
    0.7
    """

    magnitude_power: float = DEFAULT_MAGNITUDE_POWER

    def __post_init__(self) -> None:
        p = self.magnitude_power
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ParameterError(f"magnitude_power={p!r} must be a number in [0, 1] (0 is the log)")


def _check_power(power: float) -> float:
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not (math.isfinite(power) and 0.0 <= power <= 1.0):
        raise ParameterError(f"power={power!r} must be a number in [0, 1] (0 is the log)")
    return float(power)


def compress_magnitude(mag: torch.Tensor, power: float) -> torch.Tensor:
    """Linear magnitude → ``max(mag, LOG_FLOOR)**power``, or its natural log for ``power = 0``.

    Parameters
    ----------
    mag : Tensor, linear magnitude (non-negative), any shape
    power : p in [0, 1]

    Returns
    -------
    Tensor of the same shape.

    Example
    -------
    >>> compress_magnitude(torch.tensor([4.0, 0.0]), 0.5)
    tensor([2.0000, 0.0100])
    """
    p = _check_power(power)
    floored = torch.clamp(mag, min=LOG_FLOOR)
    return torch.log(floored) if p == 0.0 else floored.pow(p)


def expand_magnitude(values: torch.Tensor, power: float) -> torch.Tensor:
    """Inverse of :func:`compress_magnitude`: compressed values → linear magnitude.

    Values below the compressed floor (a decoder may emit them) come back as
    :data:`LOG_FLOOR`, never as NaN.

    Example
    -------
    >>> expand_magnitude(torch.tensor([2.0, -1.0]), 0.5)
    tensor([4.0000e+00, 1.0000e-04])
    """
    p = _check_power(power)
    if p == 0.0:
        return torch.exp(values)
    return torch.clamp(values, min=LOG_FLOOR**p).pow(1.0 / p)


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


def compress_log(log_mag: torch.Tensor, power: float) -> torch.Tensor:
    """Log magnitude (as :func:`log_magnitude` gives) → the compressed magnitude of :func:`compress_magnitude`.

    For ``power = 0`` the log is returned as it is.
    """
    p = _check_power(power)
    if p == 0.0:
        return log_mag
    return torch.exp(torch.clamp(log_mag, min=math.log(LOG_FLOOR)) * p)


def log_from_compressed(values: torch.Tensor, power: float) -> torch.Tensor:
    """Compressed magnitude → floored natural log magnitude (inverse of :func:`compress_log`)."""
    p = _check_power(power)
    if p == 0.0:
        return values
    return torch.log(torch.clamp(values, min=LOG_FLOOR**p)) / p


@dataclass
class FeatureStats:
    """The map between log magnitudes and the model's space: compression, then per-bin whitening.

    Per-frequency-bin mean and standard deviation of the compressed magnitude
    (over notes and frames) whiten the strong spectral tilt of instrument
    notes, so high bins are not drowned out by the low harmonics in a
    mean-squared-error loss.  ``magnitude_power`` is the run's
    :attr:`FeatureConfig.magnitude_power` (0: the log itself).
    """

    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)
    magnitude_power: float = 0.0

    @classmethod
    def fit(cls, log_mag: torch.Tensor, min_std: float = 1e-2, magnitude_power: float = 0.0) -> "FeatureStats":
        """Fit on training features.

        Parameters
        ----------
        log_mag : Tensor[N x T x F], frame-major log magnitudes of the training notes
        min_std : floor on the per-bin deviation, so constant bins do not explode
        magnitude_power : the compression (see :class:`FeatureConfig`)
        """
        if log_mag.ndim != 3 or log_mag.shape[0] < 1:
            raise ParameterError(f"log_mag must have shape (N, T, F) with N >= 1, got {tuple(log_mag.shape)}")
        x = compress_log(log_mag, magnitude_power)
        mean = x.mean(dim=(0, 1))
        std = x.std(dim=(0, 1), unbiased=False).clamp(min=min_std)
        return cls(mean=mean.float().contiguous(), std=std.float().contiguous(), magnitude_power=float(magnitude_power))

    def compress(self, log_mag: torch.Tensor) -> torch.Tensor:
        """Tensor log magnitude → compressed magnitude (before whitening)."""
        return compress_log(log_mag, self.magnitude_power)

    def normalise(self, log_mag: torch.Tensor) -> torch.Tensor:
        """Tensor[B x T x F] log magnitude → the model's features: compressed, zero-mean, unit-variance per bin."""
        return (self.compress(log_mag) - self.mean.to(log_mag)) / self.std.to(log_mag)

    def denormalise(self, feats: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise`: the model's features → log magnitude (floored at log LOG_FLOOR for p > 0)."""
        return log_from_compressed(feats * self.std.to(feats) + self.mean.to(feats), self.magnitude_power)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.contiguous(), "std": self.std.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], n_bins: int, magnitude_power: float = 0.0) -> "FeatureStats":
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
        return cls(mean=tensors["mean"].float(), std=tensors["std"].float(), magnitude_power=float(magnitude_power))


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

    return map_note_batches(audio, lambda wav: log_magnitude(magnitude(wav, stft_cfg)), batch_size, device)


def map_note_batches(audio: "np.ndarray | torch.Tensor", per_batch: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Notes (N, n_samples) or one note (n_samples,) → ``per_batch`` of each batch of notes on ``device``,
    its (B, F, T) output made frame-major (B, T, F) and concatenated: Tensor[N x T x F]."""
    wav = torch.as_tensor(audio, dtype=torch.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise ParameterError(f"audio must have shape (N, n_samples), got {tuple(wav.shape)}")
    chunks = [per_batch(wav[start : start + batch_size].to(device)).transpose(1, 2).contiguous()
              for start in range(0, wav.shape[0], batch_size)]
    return torch.cat(chunks)
