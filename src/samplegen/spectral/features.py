"""The feature codec, both ways: audio → the model's features → waveform, in one place.

Every run goes through these, in this order::

    audio ──audio_to_features──► log features ──FeatureStats.normalise──► model ─┐
                                 (cached on disk)                                │
    audio ◄──features_to_waveform── magnitude (+ IF) ◄──FeatureStats.denormalise─┘

- log features, stored and cached: the natural log of the linear STFT magnitude, floored at
  :data:`LOG_FLOOR`, and for a run that learns phase (``phase.mode = "if"``) the instantaneous
  frequency after it (:mod:`samplegen.spectral.phase_features` holds the IF arithmetic);
- the model's space: that magnitude compressed (``magnitude**p``, or the log for ``p = 0``), then
  whitened per frequency bin (:class:`FeatureStats`, saved with each run as ``stats.safetensors``);
- decoded: :meth:`FeatureStats.denormalise` gives the linear magnitude (and the IF) that phase
  retrieval or IF integration needs, so nothing goes back through the log on the way out.

``p`` is chosen by the config (:class:`FeatureConfig`, when a run's statistics are fitted) and
owned by the run's :class:`FeatureStats` from then on: every stage after training reads
``stats.magnitude_power``.

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
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from samplegen.errors import ParameterError
from samplegen.spectral import stft as spectral
from samplegen.spectral.phase_features import IF_SCALE, PhaseConfig, instantaneous_frequency, waveform_from_if
from samplegen.spectral.stft import StftConfig

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

    magnitude_power : p in [0, 1], chosen here when a run's statistics are fitted (the run's
        :class:`FeatureStats` carries it from then on); the model sees ``max(magnitude, LOG_FLOOR)**p``, and for
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


def expand_magnitude(values: torch.Tensor, power: float) -> torch.Tensor:
    """Inverse of the compression (magnitude^p floored at :data:`LOG_FLOOR`; the log for p = 0): compressed
    values → linear magnitude.

    Values below the compressed floor (a decoder may emit them) come back as
    :data:`LOG_FLOOR`, never as NaN.  ``values**(1/p)`` is computed as ``exp(log(values)/p)``,
    bit for bit what runs decoded before this function was the way out.

    Example
    -------
    >>> expand_magnitude(torch.tensor([2.0, -1.0]), 0.5)
    tensor([4.0000e+00, 1.0000e-04])
    """
    p = _check_power(power)
    if p == 0.0:
        return torch.exp(values)
    return torch.exp(torch.log(torch.clamp(values, min=LOG_FLOOR**p)) / p)


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


def compress_log(log_mag: torch.Tensor, power: float) -> torch.Tensor:
    """Log magnitude (as :func:`log_magnitude` gives) → the compressed magnitude max(m, LOG_FLOOR)^p.

    For ``power = 0`` the log is returned as it is.
    """
    p = _check_power(power)
    if p == 0.0:
        return log_mag
    return torch.exp(torch.clamp(log_mag, min=math.log(LOG_FLOOR)) * p)


@dataclass(frozen=True)
class FeatureStats:
    """The map between log features and the model's space: compression, then per-bin whitening.

    Per-frequency-bin mean and standard deviation of the compressed magnitude
    (over notes and frames) whiten the strong spectral tilt of instrument
    notes, so high bins are not drowned out by the low harmonics in a
    mean-squared-error loss.

    magnitude_power : the run's compression, fixed when the statistics were fitted (see
        :class:`FeatureConfig`; 0: the log itself); every stage after training reads it here
    magnitude_bins : how many of a frame's values are magnitude; those after them (the IF of a
        run that learns phase) are whitened but neither compressed nor expanded
    """

    mean: torch.Tensor  # (C·F,)
    std: torch.Tensor  # (C·F,)
    magnitude_power: float
    magnitude_bins: int

    def __post_init__(self) -> None:
        _check_power(self.magnitude_power)
        n = self.mean.shape[0]
        if self.magnitude_bins < 1 or n not in (self.magnitude_bins, 2 * self.magnitude_bins):
            raise ParameterError(f"magnitude_bins={self.magnitude_bins} must be all {n} bins or half of them (IF after)")

    @classmethod
    def fit(cls, log_mag: torch.Tensor, magnitude_power: float, min_std: float = 1e-2) -> "FeatureStats":
        """Fit on training features (magnitude only; see :func:`adjust_stats` for a run that learns IF).

        Parameters
        ----------
        log_mag : Tensor[N x T x F], frame-major log magnitudes of the training notes
        magnitude_power : the compression (see :class:`FeatureConfig`)
        min_std : floor on the per-bin deviation, so constant bins do not explode
        """
        if log_mag.ndim != 3 or log_mag.shape[0] < 1:
            raise ParameterError(f"log_mag must have shape (N, T, F) with N >= 1, got {tuple(log_mag.shape)}")
        x = compress_log(log_mag, magnitude_power)
        mean = x.mean(dim=(0, 1))
        std = x.std(dim=(0, 1), unbiased=False).clamp(min=min_std)
        return cls(mean=mean.float().contiguous(), std=std.float().contiguous(), magnitude_power=float(magnitude_power),
                   magnitude_bins=log_mag.shape[-1])

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """Log features Tensor[B x T x C·F] (as :func:`audio_to_features` gives) → the model's features:
        magnitude compressed, then every bin zero-mean, unit-variance."""
        m = self.magnitude_bins
        if feats.shape[-1] == m:
            values = compress_log(feats, self.magnitude_power)
        else:
            values = torch.cat([compress_log(feats[..., :m], self.magnitude_power), feats[..., m:]], dim=-1)
        return (values - self.mean.to(feats)) / self.std.to(feats)

    def denormalise(self, feats: torch.Tensor) -> torch.Tensor:
        """The model's features Tensor[B x T x C·F] → linear magnitude (floored at :data:`LOG_FLOOR`), with
        the IF after it for a run that learns phase: what :func:`features_to_waveform` reads."""
        values = feats * self.std.to(feats) + self.mean.to(feats)
        m = self.magnitude_bins
        if values.shape[-1] == m:
            return expand_magnitude(values, self.magnitude_power)
        return torch.cat([expand_magnitude(values[..., :m], self.magnitude_power), values[..., m:]], dim=-1)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.contiguous(), "std": self.std.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], n_bins: int, magnitude_power: float,
                     magnitude_bins: int) -> "FeatureStats":
        """A run's saved statistics (``stats.safetensors``), checked: ``n_bins`` values a frame, the first
        ``magnitude_bins`` of them magnitude compressed by ``magnitude_power`` (both from the run's config)."""
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
        return cls(mean=tensors["mean"].float(), std=tensors["std"].float(), magnitude_power=float(magnitude_power),
                   magnitude_bins=magnitude_bins)


def adjust_stats(stats: FeatureStats, phase: PhaseConfig) -> FeatureStats:
    """Statistics fitted over every bin → a run's: for a run that learns IF, per-bin statistics for the log
    magnitude and one fixed scale for the IF after it (see :data:`samplegen.spectral.phase_features.IF_SCALE`).

    Leaves a magnitude-only run's statistics as they are.
    """

    if phase.mode == "none":
        return stats
    n = stats.mean.shape[0] // 2
    mean = stats.mean.clone()
    std = stats.std.clone()
    mean[n:] = 0.0
    std[n:] = IF_SCALE / math.sqrt(phase.if_weight)
    return replace(stats, mean=mean, std=std, magnitude_bins=n)


def audio_to_features(audio: "np.ndarray | torch.Tensor", stft_cfg: StftConfig, phase: PhaseConfig | None = None,
                      batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Waveforms → a run's log features, frame-major, computed in batches to bound memory.

    Parameters
    ----------
    audio : float array (N, n_samples), or one note (n_samples,), at 44.1 kHz
    stft_cfg : the run's STFT settings
    phase : the run's phase settings (None: magnitude only)

    Returns
    -------
    Tensor[N x T x F] float32 log magnitudes on ``device`` (floored at :data:`LOG_FLOOR`), or
    Tensor[N x T x 2F] (log magnitude, then IF) for ``phase.mode = "if"``.
    """

    if phase is None or phase.mode == "none":
        return map_note_batches(audio, lambda wav: log_magnitude(spectral.magnitude(wav, stft_cfg)), batch_size, device)
    if_floor_db = phase.if_floor_db

    def log_magnitude_and_if(wav: torch.Tensor) -> torch.Tensor:
        spec = spectral.stft(wav, stft_cfg)
        return torch.cat([log_magnitude(spec.abs()), instantaneous_frequency(spec, stft_cfg, if_floor_db)], dim=1)

    return map_note_batches(audio, log_magnitude_and_if, batch_size, device)


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


def split_features(feats: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tensor[B x T x C·F] → (magnitude part Tensor[B x T x F], IF Tensor[B x T x F] or None).

    Works on either side of the model: log features in, decoded (linear) features out.
    """
    if feats.shape[-1] == n_bins:
        return feats, None
    if feats.shape[-1] != 2 * n_bins:
        raise ParameterError(f"features have {feats.shape[-1]} values per frame, expected {n_bins} or {2 * n_bins}")
    return feats[..., :n_bins], feats[..., n_bins:]


def features_to_waveform(feats: torch.Tensor, stft_cfg: StftConfig, phase: PhaseConfig, length: int,
                         method: str | None = None, n_iter: int | None = None, seed: int = 0) -> torch.Tensor:
    """Decoded features (linear magnitude, and IF for a run that learns phase; what
    :meth:`FeatureStats.denormalise` gives) Tensor[B x T x C·F] → waveforms Tensor[B x length].

    method : None uses the run's own way back: IF integration (+ ``phase.n_iter`` iterations) when
        the features hold IF, else :func:`samplegen.spectral.stft.default_phase` for their device; "if" asks for IF
        integration; any :data:`samplegen.spectral.stft.PHASE_METHODS` name ignores the IF and
        retrieves phase from the magnitude alone
    n_iter : iterations (default: ``phase.n_iter`` for IF, :func:`samplegen.spectral.stft.default_phase`'s otherwise)
    """

    mag_frames, ifd = split_features(feats, stft_cfg.n_bins)
    mag = mag_frames.transpose(1, 2)
    use_if = method == "if" or (method is None and ifd is not None)
    if use_if:
        if ifd is None:
            raise ParameterError("method='if' needs a run trained with phase.mode='if'")
        iters = phase.n_iter if n_iter is None else n_iter
        return waveform_from_if(mag, ifd.transpose(1, 2), stft_cfg, length, iters)
    return spectral.retrieve_phase(mag, stft_cfg, length, method=method, n_iter=n_iter, seed=seed)
