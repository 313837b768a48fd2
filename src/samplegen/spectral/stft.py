"""STFT settings, forward and inverse transforms, and phase retrieval.

Batched torch code that runs on whatever device its input is on.  A model
produces STFT magnitudes; :func:`retrieve_phase` turns them into sound with
the fast Griffin–Lim algorithm (FGLA: Perraudin, Balazs & Søndergaard 2013,
Griffin–Lim with momentum), started from one of four initial phases:

- random phase (``"fgla"``; ``"gl"`` is plain Griffin–Lim without momentum);
- Single Pass Spectrogram Inversion (``"spsi"``, Beauregard, Harish & Wyse
  2015): each bin follows the interpolated frequency of its nearest spectral
  peak; vectorised in torch, so it batches and runs on a GPU;
- Phase Gradient Heap Integration (``"pghi"``, Průša, Balazs & Søndergaard
  2017): the phase gradients of a Gaussian-like window follow from the
  gradients of the log magnitude, and are integrated from the loudest
  coefficient outwards.  The gradients are computed batched on ``mag``'s
  device; the integration is a sequential heap walk, so it runs on the CPU
  (numba, compiled once and cached on disk), one note per thread; the FGLA
  iterations then run batched on ``mag``'s device;
- frame-recursive PGHI (``"rtpghi"``, after the real-time PGHI of Průša &
  Holighaus 2017): the same gradients, integrated one frame at a time from
  the previous frame, with each frame's heap replaced by locking every bin to
  its nearest spectral peak, so a frame is a handful of batched tensor
  operations on ``mag``'s device (:func:`rtpghi_phase`).

With ``n_iter=0`` a method returns its start alone (PGHI or SPSI without
any iteration; the more consistent of rtpghi's two starts; random phase for "gl"/"fgla").

Every waveform fades in over its first :data:`FADE_IN` samples (3 ms, raised
cosine), inside each iteration as well as at the end.  Frame 0 is centred on
sample 0 of a reflect-padded signal, so its magnitude holds the mirror image
of the attack; phase retrieval cannot tell where in the frame that energy
lies and puts it on sample 0 at full window weight: a jump from silence (a
median 11 %, up to 100 %, of the peak) and a burst above 4 kHz in the first
2 ms up to the level of the note's body.  Notes start 5 ms before their onset
(:data:`samplegen.audio.audio_io.PRE_ONSET_S`), so the fade takes nothing an attack
needs; applied inside the iterations, Griffin–Lim moves that energy where it
stays consistent instead of having it cut off afterwards (24 corpus notes:
spectral convergence −31.2 → −31.0 dB, attack smearing unchanged, clicks
gone; :func:`samplegen.evaluation.metrics.onset_click`).

Default, chosen by measurement (``benchmarks/phase_retrieval.py``, figures
in ``benchmarks/results/phase_retrieval.md``: oracle magnitudes of 24
2-second notes of the default corpus, one CPU thread): PGHI followed by 10
FGLA iterations.  PGHI alone (≈ 10 ms) is already as good as 64 FGLA
iterations from random phase (−24.4 dB mean); 10 iterations from it reach
≈ −30 dB mean, about 4 dB better than ``librosa.griffinlim`` with momentum
0.99 and 100 iterations, in ≈ 40 ms per note: under a quarter of what
librosa takes for 32 iterations (≈ 220 ms) and well inside the ≈ 80 ms left
of the 100 ms latent-to-waveform budget.  More iterations keep helping
slowly (16: −31.0 dB, ≈ 60 ms; 100: −34.4 dB) — pass ``n_iter`` for
offline rendering.  Transient notes (orchestra hit, plucked and slapped
basses, guitars) stay the worst, near −20 dB (docs/design.md).

On a GPU the heap walk would hold every batch to the CPU, so the default
there is :data:`DEVICE_METHOD` with :data:`DEVICE_ITERS` iterations
(:func:`default_phase`); on 64 default-corpus notes its spectral convergence
is −32.9 dB mean (worst −16.2) against PGHI + 10's −32.4 (worst −13.0),
BENCHMARKS.md, "GPU speed".  On a CUDA device its frame recursion replays
as a CUDA graph (:data:`RTPGHI_GRAPHS`) and the FGLA iterations run fused
(:data:`FUSED_ON_DEVICE`): 0.47 ms per note at batch 256 on an H200.
"""

from __future__ import annotations

import functools
import heapq
import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from samplegen.dataclass_io import from_dict
from samplegen.errors import ParameterError

PHASE_METHODS: tuple[str, ...] = ("gl", "fgla", "spsi", "pghi", "rtpghi")
#: See the module docstring and benchmarks/results/phase_retrieval.md: the default on a CPU.
DEFAULT_METHOD = "pghi"
DEFAULT_ITERS = 10
#: The default on a GPU, where PGHI's heap walk would run on the host (module docstring).
DEVICE_METHOD = "rtpghi"
DEVICE_ITERS = 30
#: rtpghi: a peak keeps integrating its phase over time while the previous frame held at least this share
#: of its magnitude; a louder jump is an onset, placed by integrating across the frame's bins instead.
RTPGHI_ONSET_RATIO = 0.5
#: rtpghi's two starts (:func:`retrieve_phase`): frames 1… that many start afresh rather than continue
#: from the frames before, which hold the reflect padding's mirror image of the attack.  Neither wins on
#: every note; the one whose iterate is more consistent after a third of the iterations goes on.
RTPGHI_FRESH_FRAMES = (0, 2)
DEFAULT_MOMENTUM = 0.99
#: Most Griffin–Lim iterations one call runs: past 100 a note's spectral convergence moves by hundredths of
#: a dB (module docstring), and 10^8 iterations would run for days.
MAX_ITERATIONS = 1000
#: PGHI's γ for a Hann window of length n_fft is this times n_fft² (Průša et al. 2017, table 1).
HANN_GAMMA = 0.25645
#: PGHI leaves coefficients more than 60 dB below a note's peak to the random start:
#: as good as 1e-5 (100 dB) on the corpus after FGLA, and the heap walk is 3–5 times shorter.
PGHI_TOL = 1e-3
#: Raised-cosine fade-in of every retrieved waveform, in samples: 3 ms at 44.1 kHz (module docstring).
FADE_IN = 132


@dataclass(frozen=True)
class StftConfig:
    """STFT settings of a model: periodic Hann window, centred frames (``center=True``, reflect padding).

    n_fft : FFT size in samples (even); 2048 at 44.1 kHz resolves 21.5 Hz bins
    hop_length : hop between frames in samples, at most n_fft

    Example
    -------
    >>> cfg = StftConfig(n_fft=2048, hop_length=512)
    >>> cfg.n_bins, cfg.n_frames(88200)
    (1025, 173)
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
        """Frequency bins of the one-sided spectrum: n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of ``n_samples`` samples: 1 + n_samples // hop_length."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; :meth:`from_dict` reads it back."""
        return {"n_fft": self.n_fft, "hop_length": self.hop_length}

    @classmethod
    def from_dict(cls, data: Any) -> "StftConfig":
        """Build from a JSON object; unknown keys and wrong types raise ParameterError."""

        return from_dict(cls, data, "stft")


def _window(cfg: StftConfig, like: torch.Tensor) -> torch.Tensor:
    dtype = like.real.dtype if like.is_complex() else like.dtype
    return _cached_window(cfg.n_fft, like.device, dtype)


@functools.lru_cache(maxsize=32)
def _cached_window(n_fft: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Phase retrieval asks for the same window twice per iteration; building it each
    # time cost seconds over an evaluation (a thread-pool round trip per call).
    return torch.hann_window(n_fft, device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _ola_envelope(n_fft: int, hop: int, n_frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Overlap-added squared window of ``n_frames`` frames: what least-squares ISTFT divides by."""
    w2 = _cached_window(n_fft, device, dtype).pow(2).reshape(n_fft // hop, hop)
    env = torch.zeros(n_frames + n_fft // hop - 1, hop, device=device, dtype=dtype)
    for j in range(n_fft // hop):
        env[j : j + n_frames] += w2[j]
    return env.reshape(-1)


def _check_length(length: Any) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ParameterError(f"length={length!r} must be a positive integer")


def stft(audio: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """Complex STFT with a Hann window and centred frames.

    Parameters
    ----------
    audio : Tensor[B x n] or [n], float, any device
    cfg : the STFT settings

    Returns
    -------
    Tensor[B x F x T] or [F x T], complex; F = cfg.n_bins, T = cfg.n_frames(n).
    Frame t is centred on sample t·hop_length; its phase is measured from the
    frame's first sample (torch's convention).

    Example
    -------
    >>> spec = stft(torch.zeros(88200), StftConfig())
    >>> tuple(spec.shape)
    (1025, 173)
    """
    if not torch.is_tensor(audio) or audio.is_complex() or not audio.is_floating_point():
        raise ParameterError("audio must be a real floating-point torch.Tensor")
    if audio.ndim not in (1, 2):
        raise ParameterError(f"audio must have shape (n,) or (B, n), got {tuple(audio.shape)}")
    if audio.shape[-1] <= cfg.n_fft // 2:
        raise ParameterError(f"audio must be longer than n_fft // 2 = {cfg.n_fft // 2} samples, got {audio.shape[-1]}")
    return torch.stft(audio, cfg.n_fft, cfg.hop_length, window=_window(cfg, audio), center=True,
                      return_complex=True)


def magnitude(audio: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """Linear STFT magnitude |stft(audio)|: Tensor[B x F x T] or [F x T], real."""
    return stft(audio, cfg).abs()


def istft(spec: torch.Tensor, cfg: StftConfig, length: int) -> torch.Tensor:
    """Inverse STFT (least-squares overlap-add) to exactly ``length`` samples.

    Parameters
    ----------
    spec : Tensor[B x F x T] or [F x T], complex
    cfg : the settings ``spec`` was made with
    length : output length in samples (trimmed or zero-padded to it)

    Returns
    -------
    Tensor[B x length] or [length], real, on ``spec``'s device.

    Example
    -------
    >>> x = torch.randn(22050, dtype=torch.float64)
    >>> bool(torch.allclose(istft(stft(x, StftConfig()), StftConfig(), 22050), x))
    True
    """
    _check_length(length)
    if not torch.is_tensor(spec) or not spec.is_complex():
        raise ParameterError("spec must be a complex torch.Tensor")
    if spec.ndim not in (2, 3) or spec.shape[-2] != cfg.n_bins:
        raise ParameterError(f"spec must have shape (F, T) or (B, F, T) with F={cfg.n_bins}, got {tuple(spec.shape)}")
    fast = _istft_by_reshape(spec, cfg, length)
    if fast is not None:
        return fast
    return torch.istft(spec, cfg.n_fft, cfg.hop_length, window=_window(cfg, spec), center=True, length=length)


def _istft_by_reshape(spec: torch.Tensor, cfg: StftConfig, length: int) -> torch.Tensor | None:
    """``torch.istft(center=True)`` where the hop divides n_fft: the overlap-add is n_fft/hop shifted sums.

    About twice as fast as torch.istft on a CPU (whose overlap-add folds and builds the window
    envelope on every call), the same to float rounding.  None where it does not apply (a hop
    that does not divide n_fft, an output longer than the frames cover, or an envelope too
    small to divide by: torch.istft then raises its own error).
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    if n_fft % hop:
        return None
    r = n_fft // hop
    single = spec.ndim == 2
    batch = spec[None] if single else spec
    b, _, t = batch.shape
    start = n_fft // 2
    if start + length > (t + r - 1) * hop:
        return None
    real = batch.real.dtype
    env = _ola_envelope(n_fft, hop, t, batch.device, real)[start : start + length]
    if float(env.min()) < 1e-11:
        return None
    frames = torch.fft.irfft(batch.transpose(1, 2), n=n_fft, dim=-1).mul_(_cached_window(n_fft, batch.device, real))
    frames = frames.reshape(b, t, r, hop)
    out = torch.zeros(b, t + r - 1, hop, device=batch.device, dtype=real)
    for j in range(r):
        out[:, j : j + t] += frames[:, :, j]
    wav = out.reshape(b, -1)[:, start : start + length] / env
    return wav[0] if single else wav


def default_phase(device: torch.device | str) -> tuple[str, int]:
    """The phase retrieval method and iteration count used by default for magnitudes on ``device``:
    PGHI + :data:`DEFAULT_ITERS` on a CPU, :data:`DEVICE_METHOD` + :data:`DEVICE_ITERS` on an accelerator."""
    if torch.device(device).type == "cpu":
        return DEFAULT_METHOD, DEFAULT_ITERS
    return DEVICE_METHOD, DEVICE_ITERS


def retrieve_phase(mag: torch.Tensor, cfg: StftConfig, length: int, method: str | None = None,
                   n_iter: int | None = None, momentum: float = DEFAULT_MOMENTUM,
                   seed: int | None = 0, fade_in: int = FADE_IN) -> torch.Tensor:
    """A waveform whose STFT magnitude approximates ``mag``.

    Parameters
    ----------
    mag : Tensor[B x F x T] or [F x T], linear magnitude (not log, not power), any device
    cfg : the STFT settings ``mag`` was computed with
    length : output length in samples
    method : initial phase, then ``n_iter`` Griffin–Lim iterations:

        - "pghi": Phase Gradient Heap Integration, then fast Griffin–Lim (the default on a CPU);
        - "rtpghi": frame-recursive PGHI, then fast Griffin–Lim (the default on a GPU);
        - "spsi": Single Pass Spectrogram Inversion, then fast Griffin–Lim;
        - "fgla": random phase, then fast Griffin–Lim;
        - "gl": random phase, then plain Griffin–Lim (``momentum`` ignored).
        None: :func:`default_phase` for ``mag``'s device
    n_iter : iterations, ≥ 0 (0 returns the start alone); None: :func:`default_phase`'s
    momentum : FGLA's α in [0, 2); 0.99 is the usual choice, 0 is plain Griffin–Lim
    seed : seed of the random phase (the whole start for "gl"/"fgla", the
        quiet coefficients PGHI leaves alone, the first frames for "spsi");
        None draws a fresh one.  One random field is shared by all notes of a
        batch, so a batch gives what its notes give one by one.
    fade_in : samples of raised-cosine fade-in, kept through the iterations (0: none); the
        default keeps the first frame from clicking (module docstring)

    Returns
    -------
    Tensor[B x length] or [length], float32, on ``mag``'s device.

    Example
    -------
    >>> cfg = StftConfig()
    >>> audio = torch.sin(2 * torch.pi * 261.63 * torch.arange(44100) / 44100)
    >>> wav = retrieve_phase(magnitude(audio, cfg), cfg, len(audio))
    >>> tuple(wav.shape), wav.dtype
    ((44100,), torch.float32)
    """
    if torch.is_tensor(mag) and mag.is_cuda:
        with DEVICE_LOCK:  # see DEVICE_LOCK: a CUDA graph is recorded on first use of a shape
            return _retrieve_phase(mag, cfg, length, method, n_iter, momentum, seed, fade_in)
    return _retrieve_phase(mag, cfg, length, method, n_iter, momentum, seed, fade_in)


def _retrieve_phase(mag: torch.Tensor, cfg: StftConfig, length: int, method: str | None, n_iter: int | None,
                    momentum: float, seed: int | None, fade_in: int) -> torch.Tensor:
    """:func:`retrieve_phase` itself."""
    if method is None or n_iter is None:
        auto_method, auto_iters = default_phase(mag.device if torch.is_tensor(mag) else "cpu")
        method = auto_method if method is None else method
        n_iter = auto_iters if n_iter is None else n_iter
    if method not in PHASE_METHODS:
        raise ParameterError(f"method={method!r} must be one of {PHASE_METHODS}")
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or not 0 <= n_iter <= MAX_ITERATIONS:
        raise ParameterError(f"n_iter={n_iter!r} must be an integer from 0 to {MAX_ITERATIONS} (iterations)")
    _check_length(length)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 2.0:
        raise ParameterError(f"momentum={momentum!r} must be a number in [0, 2)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ParameterError(f"seed={seed!r} must be an integer or None")
    _check_fade_in(fade_in)
    if not torch.is_tensor(mag) or mag.is_complex():
        raise ParameterError("mag must be a real torch.Tensor of linear magnitudes")
    single = mag.ndim == 2
    if single:
        mag = mag[None]
    if mag.ndim != 3 or mag.shape[1] != cfg.n_bins:
        raise ParameterError(f"mag must have shape (B, {cfg.n_bins}, T) or ({cfg.n_bins}, T), got {tuple(mag.shape)}")
    if mag.shape[2] != cfg.n_frames(length):
        raise ParameterError(f"mag has {mag.shape[2]} frames but length={length} needs {cfg.n_frames(length)}")
    mag = mag.float()
    if not torch.isfinite(mag).all():
        raise ParameterError("mag must not contain NaN or Inf")
    if (mag < 0).any():
        raise ParameterError("mag must be non-negative (a linear magnitude)")

    gen = torch.Generator(device=mag.device)
    gen.manual_seed(int(seed)) if seed is not None else gen.seed()
    angles = torch.rand(mag.shape[1:], generator=gen, device=mag.device) * (2 * math.pi)
    if method == "pghi":
        phase = pghi_phase(mag, cfg, fill=angles, tol=PGHI_TOL)
    elif method == "rtpghi":
        return _rtpghi_retrieval(mag, cfg, length, angles, n_iter, float(momentum), fade_in, single)
    elif method == "spsi":
        # Frames that reach into the reflect padding at the start hold the mirror
        # image of the attack, not steady sinusoids: SPSI's guess there traps
        # Griffin–Lim, a random start does not.
        edge = min(mag.shape[2], cfg.n_fft // (2 * cfg.hop_length))
        phase = spsi_phase(mag, cfg)
        phase[:, :, :edge] = angles[None, :, :edge]
    else:
        phase = angles.expand_as(mag)
    spec = torch.polar(mag, phase)
    wav = _griffin_lim(spec, mag, cfg, length, n_iter, 0.0 if method == "gl" else float(momentum), fade_in)
    return wav[0] if single else wav


def _rtpghi_retrieval(mag: torch.Tensor, cfg: StftConfig, length: int, fill: torch.Tensor, n_iter: int,
                      alpha: float, fade_in: int, single: bool) -> torch.Tensor:
    """rtpghi from each of :data:`RTPGHI_FRESH_FRAMES`' starts for a third of the iterations; per note the
    more consistent iterate (its own STFT magnitude nearer ``mag``) goes on for the rest, from its phase.

    On 64 default-corpus notes (oracle magnitudes, 30 iterations in all): spectral convergence −32.9 dB
    mean, −16.2 worst, against −32.1 and −8.8 from the first start alone and −32.4 and −13.0 for the CPU
    default, PGHI + 10 (BENCHMARKS.md, "GPU speed"); it costs 1.33 times the iterations."""
    first = n_iter // 3
    tries = [_griffin_lim(torch.polar(mag, rtpghi_phase(mag, cfg, fill=fill, fresh_frames=fresh)), mag, cfg,
                          length, first, alpha, fade_in) for fresh in RTPGHI_FRESH_FRAMES]
    specs = [stft(w, cfg) for w in tries]
    errors = torch.stack([(spec.abs() - mag).flatten(1).norm(dim=1) for spec in specs])
    pick = (errors.argmin(dim=0), torch.arange(len(mag), device=mag.device))
    if n_iter == 0:  # the better start alone
        best = torch.stack(tries)[pick]
        return best[0] if single else best
    wav = _griffin_lim(torch.polar(mag, torch.angle(torch.stack(specs)[pick])), mag, cfg, length, n_iter - first,
                       alpha, fade_in)
    return wav[0] if single else wav


def fast_griffin_lim(spec: torch.Tensor, mag: torch.Tensor, cfg: StftConfig, length: int, n_iter: int,
                     momentum: float = DEFAULT_MOMENTUM, fade_in: int = FADE_IN) -> torch.Tensor:
    """Fast Griffin–Lim from a given complex start (e.g. phase integrated from a model's IF).

    Parameters
    ----------
    spec : Tensor[B x F x T], complex start
    mag : Tensor[B x F x T], the linear magnitude to keep
    n_iter : iterations, >= 0 (0: the inverse STFT of ``spec``, faded in)
    fade_in : samples of raised-cosine fade-in (see :func:`retrieve_phase`)

    Returns
    -------
    Tensor[B x length], float32.
    """
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or not 0 <= n_iter <= MAX_ITERATIONS:
        raise ParameterError(f"n_iter={n_iter!r} must be an integer from 0 to {MAX_ITERATIONS} (iterations)")
    _check_length(length)
    _check_fade_in(fade_in)
    if not spec.is_complex() or spec.shape != mag.shape:
        raise ParameterError("spec must be complex and of the same shape as mag")
    return _griffin_lim(spec, mag.float(), cfg, length, n_iter, float(momentum), fade_in)


def _check_fade_in(fade_in: Any) -> None:
    if not isinstance(fade_in, int) or isinstance(fade_in, bool) or fade_in < 0:
        raise ParameterError(f"fade_in={fade_in!r} must be a non-negative integer")


@functools.lru_cache(maxsize=8)
def _fade_ramp(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Raised cosine from 0 (sample 0) towards 1 over ``n`` samples."""
    return 0.5 - 0.5 * torch.cos(torch.pi * torch.arange(n, device=device, dtype=dtype) / n)


def _faded(wav: torch.Tensor, fade_in: int) -> torch.Tensor:
    """``wav`` with its first ``fade_in`` samples faded in, in place."""
    n = min(fade_in, wav.shape[-1])
    if n:
        wav[..., :n] *= _fade_ramp(n, wav.device, wav.dtype)
    return wav


def _griffin_lim(spec: torch.Tensor, mag: torch.Tensor, cfg: StftConfig, length: int, n_iter: int,
                 alpha: float, fade_in: int) -> torch.Tensor:
    """(Fast) Griffin–Lim from the complex start ``spec``, the fade-in kept in every iterate; the final waveform.

    On a CUDA device the iterations run frame-major with their element-wise work fused
    (:func:`_griffin_lim_frames`); elsewhere, or where that layout does not apply, through
    :func:`stft` and :func:`istft`."""
    if spec.device.type == "cuda" and FUSED_ON_DEVICE and _frames_layout_applies(cfg, spec.shape[-1], length):
        return _griffin_lim_frames(spec, mag, cfg, length, n_iter, alpha, fade_in, compiled=True)
    prev = torch.zeros_like(spec)
    for _ in range(n_iter):
        # Project onto consistent spectrograms (STFT of a signal that fades in), extrapolate
        # with momentum, then project onto the given magnitude.
        rebuilt = stft(_faded(istft(spec, cfg, length), fade_in), cfg)
        accel = rebuilt.mul(1.0 + alpha).sub_(prev, alpha=alpha) if alpha else rebuilt.clone()
        prev = rebuilt
        # sgn (z/|z|, 0 at 0) in place: three times faster than abs, clamp and divide.
        spec = accel.sgn_().mul_(mag)
    return _faded(istft(spec, cfg, length), fade_in).float()


#: FGLA on a CUDA device: frame-major, each iteration's time-domain work and its magnitude projection
#: fused by ``torch.compile`` (one kernel and two on an H200).  False: the same code as on a CPU
#: (``benchmarks/scale_gpu.py`` measures both).
FUSED_ON_DEVICE = True


def _frames_layout_applies(cfg: StftConfig, n_frames: int, length: int) -> bool:
    """Whether :func:`_griffin_lim_frames` reproduces :func:`_griffin_lim` here: a hop that divides n_fft,
    the frames of a ``length``-sample signal, and an overlap-add envelope that can be divided by."""
    if cfg.n_fft % cfg.hop_length or n_frames != cfg.n_frames(length) or length <= cfg.n_fft // 2:
        return False
    start = cfg.n_fft // 2
    env = _ola_envelope(cfg.n_fft, cfg.hop_length, n_frames, torch.device("cpu"), torch.float32)
    return start + length <= len(env) and float(env[start : start + length].min()) >= 1e-11


def _overlap_add(frames: torch.Tensor, window: torch.Tensor, gain: torch.Tensor, hop: int, length: int
                 ) -> torch.Tensor:
    """Tensor[B x T x n_fft] of inverse-FFT frames → Tensor[B x length]: windowed overlap-add of centred frames,
    times ``gain`` (the fade-in over the least-squares envelope)."""
    b, t, n_fft = frames.shape
    r = n_fft // hop
    parts = (frames * window).reshape(b, t, r, hop)
    summed = torch.nn.functional.pad(parts[:, :, 0], (0, 0, 0, r - 1))
    for j in range(1, r):
        summed = summed + torch.nn.functional.pad(parts[:, :, j], (0, 0, j, r - 1 - j))
    return summed.reshape(b, -1)[:, n_fft // 2 : n_fft // 2 + length] * gain


def _reframe(wav: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """Tensor[B x n] → Tensor[B x T x n_fft]: the windowed, centred (reflect-padded) frames :func:`stft` transforms."""
    half = window.shape[0] // 2
    padded = torch.nn.functional.pad(wav[:, None], (half, half), mode="reflect")[:, 0]
    return padded.unfold(-1, window.shape[0], hop) * window


def _istft_restft(frames: torch.Tensor, window: torch.Tensor, gain: torch.Tensor, hop: int, length: int
                  ) -> torch.Tensor:
    """One iteration's time-domain work: inverse-FFT frames to the faded waveform and back to windowed frames."""
    return _reframe(_overlap_add(frames, window, gain, hop, length), window, hop)


def _project(rebuilt: torch.Tensor, prev: torch.Tensor, mag: torch.Tensor, alpha: float) -> torch.Tensor:
    """FGLA's extrapolation then the projection onto ``mag``, on real views (..., 2) of complex spectra:
    (1 + α)·rebuilt − α·prev, scaled to magnitude ``mag`` (0 where it is 0)."""
    re = rebuilt[..., 0] * (1.0 + alpha) - prev[..., 0] * alpha
    im = rebuilt[..., 1] * (1.0 + alpha) - prev[..., 1] * alpha
    norm = torch.sqrt(re * re + im * im)  # written out, not a sum over the last axis: one kernel, not two
    scale = torch.where(norm > 0, mag / norm, 0.0)
    return torch.stack([re * scale, im * scale], dim=-1)


@functools.lru_cache(maxsize=1)
def _compiled_steps() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """:func:`_istft_restft`, :func:`_project` and :func:`_overlap_add` through ``torch.compile``."""
    return (torch.compile(_istft_restft, fullgraph=True), torch.compile(_project, fullgraph=True),
            torch.compile(_overlap_add, fullgraph=True))


def _griffin_lim_frames(spec: torch.Tensor, mag: torch.Tensor, cfg: StftConfig, length: int, n_iter: int,
                        alpha: float, fade_in: int, compiled: bool) -> torch.Tensor:
    """:func:`_griffin_lim` frame-major (B x T x F, so each FFT reads and writes contiguous rows), where
    :func:`_frames_layout_applies`.  Per iteration: inverse FFT, one time-domain pass, FFT, one projection.

    ``compiled`` fuses the two passes (``torch.compile``); where compiling fails, it warns and runs them
    eagerly.  The same result as :func:`_griffin_lim` to float rounding (tests/test_spectral.py)."""
    n_fft, hop = cfg.n_fft, cfg.hop_length
    window = _cached_window(n_fft, spec.device, torch.float32)
    gain = 1.0 / _ola_envelope(n_fft, hop, spec.shape[-1], spec.device, torch.float32)[n_fft // 2 : n_fft // 2 + length]
    n = min(fade_in, length)
    if n:
        gain[:n] *= _fade_ramp(n, spec.device, torch.float32)  # gain is a new tensor, not the cached envelope
    eager: tuple[Callable[..., torch.Tensor], ...] = (_istft_restft, _project, _overlap_add)
    steps = _compiled_steps() if compiled else eager

    def step(k: int, *args: Any) -> torch.Tensor:
        nonlocal steps
        try:
            return steps[k](*args)
        except Exception as exc:  # noqa: BLE001 - the eager call below re-raises what is not the compiler's
            if steps is eager:
                raise
            warnings.warn(f"torch.compile cannot fuse Griffin–Lim here ({type(exc).__name__}); running it eagerly",
                          stacklevel=3)
            steps = eager
            return steps[k](*args)

    mag_t = mag.float().transpose(1, 2).contiguous()
    spec_t = torch.view_as_real(spec.to(torch.complex64).transpose(1, 2).contiguous())
    prev = torch.zeros_like(spec_t)
    for _ in range(n_iter):
        frames = torch.fft.irfft(torch.view_as_complex(spec_t), n=n_fft, dim=-1)
        rebuilt = torch.view_as_real(torch.fft.rfft(step(0, frames, window, gain, hop, length), dim=-1))
        spec_t, prev = step(1, rebuilt, prev, mag_t, alpha), rebuilt
    return step(2, torch.fft.irfft(torch.view_as_complex(spec_t), n=n_fft, dim=-1), window, gain, hop, length)


# ---------------------------------------------------------------------------
# PGHI


def pghi_gradients(mag: torch.Tensor, cfg: StftConfig, gamma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase advance per frame and per bin implied by a magnitude, for torch's phase convention.

    For a Gaussian window exp(−π t²/γ) the STFT is, up to a known factor, an
    analytic function of time and frequency, so the phase gradient follows
    from the log-magnitude gradient (Průša et al. 2017, eqs. 19–20).  With
    phase measured from each frame's first sample (:func:`stft`) and centred
    frames, for bin k and frame t:

    - per frame: hop·n_fft/γ · ∂_k log|X| + 2π·hop·k/n_fft
    - per bin:   −γ/(hop·n_fft) · ∂_t log|X| − π

    (the −π per bin is the half-window shift between the frame start and
    its centre).  A Hann window is close enough to a Gaussian with
    γ = 0.25645·n_fft².  Batched on ``mag``'s device (on a GPU only the heap
    walk is left to the CPU).

    Parameters
    ----------
    mag : Tensor[B x F x T] or [F x T], linear magnitude, any device
    cfg : its STFT settings
    gamma : the window's γ in samples² (default: Hann's)

    Returns
    -------
    (per_frame, per_bin) : two float64 Tensors of ``mag``'s shape and device, in radians.
    """
    a, m = cfg.hop_length, cfg.n_fft
    g = HANN_GAMMA * m * m if gamma is None else gamma
    x = mag.to(torch.float64)
    # One floor per note keeps log-gradients finite; below it the heap walk never goes.
    peak = x.amax(dim=(-2, -1), keepdim=True) if x.numel() else x.new_zeros(())
    logm = torch.log(torch.maximum(x, peak.clamp_min(1e-30) * (PGHI_TOL * 0.1)))
    # Central differences with mirrored edges: |X| is even about bin 0 and the
    # Nyquist bin (real signals), and about frame 0, which is centred on the
    # first sample of a reflect-padded signal.  One-sided differences there
    # would put a false onset into the first frame.
    d_bin = _central_difference(logm, dim=-2)
    d_frame = _central_difference(logm, dim=-1)
    k = torch.arange(x.shape[-2], device=x.device, dtype=torch.float64)[:, None]
    per_frame = (a * m / g) * d_bin + 2 * math.pi * a * k / m
    per_bin = -(g / (a * m)) * d_frame - math.pi
    return per_frame, per_bin


def _central_difference(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Half the difference of the two neighbours along ``dim``; zero slope at mirrored edges."""
    out = torch.zeros_like(values)
    n = values.shape[dim]
    if n > 2:
        out.narrow(dim, 1, n - 2).copy_(0.5 * (values.narrow(dim, 2, n - 2) - values.narrow(dim, 0, n - 2)))
    return out


def _heap_integrate_py(mag: np.ndarray, per_frame: np.ndarray, per_bin: np.ndarray, fill: np.ndarray,
                       tol: float) -> np.ndarray:  # pragma: no cover - run compiled by numba when available
    """Průša's heap walk on (F, T) arrays: from the loudest unvisited coefficient, integrate
    the phase gradient (trapezoid rule) into its neighbours, loudest first.  Coefficients
    below tol·peak keep ``fill``."""
    n_bins, n_frames = mag.shape
    phase = fill.copy()
    done = np.zeros((n_bins, n_frames), dtype=np.bool_)
    peak = mag.max()
    if peak <= 0.0:
        return phase
    floor = peak * tol
    flat = mag.ravel()
    heap = [(-peak, 0)]
    heap.pop()
    start = int(np.argmax(flat))
    scan = 0
    while True:
        # The first island starts at the peak; later ones at the next loud,
        # unvisited coefficient in scan order.
        done[start // n_frames, start % n_frames] = True
        phase[start // n_frames, start % n_frames] = 0.0
        heapq.heappush(heap, (-flat[start], start))
        while len(heap) > 0:
            idx = heapq.heappop(heap)[1]
            k = idx // n_frames
            t = idx % n_frames
            here = phase[k, t]
            if t + 1 < n_frames and not done[k, t + 1] and mag[k, t + 1] >= floor:
                done[k, t + 1] = True
                phase[k, t + 1] = here + 0.5 * (per_frame[k, t] + per_frame[k, t + 1])
                heapq.heappush(heap, (-mag[k, t + 1], idx + 1))
            if t > 0 and not done[k, t - 1] and mag[k, t - 1] >= floor:
                done[k, t - 1] = True
                phase[k, t - 1] = here - 0.5 * (per_frame[k, t] + per_frame[k, t - 1])
                heapq.heappush(heap, (-mag[k, t - 1], idx - 1))
            if k + 1 < n_bins and not done[k + 1, t] and mag[k + 1, t] >= floor:
                done[k + 1, t] = True
                phase[k + 1, t] = here + 0.5 * (per_bin[k, t] + per_bin[k + 1, t])
                heapq.heappush(heap, (-mag[k + 1, t], idx + n_frames))
            if k > 0 and not done[k - 1, t] and mag[k - 1, t] >= floor:
                done[k - 1, t] = True
                phase[k - 1, t] = here - 0.5 * (per_bin[k, t] + per_bin[k - 1, t])
                heapq.heappush(heap, (-mag[k - 1, t], idx - n_frames))
        start = -1
        while scan < flat.size:
            if flat[scan] >= floor and not done[scan // n_frames, scan % n_frames]:
                start = scan
                break
            scan += 1
        if start < 0:
            return phase


_heap_integrate: Callable[..., np.ndarray]
try:  # numba turns the heap walk from about a second into milliseconds per note
    import numba

    _heap_integrate = numba.njit(cache=True, nogil=True)(_heap_integrate_py)
except ImportError:  # pragma: no cover - slow but correct without numba
    _heap_integrate = _heap_integrate_py


def _pghi_workers(n_notes: int) -> int:
    """Threads for PGHI's note-by-note heap walks: torch's intra-op thread count, at most one per note.

    Only worth it where the walk is compiled (numba releases the GIL); the pure-Python
    fallback holds the GIL, so it stays on one thread.
    """
    if _heap_integrate is _heap_integrate_py:
        return 1
    return max(1, min(n_notes, torch.get_num_threads()))


def pghi_phase(mag: torch.Tensor, cfg: StftConfig, fill: torch.Tensor | None = None,
               tol: float | None = None) -> torch.Tensor:
    """Phase Gradient Heap Integration estimate for a Tensor[B x F x T] magnitude.

    The gradients are computed on ``mag``'s device; the heap walk is sequential, so it runs
    on the CPU, one note per thread, and the phases are returned on ``mag``'s device.

    Parameters
    ----------
    mag : Tensor[B x F x T], linear magnitude
    cfg : its STFT settings (Hann window: γ = 0.25645·n_fft²)
    fill : Tensor[F x T] of phases for the coefficients below ``tol`` times a
        note's peak (default: zeros)
    tol : relative magnitude below which the walk does not go, in (0, 1) (default :data:`PGHI_TOL`)

    Returns
    -------
    Tensor[B x F x T] of phases (radians), float32.
    """
    if mag.ndim != 3 or mag.shape[1] != cfg.n_bins:
        raise ParameterError(f"mag must have shape (B, {cfg.n_bins}, T), got {tuple(mag.shape)}")
    tol = PGHI_TOL if tol is None else tol
    if not 0.0 < tol < 1.0:
        raise ParameterError(f"tol={tol!r} must be in (0, 1)")
    # The gradients are batched on mag's device; one copy brings them and the magnitude to the walk.
    per_frames, per_bins = (g.cpu().numpy() for g in pghi_gradients(mag.detach(), cfg))
    mags = mag.detach().to("cpu", torch.float64).numpy()
    fill_np = np.zeros(mags.shape[1:]) if fill is None else fill.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(mags)

    def one(i: int) -> None:
        out[i] = _heap_integrate(np.ascontiguousarray(mags[i]), per_frames[i], per_bins[i], fill_np, float(tol))

    workers = _pghi_workers(len(mags))
    if workers > 1:
        # The compiled heap walk releases the GIL (nogil), so threads walk several notes at once;
        # each note's result does not depend on which thread computed it.
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(mags))))
    else:
        for i in range(len(mags)):
            one(i)
    return _snap_first_frame(torch.from_numpy(out)).to(device=mag.device, dtype=torch.float32)


def _snap_first_frame(phase: torch.Tensor) -> torch.Tensor:
    """Frame 0 is centred on sample 0 of a reflect-padded signal, so its windowed samples are even about
    the window centre and its spectrum is real times (−1)^k: snap the estimate (in place) to the nearer
    of the two allowed phases."""
    turn = math.pi * torch.arange(phase.shape[1], device=phase.device, dtype=phase.dtype)
    rel = phase[:, :, 0] - turn
    phase[:, :, 0] = torch.where(torch.cos(rel) >= 0, 0.0, math.pi) + turn
    return phase


def _trapezoid_cumsum(grad: torch.Tensor, dim: int) -> torch.Tensor:
    """The integral of ``grad`` along ``dim`` from index 0 by the trapezoid rule (0 at index 0)."""
    n = grad.shape[dim]
    steps = 0.5 * (grad.narrow(dim, 0, n - 1) + grad.narrow(dim, 1, n - 1))
    return torch.cat([torch.zeros_like(grad.narrow(dim, 0, 1)), torch.cumsum(steps, dim)], dim)


def rtpghi_phase(mag: torch.Tensor, cfg: StftConfig, fill: torch.Tensor | None = None,
                 tol: float | None = None, onset_ratio: float = RTPGHI_ONSET_RATIO, fresh_frames: int = 0
                 ) -> torch.Tensor:
    """Frame-recursive PGHI: :func:`pghi_phase`'s gradients integrated frame by frame, all on ``mag``'s device.

    Frame 0 integrates the per-bin gradient across its bins.  Then, for each frame t, every local
    peak whose bin held at least ``onset_ratio`` of its magnitude in frame t−1 continues that bin's
    phase by the per-frame gradient (trapezoid rule); a peak that jumped louder (an onset) takes the
    frame's across-bin integral, turned to agree with the continuing peaks (their circular mean,
    weighted by squared magnitude), as do all peaks of frames 1 to ``fresh_frames``; every other bin
    takes its nearest peak's phase plus the across-bin integral from the peak.  This is RTPGHI (Průša & Holighaus 2017) with each frame's
    heap replaced by nearest-peak locking: a loop over frames of batched tensor operations, no
    host round trip, so it runs where ``mag`` lives (GPU or CPU alike).

    Parameters and result as :func:`pghi_phase`: ``mag`` Tensor[B x F x T], ``fill`` Tensor[F x T]
    for coefficients below ``tol`` times a note's peak; Tensor[B x F x T] of phases, float32.
    """
    if mag.ndim != 3 or mag.shape[1] != cfg.n_bins:
        raise ParameterError(f"mag must have shape (B, {cfg.n_bins}, T), got {tuple(mag.shape)}")
    tol = PGHI_TOL if tol is None else tol
    if not 0.0 < tol < 1.0:
        raise ParameterError(f"tol={tol!r} must be in (0, 1)")
    m = mag.detach().to(torch.float64)
    per_frame, per_bin = pghi_gradients(m, cfg)
    across = _trapezoid_cumsum(per_bin, 1)  # each frame's phase across its bins, up to a constant
    steps = 0.5 * (per_frame[:, :, :-1] + per_frame[:, :, 1:])
    owner = nearest_peak(m)
    floor = tol * m.amax(dim=(1, 2)).unsqueeze(1)
    # Everything that does not depend on the previous frame's phase, for all frames at once: the loop
    # below is launch-bound on a GPU, so it keeps only the recursion itself.
    owner_across = torch.gather(across, 1, owner)
    lobe = across - owner_across  # each bin's phase from its peak's
    keeps = (m[:, :, :-1] >= onset_ratio * m[:, :, 1:]) & (m[:, :, :-1] >= floor.unsqueeze(2))  # for frames 1…
    keeps[:, :, :fresh_frames] = False
    weight = torch.where(keeps, m[:, :, 1:] * m[:, :, 1:], 0.0)
    owner_keeps = torch.gather(keeps, 1, owner[:, :, 1:])
    # Frame-major (T x B x F) so that each frame is one contiguous block.
    arrays = [a.permute(2, 0, 1).contiguous() for a in (across, steps, weight, owner_keeps, owner, owner_across, lobe)]
    recursion = _graphed_recursion if (m.device.type == "cuda" and RTPGHI_GRAPHS) else _frame_recursion
    phase = recursion(*arrays).permute(1, 2, 0)
    phase = torch.where(m >= floor.unsqueeze(2), phase, fill.to(phase) if fill is not None else 0.0)
    return _snap_first_frame(phase).to(torch.float32)


#: rtpghi's frame loop on a CUDA device: recorded once per batch shape as a CUDA graph and replayed
#: (a loop of small kernels is bound by their launches).  False: launched one by one, as on a CPU.
RTPGHI_GRAPHS = True

#: Held by :func:`retrieve_phase` on a CUDA device and by :func:`samplegen.generation.generate.decode`: while a
#: CUDA graph is being recorded, GPU work on the default stream from another thread breaks the recording (and
#: that thread's work), so SampleGen's own GPU work runs one thread at a time.  Other code that drives the GPU
#: from other threads should hold it too, or set :data:`RTPGHI_GRAPHS` False.
DEVICE_LOCK = threading.RLock()


def _frame_recursion(across: torch.Tensor, steps: torch.Tensor, weight: torch.Tensor, owner_keeps: torch.Tensor,
                     owner: torch.Tensor, owner_across: torch.Tensor, lobe: torch.Tensor) -> torch.Tensor:
    """:func:`rtpghi_phase`'s recursion over frames, on frame-major (T x B x F) arrays it computed; the phases."""
    phase = torch.empty_like(across)
    phase[0] = across[0]
    for t in range(1, len(across)):
        continued = phase[t - 1] + steps[t - 1]
        gap, w = continued - across[t], weight[t - 1]
        turn = torch.atan2((w * torch.sin(gap)).sum(1, keepdim=True), (w * torch.cos(gap)).sum(1, keepdim=True))
        peaks = torch.where(owner_keeps[t - 1], torch.gather(continued, 1, owner[t]), owner_across[t] + turn)
        phase[t] = torch.remainder(peaks + lobe[t], 2 * math.pi)
    return phase


class _RecordedRecursion:
    """:func:`_frame_recursion` recorded as a CUDA graph for one set of shapes: inputs copied in, replayed."""

    def __init__(self, arrays: list[torch.Tensor]) -> None:
        self.inputs = [torch.empty_like(a) for a in arrays]
        self.graph = torch.cuda.CUDAGraph()
        # "thread_local": only this thread's unsafe CUDA calls end the recording; another thread's work on the
        # default stream still breaks it, hence DEVICE_LOCK
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.phase = _frame_recursion(*self.inputs)

    def __call__(self, arrays: list[torch.Tensor]) -> torch.Tensor:
        for static, a in zip(self.inputs, arrays):
            static.copy_(a)
        self.graph.replay()
        return self.phase.clone()


_recorded: dict[tuple, _RecordedRecursion] = {}


def _graphed_recursion(*arrays: torch.Tensor) -> torch.Tensor:
    """:func:`_frame_recursion` through a CUDA graph kept for the last shapes it met (one at a time: a graph
    holds its inputs and working memory on the device); under :data:`DEVICE_LOCK`, as its inputs are shared."""
    key = tuple((a.shape, a.dtype, a.device) for a in arrays)
    with DEVICE_LOCK:
        if key not in _recorded:
            _recorded.clear()
            _recorded[key] = _RecordedRecursion(list(arrays))
        return _recorded[key](list(arrays))


# ---------------------------------------------------------------------------
# SPSI


def nearest_peak(mag: torch.Tensor) -> torch.Tensor:
    """For every bin of Tensor[B x F x T], the index of the nearest local maximum of its frame (itself if none).

    A tie goes to the lower peak.

    >>> nearest_peak(torch.tensor([[[0.0], [1.0], [0.0], [0.0], [2.0], [0.0]]])).flatten().tolist()
    [1, 1, 1, 4, 4, 4]
    """
    b, f, t = mag.shape
    m = mag.float()
    is_peak = torch.zeros_like(m, dtype=torch.bool)
    is_peak[:, 1:-1] = (m[:, 1:-1] > m[:, :-2]) & (m[:, 1:-1] >= m[:, 2:]) & (m[:, 1:-1] > 0)
    bins = torch.arange(f, device=m.device).view(1, f, 1).expand(b, f, t)
    left = torch.where(is_peak, bins, torch.full_like(bins, -1)).cummax(dim=1).values
    right = torch.flip(torch.flip(torch.where(is_peak, bins, torch.full_like(bins, 4 * f)), [1])
                       .cummin(dim=1).values, [1])
    use_left = (left >= 0) & ((right >= f) | ((bins - left) <= (right - bins)))
    owner = torch.where(use_left, left, right)
    return torch.where((owner >= 0) & (owner < f), owner, bins).contiguous()


def spsi_phase(mag: torch.Tensor, cfg: StftConfig) -> torch.Tensor:
    """Single Pass Spectrogram Inversion phase estimate for a Tensor[B x F x T] magnitude.

    Each local maximum of a frame is a sinusoid whose frequency comes from
    quadratic interpolation of the peak; its phase at the frame centre
    advances by 2π·f·hop/n_fft per frame.  Every bin takes the phase of its
    nearest peak, turned by π per bin because torch's frames start, rather
    than centre, at sample 0 of the window.

    Returns Tensor[B x F x T] of phases (radians), on ``mag``'s device.
    """
    b, f, t = mag.shape
    m = mag.float()
    left, mid, right = m[:, :-2], m[:, 1:-1], m[:, 2:]
    is_peak = torch.zeros_like(m, dtype=torch.bool)
    is_peak[:, 1:-1] = (mid > left) & (mid >= right) & (mid > 0)
    # Quadratic interpolation of the log magnitude: for a Hann main lobe it is
    # several times more accurate than on the linear magnitude, and a frequency
    # error accumulates into phase drift from frame to frame.
    logm = torch.log(m.clamp_min(1e-12))
    left, mid, right = logm[:, :-2], logm[:, 1:-1], logm[:, 2:]
    denom = left - 2 * mid + right
    ok = denom.abs() > 1e-12
    offset = torch.zeros_like(m)
    offset[:, 1:-1] = torch.where(ok, 0.5 * (left - right) / denom.where(ok, torch.ones_like(denom)),
                                  torch.zeros_like(denom)).clamp(-0.5, 0.5)
    bins = torch.arange(f, device=m.device).view(1, f, 1).expand(b, f, t)
    # A frame without a peak keeps its own frequencies, and every bin takes the phase of the top bin.
    has_owner = is_peak.any(dim=1, keepdim=True)
    owner = torch.where(has_owner, nearest_peak(m), f - 1)
    freq_bins = bins.float() + offset  # interpolated frequency at each peak, in bins
    inst = torch.where(has_owner, torch.gather(freq_bins, 1, owner), bins.float())
    advance = 2 * math.pi * inst * cfg.hop_length / cfg.n_fft
    centre_phase = torch.cumsum(advance, dim=2) - advance[:, :, :1]
    peak_phase = torch.gather(centre_phase, 1, owner)
    return torch.remainder(peak_phase + math.pi * bins.float(), 2 * math.pi)
