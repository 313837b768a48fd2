"""STFT settings, forward and inverse transforms, and phase retrieval.

Batched torch code that runs on whatever device its input is on.  Phase is
recovered with the fast Griffin–Lim algorithm (Perraudin, Balazs &
Søndergaard 2013: Griffin–Lim with momentum), which reaches in a few dozen
iterations what plain Griffin–Lim needs hundreds for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from samplegen.errors import ParameterError

PHASE_METHODS = ("gl", "fgla")
#: Chosen by measurement (benchmarks/core.py, BENCHMARKS.md): the best quality
#: that fits the 100 ms budget for one 2-second note on one CPU core.
DEFAULT_METHOD = "fgla"
DEFAULT_ITERS = 16
DEFAULT_MOMENTUM = 0.99


@dataclass(frozen=True)
class StftConfig:
    """STFT settings of a model: Hann window, centred frames.

    n_fft : FFT size in samples (even); 2048 at 44.1 kHz resolves 21.5 Hz bins
    hop_length : hop between frames in samples, at most n_fft
    """

    n_fft: int = 2048
    hop_length: int = 512

    def __post_init__(self) -> None:
        for name in ("n_fft", "hop_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name}={value!r} must be a positive integer")
        if self.n_fft % 2:
            raise ParameterError(f"n_fft={self.n_fft} must be even")
        if self.hop_length > self.n_fft:
            raise ParameterError(f"hop_length={self.hop_length} must not exceed n_fft={self.n_fft}")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return {"n_fft": self.n_fft, "hop_length": self.hop_length}

    @classmethod
    def from_dict(cls, data: Any) -> "StftConfig":
        from samplegen.dataclass_io import from_dict

        return from_dict(cls, data, "stft")


def _window(cfg: StftConfig, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(cfg.n_fft, device=like.device, dtype=like.real.dtype if like.is_complex() else like.dtype)


def stft(audio: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """Complex STFT. audio Tensor[B x n] or [n] (float) → Tensor[B x F x T] or [F x T] (complex)."""
    if audio.ndim not in (1, 2):
        raise ParameterError(f"audio must have shape (n,) or (B, n), got {tuple(audio.shape)}")
    return torch.stft(audio, cfg.n_fft, cfg.hop_length, window=_window(cfg, audio), center=True, return_complex=True)


def magnitude(audio: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """Linear STFT magnitude, Tensor[B x F x T]."""
    return stft(audio, cfg).abs()


def istft(spec: torch.Tensor, cfg: StftConfig, length: int) -> torch.Tensor:
    """Inverse STFT of a complex Tensor[B x F x T] to exactly ``length`` samples."""
    return torch.istft(spec, cfg.n_fft, cfg.hop_length, window=_window(cfg, spec), center=True, length=length)


def retrieve_phase(mag: torch.Tensor, cfg: StftConfig, length: int, method: str = DEFAULT_METHOD,
                   n_iter: int = DEFAULT_ITERS, momentum: float = DEFAULT_MOMENTUM, seed: int | None = 0) -> torch.Tensor:
    """A waveform whose STFT magnitude approximates ``mag``.

    Parameters
    ----------
    mag : Tensor[B x F x T] or [F x T], linear magnitude, on any device
    cfg : the STFT settings ``mag`` was computed with
    length : output length in samples
    method : "fgla" (fast Griffin–Lim, momentum) or "gl" (plain Griffin–Lim)
    n_iter : iterations (0 returns the random-phase start)
    momentum : FGLA's α (0.99 is the usual choice; ignored by "gl")
    seed : seed of the random initial phase (None: non-deterministic)

    Returns
    -------
    Tensor[B x length] or [length], float32, on ``mag``'s device.

    Example
    -------
    >>> wav = retrieve_phase(magnitude(audio, cfg), cfg, audio.shape[-1])   # doctest: +SKIP
    """
    if method not in PHASE_METHODS:
        raise ParameterError(f"method={method!r} must be one of {PHASE_METHODS}")
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ParameterError(f"n_iter={n_iter!r} must be a non-negative integer")
    if not isinstance(length, int) or length < 1:
        raise ParameterError(f"length={length!r} must be a positive integer")
    if not (0.0 <= momentum < 2.0):
        raise ParameterError(f"momentum={momentum} must be in [0, 2)")
    single = mag.ndim == 2
    if single:
        mag = mag[None]
    if mag.ndim != 3 or mag.shape[1] != cfg.n_bins:
        raise ParameterError(f"mag must have shape (B, {cfg.n_bins}, T), got {tuple(mag.shape)}")
    mag = mag.float()
    gen = None
    if seed is not None:
        gen = torch.Generator(device=mag.device).manual_seed(int(seed))
    # One random start shared by every note of the batch, so a batch gives exactly what
    # the same notes give one by one.
    angles = torch.rand(mag.shape[1:], generator=gen, device=mag.device) * (2 * math.pi)
    spec = torch.polar(mag, angles)
    alpha = momentum if method == "fgla" else 0.0
    prev = torch.zeros_like(spec)
    for _ in range(n_iter):
        # Project onto consistent spectrograms, then onto the given magnitude.
        rebuilt = stft(istft(spec, cfg, length), cfg)
        accel = rebuilt + alpha * (rebuilt - prev) if alpha else rebuilt
        prev = rebuilt
        spec = mag * (accel / accel.abs().clamp_min(1e-12))
    wav = istft(spec, cfg, length)
    return wav[0] if single else wav
