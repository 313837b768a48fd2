"""Phase-aware features: instantaneous frequency beside the log magnitude (GANSynth's representation).

With ``phase.mode = "if"`` a run's model reads and writes, for every frame,
the F log-magnitude bins followed by F bins of instantaneous frequency (IF):
the frame-to-frame phase advance of each bin minus the bin's own expected
advance (2π·k·hop/n_fft), wrapped to (−π, π] and divided by π, so in
[−1, 1] (Engel et al. 2019, GANSynth).  A steady partial gives a constant IF
in the bins of its main lobe, the same for every note at the same pitch, so
it is cheap to learn.

Back to sound, the phase is the IF integrated over frames (a cumulative sum
of phase advances), peak-locked so the bins of one partial stay coherent
(:func:`phase_from_if`) — no iteration needed; a few fast Griffin–Lim
iterations from that start are optional (``phase.n_iter``).

Measured (``benchmarks/phase_aware.py``, ``benchmarks/results/phase_aware.md``):
from the true magnitude and IF, 4 iterations reach −31.3 dB mean spectral
convergence, better than PGHI + 10 (−30.3 dB) in about 60 % of its time;
but a model that learns IF beside the magnitude, trained the same way, is
3× faster from latent to waveform and worse on held-out notes (LSD 4.90
against 3.84 dB), so magnitude only stays the default.  Details chosen by
measurement:

- IF only where there is energy: bins more than ``if_floor_db`` below the
  note's loudest coefficient get IF 0 (their phase is noise the model cannot
  learn and their level makes them inaudible);
- IF is not normalised per bin (a bin that is mostly masked would have a
  tiny deviation and blow up its rare values) but by one scale over all
  bins, then multiplied by √``if_weight``, so the model's plain per-element
  MSE weighs IF errors by ``if_weight`` against magnitude errors.

Everything here is batched torch and runs on the input's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from samplegen.errors import ParameterError
from samplegen.spectral import stft as spectral
from samplegen.spectral.stft import StftConfig

PHASE_MODES = ("none", "if")
#: IF features are divided by this before the weight: the RMS of IF masked at −60 dB over 24
#: notes of the default corpus is 0.144 (benchmarks/phase_aware.py --oracle-only), so magnitude
#: and IF planes start with comparable spread.
IF_SCALE = 0.15


@dataclass(frozen=True)
class PhaseConfig:
    """Whether and how the model learns phase (the ``"phase"`` section of a run's config.json).

    mode : "none" (magnitude only; phase retrieved by :func:`samplegen.spectral.stft.retrieve_phase`)
        or "if" (log magnitude and instantaneous frequency; phase integrated from the IF)
    if_floor_db : IF is kept only in bins within this many dB of the note's loudest
        coefficient (negative), and is 0 elsewhere
    if_weight : weight of IF errors against log-magnitude errors in the training loss
    n_iter : fast Griffin–Lim iterations after integrating the IF (0: the integrated phase alone)
    """

    mode: str = "none"
    if_floor_db: float = -60.0
    if_weight: float = 1.0
    n_iter: int = 0

    def __post_init__(self) -> None:
        if self.mode not in PHASE_MODES:
            raise ParameterError(f"phase.mode={self.mode!r} must be one of {PHASE_MODES}")
        if not (math.isfinite(self.if_floor_db) and -200.0 <= self.if_floor_db < 0.0):
            raise ParameterError(f"phase.if_floor_db={self.if_floor_db} must be a negative number of dB (>= -200)")
        if not (math.isfinite(self.if_weight) and self.if_weight > 0):
            raise ParameterError(f"phase.if_weight={self.if_weight} must be a positive number")
        if not isinstance(self.n_iter, int) or isinstance(self.n_iter, bool) or not 0 <= self.n_iter <= 1000:
            raise ParameterError(f"phase.n_iter={self.n_iter!r} must be an integer in [0, 1000]")

    @property
    def channels(self) -> int:
        """Feature planes per frame: 1 (log magnitude) or 2 (log magnitude, IF)."""
        return 2 if self.mode == "if" else 1

    def cache_key(self) -> str:
        """What of this config shapes the cached features ('' for magnitude only, so old caches stay valid)."""
        return "" if self.mode == "none" else f"if:{self.if_floor_db:g}"

    @classmethod
    def from_cache_key(cls, key: str) -> "PhaseConfig":
        """Inverse of :meth:`cache_key` (the settings that matter to features only)."""
        if key == "":
            return cls()
        if key.startswith("if:"):
            return cls(mode="if", if_floor_db=float(key[3:]))
        raise ParameterError(f"phase feature key {key!r} is not understood")


def expected_advance(cfg: "StftConfig", device: torch.device | str = "cpu") -> torch.Tensor:
    """Tensor[F] phase advance per hop of a sinusoid at each bin's centre frequency, wrapped to [0, 2π)."""
    k = torch.arange(cfg.n_bins, dtype=torch.float64, device=device)
    # (k·hop mod n_fft) in integers first: exact, whatever the bin.
    return (2 * math.pi * torch.remainder(k * cfg.hop_length, cfg.n_fft) / cfg.n_fft).float()


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles wrapped to (−π, π]."""
    return angle - 2 * math.pi * torch.ceil((angle - math.pi) / (2 * math.pi))


def instantaneous_frequency(spec: torch.Tensor, cfg: "StftConfig", floor_db: float | None = None) -> torch.Tensor:
    """IF of a complex STFT: phase advance per frame minus each bin's expected advance, / π.

    Parameters
    ----------
    spec : Tensor[B x F x T], complex (from :func:`samplegen.spectral.stft.stft`)
    cfg : its STFT settings
    floor_db : when given (negative dB), bins more than this below each note's loudest
        coefficient get IF 0

    Returns
    -------
    Tensor[B x F x T] in [−1, 1]; frame 0 (no previous frame) is 0.

    Example
    -------
    >>> from samplegen.spectral.stft import StftConfig, stft
    >>> cfg = StftConfig()
    >>> x = torch.sin(2 * math.pi * (10.25 / cfg.n_fft) * torch.arange(44100.))  # a quarter bin above bin 10
    >>> round(float(instantaneous_frequency(stft(x, cfg)[None], cfg)[0, 10, 40]), 3)  # 0.25 · 2·hop/n_fft
    0.125
    """
    if spec.ndim != 3 or not spec.is_complex() or spec.shape[1] != cfg.n_bins:
        raise ParameterError(f"spec must be a complex Tensor of shape (B, {cfg.n_bins}, T), got {tuple(spec.shape)}")
    phase = torch.angle(spec)
    adv = expected_advance(cfg, spec.device).view(1, -1, 1)
    dev = _wrap(phase[:, :, 1:] - phase[:, :, :-1] - adv) / math.pi
    out = torch.cat([torch.zeros_like(dev[:, :, :1]), dev], dim=2).clamp(-1.0, 1.0)
    if floor_db is not None:
        mag = spec.abs()
        peak = mag.amax(dim=(1, 2), keepdim=True)
        out = torch.where(mag >= peak * 10 ** (floor_db / 20), out, torch.zeros_like(out))
    return out


def phase_from_if(if_dev: torch.Tensor, cfg: "StftConfig", mag: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate IF into phase, frame by frame.

    Without ``mag`` every bin integrates its own IF: frame 0 at π·k, then each
    frame adds the bin's expected advance plus π·IF.  That is exact for exact
    IF only where frame 0 is coherent, and bins whose IF is masked (silence
    before an onset) drift apart at their own centre frequencies.

    With ``mag`` (the default way back) the phase is *peak-locked*: in each
    frame every local maximum of ``mag`` advances its previous-frame phase by
    its own IF, and every bin takes the phase of its nearest peak turned by
    π per bin — the relation between the bins of one partial's main lobe for
    a symmetric window measured from the frame start (as SPSI does, with the
    model's IF in place of an interpolated peak frequency).  Partials stay
    coherent whatever happened before their onset.

    Parameters
    ----------
    if_dev : Tensor[B x F x T], IF in [−1, 1] (values outside are clamped)
    mag : Tensor[B x F x T], linear magnitude (or any monotone function of it), or None

    Returns
    -------
    Tensor[B x F x T] of phases in [0, 2π), float32.
    """
    b, f, t = if_dev.shape
    if f != cfg.n_bins:
        raise ParameterError(f"if_dev must have {cfg.n_bins} bins, got {f}")
    dev = if_dev.clamp(-1.0, 1.0).double()
    k = torch.arange(f, dtype=torch.float64, device=if_dev.device).view(1, f, 1)
    if mag is None:
        frames = torch.arange(t, dtype=torch.float64, device=if_dev.device).view(1, 1, t)
        # Expected part in exact integer arithmetic (k·hop·t mod n_fft), the learned part summed in float64.
        steady = 2 * math.pi * torch.remainder(k * cfg.hop_length * frames, cfg.n_fft) / cfg.n_fft
        learned = math.pi * (torch.cumsum(dev, dim=2) - dev[:, :, :1])
        return torch.remainder(math.pi * k + steady + learned, 2 * math.pi).float()
    if mag.shape != if_dev.shape:
        raise ParameterError(f"mag {tuple(mag.shape)} and if_dev {tuple(if_dev.shape)} must have the same shape")
    # Frame-major (B x T x F) so that each step of the recursion reads and writes contiguous rows.
    owner = spectral.nearest_peak(mag.to(if_dev.device)).transpose(1, 2).contiguous()  # B x T x F, long
    step = (expected_advance(cfg, if_dev.device).double().view(1, 1, f) + math.pi * dev.transpose(1, 2))
    turn = math.pi * (k.view(1, 1, f) - owner.double())
    # phase[t, k] = phase[t-1, p] + step[t, p] + π(k − p), with p = owner[t, k]: the gathered step is
    # computed for all frames at once, leaving one gather and one add per frame in the loop.
    jump = torch.gather(step, 2, owner) + turn
    rows = [turn[:, 0]]
    # Anchored at frame 0, not at the first frame clear of the reflect padding: measured on
    # harmonic tones, the latter leaves Griffin–Lim stuck at the edges (−19 against −38 dB after 4).
    for i in range(1, t):
        rows.append(torch.gather(rows[-1], 1, owner[:, i]) + jump[:, i])
    return torch.remainder(torch.stack(rows, dim=2), 2 * math.pi).float()


def waveform_from_if(mag: torch.Tensor, if_dev: torch.Tensor, cfg: "StftConfig", length: int,
                     n_iter: int = 0, lock: bool = True) -> torch.Tensor:
    """Magnitude + IF → waveform: integrated phase, then ``n_iter`` fast Griffin–Lim iterations.

    Parameters
    ----------
    mag : Tensor[B x F x T], linear magnitude
    if_dev : Tensor[B x F x T], IF in [−1, 1]
    length : output length in samples
    lock : peak-locked integration (see :func:`phase_from_if`)

    Returns
    -------
    Tensor[B x length], float32, on ``mag``'s device.
    """

    if mag.shape != if_dev.shape:
        raise ParameterError(f"mag {tuple(mag.shape)} and if_dev {tuple(if_dev.shape)} must have the same shape")
    if mag.shape[2] != cfg.n_frames(length):
        raise ParameterError(f"mag has {mag.shape[2]} frames but length={length} needs {cfg.n_frames(length)}")
    mag = mag.float()
    spec = torch.polar(mag, phase_from_if(if_dev.to(mag.device), cfg, mag if lock else None))
    return spectral.fast_griffin_lim(spec, mag, cfg, length, n_iter)

