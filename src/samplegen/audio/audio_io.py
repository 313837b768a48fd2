"""Read, resample, trim, normalise and write audio: the only module that touches audio files.

Inside the package audio is float32 NumPy at 44.1 kHz, mono, shape (n,).
"""

from __future__ import annotations

import io
import math
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TypeVar

import numpy as np
import soundfile as sf
import soxr

from samplegen.errors import AudioError, ParameterError
from samplegen.files import atomic_write

if TYPE_CHECKING:
    import torch

#: Samples as numpy arrays or torch tensors (what :func:`frame_power` reads).
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, "torch.Tensor")

SAMPLE_RATE = 44100
#: Lowest sample rate read: telephone audio is 8 kHz; a file at 1 Hz is a mistake that resampling would stretch
#: 44,100 times.
MIN_SAMPLE_RATE = 4000
DEFAULT_DURATION_S = 2.0
#: ``.oga`` is Ogg audio under the name some recorders and Xiph's own tools give it; libsndfile reads it as ``.ogg``.
SUPPORTED_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".oga")
C4_HZ = 261.6255653005986

#: Loudness target of a prepared note: RMS of its loud part, in dBFS.
TARGET_RMS_DBFS = -20.0
#: Peak ceiling after loudness normalisation, in dBFS.
PEAK_CEILING_DBFS = -1.0
#: Kept before the detected onset so the attack's first cycle is not cut.
PRE_ONSET_S = 0.005
#: Fade-out applied when a longer note is cut to length.
FADE_OUT_S = 0.05
#: Shortest and longest prepared note (seconds), as a run's ``data.duration_s`` allows: a note of 10^6 s would
#: ask for 176 GB, one of 10^-5 s for less than one STFT frame.
MIN_NOTE_S, MAX_NOTE_S = 0.1, 30.0
#: Only this much of a file is read: a note is a few seconds, an hour-long take would only cost memory.
MAX_READ_S = 60.0
#: Most values (frames x channels) decoded from one file: a minute of 8 channels at 192 kHz is 92 M. Seconds
#: alone bound nothing: a 400 KB FLAC of 8 channels at 655 kHz, or a sparse WAV whose header claims
#: 1,024 channels, would decode to gigabytes.
MAX_DECODED_VALUES = 2**27
#: Values decoded at a time; channels are averaged block by block, so memory is the mono result plus one block.
BLOCK_VALUES = 2**20


def read_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read any WAV, FLAC, AIFF or OGG (.ogg, .oga) file as float32 mono at ``sr``.

    Any bit depth (8/16/24/32-bit integer, 32/64-bit float) and channel
    count; channels are averaged and the rate converted with soxr (HQ).
    Only the first ``MAX_READ_S`` (60) seconds are read, in blocks, and a file
    whose header promises more than ``MAX_DECODED_VALUES`` (frames x channels)
    in them is refused before decoding.

    Parameters
    ----------
    path : the file
    sr : target sample rate in Hz

    Returns
    -------
    np.ndarray float32 (n,)

    Raises
    ------
    AudioError with a one-line reason when the file is missing, not audio,
    truncated, empty, too large to decode or holds NaN/Inf samples.

    Example (a file of one's own, so not run as a doctest)::

        y = read_audio("piano_c4.flac")
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise AudioError(f"unsupported extension '{path.suffix}' (use {', '.join(SUPPORTED_EXTENSIONS)})")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise AudioError("no such file") from None
    if not stat.S_ISREG(mode):  # a FIFO would block the build, a link to /dev/zero would never end
        raise AudioError("not a regular file (a folder, FIFO, device or socket)")
    try:
        with sf.SoundFile(str(path)) as fh:
            file_sr, channels = fh.samplerate, fh.channels
            if file_sr < MIN_SAMPLE_RATE:
                raise AudioError(f"a sample rate of {file_sr} Hz is not audio this can use (at least "
                                 f"{MIN_SAMPLE_RATE:,} Hz); write the file again at its real rate")
            frames = min(fh.frames, int(MAX_READ_S * file_sr)) if fh.frames > 0 else int(MAX_READ_S * file_sr)
            if frames * channels > MAX_DECODED_VALUES:
                raise AudioError(f"would decode to {frames * channels:,} values ({channels} channels x {frames:,} "
                                 f"frames at {file_sr} Hz), over the bound of {MAX_DECODED_VALUES:,}")
            y = _read_mono(fh, frames)
    except FileNotFoundError:
        raise AudioError("no such file") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"not a readable audio file ({_first_line(exc)})") from None
    except MemoryError:
        raise AudioError("needs more memory to decode than is available") from None
    if len(y) == 0:
        raise AudioError("holds no samples")
    if not np.isfinite(y).all():
        raise AudioError("contains NaN or Inf samples")
    if file_sr != sr:
        y = soxr.resample(y, file_sr, sr, quality="HQ")
    return y.astype(np.float32)


def _read_mono(fh: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames of an open file, channels averaged one block at a time (float64)."""
    block = max(1, BLOCK_VALUES // fh.channels)
    parts = []
    left = frames
    while left > 0:
        data = fh.read(frames=min(block, left), dtype="float64", always_2d=True)
        if data.shape[0] == 0:
            break
        parts.append(data.mean(axis=1))
        left -= data.shape[0]
    return np.concatenate(parts) if parts else np.zeros(0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def frame_power(y: ArrayOrTensor, frame: int) -> ArrayOrTensor:
    """Mean square of each whole ``frame``-sample frame along the last axis (a numpy array or a torch tensor).

    >>> frame_power(np.array([1.0, -1.0, 2.0, 2.0, 3.0]), 2).tolist()
    [1.0, 4.0]
    """
    n = y.shape[-1] // frame
    return (y[..., : n * frame].reshape(*y.shape[:-1], n, frame) ** 2).mean(-1)


def frame_rms_db(y: np.ndarray, frame: int) -> np.ndarray:
    """Level envelope of a note: RMS of each ``frame``-sample frame in dBFS, floored at −200 dB (the whole note's
    level when it is shorter than a frame).

    >>> frame_rms_db(np.array([0.5, -0.5, 0.0, 0.0]), 2).round(2).tolist()
    [-6.02, -200.0]
    """
    if len(y) < frame:
        return np.array([20 * math.log10(max(float(np.sqrt(np.mean(y**2))) if len(y) else 0.0, 1e-10))])
    return 20 * np.log10(np.maximum(np.sqrt(frame_power(y, frame)), 1e-10))


#: A recording's lead-in is taken for room noise (its floor) when its first ``NOISE_LEAD_S`` hold their level
#: within ``NOISE_RISE_DB`` and lie ``NOISE_BELOW_PEAK_DB`` or more under the loudest frame; the note starts where
#: the level first rises ``NOISE_RISE_DB`` above that floor.
NOISE_LEAD_S = 0.05
NOISE_RISE_DB = 6.0
NOISE_BELOW_PEAK_DB = 20.0


def onset_sample(y: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0) -> int:
    """First sample of the note: the first 2.9 ms frame within ``threshold_db`` of the loudest frame, or,
    when the recording opens on room noise louder than that, the end of the noise (:func:`noise_lead_in`)."""
    frame = max(1, int(sr * 0.0029))
    env = frame_rms_db(y, frame)
    return max(int(np.argmax(env >= env.max() + threshold_db)) * frame, noise_lead_in(y, sr))


def noise_lead_in(y: np.ndarray, sr: int = SAMPLE_RATE) -> int:
    """Samples of steady background (room noise, hum, hiss) before a note starts; 0 when there is none.

    The floor is the median level of the first ``NOISE_LEAD_S`` in 10 ms frames; the lead-in lasts until a
    frame rises ``NOISE_RISE_DB`` above it. It counts only when the floor lies ``NOISE_BELOW_PEAK_DB`` under the
    loudest frame and holds for ``NOISE_LEAD_S`` or more, so a note that starts on its first sample keeps it.
    """
    frame = max(1, int(sr * 0.01))
    env = frame_rms_db(y, frame)
    first = max(1, int(round(NOISE_LEAD_S / 0.01)))
    if len(env) <= first:
        return 0
    floor = float(np.median(env[:first]))
    if floor > env.max() - NOISE_BELOW_PEAK_DB:
        return 0
    rise = np.flatnonzero(env > floor + NOISE_RISE_DB)
    end = int(rise[0]) if len(rise) else 0
    if end < first:
        return 0
    # Within the 10 ms frame that rises: the first millisecond above the floor.
    fine = max(1, int(sr * 0.001))
    sub = frame_rms_db(y[end * frame : (end + 1) * frame], fine)
    return end * frame + int(np.argmax(sub > floor + NOISE_RISE_DB)) * fine


def check_note_duration(duration_s: float) -> None:
    """ParameterError unless ``duration_s`` lies in [MIN_NOTE_S, MAX_NOTE_S]."""
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s)
            and MIN_NOTE_S <= duration_s <= MAX_NOTE_S):
        raise ParameterError(f"duration_s={duration_s} (the note length) must be between {MIN_NOTE_S:g} and {MAX_NOTE_S:g} seconds")


def prepare_note(y: np.ndarray, sr: int = SAMPLE_RATE, duration_s: float = DEFAULT_DURATION_S) -> np.ndarray:
    """Make a note comparable to every other: onset-aligned, fixed length, loudness-normalised.

    Removes DC, starts 5 ms before the onset, cuts to ``duration_s`` with a
    50 ms fade-out or pads with silence, then scales so the RMS of the loud
    part (frames within 30 dB of the peak frame) is -20 dBFS, lowering it if
    the peak would exceed -1 dBFS.

    Returns
    -------
    np.ndarray float32 (round(duration_s · sr),)

    Raises
    ------
    AudioError("silent") for a note with no sound; ParameterError for a duration outside
    [MIN_NOTE_S, MAX_NOTE_S] (0.1 to 30 s).
    """
    check_note_duration(duration_s)
    n = int(round(duration_s * sr))
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ParameterError(f"y must be mono (n,), got shape {y.shape}")
    if len(y) == 0 or np.max(np.abs(y)) < 1e-6:
        raise AudioError("silent")
    y = y - y.mean()
    if np.max(np.abs(y)) < 1e-6:
        raise AudioError("silent: a constant (DC) offset, no sound")
    start = max(0, onset_sample(y, sr) - int(PRE_ONSET_S * sr))
    y = y[start : start + n]
    if len(y) == n:
        fade = min(int(FADE_OUT_S * sr), n)
        y = y.copy()
        y[n - fade :] *= np.linspace(1.0, 0.0, fade)
    else:
        y = np.pad(y, (0, n - len(y)))
    frame = max(1, int(sr * 0.0232))
    env = frame_rms_db(y, frame)
    loud = env >= env.max() - 30.0
    usable = len(y) // frame * frame
    frames = y[:usable].reshape(-1, frame)[loud[: usable // frame]] if usable else y[None]
    rms = float(np.sqrt(np.mean(frames**2))) if frames.size else float(np.sqrt(np.mean(y**2)))
    if rms < 1e-7:
        raise AudioError("silent")
    y = y * (10 ** (TARGET_RMS_DBFS / 20) / rms)
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    peak = float(np.max(np.abs(y)))
    if peak > ceiling:
        y = y * (ceiling / peak)
    return y.astype(np.float32)


def limited_peak(y: np.ndarray, ceiling: float = 0.99) -> np.ndarray:
    """``y`` scaled down to a peak of ``ceiling`` when it is louder (a WAV would clip it at 1); else ``y`` itself.

    >>> limited_peak(np.array([0.5, -2.0])).tolist()
    [0.2475, -0.99]
    """
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak * ceiling if peak > ceiling else y


def write_wav(path: str | Path, y: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_24",
              loop: tuple[int, int] | None = None, root_key: int = 60) -> Path:
    """Write a mono WAV atomically (temp file in the same folder, then rename); clips to [-1, 1].

    A crash or a full disk never leaves a partial file at ``path``. With ``loop`` = (start, end), end
    exclusive, a 'smpl' chunk records the forward sustain loop and the root key, which samplers read.
    """
    raw = wav_bytes(y, sr, subtype=subtype, loop=loop, root_key=root_key)
    return atomic_write(path, lambda fh: fh.write(raw), error=AudioError)


def wav_bytes(y: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_24", loop: tuple[int, int] | None = None,
              root_key: int = 60) -> bytes:
    """A mono WAV file in memory (clipped to [-1, 1]), with a 'smpl' loop chunk when ``loop`` is given."""
    data = np.clip(np.asarray(y, dtype=np.float32), -1.0, 1.0)
    if loop is not None and not (0 <= loop[0] < loop[1] <= len(data)):
        raise ParameterError(f"loop={loop} must satisfy 0 <= start < end <= {len(data)}")
    buf = io.BytesIO()
    sf.write(buf, data, sr, subtype=subtype, format="WAV")
    return buf.getvalue() if loop is None else _with_smpl_chunk(buf.getvalue(), sr, loop, root_key)


def _with_smpl_chunk(wav: bytes, sr: int, loop: tuple[int, int], root_key: int) -> bytes:
    """Append a RIFF 'smpl' chunk (one forward loop, end inclusive as the format says) and fix the RIFF size."""
    header = struct.pack("<9I", 0, 0, round(1e9 / sr), root_key, 0, 0, 0, 1, 0)
    body = header + struct.pack("<6I", 0, 0, loop[0], loop[1] - 1, 0, 0)
    chunk = b"smpl" + struct.pack("<I", len(body)) + body
    out = wav + chunk
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


def riff_chunks(data: bytes, start: int = 12, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(id, offset of its body, size) of each RIFF chunk from ``start`` (past the 12-byte file header) to ``end``.

    Bodies of odd size are followed by a pad byte (SoundFont reading and the tests' WAV 'smpl' reader use it).

    >>> riff = b"RIFF" + bytes(4) + b"WAVE" + b"abcd" + struct.pack("<I", 1) + b"x\\0" + b"efgh" + bytes(4)
    >>> list(riff_chunks(riff))
    [(b'abcd', 20, 1), (b'efgh', 30, 0)]
    """
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        yield data[pos : pos + 4], pos + 8, size
        pos += 8 + size + (size & 1)


def estimate_pitch_hz(y: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 50.0, fmax: float = 2000.0) -> float | None:
    """Fundamental frequency of a note (YIN cumulative-mean-normalised difference), or None if unpitched.

    The project's one pitch tracker (corpus checks, ``samplegen evaluate``, tuned exports, the instrument's
    keyboard). Analyses up to 0.5 s of the loudest part after the attack, refined by parabolic
    interpolation. Chosen by measurement (BENCHMARKS.md, "Pitch tracker"): within 1 cent on 95 % of
    synthetic tones from C2 to C6 in five timbres, where librosa's frame-wise YIN and pYIN (10-cent
    grid) erred by 6 cents at that percentile and basic-pitch's ONNX contour (33-cent bins) by an
    octave on tones without a fundamental; 2 ms a note against 0.1 to 0.4 s. It reports the
    periodicity: an organ with a 16' stop measures an octave low.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < int(sr / fmin) * 3 or np.max(np.abs(y)) < 1e-6:
        return None
    start = min(onset_sample(y, sr) + int(0.05 * sr), max(0, len(y) - int(0.2 * sr)))
    seg = y[start : start + int(0.5 * sr)]
    max_lag = int(sr / fmin)
    min_lag = max(2, int(sr / fmax))
    w = len(seg) - max_lag
    if w < max_lag:
        return None
    # difference function d(tau) = sum (x_j - x_{j+tau})^2 via FFT correlation
    x = seg
    energy = np.cumsum(np.concatenate([[0.0], x**2]))
    size = 1 << int(np.ceil(np.log2(len(x) + w)))
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(x[:w], size)), size)[: max_lag + 1]
    taus = np.arange(max_lag + 1)
    d = energy[w] + (energy[taus + w] - energy[taus]) - 2 * corr
    d[0] = 0.0
    cmnd = np.ones_like(d)
    cumsum = np.cumsum(d[1:])
    cmnd[1:] = d[1:] * np.arange(1, max_lag + 1) / np.maximum(cumsum, 1e-12)
    below = np.flatnonzero(cmnd[min_lag:] < 0.15)
    if len(below) == 0:
        return None
    tau = below[0] + min_lag
    while tau + 1 <= max_lag and cmnd[tau + 1] < cmnd[tau]:
        tau += 1
    if 1 <= tau < max_lag:
        a, b, c = cmnd[tau - 1], cmnd[tau], cmnd[tau + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0
    else:
        shift = 0.0
    return float(sr / (tau + shift))


def retune(y: np.ndarray, cents: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``y`` played ``cents`` higher (lower when negative) by resampling with soxr (VHQ), as a sampler would:
    the note gets shorter (longer) by the same ratio."""
    ratio = 2.0 ** (cents / 1200.0)
    return soxr.resample(np.asarray(y, dtype=np.float64), sr * ratio, sr, quality="VHQ").astype(np.float32)


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(hz: float) -> str:
    """The nearest equal-tempered note and the distance to it, e.g. "D4 +2 cents" (A4 = 440 Hz)."""
    midi = 69 + 12 * math.log2(hz / 440.0)
    nearest = int(round(midi))
    return f"{NOTE_NAMES[nearest % 12]}{nearest // 12 - 1} {100 * (midi - nearest):+.0f} cents"


def cents_between(hz: float, ref_hz: float = C4_HZ) -> float:
    """Interval from ``ref_hz`` to ``hz`` in cents (positive = sharp)."""
    if hz <= 0 or ref_hz <= 0:
        raise ParameterError(f"frequencies must be positive, got {hz} and {ref_hz}")
    return 1200.0 * math.log2(hz / ref_hz)


def estimate_pitches_hz(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """:func:`estimate_pitch_hz` of each row of ``audio`` (B, n): float64 (B,), NaN where a note is unpitched."""
    rows = np.atleast_2d(np.asarray(audio))
    return np.array([np.nan if (f := estimate_pitch_hz(y, sr)) is None else f for y in rows], dtype=np.float64)

