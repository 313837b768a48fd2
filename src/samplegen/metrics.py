"""The quality measures of DESIGN.md, on waveforms, through one fixed analysis STFT.

Every measure compares a reference and a candidate of equal length at
44.1 kHz through a Hann STFT with n_fft 2048 and hop 512, independent of any
model's own settings.  Inputs are float arrays (n,) or (B, n); batched input
gives one value per note.
"""

from __future__ import annotations

import numpy as np
import torch

from samplegen.errors import ParameterError

ANALYSIS_N_FFT = 2048
ANALYSIS_HOP = 512
#: LSD floor: 80 dB below the reference's peak magnitude.
LSD_FLOOR = 1e-4
#: auraloss' epsilon inside the log of the multi-resolution distance.
MR_EPS = 1e-7
MR_FFT_SIZES = (512, 1024, 2048)


def _pair(reference: np.ndarray | torch.Tensor, candidate: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    x = torch.as_tensor(np.asarray(reference) if not torch.is_tensor(reference) else reference, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(candidate) if not torch.is_tensor(candidate) else candidate, dtype=torch.float64)
    if x.shape != y.shape:
        raise ParameterError(f"reference and candidate must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (1, 2) or x.shape[-1] < 2:
        raise ParameterError(f"signals must have shape (n,) or (B, n), got {tuple(x.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ParameterError("signals must not contain NaN or Inf")
    single = x.ndim == 1
    return (x[None], y[None], True) if single else (x, y, False)


def _mag(x: torch.Tensor, n_fft: int = ANALYSIS_N_FFT, hop: int = ANALYSIS_HOP) -> torch.Tensor:
    window = torch.hann_window(n_fft, dtype=x.dtype)
    return torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True).abs()


def _out(values: torch.Tensor, single: bool) -> float | np.ndarray:
    arr = values.numpy()
    return float(arr[0]) if single else arr


def spectral_convergence_db(reference, candidate) -> float | np.ndarray:
    """20·log10(‖|Y| − |X|‖_F / ‖|X|‖_F) in dB; lower is better (−inf for identical signals)."""
    x, y, single = _pair(reference, candidate)
    X, Y = _mag(x), _mag(y)
    num = (Y - X).flatten(1).norm(dim=1)
    den = X.flatten(1).norm(dim=1).clamp_min(1e-20)
    with np.errstate(divide="ignore"):
        return _out(20 * torch.log10(num / den), single)


def log_spectral_distance_db(reference, candidate) -> float | np.ndarray:
    """Per frame, RMS over bins of the dB difference (both floored 80 dB below the reference peak); mean over frames."""
    x, y, single = _pair(reference, candidate)
    X, Y = _mag(x), _mag(y)
    floor = (LSD_FLOOR * X.flatten(1).amax(dim=1)).clamp_min(1e-20)[:, None, None]
    diff = 20 * torch.log10(torch.maximum(X, floor)) - 20 * torch.log10(torch.maximum(Y, floor))
    return _out(diff.pow(2).mean(dim=1).sqrt().mean(dim=1), single)


def multi_resolution_stft_distance(reference, candidate) -> float | np.ndarray:
    """Mean over n_fft 512/1024/2048 (hop n_fft/4) of linear SC + mean |log|Y| − log|X|| (auraloss)."""
    x, y, single = _pair(reference, candidate)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for n_fft in MR_FFT_SIZES:
        X, Y = _mag(x, n_fft, n_fft // 4), _mag(y, n_fft, n_fft // 4)
        sc = (Y - X).flatten(1).norm(dim=1) / X.flatten(1).norm(dim=1).clamp_min(1e-20)
        log_mag = (torch.log(Y + MR_EPS) - torch.log(X + MR_EPS)).abs().flatten(1).mean(dim=1)
        total += sc + log_mag
    return _out(total / len(MR_FFT_SIZES), single)
