"""The instrument's sound engine: every gesture of `samplegen play` as a latent point, then a note.

The page never does latent arithmetic itself: a map click, a pad position, a knob turn, a
"surprise me" or a "vary" each becomes a latent point here, which is decoded into a playable
note together with what the page shows of it (its place on the map, its knob positions, a
spectrogram, a sustain loop). Keeping that here makes every gesture testable without a browser.

Knobs are the principal axes of the corpus's posterior means (the directions along which the
learned sounds differ most), at most :data:`MAX_KNOBS` of them, each labelled by the measured
descriptor it changes most (brightness, attack, decay, loudness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from samplegen import spectral
from samplegen.audio import SAMPLE_RATE, estimate_pitch_hz, offset_from_c4_cents, wav_bytes
from samplegen.checkpoint import Run
from samplegen.errors import ParameterError
from samplegen.generate import decode_features, decode_magnitude, magnitude_from_features
from samplegen.phase_features import features_to_waveform
from samplegen.loop import find_loop

MAX_KNOBS = 8
#: Knob positions are in standard deviations of the corpus along the knob's axis.
KNOB_RANGE = 3.0
#: Largest |z_i| accepted from a client, unless the run's own corpus points reach further (a weak KL
#: term lets a few posterior means stray far): the prior puts 1 in 10^15 draws beyond 8.
Z_LIMIT = 8.0
MAX_TEMPERATURE = 3.0
MAX_AMOUNT = 3.0
#: Peak level notes are normalised to, and the most gain normalisation may add (a near-silent
#: output stays near silent instead of being blown up into noise).
PEAK = 0.89
MAX_GAIN_DB = 30.0
SPECTROGRAM_ROWS = 96
SPECTROGRAM_RANGE_DB = 80.0
#: A knob whose largest measured effect is below this many corpus standard deviations gets no name.
MIN_LABEL_EFFECT = 0.25

DESCRIPTORS = {
    "brightness": ("Brightness", "brighter", "darker"),
    "attack": ("Attack", "slower attack", "faster attack"),
    "decay": ("Sustain", "longer sustain", "shorter decay"),
    "noisiness": ("Noise", "noisier", "purer"),
}


@dataclass(frozen=True)
class Knob:
    """One macro control: an axis of the latent space and what turning it up does."""

    index: int
    label: str
    hint: str
    effect: float  # the descriptor change per +1 position, in corpus standard deviations


@dataclass
class Note:
    """One playable note and what the page shows of it."""

    z: np.ndarray  # (L,)
    wav: bytes  # 24-bit WAV with a 'smpl' loop chunk when the note has a sustain loop
    map_xy: tuple[float, float]
    knobs: list[float]
    spectrogram: np.ndarray  # uint8 (SPECTROGRAM_ROWS, frames), low frequencies first
    loop: tuple[int, int] | None
    peak: float
    rms_db: float
    source: str
    root: float = 60.0  # the MIDI key (fractional) at which the note plays at its own measured pitch


def describe(mag: torch.Tensor, cfg: spectral.StftConfig, sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Descriptors of magnitudes Tensor[B x F x T] that a musician can name, one value per note.

    brightness: energy-weighted spectral centroid (log2 Hz); attack: seconds to the first frame
    within 3 dB of the loudest; decay: level of the second half relative to the first (dB);
    noisiness: mean spectral flatness (dB) of the frames within 40 dB of the loudest. Level is left
    out on purpose: the instrument normalises every note's peak, so a level knob would do nothing.
    """
    power = mag.double().pow(2).cpu().numpy() + 1e-20  # B x F x T
    freqs = np.arange(power.shape[1]) * sr / cfg.n_fft
    frame_energy = power.sum(axis=1)  # B x T
    centroid = (power * freqs[None, :, None]).sum(axis=(1, 2)) / frame_energy.sum(axis=1)
    frame_db = 10 * np.log10(frame_energy)
    first_loud = np.argmax(frame_db >= frame_db.max(axis=1, keepdims=True) - 3.0, axis=1)
    half = frame_energy.shape[1] // 2
    decay = 10 * np.log10(frame_energy[:, half:].mean(axis=1) / frame_energy[:, :half].mean(axis=1))
    flatness_db = 10 * np.log10(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1))  # B x T
    loud = frame_db >= frame_db.max(axis=1, keepdims=True) - 40.0
    return {
        "brightness": np.log2(np.maximum(centroid, 1.0)),
        "attack": first_loud * cfg.hop_length / sr,
        "decay": decay,
        "noisiness": (flatness_db * loud).sum(axis=1) / loud.sum(axis=1),
    }


def principal_axes(mu: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (L,), the ``k`` leading principal axes (k, L) and the corpus's spread along each (k,)."""
    x = mu.double().numpy()
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    sd = s / math.sqrt(max(len(x) - 1, 1))
    k = min(k, vt.shape[0])
    axes = vt[:k]
    # A sign convention so the same run always gets the same knob directions.
    signs = np.where(axes[np.arange(k), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)
    return mean, axes * signs[:, None], np.maximum(sd[:k], 1e-6)


class Instrument:
    """A trained run as an instrument: gestures in, notes out. Thread-safe for rendering."""

    def __init__(self, run: Run, n_knobs: int = MAX_KNOBS, seed: int = 0):
        if run.latent_mu.shape[0] < 2:
            raise ParameterError("the run's corpus has fewer than 2 notes; the instrument needs a map to play on")
        self.run = run
        self.latent_dim = int(run.latent_mu.shape[1])
        self.n_samples = run.config.data.n_samples
        self.mu = run.latent_mu.double().numpy()
        self.z_limit = float(max(Z_LIMIT, 2.0 * np.abs(self.mu).max()))
        self.mean, axes, sd = principal_axes(run.latent_mu, max(2, min(n_knobs, MAX_KNOBS)))
        self.map_axes, self.map_sd = axes[:2], sd[:2]
        n = max(1, min(n_knobs, MAX_KNOBS, self.latent_dim))
        self.knob_axes, self.knob_sd = axes[:n], sd[:n]
        self.map_points = self.project_map(self.mu)
        self.knobs = self._label_knobs(seed)

    # --- geometry -------------------------------------------------------------------------
    def project_map(self, z: np.ndarray) -> np.ndarray:
        """Latent points (..., L) → 2-D map coordinates (..., 2) in corpus standard deviations."""
        return ((np.asarray(z, dtype=np.float64) - self.mean) @ self.map_axes.T) / self.map_sd

    def knob_positions(self, z: np.ndarray) -> np.ndarray:
        """Where each knob stands for point ``z``: its coordinate along the knob's axis, in corpus SDs."""
        return ((np.asarray(z, dtype=np.float64) - self.mean) @ self.knob_axes.T) / self.knob_sd

    def check_z(self, z: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = np.asarray(z, dtype=np.float64)
        if arr.shape != (self.latent_dim,):
            raise ParameterError(f"z must hold {self.latent_dim} numbers (this run's latent size), got {arr.size}")
        if not np.isfinite(arr).all() or np.abs(arr).max(initial=0.0) > self.z_limit:
            raise ParameterError(f"z must be finite numbers within ±{self.z_limit:.3g} for this run")
        return arr

    def check_sound(self, index: int) -> int:
        if not 0 <= index < len(self.mu):
            raise ParameterError(f"sound {index} does not exist; this run has sounds 0 to {len(self.mu) - 1}")
        return index

    # --- gestures -------------------------------------------------------------------------
    def corpus_point(self, index: int) -> np.ndarray:
        return self.mu[self.check_sound(index)].copy()

    def blend(self, corners: Sequence[int], x: float, y: float) -> np.ndarray:
        """The XY pad: bilinear blend of four corner sounds (top-left, top-right, bottom-left, bottom-right)."""
        if len(corners) != 4:
            raise ParameterError(f"the pad needs 4 corner sounds, got {len(corners)}")
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ParameterError(f"pad position ({x}, {y}) must lie within [0, 1] x [0, 1]")
        z = [self.corpus_point(c) for c in corners]
        return (1 - x) * (1 - y) * z[0] + x * (1 - y) * z[1] + (1 - x) * y * z[2] + x * y * z[3]

    def surprise(self, temperature: float, seed: int) -> np.ndarray:
        """A random draw from the prior N(0, T²·I)."""
        if not (0.0 < temperature <= MAX_TEMPERATURE):
            raise ParameterError(f"temperature={temperature} must be in (0, {MAX_TEMPERATURE}]")
        rng = np.random.default_rng(seed)
        return np.clip(rng.standard_normal(self.latent_dim) * temperature, -self.z_limit, self.z_limit)

    def vary(self, z: Sequence[float] | np.ndarray, amount: float, seed: int) -> np.ndarray:
        """Nudge a point by Gaussian noise of standard deviation ``amount`` (in prior units)."""
        base = self.check_z(z)
        if not (0.0 <= amount <= MAX_AMOUNT):
            raise ParameterError(f"amount={amount} must be in [0, {MAX_AMOUNT}]")
        rng = np.random.default_rng(seed)
        return np.clip(base + amount * rng.standard_normal(self.latent_dim), -self.z_limit, self.z_limit)

    def turn_knobs(self, z: Sequence[float] | np.ndarray, positions: Sequence[float] | np.ndarray) -> np.ndarray:
        """Move ``z`` so that each knob stands at the given position (corpus SDs along its axis)."""
        base = self.check_z(z)
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (len(self.knobs),):
            raise ParameterError(f"give {len(self.knobs)} knob positions, got {pos.size}")
        if not np.isfinite(pos).all() or np.abs(pos).max(initial=0.0) > KNOB_RANGE:
            raise ParameterError(f"knob positions must be finite and within ±{KNOB_RANGE}")
        delta = (pos - self.knob_positions(base)) * self.knob_sd
        return np.clip(base + delta @ self.knob_axes, -self.z_limit, self.z_limit)

    # --- sound ----------------------------------------------------------------------------
    def render(self, z: Sequence[float] | np.ndarray, source: str = "") -> Note:
        """Decode a point into a playable note (normalised, looped where it sustains) and its pictures."""
        point = self.check_z(z)
        feats = decode_features(self.run, torch.from_numpy(point[None]).float())
        mag = magnitude_from_features(self.run, feats)
        with torch.no_grad():  # the run's own way back (phase retrieval, or IF integration for a phase-aware run)
            wave = features_to_waveform(feats, self.run.config.stft, self.run.config.phase,
                                        self.n_samples).cpu().numpy()[0].astype(np.float64)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        gain = min(PEAK / peak, 10 ** (MAX_GAIN_DB / 20)) if peak > 0 else 1.0
        audio = np.clip(wave * gain, -1.0, 1.0).astype(np.float32)
        found = find_loop(audio, SAMPLE_RATE)
        loop = (found.start, found.end) if found is not None else None
        wav = wav_bytes(audio, SAMPLE_RATE, loop=loop)
        rms = float(np.sqrt(np.mean(wave**2))) if wave.size else 0.0
        xy = self.project_map(point)
        hz = estimate_pitch_hz(audio, SAMPLE_RATE)  # the keyboard plays it in tune, whatever its own pitch
        return Note(z=point, wav=wav, map_xy=(float(xy[0]), float(xy[1])),
                    knobs=[float(v) for v in self.knob_positions(point)], spectrogram=self._spectrogram(mag[0]),
                    loop=loop, peak=peak, rms_db=20 * math.log10(max(rms, 1e-10)), source=source,
                    root=60.0 + (offset_from_c4_cents(hz) / 100 if hz is not None else 0.0))

    def _spectrogram(self, mag: torch.Tensor) -> np.ndarray:
        """Magnitude Tensor[F x T] → uint8 image (rows low to high on a log-frequency axis, 80 dB range)."""
        m = mag.double().cpu().numpy()
        freqs = np.arange(m.shape[0]) * SAMPLE_RATE / self.run.config.stft.n_fft
        edges = np.geomspace(30.0, SAMPLE_RATE / 2, SPECTROGRAM_ROWS + 1)
        rows = np.empty((SPECTROGRAM_ROWS, m.shape[1]))
        for i in range(SPECTROGRAM_ROWS):
            sel = (freqs >= edges[i]) & (freqs < edges[i + 1])
            rows[i] = m[sel].max(axis=0) if sel.any() else m[np.argmin(np.abs(freqs - edges[i]))]
        db = 20 * np.log10(np.maximum(rows, 1e-10))
        top = db.max()
        scaled = np.clip((db - (top - SPECTROGRAM_RANGE_DB)) / SPECTROGRAM_RANGE_DB, 0.0, 1.0)
        return np.round(scaled * 255).astype(np.uint8)

    def _label_knobs(self, seed: int, n_bases: int = 32) -> list[Knob]:
        """Name each knob by what it measurably changes, each name given once, to the knob that changes it most.

        Each axis is nudged by ±1 corpus SD around ``n_bases`` corpus points; the mean change of each
        descriptor, divided by that descriptor's spread over the corpus, is the knob's effect on it.
        Knobs left without a name are "Timbre N", their hint listing their two largest effects.
        """
        rng = np.random.default_rng(seed)
        bases = self.mu[rng.choice(len(self.mu), size=min(n_bases, len(self.mu)), replace=False)]
        cfg = self.run.config.stft
        spread = describe(decode_magnitude(self.run, torch.from_numpy(self.mu).float()), cfg)
        effects = []
        for axis, sd in zip(self.knob_axes, self.knob_sd):
            up = describe(decode_magnitude(self.run, torch.from_numpy(bases + sd * axis).float()), cfg)
            down = describe(decode_magnitude(self.run, torch.from_numpy(bases - sd * axis).float()), cfg)
            effects.append({name: float(np.mean(up[name] - down[name]) / 2 / max(float(np.std(spread[name])), 1e-9))
                            for name in DESCRIPTORS})
        named: dict[int, str] = {}
        pairs = sorted(((abs(e[d]), k, d) for k, e in enumerate(effects) for d in DESCRIPTORS), reverse=True)
        for size, k, d in pairs:
            if size >= MIN_LABEL_EFFECT and k not in named and d not in named.values():
                named[k] = d
        knobs = []
        for k, e in enumerate(effects):
            if k in named:
                d = named[k]
                title, more, less = DESCRIPTORS[d]
                knobs.append(Knob(k, title, f"turn up: {more if e[d] > 0 else less}", e[d]))
                continue
            top = sorted(DESCRIPTORS, key=lambda name: -abs(e[name]))[:2]
            words = [DESCRIPTORS[d][1] if e[d] > 0 else DESCRIPTORS[d][2] for d in top if abs(e[d]) >= MIN_LABEL_EFFECT]
            hint = f"turn up: {', '.join(words)}" if words else "no single measured quality dominates"
            knobs.append(Knob(k, f"Timbre {k + 1}", hint, e[top[0]]))
        return knobs

    def map_view(self, percent: float = 2.0) -> tuple[float, float, float, float]:
        """The part of the map the page shows: (x0, y0, x1, y1) spanning the ``percent``-th to the
        ``100 - percent``-th percentile on each axis, so a few far-flung notes (a weak KL term lets some
        posterior means stray far) do not squeeze the rest of the corpus into a corner."""
        lo = np.percentile(self.map_points, percent, axis=0)
        hi = np.percentile(self.map_points, 100 - percent, axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def default_corners(self) -> list[int]:
        """Four sounds far apart on the map for the pad's corners: the ones nearest the corners of the
        5th-95th percentile box (the bounding box's corners would pick outliers)."""
        p = self.map_points
        lo, hi = np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)
        targets = [(lo[0], hi[1]), (hi[0], hi[1]), (lo[0], lo[1]), (hi[0], lo[1])]
        chosen: list[int] = []
        for t in targets:
            order = np.argsort(((p - np.asarray(t)) ** 2).sum(axis=1))
            chosen.append(int(next((i for i in order if i not in chosen), order[0])))
        return chosen
