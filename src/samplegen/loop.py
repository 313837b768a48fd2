"""Sustain loops for sampler exports: where a held note can repeat without a click.

A sampler holds a note past the end of its sample by looping a stretch of it.
The stretch must (a) lie in the sustained part of the note, (b) start and end
on rising zero crossings, and (c) end with samples that look like the ones
just before its start, so the jump back continues the waveform. (c) is found
by normalised cross-correlation of the last ``MATCH_S`` before the end with
every candidate start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import correlate

from samplegen.errors import ParameterError

FRAME_S = 0.01
MATCH_S = 0.02
MIN_LOOP_S = 0.1
#: A note counts as sustained if, over the loop window, it stays within this many dB of its peak...
SUSTAIN_FLOOR_DB = -30.0
#: ...and decays no faster than this (dB per second, least-squares slope over the window).
MAX_DECAY_DB_PER_S = 6.0
#: Loops whose junction correlates worse than this are refused (the note is played one-shot).
MIN_CORRELATION = 0.9


@dataclass(frozen=True)
class Loop:
    """A forward loop: sample ``start`` (inclusive) to ``end`` (exclusive); ``correlation`` of the junction."""

    start: int
    end: int
    correlation: float


def _envelope_db(y: np.ndarray, frame: int) -> np.ndarray:
    n = len(y) // frame
    rms = np.sqrt(np.mean(y[: n * frame].reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def _rising_zero_crossings(y: np.ndarray) -> np.ndarray:
    return np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0)) + 1


def _sustained_window(y: np.ndarray, sr: int, frame: int, tail_s: float) -> tuple[int, int] | None:
    """The latest stretch (0.25 to 1 s, after the attack) where the note holds its level, in samples."""
    if len(y) < frame:
        return None
    env = _envelope_db(y, frame)
    peak = int(np.argmax(env))
    first = peak + int(0.1 / FRAME_S)
    last = len(env) - int(tail_s / FRAME_S)
    shortest, longest = int(2.5 * MIN_LOOP_S / FRAME_S), int(1.0 / FRAME_S)
    for end in range(last, first + shortest - 1, -1):
        start = max(first, end - longest)
        w = env[start:end]
        slope = np.polyfit(np.arange(len(w)) * FRAME_S, w, 1)[0]
        if w.min() >= env[peak] + SUSTAIN_FLOOR_DB and slope >= -MAX_DECAY_DB_PER_S:
            return start * frame, end * frame
    return None


def find_loop(y: np.ndarray, sr: int = 44100, tail_s: float = 0.1) -> Loop | None:
    """A click-free sustain loop of a note, or None when the note decays (play it one-shot).

    Parameters
    ----------
    y : float (n,) mono note
    sr : sample rate in Hz
    tail_s : the end of the note left out of the search (its fade-out)
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ParameterError(f"y must be mono (n,), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ParameterError("y holds NaN or Inf")
    frame = int(FRAME_S * sr)
    window = _sustained_window(y, sr, frame, tail_s)
    if window is None:
        return None
    lo, hi = window
    crossings = _rising_zero_crossings(y[lo:hi]) + lo
    if len(crossings) < 2:
        return None
    m = int(MATCH_S * sr)
    end = int(crossings[-1])
    template = y[end - m : end]
    region = y[lo - m if lo >= m else 0 : end - int(MIN_LOOP_S * sr)]
    offset = lo - m if lo >= m else 0
    if len(region) < m or np.linalg.norm(template) == 0:
        return None
    # Normalised cross-correlation of the template with every window of the region (FFT-based).
    dots = correlate(region, template, mode="valid", method="fft")
    energy = np.convolve(region**2, np.ones(m), mode="valid")
    ncc = dots / np.sqrt(np.maximum(energy, 1e-20) * float(template @ template))
    # A candidate start s means the window y[s - m : s] should match the template.
    starts = crossings[(crossings >= offset + m) & (crossings <= end - int(MIN_LOOP_S * sr))]
    if len(starts) == 0:
        return None
    scores = ncc[starts - m - offset]
    best = int(np.argmax(scores))
    if scores[best] < MIN_CORRELATION:
        return None
    return Loop(int(starts[best]), end, float(scores[best]))
