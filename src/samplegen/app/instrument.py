"""The instrument's sound engine: every gesture of `samplegen play` as a latent point, then a note.

The page never does latent arithmetic itself: a map click, a pad position, a knob turn, a
"surprise me" or a "vary" each becomes a latent point here, which is decoded into a playable
note together with what the page shows of it (its place on the map, its knob positions, a
spectrogram, a sustain loop). Keeping that here makes every gesture testable without a browser.

Knobs are directions of the corpus's posterior means a musician can name: the principal axes,
whitened (one knob step is one corpus standard deviation), rotated towards the measured
descriptors (brightness, attack, sustain, noise, ...) that they predict, then checked through the
decoder: a knob is named by what turning it up measurably increases. The rest of the space fills
the remaining knobs, largest spread first. At most :data:`MAX_KNOBS`.

The map is a neighbour-preserving layout (scikit-learn's t-SNE) of the same points: a sound's
nearest latent neighbours stay near it on the map, which a linear projection does not keep.
Points that are not in the corpus (a blend, a draw, a dropped file) are placed among the corpus
points nearest them in latent space.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import soundfile as sf
import torch

from samplegen.audio.audio_io import SAMPLE_RATE, estimate_pitch_hz, prepare_note, wav_bytes
from samplegen.audio.corpus import cents_from_c
from samplegen.audio.sustain_loop import crossfaded, find_loop
from samplegen.checkpoint import Run
from samplegen.errors import ParameterError
from samplegen.generation.generate import decode_features, decode_magnitude, encode_audio, magnitude_from_features
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import features_to_waveform

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
#: A descriptor gets a knob rotated towards it while the part of it the latent space predicts, beyond
#: the knobs already chosen, correlates at least this much with the corpus's values.
MIN_ROTATION_CORRELATION = 0.3
#: Phase-retrieval iterations of a draft note (a drag in progress): PGHI's start alone, about half a
#: full render's time; the note is refined with the run's own iterations when the hand rests.
DRAFT_ITERS = 0
#: Corpus points a new point is placed among on the map (inverse-distance weighted).
PLACE_NEIGHBOURS = 7

#: Descriptor → (knob label, what turning the knob up does). Knobs are signed so that turning one up
#: increases its descriptor; attack is a time, so "up" is a slower attack, as on a synthesiser.
DESCRIPTORS = {
    "brightness": ("Brightness", "brighter"),
    "attack": ("Attack", "slower attack"),
    "decay": ("Sustain", "longer sustain"),
    "noisiness": ("Noise", "noisier"),
    "body": ("Body", "fuller low end"),
    "air": ("Air", "more air"),
    "wobble": ("Wobble", "wobblier"),
    "bite": ("Bite", "more bite at the onset"),
}
#: What turning a knob up does when it lowers the descriptor (the unnamed knobs' hints).
LESS = {"brightness": "darker", "attack": "faster attack", "decay": "shorter decay", "noisiness": "purer",
        "body": "thinner", "air": "less air", "wobble": "steadier", "bite": "softer onset"}


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
    draft: bool = False  # rendered with DRAFT_ITERS phase-retrieval iterations, to be refined
    root: float = 60.0  # the MIDI key (fractional) at which the note plays at its own measured pitch


def describe(mag: torch.Tensor, cfg: spectral.StftConfig, sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Descriptors of magnitudes Tensor[B x F x T] that a musician can name, one value per note.

    brightness: energy-weighted spectral centroid (log2 Hz); attack: seconds to the first frame
    within 3 dB of the loudest; decay: level of the second half relative to the first (dB);
    noisiness: mean spectral flatness (dB) of the frames within 40 dB of the loudest; body: share
    of the energy below 500 Hz (dB); air: share above 6 kHz (dB); wobble: mean frame-to-frame level
    change (dB) of the loud frames; bite: share above 2 kHz in the first 60 ms over the whole note's
    (dB). Level is left out on purpose: the instrument normalises every note's peak, so a level knob
    would do nothing. Every descriptor is level-independent, so it reads the same on a rendered note.
    """
    power = mag.double().pow(2).cpu().numpy() + 1e-20  # B x F x T
    freqs = np.arange(power.shape[1]) * sr / cfg.n_fft

    def band(hz: float) -> int:  # the first bin above hz
        return int(np.searchsorted(freqs, hz, side="right"))

    frame_energy = power.sum(axis=1)  # B x T
    total = frame_energy.sum(axis=1)
    centroid = np.einsum("bft,f->b", power, freqs) / total
    frame_db = 10 * np.log10(frame_energy)
    first_loud = np.argmax(frame_db >= frame_db.max(axis=1, keepdims=True) - 3.0, axis=1)
    half = frame_energy.shape[1] // 2
    decay = 10 * np.log10(frame_energy[:, half:].mean(axis=1) / frame_energy[:, :half].mean(axis=1))
    flatness_db = 10 * np.log10(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1))  # B x T
    loud = frame_db >= frame_db.max(axis=1, keepdims=True) - 40.0
    steady = loud[:, 1:] & loud[:, :-1]
    high = power[:, band(2000.0):].sum(axis=1)  # B x T, above 2 kHz
    onset = slice(0, max(1, round(0.06 * sr / cfg.hop_length)))
    return {
        "brightness": np.log2(np.maximum(centroid, 1.0)),
        "attack": first_loud * cfg.hop_length / sr,
        "decay": decay,
        "noisiness": (flatness_db * loud).sum(axis=1) / loud.sum(axis=1),
        "body": 10 * np.log10(power[:, : band(500.0)].sum(axis=(1, 2)) / total),
        "air": 10 * np.log10(power[:, band(6000.0):].sum(axis=(1, 2)) / total),
        "wobble": (np.abs(np.diff(frame_db, axis=1)) * steady).sum(axis=1) / np.maximum(steady.sum(axis=1), 1),
        "bite": 10 * np.log10(high[:, onset].sum(axis=1) / frame_energy[:, onset].sum(axis=1) * total / high.sum(axis=1)),
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


def descriptor_rotation(scores: np.ndarray, values: dict[str, np.ndarray], n: int,
                        min_correlation: float = MIN_ROTATION_CORRELATION) -> tuple[np.ndarray, list[str | None]]:
    """Orthonormal knob directions (n, K) in whitened principal coordinates, and the descriptor each aims at.

    scores : (N, K) the corpus's coordinates along its principal axes, each divided by its spread
    values : descriptor → (N,) the corpus's measured values

    Greedily, the descriptor whose variation the whitened coordinates predict best beyond the
    directions already chosen (its correlation with its least-squares direction, made orthogonal to
    them) gets the next direction, while that correlation is at least ``min_correlation``. The
    remaining directions are the principal axes in order, made orthogonal to the chosen ones.
    """
    centred = scores - scores.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    unit = centred / np.maximum(norms, 1e-12)
    targets = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64) - np.mean(v)
        if np.std(v) > 1e-12:
            targets[name] = unit.T @ (v / np.linalg.norm(v))  # correlation with each whitened coordinate
    chosen: list[np.ndarray] = []
    aims: list[str | None] = []

    def residual(vec: np.ndarray) -> np.ndarray:
        for c in chosen:
            vec = vec - (c @ vec) * c
        return vec

    while len(chosen) < n and targets:
        name, vec = max(((d, residual(t)) for d, t in targets.items()), key=lambda item: np.linalg.norm(item[1]))
        del targets[name]
        if np.linalg.norm(vec) < min_correlation:
            break
        chosen.append(vec / np.linalg.norm(vec))
        aims.append(name)
    for axis in np.eye(scores.shape[1]):
        if len(chosen) >= n:
            break
        vec = residual(axis)
        if np.linalg.norm(vec) > 1e-6:
            chosen.append(vec / np.linalg.norm(vec))
            aims.append(None)
    return np.array(chosen).reshape(len(chosen), scores.shape[1]), aims


def neighbour_map(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D layout (N, 2) of latent points that keeps each point's nearest neighbours near it.

    scikit-learn's t-SNE (Barnes–Hut, PCA start, fixed seed, so a run always gets the same map),
    scaled to unit spread. Perplexity 30, or a third of the points for a small corpus.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(points, dtype=np.float64)
    if len(x) < 4:  # t-SNE needs a few points; two or three are laid out along their main axis
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = np.zeros((len(x), 2))
        xy[:, : min(2, vt.shape[0])] = centred @ vt[:2].T
    else:
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1).fit_transform(x)
    return (xy - xy.mean(axis=0)) / max(float(xy.std()), 1e-12)


def neighbour_recall(points: np.ndarray, groups: Sequence[str], k: int = 7) -> float:
    """Share of each point's ``k`` nearest neighbours (Euclidean, itself excluded) that share its group.

    The figure issue 19 measures a map by: with ``groups`` the presets of the corpus, how often a
    sound's nearest sounds are its own preset's other velocities.
    """
    x = np.asarray(points, dtype=np.float64)
    labels = np.asarray(groups)
    if len(x) != len(labels) or len(x) <= k:
        raise ParameterError(f"neighbour_recall needs more than k={k} points, each with a group")
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argpartition(d, k, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


class Instrument:
    """A trained run as an instrument: gestures in, notes out. Thread-safe for rendering."""

    def __init__(self, run: Run, n_knobs: int = MAX_KNOBS, seed: int = 0, aim_knobs: bool = True):
        """aim_knobs : False keeps the knobs on the principal axes unrotated (the benchmark's baseline)."""
        if run.latent_mu.shape[0] < 2:
            raise ParameterError("the run's corpus has fewer than 2 notes; the instrument needs a map to play on")
        self.run = run
        self.latent_dim = int(run.latent_mu.shape[1])
        self.n_samples = run.config.data.n_samples
        self.mu = run.latent_mu.double().numpy()
        self.z_limit = float(max(Z_LIMIT, 2.0 * np.abs(self.mu).max()))
        self.map_points = neighbour_map(self.mu, seed)
        self.knobs = self._build_knobs(max(1, min(n_knobs, MAX_KNOBS, self.latent_dim)), seed,
                                       MIN_ROTATION_CORRELATION if aim_knobs else math.inf)

    # --- geometry -------------------------------------------------------------------------
    def place(self, z: np.ndarray) -> tuple[float, float]:
        """Where a latent point goes on the map: among its nearest corpus points (inverse-distance
        weighted), so a corpus point lands on its own place and a blend between its corners' places."""
        d = np.sqrt(((self.mu - np.asarray(z, dtype=np.float64)) ** 2).sum(axis=1))
        near = np.argsort(d)[: min(PLACE_NEIGHBOURS, len(d))]
        if d[near[0]] < 1e-9:
            return float(self.map_points[near[0], 0]), float(self.map_points[near[0], 1])
        w = 1.0 / d[near] ** 2
        xy = (w[:, None] * self.map_points[near]).sum(axis=0) / w.sum()
        return float(xy[0]), float(xy[1])

    def knob_positions(self, z: np.ndarray) -> np.ndarray:
        """Where each knob stands for point ``z``, in corpus standard deviations along the knob's direction."""
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.knob_read.T

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
        """Move ``z`` so that each knob stands at the given position (corpus SDs along its direction)."""
        base = self.check_z(z)
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (len(self.knobs),):
            raise ParameterError(f"give {len(self.knobs)} knob positions, got {pos.size}")
        if not np.isfinite(pos).all() or np.abs(pos).max(initial=0.0) > KNOB_RANGE:
            raise ParameterError(f"knob positions must be finite and within ±{KNOB_RANGE}")
        return np.clip(base + (pos - self.knob_positions(base)) @ self.knob_move, -self.z_limit, self.z_limit)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """A sound of the user's own (float mono at 44.1 kHz) → its latent point, prepared as the corpus was."""

        note = prepare_note(np.asarray(audio, dtype=np.float32), duration_s=self.run.config.data.duration_s)
        z = encode_audio(self.run, note[None])[0].double().numpy()
        return np.clip(z, -self.z_limit, self.z_limit)

    # --- sound ----------------------------------------------------------------------------
    def render(self, z: Sequence[float] | np.ndarray, source: str = "", draft: bool = False) -> Note:
        """Decode a point into a playable note (normalised, looped where it sustains) and its pictures.

        draft : retrieve phase with :data:`DRAFT_ITERS` iterations (a drag in progress) instead of the run's own
        """
        point = self.check_z(z)
        feats = decode_features(self.run, torch.from_numpy(point[None]).float())
        mag = magnitude_from_features(self.run, feats)
        with torch.no_grad():  # the run's own way back (phase retrieval, or IF integration for a phase-aware run)
            wave = features_to_waveform(feats, self.run.config.stft, self.run.config.phase, self.n_samples,
                                        n_iter=DRAFT_ITERS if draft else None).cpu().numpy()[0].astype(np.float64)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        gain = min(PEAK / peak, 10 ** (MAX_GAIN_DB / 20)) if peak > 0 else 1.0
        audio = np.clip(wave * gain, -1.0, 1.0).astype(np.float32)
        found = find_loop(audio, SAMPLE_RATE)
        loop = (found.start, found.end) if found is not None else None
        if found is not None:
            audio = crossfaded(audio, found)
        wav = wav_bytes(audio, SAMPLE_RATE, loop=loop)
        rms = float(np.sqrt(np.mean(wave**2))) if wave.size else 0.0
        hz = estimate_pitch_hz(audio, SAMPLE_RATE)  # the keyboard plays it in tune, whatever its own pitch
        return Note(z=point, wav=wav, map_xy=self.place(point),
                    knobs=[float(v) for v in self.knob_positions(point)], spectrogram=self._spectrogram(mag[0]),
                    loop=loop, peak=peak, rms_db=20 * math.log10(max(rms, 1e-10)), source=source, draft=draft,
                    root=60.0 + (cents_from_c(hz) / 100 if hz is not None else 0.0))

    def heard_change(self, knob: Knob, sounds: Sequence[int]) -> np.ndarray:
        """What turning ``knob`` from -1 to +1 around each corpus sound does to the descriptor it is named
        by, measured on the rendered notes (phase retrieval and all), one value per sound: the check that a
        label says what the knob does (the knob was named from the decoder's magnitudes)."""
        name = next(d for d, (title, _) in DESCRIPTORS.items() if title == knob.label)
        cfg = self.run.config.stft
        change = []
        for i in sounds:
            z = self.corpus_point(i)
            pos = np.clip(self.knob_positions(z), -KNOB_RANGE, KNOB_RANGE)  # a far sound may stand beyond
            heard = []
            for delta in (-1.0, 1.0):
                wanted = pos.copy()
                wanted[knob.index] = np.clip(pos[knob.index] + delta, -KNOB_RANGE, KNOB_RANGE)
                audio, _ = sf.read(io.BytesIO(self.render(self.turn_knobs(z, wanted)).wav), dtype="float32")
                heard.append(describe(spectral.magnitude(torch.from_numpy(audio)[None], cfg), cfg)[name][0])
            change.append(heard[1] - heard[0])
        return np.array(change)

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

    def _describe_points(self, z: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
        """:func:`describe` of the decoded magnitudes of latent points (N, L), a batch at a time (a 2-second
        note's magnitudes in double precision are 1.4 MB: a whole corpus at once would take gigabytes)."""
        parts = [describe(decode_magnitude(self.run, torch.from_numpy(z[i:i + batch]).float()), self.run.config.stft)
                 for i in range(0, len(z), batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in DESCRIPTORS}

    def _build_knobs(self, n: int, seed: int, min_correlation: float,
                     n_bases: int = 32) -> list[Knob]:
        """Choose the knobs' directions (:func:`descriptor_rotation`) and name each by what it measurably does.

        Each direction is nudged by ±1 corpus SD around ``n_bases`` corpus points; the mean change of
        each descriptor, divided by that descriptor's spread over the corpus, is the knob's effect on
        it. A knob is named by the descriptor it was aimed at, or else the one it changes most that no
        other knob is named by, if that effect is at least :data:`MIN_LABEL_EFFECT`; it is then signed
        so that turning it up increases what it is named by. The rest are "Timbre N", hinted with their
        two largest effects. Sets ``mean``, ``knob_read`` (z → positions) and ``knob_move`` (positions → z).
        """
        mean, axes, sd = principal_axes(self.run.latent_mu, self.latent_dim)
        keep = sd > 1e-6 * sd[0]  # directions the corpus does not move along cannot be whitened
        axes, sd = axes[keep], sd[keep]
        spread = self._describe_points(self.mu)
        scores = (self.mu - mean) @ axes.T / sd
        rotation, aims = descriptor_rotation(scores, spread, min(n, len(sd)), min_correlation)
        self.mean = mean
        self.knob_read = (rotation / sd) @ axes  # positions = (z - mean) @ knob_read.T, in corpus SDs
        self.knob_move = (rotation * sd) @ axes  # z += Δpositions @ knob_move  (knob_move @ knob_read.T = I)

        rng = np.random.default_rng(seed)
        bases = self.mu[rng.choice(len(self.mu), size=min(n_bases, len(self.mu)), replace=False)]
        effects = []
        for step in self.knob_move:
            up, down = self._describe_points(bases + step), self._describe_points(bases - step)
            effects.append({name: float(np.mean(up[name] - down[name]) / 2 / max(float(np.std(spread[name])), 1e-9))
                            for name in DESCRIPTORS})
        named: dict[int, str] = {k: d for k, d in enumerate(aims)
                                 if d is not None and abs(effects[k][d]) >= MIN_LABEL_EFFECT}
        pairs = sorted(((abs(e[d]), k, d) for k, e in enumerate(effects) for d in DESCRIPTORS), reverse=True)
        for size, k, d in pairs:
            if size >= MIN_LABEL_EFFECT and k not in named and d not in named.values():
                named[k] = d
        knobs = []
        for k, e in enumerate(effects):
            if k in named:
                d = named[k]
                if e[d] < 0:  # turning it up must increase what it is named by
                    self.knob_read[k] *= -1
                    self.knob_move[k] *= -1
                    e = {name: -v for name, v in e.items()}
                    effects[k] = e
                title, more = DESCRIPTORS[d]
                knobs.append(Knob(k, title, f"turn up: {more}", e[d]))
                continue
            top = sorted(DESCRIPTORS, key=lambda name: -abs(e[name]))[:2]
            words = [DESCRIPTORS[d][1] if e[d] > 0 else LESS[d] for d in top if abs(e[d]) >= MIN_LABEL_EFFECT]
            hint = f"turn up: {', '.join(words)}" if words else "no single measured quality dominates"
            knobs.append(Knob(k, f"Timbre {k + 1}", hint, e[top[0]]))
        return knobs

    def map_view(self, percent: float = 1.0, margin: float = 0.1) -> tuple[float, float, float, float]:
        """The part of the map the page shows: (x0, y0, x1, y1), every point unless a few lie far out.

        The view spans the ``percent``-th to ``100 - percent``-th percentile on each axis widened by
        ``margin`` of that span, and no further than the points reach: the layout keeps the corpus in
        one piece, so nearly every point is shown in its place, yet a far-flung one cannot squeeze the
        rest into a corner (it sits on the view's edge).
        """
        lo = np.percentile(self.map_points, percent, axis=0)
        hi = np.percentile(self.map_points, 100 - percent, axis=0)
        lo, hi = lo - margin * (hi - lo), hi + margin * (hi - lo)
        lo = np.maximum(lo, self.map_points.min(axis=0))
        hi = np.minimum(hi, self.map_points.max(axis=0))
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def edge_fraction(self) -> float:
        """Share of corpus points outside :meth:`map_view`, which the page piles on the view's edges."""
        x0, y0, x1, y1 = self.map_view()
        p = self.map_points
        outside = (p[:, 0] < x0) | (p[:, 0] > x1) | (p[:, 1] < y0) | (p[:, 1] > y1)
        return float(outside.mean())

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
