"""The Python API: the same verbs as the `samplegen` command, taking and returning paths.

>>> from samplegen import api
>>> api.build_corpus("corpus")                       # doctest: +SKIP
>>> api.train_run("corpus", "run", epochs=50)         # doctest: +SKIP
>>> api.sample("run", "out", n=4)                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from samplegen.app import export, plugin_bundle
from samplegen.app import tune as tuning
from samplegen.audio.corpus import (BUILDING_NAME, MANIFEST_NAME, Corpus, build_folder_corpus, check_mix_value,
                                    render_soundfont_corpus)
from samplegen.checkpoint import LATENTS_NAME, MODEL_NAME, STATE_NAME, Run, load_run, saved_run_config
from samplegen.config import RunConfig, load_config_file
from samplegen.errors import ParameterError, check_seed
from samplegen.generation import generate
from samplegen.model.network import MODEL_KINDS
from samplegen.training.distributed import resolve_device
from samplegen.training.from_folder import folder_features, train_folder
from samplegen.training.train import TrainResult

#: Most processes reading batches ahead (torch's DataLoader refuses a negative number with a traceback).
MAX_LOADER_WORKERS = 64

if TYPE_CHECKING:
    from samplegen.training.feature_cache import NoteFeatures


def build_corpus(out: str | Path, *, soundfont: str | Path | None = None, source: str | Path | None = None,
                 mix: int | None = None, seed: int = 0, duration_s: float | None = None,
                 programs: Sequence[int] | None = None, velocities: Sequence[int] | None = None,
                 progress: Callable[[int, int], None] | None = None, retune: bool = True,
                 keep_off_pitch: bool = False) -> Corpus:
    """Render a SoundFont (the embedded General MIDI one by default) or prepare a folder of samples.

    Parameters
    ----------
    out : corpus folder to write (WAVs, manifest.csv, corpus_report.txt): new, empty or an earlier corpus build;
        a folder of other files is refused
    soundfont : another .sf2 to render instead of the embedded TimGM6mb.sf2
    source : a folder of the user's own samples (exclusive with ``soundfont``), not a built corpus
    mix : number of two-note mixtures to add (augmentation; 0 = off; None = the default, 300 or 30 % of the notes
        if fewer: see :func:`samplegen.audio.corpus.default_mix_count`)
    programs, velocities : render only these programs / at these velocities (SoundFonts only)
    retune : bring each note within a semitone and a half of a C to that C (the original kept in originals/)
    keep_off_pitch : keep a file of ``source`` that is no C (a D4 sample) instead of refusing it
    """
    if soundfont is not None and source is not None:
        raise ParameterError("give either a SoundFont or a source folder, not both")
    if mix is not None:
        check_mix_value(mix)
    check_seed(seed)
    kwargs: dict[str, Any] = {} if duration_s is None else {"duration_s": duration_s}
    if source is not None:
        return build_folder_corpus(source, out, mix=mix, seed=seed, progress=progress, retune=retune,
                                   keep_off_pitch=keep_off_pitch, **kwargs)
    if programs is not None:
        kwargs["programs"] = programs
    if velocities is not None:
        kwargs["velocities"] = velocities
    return render_soundfont_corpus(out, soundfont=soundfont, mix=mix, seed=seed, progress=progress, retune=retune,
                                   **kwargs)


def resolve_config(config: str | Path | RunConfig | None = None, *, model: str | None = None,
                   epochs: int | None = None, seed: int | None = None) -> RunConfig:
    """A config file (or the defaults) with command-line overrides applied on top."""
    cfg = config if isinstance(config, RunConfig) else (load_config_file(config) if config else RunConfig())
    if model is not None:
        if model not in MODEL_KINDS:
            raise ParameterError(f"model={model!r} must be one of {MODEL_KINDS}")
        cfg = replace(cfg, model=replace(cfg.model, kind=model))
    if epochs is not None:
        cfg = replace(cfg, train=replace(cfg.train, epochs=epochs))
    if seed is not None:
        cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    return cfg


def train_run(data: str | Path, out: str | Path, *, model: str | None = None, epochs: int | None = None,
              seed: int | None = None, config: str | Path | RunConfig | None = None, resume: bool = False,
              show_progress: bool = True, devices: int = 1, nodes: int = 1, rdzv: str | None = None,
              device: str = "auto", precision: str | None = None, cache: str | Path | None = None,
              workers: int | None = None, cache_dtype: str = "float32", loader_workers: int = 0) -> TrainResult:
    """Train on a corpus folder (built, or any folder of samples) into run folder ``out``.

    Features come from the on-disk cache (computed once with ``workers`` processes);
    ``devices`` processes per machine on ``nodes`` machines train data-parallel
    (docs/scaling.md); under torchrun the launcher's processes are joined instead. With ``resume``
    the run's own saved config is used (only ``epochs`` may be raised), so a resumed run needs no
    flags beyond ``--data``, ``--out`` and ``--resume``.
    """
    if not isinstance(loader_workers, int) or not 0 <= loader_workers <= MAX_LOADER_WORKERS:
        raise ParameterError(f"loader_workers={loader_workers!r} must be an integer from 0 to {MAX_LOADER_WORKERS}")
    saved = saved_run_config(out, epochs) if resume else None
    cfg = saved if saved is not None else resolve_config(config, model=model, epochs=epochs, seed=seed)
    if precision is not None:
        cfg = replace(cfg, train=replace(cfg.train, precision=precision))

    return train_folder(data, out, cfg, resume=resume, show_progress=show_progress, devices=devices, nodes=nodes,
                        rdzv=rdzv, device=device, cache=cache, workers=workers, dtype=cache_dtype,
                        loader_workers=loader_workers)


def compute_features(data: str | Path, *, config: str | Path | RunConfig | None = None,
                     cache: str | Path | None = None, workers: int | None = None, cache_dtype: str = "float32",
                     show_progress: bool = True) -> "NoteFeatures":
    """Fill the feature cache for a corpus folder ahead of training (``samplegen features``)."""

    cfg = resolve_config(config)
    return folder_features(data, cfg, cache=cache, workers=workers, dtype=cache_dtype, show_progress=show_progress)


def run_is_complete(run: str | Path) -> bool:
    """True when a run folder holds finished training (corpus latents are written last)."""
    p = Path(run)
    return (p / MODEL_NAME).is_file() and (p / LATENTS_NAME).is_file()


def run_is_partial(run: str | Path) -> bool:
    """True when a run folder holds an unfinished training to resume from."""
    return (Path(run) / STATE_NAME).is_file() and not run_is_complete(run)


def load_for_generation(run: str | Path, device: str = "auto") -> Run:
    """A run loaded where it will decode: ``device`` "auto" (a GPU when there is one, with that device's phase
    retrieval), "cpu" or "cuda"."""
    return load_run(run, resolve_device(device))


def reconstruct(run: str | Path, items: Sequence[str], out: str | Path, *, with_originals: bool = True,
                device: str = "auto") -> list[Path]:
    """Re-create each input from its latent point; writes ``NAME_recon.wav`` (and ``NAME_original.wav``)."""
    r = load_for_generation(run, device)
    sounds = generate.reconstruct(r, items)
    if with_originals:
        sounds = generate.originals(r, items) + sounds
    return generate.write_sounds(sounds, out, r)


def interpolate(run: str | Path, a: str, b: str, out: str | Path, *, steps: int = 8, mode: str = "linear",
                device: str = "auto") -> list[Path]:
    """``steps`` sounds on the path from A to B in latent space."""
    r = load_for_generation(run, device)
    return generate.write_sounds(generate.interpolate(r, a, b, steps=steps, mode=mode), out, r)


def sample(run: str | Path, out: str | Path, *, n: int = 8, temperature: float = 1.0, seed: int = 0,
           device: str = "auto") -> list[Path]:
    """``n`` new sounds drawn from the prior."""
    r = load_for_generation(run, device)
    return generate.write_sounds(generate.sample(r, n=n, temperature=temperature, seed=seed), out, r)


def perturb(run: str | Path, item: str, out: str | Path, *, amount: float = 0.5, n: int = 4, seed: int = 0,
            device: str = "auto") -> list[Path]:
    """``n`` variations around one sound."""
    r = load_for_generation(run, device)
    return generate.write_sounds(generate.perturb(r, item, amount=amount, n=n, seed=seed), out, r)


def tune(data: str | Path, out: str | Path, trials: int, *, storage: str | None = None, study_name: str = "samplegen",
         epochs: int = 40, config: str | Path | RunConfig | None = None, seed: int = 0, pruner: Any = None,
         max_unhealthy: float = 0.01, progress: Callable[[str], None] | None = None) -> Any:
    """Hyper-parameter search; see :func:`samplegen.app.tune.tune`. Returns its TuneResult."""

    return tuning.tune(data, out, trials, storage=storage, study_name=study_name, epochs=epochs,
                       base=resolve_config(config), seed=seed, pruner=pruner, max_unhealthy=max_unhealthy,
                       progress=progress)


def export_sfz(run: str | Path, items: Sequence[str], out: str | Path, *, device: str = "auto") -> list[Path]:
    """An SFZ instrument per SOUND (see :mod:`samplegen.app.export`), its notes decoded on ``device``; returns the
    .sfz files."""

    return export.export_sfz(load_for_generation(run, device), items, out)


def export_sf2(run: str | Path, items: Sequence[str], out: str | Path, *, device: str = "auto") -> Path:
    """One SoundFont 2 with a preset per SOUND (see :mod:`samplegen.app.export`), decoded on ``device``."""

    return export.export_sf2(load_for_generation(run, device), items, out)


def export_onnx(run: str | Path, out: str | Path) -> dict[str, Path]:
    """The decoder as ONNX + TorchScript + its recipe JSON (see :mod:`samplegen.app.export`). On the CPU whatever
    the machine: it writes weights, checked against ONNX Runtime's CPU provider, and decodes nothing."""

    return export.export_onnx(load_run(run), out)


def export_plugin(run: str | Path, out: str | Path) -> dict[str, Path]:
    """The model bundle the JUCE plug-in plays (see :mod:`samplegen.app.plugin_bundle`)."""

    return plugin_bundle.export_plugin_bundle(load_run(run), out)


@dataclass
class DemoResult:
    corpus: Path
    run: Path
    outputs: dict[str, list[Path]]
    train: TrainResult | None


def demo(out: str | Path, *, epochs: int | None = None, config: str | Path | RunConfig | None = None,
         programs: Sequence[int] | None = None, velocities: Sequence[int] | None = None,
         show_progress: bool = True, log: Callable[[str], None] = lambda s: None) -> DemoResult:
    """The main job: build the default corpus, train the default VAE, write example sounds.

    Re-running reuses a finished corpus and run (and resumes an interrupted run).
    ``config``, ``programs`` and ``velocities`` shrink it for smoke tests.
    """
    cfg = resolve_config(config, epochs=epochs)
    out = Path(out)
    corpus_dir, run_dir, sounds_dir = out / "corpus", out / "run", out / "sounds"
    if (corpus_dir / MANIFEST_NAME).is_file() and not (corpus_dir / BUILDING_NAME).exists():
        log(f"reusing corpus in {corpus_dir}")
    else:
        log(f"rendering the default corpus into {corpus_dir} ...")
        build_corpus(corpus_dir, duration_s=cfg.data.duration_s, programs=programs, velocities=velocities)
    result = None
    if run_is_complete(run_dir):
        log(f"reusing trained run in {run_dir}")
    else:
        resume = run_is_partial(run_dir)
        log(("resuming" if resume else "training the default VAE") + f" in {run_dir} ...")
        result = train_run(corpus_dir, run_dir, config=cfg, resume=resume, show_progress=show_progress)
    r = load_run(run_dir)
    names, splits, families = r.corpus.names, r.corpus.splits, r.corpus.families
    held = [n for n, s in zip(names, splits) if s == "val"]
    seen = [n for n, s in zip(names, splits) if s == "train"]
    picks = (held[:2] + seen[:2]) or names[:4]
    outputs: dict[str, list[Path]] = {}
    log("writing reconstructions, an interpolation and random samples ...")
    outputs["reconstructions"] = reconstruct(run_dir, picks, sounds_dir / "reconstructions")
    a = names[0]
    b = next((n for n, f in zip(names, families) if f != families[0]), names[-1])
    outputs["interpolation"] = interpolate(run_dir, a, b, sounds_dir / "interpolation", steps=8)
    outputs["samples"] = sample(run_dir, sounds_dir / "samples", n=8)
    outputs["variations"] = perturb(run_dir, a, sounds_dir / "variations", amount=0.5, n=4)
    return DemoResult(corpus_dir, run_dir, outputs, result)
