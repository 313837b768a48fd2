"""Small synthetic instrument notes for tests: harmonic tones at C4 with varied timbre."""

from __future__ import annotations

import numpy as np

SR = 44100
C4 = 261.6255653005986


def harmonic_note(seconds: float = 0.5, f0: float = C4, n_harmonics: int = 8, tilt: float = 1.0,
                  decay: float = 3.0, attack_s: float = 0.01, onset_s: float = 0.0, amp: float = 0.3,
                  sr: int = SR) -> np.ndarray:
    """A decaying harmonic tone: partial k has amplitude k^-tilt, envelope exp(-decay·t)."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    tone = sum(k ** -tilt * np.sin(2 * np.pi * k * f0 * t) for k in range(1, n_harmonics + 1))
    env = np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-decay * t)
    y = np.zeros(n)
    start = int(onset_s * sr)
    y[start:] = (tone * env)[: n - start]
    return (amp * y / np.max(np.abs(y))).astype(np.float32)


def note_family(count: int, seconds: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """``count`` notes whose timbre (tilt, decay, attack) varies smoothly: a learnable space."""
    rng = np.random.default_rng(seed)
    return [
        harmonic_note(seconds, tilt=float(rng.uniform(0.5, 2.5)), decay=float(rng.uniform(0.5, 6.0)),
                      attack_s=float(rng.uniform(0.002, 0.05)), n_harmonics=int(rng.integers(3, 12)))
        for _ in range(count)
    ]
