"""`samplegen evaluate`: how good a run is, in numbers, pictures and sounds.

Fills the seed's empty test areas: sound quality (against the PCA baseline
and the oracle), artefacts (what discarding phase costs on its own), the
VAE's latent distribution, generation health (silent and noise-like
outputs, interpolation paths that dip, notes that start on a click), and the
generated notes judged as the field judges them beside real held-out notes
(pitch, NDB/K, a family classifier's Fréchet distance and entropy, novelty,
smooth paths: :mod:`samplegen.evaluation.generation_measures`).
Writes ``metrics.json`` (keys listed in :data:`METRICS_KEYS`),
``per_note.csv``, PNG figures, WAVs of the worst cases and ``report.html``
that opens offline.
"""

from __future__ import annotations

import contextlib
import csv
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from samplegen import __version__
from samplegen.audio import audio_io
from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import Run, load_run
from samplegen.errors import CorpusError, ParameterError, check_seed
from samplegen.evaluation import generation_measures as GM
from samplegen.evaluation import metrics as M
from samplegen.files import atomic_write, spreadsheet_safe, unique_stems, write_json
from samplegen.generation.generate import decode, interpolation_path
from samplegen.model.baselines import PCABaseline
from samplegen.model.network import kl_divergence
from samplegen.spectral.features import audio_to_features, features_to_waveform
from samplegen.spectral.stft import DEVICE_LOCK, default_phase

T = TypeVar("T")
R = TypeVar("R")

METRICS_KEYS = ("run", "version", "device", "phase_retrieval", "headline", "quality", "artefacts", "latent", "health", "generated", "seconds")
MEASURES = {"sc_db": M.spectral_convergence_db, "lsd_db": M.log_spectral_distance_db,
            "mrstft": M.multi_resolution_stft_distance}
#: Health is judged on level and flatness, which the magnitude sets: decoded with SPSI
#: alone (no iterations) to keep 1,000 draws within the evaluation's time budget
#: (with the integrated IF alone, no iterations, for a run that learned IF).
HEALTH_PHASE = ("spsi", 0)
HEALTH_PHASE_IF = ("if", 0)
#: Notes (or latent points) decoded at a time; batches run side by side (see :func:`parallel_map`).
DECODE_BATCH = 32
#: Largest generation-health samples (``--draws``, ``--paths``, ``--steps``): at the largest latent size (1,024)
#: the draws hold at most 400 MB and the path points 256 MB before decoding; each point is decoded, so a
#: larger sample would only run for days.
MAX_DRAWS, MAX_PATHS, MAX_PATH_STEPS = 100_000, 1_000, 64


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(i) for i in items]`` on one thread per core, with torch itself on one thread meanwhile.

    Whole batches run side by side instead of each torch operation being split
    across the cores: FFTs and PGHI's heap walks do not split well, and torch's
    own threads collapse when another process shares the machine (a training
    measured 15 times slower with two torch threads beside another job, not
    slower with one).  ``fn`` must not depend on which thread runs it; results
    keep the order of ``items``.
    """
    workers = min(len(items), torch.get_num_threads())
    if workers <= 1:
        return [fn(i) for i in items]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(previous)


def _waves(run: Run, feats_norm: torch.Tensor, method: str | None = None, n_iter: int | None = None) -> np.ndarray:
    """Normalised features → waveforms through the run's phase retrieval, in batches, where the model is: PCA's
    and the oracle's magnitudes go through the same phase retrieval as the model's (the device's default)."""
    device = run.device

    def batch(s: int) -> np.ndarray:
        with DEVICE_LOCK if device.type != "cpu" else contextlib.nullcontext():
            wav = features_to_waveform(run.stats.denormalise(feats_norm[s : s + DECODE_BATCH].to(device)),
                                       run.config.stft, run.config.phase, run.config.data.n_samples, method=method,
                                       n_iter=n_iter)
            return wav.cpu().numpy()

    out = parallel_map(batch, range(0, len(feats_norm), DECODE_BATCH))
    return np.concatenate(out) if out else np.zeros((0, run.config.data.n_samples), np.float32)


def _decode_batched(run: Run, z: torch.Tensor, method: str | None = None, n_iter: int | None = None) -> np.ndarray:
    return np.concatenate(parallel_map(lambda s: np.atleast_2d(decode(run, z[s : s + DECODE_BATCH], method=method,
                                                                      n_iter=n_iter)),
                                       range(0, len(z), DECODE_BATCH)))


def _features(run: Run, audio: np.ndarray) -> torch.Tensor:
    """Normalised model features of prepared notes, computed in parallel batches."""
    return run.stats.normalise(torch.cat(parallel_map(
        lambda s: audio_to_features(audio[s : s + DECODE_BATCH], run.config.stft, run.config.phase),
        range(0, len(audio), DECODE_BATCH))))


def _quality_measures(reference: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """:func:`samplegen.evaluation.metrics.quality_measures` over parallel batches of notes."""
    parts = parallel_map(lambda s: M.quality_measures(reference[s : s + M.MEASURE_BATCH],
                                                      {k: v[s : s + M.MEASURE_BATCH] for k, v in outputs.items()}),
                         range(0, len(reference), M.MEASURE_BATCH))
    return {k: {m: np.concatenate([p[k][m] for p in parts]) for m in M.QUALITY_MEASURES} for k in outputs}


def health_thresholds(run: Run, corpus_audio: np.ndarray) -> M.HealthThresholds:
    """What generation health judges outputs by (:func:`samplegen.evaluation.metrics.thresholds_from`): the levels
    and flatness of the run's training notes, never its held-out ones; ``corpus_audio`` holds every corpus note in
    the run's order. Measured over parallel batches of notes."""
    training_audio = corpus_audio[np.flatnonzero(np.array(run.corpus.splits) == "train")]
    parts = parallel_map(lambda s: (np.atleast_1d(M.rms_db(training_audio[s : s + M.MEASURE_BATCH])),
                                    np.atleast_1d(M.spectral_flatness(training_audio[s : s + M.MEASURE_BATCH]))),
                         range(0, len(training_audio), M.MEASURE_BATCH))
    return M.thresholds_from(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def measured_splits(run: Run, corpus: Any) -> tuple[np.ndarray, np.ndarray]:
    """The run's training and held-out notes that the model is judged on: the corpus's own notes. Mixtures
    (``corpus build --mix``) are training material, not samples a musician brought, so no measure counts them."""
    split = np.array(run.corpus.splits)
    own = np.array([e.parents is None for e in corpus.entries], dtype=bool)
    return np.flatnonzero((split == "train") & own), np.flatnonzero((split == "val") & own)


def measured_notes(run: Run, corpus: Any) -> np.ndarray:
    """Every note of :func:`measured_splits`, training and held-out, in corpus order (paths join these)."""
    return np.sort(np.concatenate(measured_splits(run, corpus)))


@dataclass
class QualitySet:
    """Per-note measures of one split: ``values[system][measure]`` arrays, with the waveforms for listening."""

    names: list[str]
    reference: np.ndarray
    outputs: dict[str, np.ndarray]
    values: dict[str, dict[str, np.ndarray]]

    def summary(self, n_worst: int = 5) -> dict:
        worst = np.argsort(-self.values["model"]["lsd_db"])[:n_worst]
        return {
            "n": len(self.names),
            **{system: {m: _summary(v) for m, v in vals.items()} for system, vals in self.values.items()},
            "worst": [self.names[i] for i in worst],
        }


def sound_quality(run: Run, audio: np.ndarray, names: list[str], pca: PCABaseline,
                  feats: torch.Tensor | None = None) -> QualitySet:
    """Model (posterior mean), PCA and oracle against the original notes.

    ``feats`` : the notes' normalised features when already computed (they are for the training notes).
    """
    if feats is None:
        feats = _features(run, audio)
    with torch.no_grad():
        device = run.device
        mu = torch.cat([run.model.encode(feats[s : s + 64].to(device))[0].cpu() for s in range(0, len(feats), 64)])
    outputs = {
        "model": _decode_batched(run, mu),
        "pca": _waves(run, pca.reconstruct(feats)),
        "oracle": _waves(run, feats),
    }
    return QualitySet(names, audio, outputs, _quality_measures(audio, outputs))


@contextlib.contextmanager
def _progress_bar(desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A progress(done, total) callback drawing a bar on stderr, closed on leaving."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        if done == total:
            bar.refresh()  # shown even when it ran faster than the bar redraws

    try:
        yield progress
    finally:
        bar.close()


def _sound_quality_in_chunks(run: Run, audio: np.ndarray, names: list[str], pca: PCABaseline,
                             chunk: int = 32) -> QualitySet:
    """:func:`sound_quality` ``chunk`` notes at a time with a progress bar: a folder of one's own takes minutes."""
    parts = []
    with _progress_bar("notes", "note") as progress:
        for start in range(0, len(audio), chunk):
            parts.append(sound_quality(run, audio[start : start + chunk], names[start : start + chunk], pca))
            progress(min(start + chunk, len(audio)), len(audio))
    return QualitySet(names, audio, {k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs},
                      {system: {m: np.concatenate([p.values[system][m] for p in parts]) for m in parts[0].values[system]}
                       for system in parts[0].values})


def artefacts(reference: np.ndarray, oracle: np.ndarray, names: list[str], n_worst: int = 5,
              oracle_values: dict[str, np.ndarray] | None = None) -> dict:
    """What discarding phase costs: the original against its own magnitude through phase retrieval.

    ``oracle_values`` : the quality measures of ``oracle`` against ``reference`` when already taken
    (:func:`sound_quality` has them), so they are not computed twice.
    """
    vals = dict(oracle_values) if oracle_values is not None else _quality_measures(reference, {"oracle": oracle})["oracle"]
    vals["attack_smearing_db"] = np.atleast_1d(M.onset_envelope_error_db(reference, oracle))
    vals["pre_echo_db"] = np.atleast_1d(M.pre_echo_db(reference, oracle))
    worst = np.argsort(vals["sc_db"])[::-1][:n_worst]
    return {"n": len(names), **{k: _summary(v) for k, v in vals.items()}, "worst": [names[i] for i in worst]}


def onset_clicks(sets: dict[str, QualitySet]) -> dict[str, float]:
    """Share of notes that start on a click (:func:`samplegen.evaluation.metrics.has_onset_click`), per system and
    the originals.

    The decoded notes should click no more than the originals do: an onset-aligned original starts in
    silence, and the way back from magnitude to waveform fades in (issue 19).
    """
    systems = {"original": [s.reference for s in sets.values()],
               **{k: [s.outputs[k] for s in sets.values()] for k in ("model", "pca", "oracle")}}
    return {k: float(np.concatenate([np.atleast_1d(M.has_onset_click(w)) for w in waves]).mean())
            for k, waves in systems.items()}


def latent_distribution(run: Run) -> dict:
    """KL per latent dimension, active dimensions, and the spread of the posterior means."""
    mu = run.latent_mu.double()
    if run.latent_logvar is not None:
        lv = run.latent_logvar.double()
        kl = kl_divergence(mu, lv).mean(dim=0)
    else:
        kl = None  # the plain auto-encoder has no posterior variance
    var = mu.var(dim=0)
    return {
        "latent_dim": int(mu.shape[1]),
        "kl_per_dim": [float(v) for v in kl] if kl is not None else None,
        "active_dims": int((var > 0.01).sum()),
        "posterior_mean_var": [float(v) for v in var],
        "posterior_mean_abs_max": float(mu.abs().max()),
    }


def _mels_and_pitches(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-mels and f0 of notes (B, n): what :mod:`samplegen.evaluation.generation_measures` judges them by."""
    return GM.log_mel(wav), audio_io.estimate_pitches_hz(wav)


def _measured_notes(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mels_and_pitches` over parallel batches of notes."""
    parts = parallel_map(lambda s: _mels_and_pitches(audio[s : s + DECODE_BATCH]), range(0, len(audio), DECODE_BATCH))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def generation_health(run: Run, thresholds: M.HealthThresholds, n_draws: int = 1000, n_paths: int = 100,
                      steps: int = 8, seed: int = 0, keep_notes: bool = False, notes: np.ndarray | None = None) -> dict:
    """Fractions of silent, noise-like and clicking prior draws and of dipping interpolation paths between corpus pairs.

    Outputs are measured batch by batch as they are decoded, so only levels and flatness stay in memory;
    Paths join random pairs of ``notes`` (indices into the run's corpus; all of them when None).
    With ``keep_notes`` also every draw's and path step's log-mel and f0 (``_draws_measured``,
    ``_paths_measured``: (log-mels, f0), paths shaped (n_paths, steps, ...)) for :func:`judge_generated`.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_draws, run.config.model.latent_dim, generator=g)
    phase = HEALTH_PHASE_IF if run.config.phase.mode == "if" else HEALTH_PHASE
    ends = np.arange(len(run.corpus.names)) if notes is None else np.asarray(notes)
    if len(ends) < 2:
        raise ParameterError("interpolation paths need at least two notes to join")
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_paths:
        a, b = torch.randint(len(ends), (2,), generator=g).tolist()
        if a != b:
            pairs.append((int(ends[a]), int(ends[b])))
    path_z = torch.cat([interpolation_path(run.latent_mu[a], run.latent_mu[b], steps) for a, b in pairs])
    def draws(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        wav = np.atleast_2d(decode(run, z[s : s + DECODE_BATCH], *phase))
        return (np.atleast_1d(M.is_silent(wav, thresholds)), np.atleast_1d(M.is_noise_like(wav, thresholds)),
                np.atleast_1d(M.has_onset_click(wav)), _mels_and_pitches(wav) if keep_notes else None)

    def path_levels(s: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        wav = np.atleast_2d(decode(run, path_z[s : s + DECODE_BATCH], *phase))
        return np.atleast_1d(M.rms_db(wav)), _mels_and_pitches(wav) if keep_notes else None

    measured = parallel_map(draws, range(0, n_draws, DECODE_BATCH))
    silent = np.concatenate([m[0] for m in measured])
    noisy = np.concatenate([m[1] for m in measured])
    clicks = np.concatenate([m[2] for m in measured])
    on_paths = parallel_map(path_levels, range(0, len(path_z), DECODE_BATCH))
    levels = np.concatenate([m[0] for m in on_paths]).reshape(n_paths, steps)
    dips = np.array([M.path_dips_from_levels(lv) for lv in levels])
    shown = int(np.argmax(dips)) if dips.any() else 0
    kept: dict[str, Any] = {}
    if keep_notes:
        drawn = [m[3] for m in measured if m[3] is not None]
        stepped = [m[1] for m in on_paths if m[1] is not None]
        kept["_draws_measured"] = tuple(np.concatenate([d[k] for d in drawn]) for k in (0, 1))
        path_mels, path_hz = (np.concatenate([d[k] for d in stepped]) for k in (0, 1))
        kept["_paths_measured"] = (path_mels.reshape(n_paths, steps, *path_mels.shape[1:]), path_hz.reshape(n_paths, steps))
    return {
        **kept,
        "n_draws": n_draws, "n_paths": n_paths, "steps": steps,
        "silent_fraction": float(silent.mean()), "noise_like_fraction": float(noisy.mean()),
        "dipping_path_fraction": float(dips.mean()), "onset_click_fraction": float(clicks.mean()),
        "thresholds": {"silent_rms_db": thresholds.silent_rms_db, "noise_flatness": thresholds.noise_flatness,
                       "click_jump": M.CLICK_JUMP, "click_hf_db": M.CLICK_HF_DB},
        "_path_levels": levels[shown],
    }


def pca_draws(run: Run, pca: PCABaseline, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-mels and f0 of ``n`` PCA draws (a Gaussian in PCA space), decoded as the model's draws are for health."""
    coeffs = pca.draw_coefficients(n, torch.Generator().manual_seed(seed))
    shape = (run.config.model.n_frames, run.config.model.n_bins)
    method, n_iter = HEALTH_PHASE_IF if run.config.phase.mode == "if" else HEALTH_PHASE

    def batch(s: int) -> tuple[np.ndarray, np.ndarray]:
        feats = run.stats.denormalise(pca.decode(coeffs[s : s + DECODE_BATCH], shape))
        wav = features_to_waveform(feats, run.config.stft, run.config.phase, run.config.data.n_samples,
                                   method=method, n_iter=n_iter).numpy()
        return _mels_and_pitches(wav)

    parts = parallel_map(batch, range(0, n, DECODE_BATCH))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def judge_generated(run: Run, corpus: Any, sets: dict[str, "QualitySet"], pca: PCABaseline, health: dict,
                    seed: int = 0, log: Callable[[str], None] = lambda s: None) -> dict:
    """Generated notes judged as the field judges them, beside the same figures for real notes (issue 14).

    Rows of ``sets``: ``heldout`` (the real held-out notes: the reference), ``heldout_resynthesised`` (their
    true magnitudes through phase retrieval: what the way back alone changes), ``draws`` (the model's prior
    draws of ``health``, kept with ``keep_notes``), ``pca_draws`` (as many draws from a Gaussian in PCA
    space); each with pitch, NDB/K, realism and novelty (:func:`samplegen.evaluation.generation_measures.judge`).
    ``pitch``: cents from C4 of every corpus note, reconstruction, draw and path step; ``paths``: smoothness.
    """
    train_idx, val_idx = measured_splits(run, corpus)
    families = run.corpus.families
    log(f"judging generated notes: log-mels of {len(train_idx)} training notes, NDB bins, a family classifier ...")
    corpus_mels, corpus_hz = _measured_notes(corpus.audio)
    real = GM.RealNotes.fit(corpus_mels[train_idx], [families[i] for i in train_idx], seed)
    draw_mels, draw_hz = health["_draws_measured"]
    path_mels, path_hz = health["_paths_measured"]
    rows: dict[str, Any] = {}
    if len(val_idx):
        rows["heldout"] = GM.judge(real, corpus_mels[val_idx], corpus_hz[val_idx], [families[i] for i in val_idx])
        rows["heldout_resynthesised"] = GM.judge(real, *_measured_notes(sets["heldout"].outputs["oracle"]))
    rows["draws"] = GM.judge(real, draw_mels, draw_hz)
    log(f"judging generated notes: {len(draw_hz)} PCA draws ...")
    rows["pca_draws"] = GM.judge(real, *pca_draws(run, pca, len(draw_hz), seed))
    pitch = {"corpus": GM.cents_summary(corpus_hz)}
    for split_name, s in sets.items():
        pitch[f"{split_name}_reconstructions"] = GM.cents_summary(audio_io.estimate_pitches_hz(s.outputs["model"]))
    pitch["draws"] = rows["draws"]["pitch"]
    pitch["path_steps"] = GM.cents_summary(path_hz.ravel())
    pitch["pca_draws"] = rows["pca_draws"]["pitch"]
    return {"sets": rows, "pitch": pitch, "paths": GM.path_smoothness(path_mels),
            "classifier": None if real.classifier is None else {
                "families": real.classifier.families, "n_train": len(train_idx),
                "heldout_accuracy": rows["heldout"]["realism"]["classifier_accuracy"] if "heldout" in rows else None},
            "measures": {"mel_bands": GM.MEL_BANDS, "ndb_bins": GM.NDB_BINS, "ndb_alpha": GM.NDB_ALPHA,
                         "embedding_dim": GM.EMBED_DIM, "path_jump_ratio": GM.PATH_JUMP_RATIO}}


def split_quality(run: Run, corpus: Any, train_sample: int = 200, seed: int = 0,
                  log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, QualitySet], PCABaseline, np.ndarray]:
    """Model, PCA (as many components as latent dimensions) and oracle on a sample of the training notes
    ("train") and on every held-out note ("heldout"); also the PCA and the training notes' indices. Only the
    corpus's own notes are measured, and the PCA learns from its own training notes alone (:func:`measured_splits`):
    mixtures would pull its axes towards blends (held-out LSD 5.84 against 5.71 dB on the default corpus), and a
    baseline is only worth beating at its best."""
    train_idx, val_idx = measured_splits(run, corpus)
    rng = np.random.default_rng(seed)
    train_meas = np.sort(rng.choice(train_idx, size=min(train_sample, len(train_idx)), replace=False))
    feats_train = _features(run, corpus.audio[train_idx])
    pca = PCABaseline.fit(feats_train, min(run.config.model.latent_dim, len(train_idx) - 1 if len(train_idx) > 1 else 1))
    names = run.corpus.names
    sets: dict[str, QualitySet] = {}
    log(f"sound quality: {len(train_meas)} training and {len(val_idx)} held-out notes ...")
    sets["train"] = sound_quality(run, corpus.audio[train_meas], [names[i] for i in train_meas], pca,
                                  feats=feats_train[np.searchsorted(train_idx, train_meas)])
    if len(val_idx):
        sets["heldout"] = sound_quality(run, corpus.audio[val_idx], [names[i] for i in val_idx], pca)
    return sets, pca, train_idx


def evaluate(run_path: str | Path, out_dir: str | Path, data: str | Path | None = None, *, n_draws: int = 1000,
             n_paths: int = 100, steps: int = 8, train_sample: int = 200, seed: int = 0, device: str = "cpu",
             log: Callable[[str], None] = lambda s: None) -> dict:
    """Evaluate one run; writes report.html, metrics.json, per_note.csv, figures and WAVs into ``out_dir``.

    ``device``: where the model decodes and phase retrieval runs ("cpu", "cuda"); every system (model, PCA,
    oracle) goes through that device's default phase retrieval, and metrics.json records which.

    Parameters
    ----------
    run_path : run folder (its corpus must still be where it was trained from)
    data : a folder of notes the model never saw (built corpus or raw samples)
    n_draws, n_paths, steps : generation-health sample sizes
    train_sample : how many training notes to measure (all held-out notes are measured)

    Returns
    -------
    The metrics dictionary written to metrics.json.
    """
    for flag, value, low, high in (("draws", n_draws, 1, MAX_DRAWS), ("paths", n_paths, 1, MAX_PATHS),
                                   ("steps", steps, 3, MAX_PATH_STEPS)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ParameterError(f"--{flag} {value!r} must be an integer from {low} to {high:,}")
    check_seed(seed)
    t0 = time.perf_counter()
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    run = load_run(run_path, device)
    corpus = _run_corpus(run)
    sets, pca, train_idx = split_quality(run, corpus, train_sample, seed, log)
    if data is not None:
        log(f"reading {data} ...")
        with _progress_bar("read", "file") as bar:
            extra = load_corpus(data, duration_s=run.config.data.duration_s, progress=bar)
        log(f"sound quality: {len(extra.entries)} notes from {data} ...")
        sets["data"] = _sound_quality_in_chunks(run, extra.audio, [e.name for e in extra.entries], pca)
    everything = np.concatenate([s.reference for s in sets.values()])
    art = artefacts(everything, np.concatenate([s.outputs["oracle"] for s in sets.values()]),
                    [n for s in sets.values() for n in s.names],
                    oracle_values={m: np.concatenate([s.values["oracle"][m] for s in sets.values()]) for m in MEASURES})
    log(f"generation health: {n_draws} prior draws, {n_paths} interpolation paths ...")
    health = generation_health(run, health_thresholds(run, corpus.audio), n_draws, n_paths, steps, seed,
                               keep_notes=True, notes=measured_notes(run, corpus))
    generated = judge_generated(run, corpus, sets, pca, health, seed, log)
    latent = latent_distribution(run)
    main = sets.get("heldout", sets["train"])
    result: dict[str, Any] = {
        "run": str(Path(run_path).resolve()),
        "version": __version__,
        "device": str(run.device),
        "phase_retrieval": _phase_retrieval(run),
        "headline": {
            "split": "heldout" if "heldout" in sets else "train",
            "model_lsd_db": main.summary()["model"]["lsd_db"]["mean"],
            "pca_lsd_db": main.summary()["pca"]["lsd_db"]["mean"],
            "oracle_lsd_db": main.summary()["oracle"]["lsd_db"]["mean"],
            "unhealthy_draw_fraction": health["silent_fraction"] + health["noise_like_fraction"],
            "dipping_path_fraction": health["dipping_path_fraction"],
            **_generated_headline(generated),
        },
        "quality": {k: s.summary() for k, s in sets.items()},
        "artefacts": {**art, "onset_clicks": onset_clicks(sets)},
        "latent": latent,
        "health": {k: v for k, v in health.items() if not k.startswith("_")},
        "generated": generated,
    }
    figures = _figures(run, out, health)
    audio_rows = _write_worst_audio(out, sets)
    _write_per_note(out / "per_note.csv", sets)
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "metrics.json", result)
    write_report(out, [result], figures, audio_rows)
    return result


def _phase_retrieval(run: Run) -> str:
    """The way back to waveforms that the quality figures went through, in words."""
    if run.config.phase.mode == "if":
        return f"IF integration + {run.config.phase.n_iter} iterations"
    return "{} + {} iterations".format(*default_phase(run.device))


def _generated_headline(generated: dict) -> dict[str, float | None]:
    """The figures of :func:`judge_generated` to read first: the model's draws beside the real held-out notes."""
    rows = generated["sets"]
    draws, held = rows["draws"], rows.get("heldout")

    def realism(row: dict | None, key: str) -> float | None:
        return row["realism"][key] if row is not None and row["realism"] is not None else None

    return {
        "draws_within_25_cents": draws["pitch"]["within_25"],
        "corpus_within_25_cents": generated["pitch"]["corpus"]["within_25"],
        "draws_ndb_k": draws["diversity"]["ndb_k"],
        "heldout_ndb_k": held["diversity"]["ndb_k"] if held else None,
        "draws_frechet": realism(draws, "frechet"),
        "heldout_frechet": realism(held, "frechet"),
        "draws_family_entropy_bits": realism(draws, "family_entropy_bits"),
        "heldout_family_entropy_bits": realism(held, "family_entropy_bits"),
        "classifier_accuracy": realism(held, "classifier_accuracy"),
        "draws_nearest_over_typical": draws["novelty"]["nearest_over_typical"],
        "heldout_nearest_over_typical": held["novelty"]["nearest_over_typical"] if held else None,
        "jumping_path_fraction": generated["paths"]["jumping_path_fraction"],
    }


def compare(run_a: str | Path, run_b: str | Path, out_dir: str | Path, **kwargs) -> list[dict]:
    """Evaluate two runs on the same draws and pairs (same seed) and put them side by side in one report."""
    out = Path(out_dir)
    results = []
    figures: list[tuple[str, str]] = []
    audio_rows: list[tuple[str, list[tuple[str, str]]]] = []
    for label, run in (("a", run_a), ("b", run_b)):
        res = evaluate(run, out / label, **kwargs)
        results.append(res)
        sub = _report_assets(out / label)
        figures += [(f"{Path(run).name}: {title}", f"{label}/{src}") for title, src in sub[0]]
        audio_rows += [(f"{Path(run).name}: {title}", [(n, f"{label}/{s}") for n, s in srcs]) for title, srcs in sub[1]]
    write_json(out / "metrics.json", {"compare": results})
    write_report(out, results, figures, audio_rows)
    return results


def _run_corpus(run: Run):
    path = Path(run.corpus.corpus_path)
    try:
        corpus = load_corpus(path, duration_s=run.config.data.duration_s)
    except CorpusError as exc:
        raise CorpusError(f"the run's corpus {path} cannot be read ({exc}); evaluate where it was trained") from None
    if [e.name for e in corpus.entries] != run.corpus.names:
        raise CorpusError(f"the corpus in {path} has changed since training; evaluate against the corpus it was trained on")
    return corpus


def _save_figure(fig: Any, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80))


def _figures(run: Run, out: Path, health: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    mu = run.latent_mu.numpy()
    dims = mu.shape[1]
    cols = min(4, dims)
    rows = math.ceil(dims / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    grid = np.linspace(-4, 4, 200)
    for d in range(rows * cols):
        ax = axes[d // cols][d % cols]
        if d >= dims:
            ax.axis("off")
            continue
        ax.hist(mu[:, d], bins=30, range=(-4, 4), density=True, alpha=0.7)
        ax.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k-", lw=1)
        ax.set_title(f"z{d}", fontsize=9)
    fig.suptitle("posterior means per latent dimension against N(0, 1)")
    fig.tight_layout()
    _save_figure(fig, out / "latent_histograms.png")
    plt.close(fig)
    figs.append(("Posterior means against N(0, 1)", "latent_histograms.png"))

    centred = mu - mu.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred[:, 0], np.zeros(len(mu))]
    fams = run.corpus.families
    fig, ax = plt.subplots(figsize=(8, 6))
    cmap = plt.get_cmap("tab20")
    for i, fam in enumerate(sorted(set(fams))):
        sel = np.array([f == fam for f in fams])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=cmap(i % 20), label=fam)
    ax.legend(fontsize=7, markerscale=2, ncol=2)
    ax.set_title("corpus in latent space (first two principal axes of the posterior means)")
    fig.tight_layout()
    _save_figure(fig, out / "latent_map.png")
    plt.close(fig)
    figs.append(("Latent map coloured by family", "latent_map.png"))

    fig, ax = plt.subplots(figsize=(6, 3))
    levels = health["_path_levels"]
    ax.plot(range(len(levels)), levels, "o-")
    ax.set_xlabel("interpolation step")
    ax.set_ylabel("RMS (dBFS)")
    ax.set_title("level along an interpolation path (a dipping one if any)")
    fig.tight_layout()
    _save_figure(fig, out / "path_levels.png")
    plt.close(fig)
    figs.append(("Level along an interpolation path", "path_levels.png"))
    return figs


def _write_worst_audio(out: Path, sets: dict[str, QualitySet]) -> list[tuple[str, list[tuple[str, str]]]]:
    rows = []
    for split, s in sets.items():
        worst = np.argsort(-s.values["model"]["lsd_db"])[:5]
        stems = unique_stems(s.names[i] for i in worst)  # names come from manifests: never path parts
        for i, stem in zip(worst, stems):
            files = []
            for label, wav in (("original", s.reference[i]), ("oracle", s.outputs["oracle"][i]), ("model", s.outputs["model"][i])):
                name = f"audio/{split}_{stem}_{label}.wav"
                audio_io.write_wav(out / name, audio_io.limited_peak(wav))
                files.append((label, name))
            rows.append((f"{split}: {s.names[i]} (model LSD {s.values['model']['lsd_db'][i]:.2f} dB)", files))
    return rows


def _write_per_note(path: Path, sets: dict[str, QualitySet]) -> None:
    def write(fh: Any) -> None:
        w = csv.writer(fh)
        w.writerow(["split", "name", *[f"{sys}_{m}" for sys in ("model", "pca", "oracle") for m in MEASURES]])
        for split, s in sets.items():
            for i, name in enumerate(s.names):
                w.writerow([split, spreadsheet_safe(name),
                            *[f"{s.values[sys][m][i]:.4f}" for sys in ("model", "pca", "oracle") for m in MEASURES]])

    atomic_write(path, write, mode="w", newline="")


def _report_assets(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, list[tuple[str, str]]]]]:
    figs = [(p.stem.replace("_", " "), p.name) for p in sorted(folder.glob("*.png"))]
    rows: dict[str, list[tuple[str, str]]] = {}
    for p in sorted((folder / "audio").glob("*.wav")):
        key, label = p.stem.rsplit("_", 1)
        rows.setdefault(key, []).append((label, f"audio/{p.name}"))
    return figs, list(rows.items())


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _generated_headline_html(h: dict) -> str:
    """Headline items 4–7: the generated notes beside the real held-out notes."""
    realism = ("" if h["draws_frechet"] is None else
               f"<li>A family classifier trained here ({_pct(h['classifier_accuracy'])} right on held-out notes) "
               f"puts the draws at a Fréchet distance of <b>{_num(h['draws_frechet'])}</b> from the training notes "
               f"(held-out real notes: {_num(h['heldout_frechet'])}); family entropy "
               f"{_num(h['draws_family_entropy_bits'])} bits (real: {_num(h['heldout_family_entropy_bits'])}).</li>")
    return (f"<li><b>{_pct(h['draws_within_25_cents'])}</b> of random draws are within ±25 cents of C4 "
            f"(the corpus itself: {_pct(h['corpus_within_25_cents'])}).</li>"
            f"<li>Diversity: NDB/K of the draws <b>{_num(h['draws_ndb_k'])}</b> (real held-out notes: "
            f"{_num(h['heldout_ndb_k'])}; lower is closer to the training notes' spread).</li>" + realism +
            f"<li>Novelty: a draw's nearest training note is {_num(h['draws_nearest_over_typical'])} of the typical "
            f"distance between two training notes (held-out real notes: {_num(h['heldout_nearest_over_typical'])}); "
            f"<b>{_pct(h['jumping_path_fraction'])}</b> of interpolation paths jump instead of blending.</li>")


def _generated_html(g: dict) -> str:
    """The section of :func:`judge_generated`: one row per set, real held-out notes first."""
    e = html.escape
    labels = {"heldout": "real held-out notes (reference)", "heldout_resynthesised": "held-out, magnitude through phase retrieval",
              "draws": "model: prior draws", "pca_draws": "PCA: Gaussian draws"}
    head = ("<h3>Generated notes, judged as the field does</h3><table><tr><th>set</th><th>n</th><th>±10 c</th>"
            "<th>±25 c</th><th>median cents</th><th>p90 |cents|</th><th>NDB/K</th><th>Fréchet</th>"
            "<th>family entropy (bits)</th><th>inception score</th><th>nearest / typical</th></tr>")
    rows = []
    for key, r in g["sets"].items():
        pt, rl = r["pitch"], r["realism"] or {}
        rows.append(f"<tr><td>{e(labels.get(key, key))}</td><td>{pt['n']}</td><td>{_pct(pt['within_10'])}</td>"
                    f"<td>{_pct(pt['within_25'])}</td><td>{_num(pt['median_cents'], 1)}</td>"
                    f"<td>{_num(pt['p90_abs_cents'], 1)}</td><td>{_num(r['diversity']['ndb_k'])}</td>"
                    f"<td>{_num(rl.get('frechet'))}</td><td>{_num(rl.get('family_entropy_bits'))}</td>"
                    f"<td>{_num(rl.get('inception_score'))}</td><td>{_num(r['novelty']['nearest_over_typical'])}</td></tr>")
    pitch = "".join(f"<tr><td>{e(k.replace('_', ' '))}</td><td>{v['n']}</td><td>{_pct(v['within_10'])}</td>"
                    f"<td>{_pct(v['within_25'])}</td><td>{_pct(v['within_25_folded'])}</td>"
                    f"<td>{_pct(v['unpitched_fraction'])}</td></tr>" for k, v in g["pitch"].items())
    pa = g["paths"]
    k = g["sets"]["draws"]["diversity"]["k"]
    return (head + "".join(rows) + f"</table><p>Pitch: cents from C4 (YIN). NDB/K: share of {k} k-means bins of the "
            "training notes' log-mels whose share of the set differs from the training notes' (α = 0.05). Fréchet "
            "distance and entropies in a family classifier trained on the training notes. Nearest / typical: median "
            "log-mel distance to the nearest training note over the median distance between two training notes "
            "(copies sit near 0).</p><h4>Pitch of every set</h4><table><tr><th>notes</th><th>n</th><th>±10 c</th>"
            "<th>±25 c</th><th>±25 c, any octave</th><th>unpitched</th></tr>" + pitch + "</table>"
            f"<p>Interpolation paths: the largest step between neighbouring steps is {_num(pa['max_over_mean_step_median'])} "
            f"mean steps in the median path ({_num(pa['max_over_mean_step_p90'])} at the 90th percentile); "
            f"{_pct(pa['jumping_path_fraction'])} of paths exceed {pa['jump_ratio']:g}.</p>")


def write_report(out: Path, results: Sequence[dict], figures: list[tuple[str, str]],
                 audio_rows: list[tuple[str, list[tuple[str, str]]]]) -> Path:
    """A static HTML page (no scripts, no CDN) whose images and sounds are files beside it."""
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>SampleGen evaluation</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}.big{font-size:1.3em}</style></head><body>",
             "<h1>SampleGen evaluation</h1>"]
    if len(results) > 1:  # --compare: the headline figures side by side, on the same draws and paths
        keys = [k for k in results[0]["headline"] if k != "split"]
        parts.append("<h2>Side by side</h2><table><tr><th>figure</th>" + "".join(
            f"<th>{e(Path(r['run']).name)}</th>" for r in results) + "</tr>" + "".join(
            f"<tr><td>{e(k)}</td>" + "".join(f"<td>{_num(r['headline'].get(k), 3)}</td>" for r in results) + "</tr>"
            for k in keys) + "</table>")
    for res in results:
        h = res["headline"]
        parts.append(f"<h2>{e(Path(res['run']).name)}</h2><ol class='big'>"
                     f"<li>On {e(h['split'])} notes the model's log-spectral distance is <b>{h['model_lsd_db']:.2f} dB</b> "
                     f"(PCA with as many components: {h['pca_lsd_db']:.2f} dB; the best a magnitude-only model can do, "
                     f"the oracle: {h['oracle_lsd_db']:.2f} dB). Lower is better.</li>"
                     f"<li><b>{100 * h['unhealthy_draw_fraction']:.1f} %</b> of random draws are silent or noise-like.</li>"
                     f"<li><b>{100 * h['dipping_path_fraction']:.1f} %</b> of interpolation paths dip more than 6 dB "
                     "below their ends.</li>" + _generated_headline_html(h) + "</ol>")
        parts.append("<h3>Sound quality</h3><table><tr><th>split</th><th>n</th>"
                     + "".join(f"<th>{s} {m}</th>" for s in ("model", "pca", "oracle") for m in ("SC dB", "LSD dB", "MR-STFT"))
                     + "</tr>")
        for split, q in res["quality"].items():
            parts.append(f"<tr><td>{e(split)}</td><td>{q['n']}</td>" + "".join(
                f"<td>{q[s][m]['mean']:.2f}</td>" for s in ("model", "pca", "oracle") for m in MEASURES) + "</tr>")
        parts.append("</table><p>Means over notes; medians and maxima in metrics.json, every note in per_note.csv.</p>")
        a = res["artefacts"]
        parts.append("<h3>Artefacts of discarding phase (original against oracle)</h3><table><tr><th>measure</th>"
                     "<th>mean</th><th>median</th><th>worst</th></tr>" + "".join(
                         f"<tr><td>{e(k)}</td><td>{a[k]['mean']:.2f}</td><td>{a[k]['median']:.2f}</td><td>{a[k]['max']:.2f}</td></tr>"
                         for k in ("sc_db", "lsd_db", "mrstft", "attack_smearing_db", "pre_echo_db")) + "</table>")
        clicks = a["onset_clicks"]
        parts.append("<p>Notes that start on a click (first sample above "
                     f"{100 * M.CLICK_JUMP:.0f} % of the peak, or energy above 4 kHz in the first 2 ms more than "
                     f"{M.CLICK_HF_DB:.0f} dB above the note's body): " + ", ".join(
                         f"{e(k)} {100 * v:.1f} %" for k, v in clicks.items()) + ".</p>")
        lat = res["latent"]
        parts.append(f"<h3>Latent distribution</h3><p>{lat['active_dims']} of {lat['latent_dim']} dimensions active "
                     "(variance of the posterior means above 0.01). KL per dimension (nats): "
                     + (", ".join(f"{v:.2f}" for v in lat["kl_per_dim"]) if lat["kl_per_dim"] else "none (plain auto-encoder)")
                     + "</p>")
        parts.append(_generated_html(res["generated"]))
        hl = res["health"]
        parts.append(f"<h3>Generation health</h3><table><tr><th>measure</th><th>value</th></tr>"
                     f"<tr><td>silent prior draws</td><td>{100 * hl['silent_fraction']:.1f} %</td></tr>"
                     f"<tr><td>noise-like prior draws</td><td>{100 * hl['noise_like_fraction']:.1f} %</td></tr>"
                     f"<tr><td>dipping interpolation paths</td><td>{100 * hl['dipping_path_fraction']:.1f} %</td></tr>"
                     f"<tr><td>draws that start on a click</td><td>{100 * hl['onset_click_fraction']:.1f} %</td></tr>"
                     f"<tr><td>draws / paths × steps</td><td>{hl['n_draws']} / {hl['n_paths']} × {hl['steps']}</td></tr></table>")
    parts.append("<h2>Figures</h2>" + "".join(f"<figure><img src='{e(src)}' alt='{e(t)}' style='max-width:100%'>"
                                             f"<figcaption>{e(t)}</figcaption></figure>" for t, src in figures))
    parts.append("<h2>Worst notes: listen</h2><table><tr><th>note</th><th>original</th><th>oracle</th><th>model</th></tr>")
    for title, files in audio_rows:
        cells = {label: src for label, src in files}
        parts.append(f"<tr><td>{e(title)}</td>" + "".join(
            f"<td><audio controls preload='none' src='{e(cells[k])}'></audio></td>" if k in cells else "<td></td>"
            for k in ("original", "oracle", "model")) + "</tr>")
    parts.append("</table></body></html>")
    page = "\n".join(parts)
    return atomic_write(out / "report.html", lambda fh: fh.write(page), mode="w")
