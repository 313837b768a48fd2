"""Sustain loops for sampler exports and the instrument: where a held note can repeat without being heard.

A sampler holds a note past the end of its sample by looping a stretch of it.
The stretch must

(a) lie where the note *sustains*: its level, averaged over ``LEVEL_S`` (which
    evens out tremolo), follows no trend steeper than ``MAX_SLOPE_DB_PER_S``,
    stays within ``STEADY_DB`` (slow beating and swells) and within
    ``SUSTAIN_BELOW_PEAK_DB`` of the note's peak for ``SUSTAIN_SHARE`` of the
    note or more, so a decaying note (a celesta, a piano) is played one-shot
    instead of droning on;
(b) end before the release: the level at the loop's end, and just after it, is
    that of the loop (a loop that crosses the release dips every time round);
(c) be as long as the sustain allows (up to ``MAX_LOOP_S``): a long loop
    repeats chorus, beating and vibrato less audibly than a short one;
(d) start and end on rising zero crossings whose surroundings look alike: the
    envelope over ``MATCH_ENVELOPE_S`` (tremolo and beating continue in phase),
    then the waveform (normalised cross-correlation over ``MATCH_S``), and
(e) be joined by a crossfade written into the sample (:func:`crossfaded`):
    the last ``CROSSFADE_S`` before the end fade into the audio just before the
    start, with gains that keep the level steady for the measured correlation of
    the two (equal power for unrelated audio, linear for identical audio).

:func:`loop_ripple_db` measures the result: the level of the sound played
through its loop, peak to peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import correlate

from samplegen.audio.audio_io import frame_power
from samplegen.errors import ParameterError

FRAME_S = 0.01
#: Window over which the sustain's level is averaged (evens out tremolo and beating up to 4 Hz).
LEVEL_S = 0.25
MATCH_S = 0.02
#: Envelope compared before the loop's start and end; a start whose envelope differs by more than the best
#: start's plus ``ENVELOPE_SLACK_DB`` is not taken, however well its waveform matches.
MATCH_ENVELOPE_S = 0.2
ENVELOPE_SLACK_DB = 0.5
MIN_LOOP_S = 0.2
MAX_LOOP_S = 1.5
#: The averaged level may move this much over the loop (peak to peak: slow beating and swells) but
#: follow no trend steeper than ``MAX_SLOPE_DB_PER_S`` (least squares)...
STEADY_DB = 8.0
MAX_SLOPE_DB_PER_S = 3.0
#: ...and lie no further than this under the note's peak: below it is a tail, not a sustain...
SUSTAIN_BELOW_PEAK_DB = 15.0
#: ...for at least this share of the note (the corpus holds each key for 75 % of the note; a celesta holds its
#: level for its first quarter, then decays).
SUSTAIN_SHARE = 0.4
#: The loop's last 50 ms may be this much under the loop's level, no more, and the ``AFTER_S`` after it
#: ``AFTER_DROP_DB``: the release has not begun and does not begin right after the loop.
RELEASE_DROP_DB = 1.0
AFTER_S = 0.15
AFTER_DROP_DB = 1.5
#: Longest crossfade; it never takes more than a third of the loop.
CROSSFADE_S = 0.08
#: Window of the level measured by :func:`loop_ripple_db`.
RIPPLE_WINDOW_S = 0.05


@dataclass(frozen=True)
class Loop:
    """A forward loop: sample ``start`` (inclusive) to ``end`` (exclusive); ``correlation`` of the junction's
    surroundings; ``crossfade`` samples before ``end`` are faded into those before ``start`` (:func:`crossfaded`)."""

    start: int
    end: int
    correlation: float
    crossfade: int = 0


def _db(power: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-20))


def _rising_zero_crossings(y: np.ndarray) -> np.ndarray:
    return np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0)) + 1


def _sustain(y: np.ndarray, sr: int, tail_s: float) -> tuple[int, int] | None:
    """The loop's stretch in samples: the last ``MAX_LOOP_S`` of the longest stretch that sustains by (a) and (b),
    or None when no stretch does for ``SUSTAIN_SHARE`` of the note."""
    frame = int(FRAME_S * sr)
    power = frame_power(y, frame)
    width = max(1, int(round(LEVEL_S / FRAME_S)))
    if len(power) < 2 * width:
        return None
    # level[i]: mean power of frames i .. i + width - 1, in dB (frame i's level looking ahead)
    level = _db(np.convolve(power, np.ones(width) / width, mode="valid"))
    floor = float(level.max()) - SUSTAIN_BELOW_PEAK_DB
    last = len(power) - int(round(tail_s / FRAME_S))  # frames before this one may be in the loop
    tail, after_frames = int(round(0.05 / FRAME_S)), int(round(AFTER_S / FRAME_S))
    # Least-squares slope of level[a..b] from running sums, in dB per second.
    x = np.arange(len(level)) * FRAME_S
    cx, cy = np.concatenate([[0], np.cumsum(x)]), np.concatenate([[0], np.cumsum(level)])
    cxx, cxy = np.concatenate([[0], np.cumsum(x * x)]), np.concatenate([[0], np.cumsum(x * level)])
    best = (0, 0)
    for end in range(last, width - 1, -1):
        if end <= best[1] - best[0]:
            break  # no stretch ending here can be longer
        top = end - width  # the last averaged window lying wholly inside the stretch
        a = np.arange(top + 1)  # first averaged window of each candidate stretch: stretch [a, end)
        window = level[a[::-1]]
        band = (np.maximum.accumulate(window) - np.minimum.accumulate(window))[::-1]
        low = np.minimum.accumulate(window)[::-1]
        n = top + 1 - a
        sx, sy = cx[top + 1] - cx[a], cy[top + 1] - cy[a]
        sxx, sxy = cxx[top + 1] - cxx[a], cxy[top + 1] - cxy[a]
        denom = n * sxx - sx * sx
        slope = np.where(denom > 0, (n * sxy - sx * sy) / np.where(denom > 0, denom, 1.0), 0.0)
        ok = (band <= STEADY_DB) & (low >= floor) & (np.abs(slope) <= MAX_SLOPE_DB_PER_S)
        fits = np.flatnonzero(ok)
        if len(fits) == 0:
            continue
        first = int(fits[0])  # the longest stretch ending here
        mean = float(_db(np.mean(power[first:end])))
        after = power[end : end + after_frames]
        released = (float(_db(np.mean(power[end - tail : end]))) < mean - RELEASE_DROP_DB
                    or (len(after) > 0 and float(_db(np.mean(after))) < mean - AFTER_DROP_DB))
        if not released and end - first > best[1] - best[0]:
            best = (first, end)
    start, end = best
    if (end - start) * frame < SUSTAIN_SHARE * len(y):
        return None
    return max(start, end - int(round(MAX_LOOP_S / FRAME_S))) * frame, end * frame


def _envelope_mismatch_db(y: np.ndarray, points: np.ndarray, end: int, sr: int) -> np.ndarray:
    """Mean |level difference| (dB, 10 ms frames) between the ``MATCH_ENVELOPE_S`` before each point and before
    ``end``: a loop whose start matches continues the note's tremolo or beating in phase."""
    frame = int(FRAME_S * sr)
    k = int(round(MATCH_ENVELOPE_S / FRAME_S))

    def env(at: int) -> np.ndarray:
        return _db(frame_power(y[at - k * frame : at], frame))

    ref = env(end)
    return np.array([float(np.mean(np.abs(env(int(p)) - ref))) for p in points])


def find_loop(y: np.ndarray, sr: int = 44100, tail_s: float = 0.1) -> Loop | None:
    """A sustain loop of a note (see the module's docstring), or None when the note does not sustain.

    Parameters
    ----------
    y : float (n,) mono note
    sr : sample rate in Hz
    tail_s : the end of the note left out of the search (its fade-out)

    Play it with :func:`crossfaded` audio: the loop's junction is smooth only there.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ParameterError(f"y must be mono (n,), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ParameterError("y holds NaN or Inf")
    window = _sustain(y, sr, tail_s)
    if window is None:
        return None
    lo, hi = window
    crossings = _rising_zero_crossings(y[lo:hi]) + lo
    if len(crossings) < 2:
        return None
    m = int(MATCH_S * sr)
    end = int(crossings[-1])
    template = y[end - m : end]
    # Starts in the first third of the sustain keep the loop long; each must leave a crossfade's room before it.
    candidates = crossings[(crossings >= max(lo, m)) & (crossings <= lo + (hi - lo) // 3)
                           & (crossings <= end - int(MIN_LOOP_S * sr))]
    if len(candidates) == 0 or not np.any(template):
        return None
    region = y[candidates[0] - m : candidates[-1]]
    dots = correlate(region, template, mode="valid", method="fft")
    energy = np.convolve(region**2, np.ones(m), mode="valid")
    ncc = dots / np.sqrt(np.maximum(energy, 1e-20) * float(template @ template))
    scores = ncc[candidates - candidates[0]]
    if candidates[0] >= int(MATCH_ENVELOPE_S * sr):
        mismatch = _envelope_mismatch_db(y, candidates, end, sr)
        scores = np.where(mismatch <= mismatch.min() + ENVELOPE_SLACK_DB, scores, -np.inf)
    best = int(np.argmax(scores))
    start = int(candidates[best])
    fade = min(int(CROSSFADE_S * sr), (end - start) // 3, start)
    return Loop(start, end, float(scores[best]), fade)


def crossfaded(y: np.ndarray, loop: Loop) -> np.ndarray:
    """``y`` with the loop's crossfade written in: the ``loop.crossfade`` samples before ``loop.end`` fade from
    themselves into the samples before ``loop.start``, so playback jumping from the end to the start continues
    the waveform. The gains keep the level for the two stretches' measured correlation ρ:
    a² + b² + 2ρab = 1 with a = 1 − t, b = t before normalising. Float32 like the input."""
    out = np.array(y, dtype=np.float32, copy=True)
    n = loop.crossfade
    if n <= 0:
        return out
    tail = np.asarray(y[loop.end - n : loop.end], dtype=np.float64)
    head = np.asarray(y[loop.start - n : loop.start], dtype=np.float64)
    norm = float(np.sqrt((tail @ tail) * (head @ head)))
    rho = float(np.clip((tail @ head) / norm, -0.5, 1.0)) if norm > 0 else 0.0
    t = (np.arange(n) + 0.5) / n
    a, b = 1.0 - t, t
    gain = 1.0 / np.sqrt(a**2 + b**2 + 2 * rho * a * b)
    out[loop.end - n : loop.end] = (gain * (a * tail + b * head)).astype(np.float32)
    return out


def played_through_loop(y: np.ndarray, loop: Loop, passes: int = 3) -> np.ndarray:
    """What a sampler plays while the key is held: the sample up to the loop's end, then the loop ``passes`` - 1
    more times (``y`` as stored, crossfade included)."""
    y = np.asarray(y)
    return np.concatenate([y[: loop.end]] + [y[loop.start : loop.end]] * (passes - 1))


def level_ripple_db(y: np.ndarray, sr: int = 44100) -> float:
    """Peak-to-peak of the level (RMS over ``RIPPLE_WINDOW_S``, hop 10 ms) of ``y``, in dB."""
    y = np.asarray(y, dtype=np.float64)
    win, hop = int(RIPPLE_WINDOW_S * sr), int(FRAME_S * sr)
    if len(y) < win:
        raise ParameterError(f"{len(y)} samples are fewer than the {RIPPLE_WINDOW_S * 1000:.0f} ms ripple window")
    levels = _db(np.convolve(y**2, np.ones(win) / win, mode="valid")[::hop])
    return float(levels.max() - levels.min())


def loop_ripple_db(y: np.ndarray, loop: Loop, sr: int = 44100, passes: int = 3) -> float:
    """Level ripple inside the loop: :func:`level_ripple_db` of the held note from the loop's start through
    ``passes`` passes (``y`` as stored, crossfade included). The note's own ripple over the same stretch
    (``level_ripple_db(y[loop.start:loop.end])``: vibrato, tremolo, beating) is its floor."""
    return level_ripple_db(played_through_loop(y, loop, passes)[loop.start :], sr)
