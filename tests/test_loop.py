"""Sustain loops: only what sustains is looped, never across the release, and the held level stays steady."""

from __future__ import annotations

import numpy as np
import pytest

from samplegen.audio.sustain_loop import (Loop, crossfaded, find_loop, level_ripple_db, loop_ripple_db,
                                         played_through_loop)
from synth import C4, SR

HOLD_S = 1.5  # as the corpus renders: the key is held 1.5 s of a 2-second note


def _note(envelope: np.ndarray, f0: float = C4, detune_hz: float = 0.0) -> np.ndarray:
    """A harmonic tone (a second, detuned voice when ``detune_hz``: it beats) shaped by ``envelope``."""
    t = np.arange(len(envelope)) / SR
    tone = sum(k**-1.0 * np.sin(2 * np.pi * k * f0 * t + k) for k in range(1, 7))
    if detune_hz:
        tone = tone + sum(k**-1.0 * np.sin(2 * np.pi * k * (f0 + detune_hz) * t) for k in range(1, 7))
    y = envelope * tone
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def _held(seconds: float = 2.0, release_s: float = 0.3) -> np.ndarray:
    """Attack 20 ms, steady while the key is held, then an exponential release (60 dB over ``release_s``)."""
    t = np.arange(int(seconds * SR)) / SR
    release = np.where(t < HOLD_S, 1.0, 10 ** (-3 * (t - HOLD_S) / release_s))
    return np.minimum(1.0, t / 0.02) * release


def test_a_sustained_note_loops_before_its_release_with_a_steady_level():
    y = _note(_held())
    loop = find_loop(y)
    assert loop is not None and loop.end <= HOLD_S * SR  # never across the release
    assert loop.end - loop.start >= 0.5 * SR  # as long as the sustain allows, not a short buzz
    stored = crossfaded(y, loop)
    assert loop_ripple_db(stored, loop) <= 1.0
    # The crossfade makes the jump from the end back to the start continue the waveform.
    held = played_through_loop(stored, loop, passes=2)
    jump = np.abs(np.diff(held[loop.end - 50 : loop.end + 50])).max()
    assert jump <= 1.5 * np.abs(np.diff(y[loop.start - 50 : loop.start + 50])).max()


def test_a_loop_across_the_release_is_what_the_ripple_measure_catches():
    y = _note(_held())
    across = Loop(int(0.5 * SR), int(1.7 * SR), 1.0)  # ends 200 ms into the release: it pumps every pass
    assert loop_ripple_db(y, across) > 10.0


@pytest.mark.parametrize("shape", ["pluck", "celesta"])
def test_a_decaying_note_is_played_one_shot_not_looped_into_a_drone(shape):
    t = np.arange(2 * SR) / SR
    if shape == "pluck":
        env = np.minimum(1.0, t / 0.005) * np.exp(-3.0 * t)  # 26 dB/s
    else:  # holds its level for its first half second, then decays 10 dB/s while the key is still down
        env = np.minimum(1.0, t / 0.005) * 10 ** (-np.maximum(0.0, t - 0.5) * 10 / 20)
    assert find_loop(_note(env)) is None


def test_a_tremolo_note_loops_in_phase_and_the_loop_adds_no_ripple():
    t = np.arange(2 * SR) / SR
    tremolo = 10 ** (3 * np.sin(2 * np.pi * 5.3 * t) / 20)  # ±3 dB at 5.3 Hz
    y = _note(_held() * tremolo)
    loop = find_loop(y)
    assert loop is not None and loop.end <= HOLD_S * SR
    own = level_ripple_db(y[loop.start : loop.end])
    assert own > 4.0  # the tremolo itself is there...
    assert loop_ripple_db(crossfaded(y, loop), loop) <= own + 1.0  # ...and the loop does not add to it


def test_a_beating_pad_is_looped_so_it_does_not_stop_dead_while_held():
    y = _note(_held(release_s=1.0), detune_hz=1.3)  # two voices beating at 1.3 Hz: level swings of many dB
    loop = find_loop(y)
    assert loop is not None and loop.end <= HOLD_S * SR
    assert loop_ripple_db(crossfaded(y, loop), loop) <= level_ripple_db(y[loop.start : loop.end]) + 1.0


def test_silence_and_bad_input():
    assert find_loop(np.zeros(SR, dtype=np.float32)) is None
    with pytest.raises(Exception, match="mono"):
        find_loop(np.zeros((2, SR)))
