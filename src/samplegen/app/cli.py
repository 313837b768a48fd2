"""The `samplegen` command: parses arguments, calls :mod:`samplegen.app.api`, prints where things went."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence, TypeAlias

from samplegen import __version__

from samplegen.app import runtime
from samplegen.config import PRECISIONS, TrainConfig
from samplegen.errors import SampleGenError
from samplegen.files import terminal_safe


#: What `add_subparsers` returns: each `_add_<verb>_parser` adds its verb to it.
_Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _print_paths(paths: Sequence[Path], what: str) -> None:
    if not paths:
        return
    folder = Path(paths[0]).parent
    print(f"wrote {len(paths)} {what} to {folder}/")
    for p in paths:
        print(f"  {p}")


def cmd_corpus_build(args: argparse.Namespace) -> None:
    from samplegen.app import api
    from tqdm.auto import tqdm

    bars: list[tqdm] = []  # opened at the first note, so a refused build prints its error alone

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc="corpus", unit="note", dynamic_ncols=True))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = api.build_corpus(args.out, soundfont=args.soundfont, source=args.source, mix=args.mix,
                                  seed=args.seed, duration_s=args.duration, progress=progress, retune=args.retune,
                                  keep_off_pitch=args.keep_off_pitch)
    for bar in bars:
        bar.close()
    mixtures = sum(e.parents is not None for e in corpus.entries)
    made = f", {mixtures} of them two-note mixtures (--mix 0: none)" if mixtures else ""
    print(f"corpus: {len(corpus.entries)} notes in {args.out}/ (manifest.csv){made}")
    if corpus.skipped:
        print(f"skipped {len(corpus.skipped)} file(s); reasons in {Path(args.out) / 'corpus_report.txt'}:")
        for file, reason in corpus.skipped[:10]:
            print(f"  {terminal_safe(file)}: {terminal_safe(reason)}")
    retuned = corpus.retuned
    if retuned:
        worst = max(retuned, key=lambda e: abs(e.retuned_cents))
        print(f"retuned {len(retuned)} note(s) to C (largest shift {worst.retuned_cents:+.0f} cents, "
              f"{terminal_safe(worst.name)}); the notes as they were are in {Path(args.out) / 'originals'}/")
    if corpus.removed:
        print(f"removed {corpus.removed} file(s) an earlier build wrote into {args.out}/ that this corpus does not list")
    if corpus.off_pitch:
        print(f"warning: {len(corpus.off_pitch)} note(s) are not C4 within ±50 cents (listed in corpus_report.txt)")
    for w in caught:
        if "C4" not in str(w.message):
            print(f"warning: {w.message}")


def cmd_tune(args: argparse.Namespace) -> None:
    from samplegen.app import api

    result = api.tune(args.data, args.out, args.trials, storage=args.storage, study_name=args.study,
                      epochs=args.epochs, config=args.config, seed=args.seed, max_unhealthy=args.max_unhealthy,
                      progress=print)
    if result.best_config is not None:
        print(f"best held-out LSD {result.best_value:.3f} dB; settings: {result.best_config} "
              f"(samplegen train --config {result.best_config})")
    print(f"study '{result.study_name}' holds {result.n_finished} finished trials; summary: {result.summary}")


def cmd_export_sfz(args: argparse.Namespace) -> None:
    from samplegen.app import api

    _print_paths(api.export_sfz(args.run, args.sounds, args.out, device=args.device), "SFZ instrument(s)")


def cmd_export_sf2(args: argparse.Namespace) -> None:
    from samplegen.app import api

    print(f"wrote {api.export_sf2(args.run, args.sounds, args.out, device=args.device)} ({len(args.sounds)} preset(s), bank 0)")


def cmd_export_onnx(args: argparse.Namespace) -> None:
    from samplegen.app import api

    paths = api.export_onnx(args.run, args.out)
    _print_paths(list(paths.values()), "decoder files")
    print("how a plug-in uses them: docs/plugin.md")


def cmd_export_plugin(args: argparse.Namespace) -> None:
    from samplegen.app import api

    paths = api.export_plugin(args.run, args.out)
    _print_paths(list(paths.values()), "plug-in bundle files")
    print("the plug-in opens this folder with \"Load model...\"; installing it as the default: docs/plugin.md")


def cmd_train(args: argparse.Namespace) -> None:
    from samplegen.app import api

    result = api.train_run(args.data, args.out, model=args.model, epochs=args.epochs, seed=args.seed,
                           config=args.config, resume=args.resume, show_progress=not args.quiet,
                           devices=args.devices, nodes=args.nodes, rdzv=args.rdzv, device=args.device,
                           precision=args.precision, cache=args.cache, workers=args.workers,
                           cache_dtype=args.cache_dtype, loader_workers=args.loader_workers)
    how = "stopped early" if result.stopped_early else "finished"
    at = "epoch 0, the PCA start: no epoch did better" if result.best_epoch == 0 else f"epoch {result.best_epoch}"
    print(f"training {how} after {result.epochs_run} epochs in {result.seconds:.0f} s; "
          f"best validation loss {result.best_val_loss:.4f} at {at}")
    check = result.pca_check
    if check is not None and not check.worse:
        print(f"{check.notes} reconstruction error {check.model:.4g}, the PCA start's {check.pca:.4g}")
    print(f"run folder: {result.run_dir}/ (loss curves in history.png)")


def cmd_features(args: argparse.Namespace) -> None:
    from samplegen.app import api

    feats = api.compute_features(args.data, config=args.config, cache=args.cache, workers=args.workers,
                                 cache_dtype=args.cache_dtype, show_progress=not args.quiet)
    print(f"features of {len(feats)} notes cached ({len(feats.skipped)} unreadable files skipped)")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from samplegen.app import api

    paths = api.reconstruct(args.run, args.inputs, args.out, device=args.device)
    originals = sum(p.name.endswith("_original.wav") for p in paths)
    _print_paths(paths, f"WAVs ({len(paths) - originals} reconstructions, {originals} originals)")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from samplegen.app import api

    _print_paths(api.interpolate(args.run, args.a, args.b, args.out, steps=args.steps, mode=args.mode,
                                 device=args.device), "WAVs")


def cmd_sample(args: argparse.Namespace) -> None:
    from samplegen.app import api

    _print_paths(api.sample(args.run, args.out, n=args.n, temperature=args.temperature, seed=args.seed,
                            device=args.device), "WAVs")


def cmd_perturb(args: argparse.Namespace) -> None:
    from samplegen.app import api

    _print_paths(api.perturb(args.run, args.input, args.out, amount=args.amount, n=args.n, seed=args.seed,
                             device=args.device), "WAVs")


def cmd_info(args: argparse.Namespace) -> None:
    from samplegen.audio.audio_io import pitch_name
    from samplegen.checkpoint import load_run

    run = load_run(args.run)
    cfg = run.config
    print(f"run {run.path}: {cfg.model.kind}, latent {cfg.model.latent_dim}, hidden {list(cfg.model.hidden)}, "
          f"frame network {cfg.model.frame_hidden or 'none'}, "
          f"STFT {cfg.stft.n_fft}/{cfg.stft.hop_length}, {cfg.data.duration_s} s notes"
          + (f", learns instantaneous frequency ({cfg.phase.n_iter} Griffin-Lim iterations after it)"
             if cfg.phase.mode == "if" else ""))
    print(f"{len(run.corpus.names)} corpus notes (name, family, split, measured pitch and retune when built):")
    pitches = run.corpus.pitches_hz or [None] * len(run.corpus.names)
    shifts = run.corpus.retuned_cents or [0.0] * len(run.corpus.names)
    for name, fam, split, hz, shift in zip(run.corpus.names, run.corpus.families, run.corpus.splits, pitches, shifts):
        pitch = "" if hz is None else f"\t{pitch_name(hz)}" + (f", retuned {shift:+.0f} cents" if shift else "")
        print(f"  {terminal_safe(name)}\t{terminal_safe(fam)}\t{split}{pitch}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from samplegen.evaluation import evaluate as ev

    from samplegen.training.distributed import resolve_device

    kwargs = dict(n_draws=args.draws, n_paths=args.paths, steps=args.steps, seed=args.seed,
                  device=resolve_device(args.device), log=print)
    if args.compare:
        results = ev.compare(args.compare[0], args.compare[1], args.out, **kwargs)
    else:
        if not args.run:
            raise SampleGenError("give a RUN folder, or --compare RUN_A RUN_B")
        results = [ev.evaluate(args.run, args.out, data=args.data, **kwargs)]
    for res in results:
        h = res["headline"]
        print(f"{res['run']}: {h['split']} LSD {h['model_lsd_db']:.2f} dB (PCA {h['pca_lsd_db']:.2f}, "
              f"oracle {h['oracle_lsd_db']:.2f}); unhealthy draws {100 * h['unhealthy_draw_fraction']:.1f} %; "
              f"dipping paths {100 * h['dipping_path_fraction']:.1f} %; {res['seconds']:.0f} s")
    print(f"report: {Path(args.out) / 'report.html'}  metrics: {Path(args.out) / 'metrics.json'}")


def cmd_roundtrip(args: argparse.Namespace) -> None:
    from samplegen.evaluation.roundtrip import roundtrip

    for r in roundtrip(args.files, args.out, method=args.method, n_iter=args.iters):
        print(f"{r.source}: SC {r.sc_db:.1f} dB, LSD {r.lsd_db:.2f} dB -> {r.original}, {r.rebuilt}")


def cmd_demo(args: argparse.Namespace) -> None:
    import time

    from samplegen.app import api

    t0 = time.perf_counter()
    result = api.demo(args.out, epochs=args.epochs, show_progress=not args.quiet, log=print)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s. Listen to:")
    for what, paths in result.outputs.items():
        print(f"  {what:16s} {Path(paths[0]).parent}/  ({len(paths)} WAVs)")
    print(f"model and loss curves: {result.run}/  (history.png)")
    print(f"play the instrument:   samplegen play {result.run}   (.venv/bin/samplegen from the repository)")


def cmd_play(args: argparse.Namespace) -> None:
    from samplegen.app.server import serve

    serve(args.run, host=args.host, port=args.port, open_browser=not args.no_browser, device=args.device)


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model decodes and phase retrieval runs (default: a GPU when there is one)")


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, help="feature cache folder (default $SAMPLEGEN_CACHE or ~/.cache/samplegen/features)")
    p.add_argument("--workers", type=int, default=None, help="processes computing features (default: every core)")
    p.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of cached features (float16 halves the disk; default float32)")


def build_parser() -> argparse.ArgumentParser:
    """The `samplegen` parser: one sub-command per verb, each added by its own `_add_<verb>_parser`."""
    p = argparse.ArgumentParser(prog="samplegen", description="Learn a space of C4 instrument notes and make new ones.")
    p.add_argument("--version", action="version", version=f"samplegen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_verb in (_add_corpus_parser, _add_train_parser, _add_features_parser, _add_reconstruct_parser,
                     _add_interpolate_parser, _add_sample_parser, _add_perturb_parser, _add_evaluate_parser,
                     _add_roundtrip_parser, _add_info_parser, _add_tune_parser, _add_export_parser,
                     _add_play_parser, _add_demo_parser):
        add_verb(sub)
    return p


def _add_corpus_parser(sub: _Verbs) -> None:
    corpus = sub.add_parser("corpus", help="build a corpus of notes").add_subparsers(dest="corpus_cmd", required=True, metavar="ACTION")
    build = corpus.add_parser("build", help="render the embedded General MIDI SoundFont (default), another SoundFont, or prepare a folder of samples")
    build.add_argument("--out", required=True, help="corpus folder to write")
    src = build.add_mutually_exclusive_group()
    src.add_argument("--soundfont", help="render this .sf2 instead of the embedded TimGM6mb.sf2")
    src.add_argument("--from", dest="source", help="prepare a folder of your own samples (WAV, FLAC, AIFF, OGG); "
                     "each sub-folder's name is its notes' family")
    build.add_argument("--mix", type=int, default=None,
                       help="add N mixtures of two notes, which smooth the model's blends (default: 300, or 30 %% "
                            "of the notes if fewer; 0: none)")
    build.add_argument("--seed", type=int, default=0, help="seed for choosing mixture pairs")
    build.add_argument("--duration", type=float, default=None, help="note length in seconds, 0.1 to 30 (default 2.0)")
    build.add_argument("--retune", action=argparse.BooleanOptionalAction, default=True,
                       help="resample notes within 150 cents of a C to that C, keeping the originals (default: on)")
    build.add_argument("--keep-off-pitch", action="store_true",
                       help="keep your files that are no C (a D4 sample) instead of refusing them; they will play "
                            "out of tune as C4 instruments")
    build.set_defaults(func=cmd_corpus_build)


def _add_train_parser(sub: _Verbs) -> None:
    tr = sub.add_parser("train", help="train a VAE (or the plain auto-encoder) on a corpus")
    tr.add_argument("--data", required=True, help="corpus folder (built, or any folder of samples)")
    tr.add_argument("--out", required=True, help="run folder to write")
    tr.add_argument("--model", choices=["vae", "ae"], default=None, help="vae (default) or the plain auto-encoder baseline")
    tr.add_argument("--epochs", type=int, default=None,
                    help=f"maximum epochs (default from config: {TrainConfig().epochs})")
    tr.add_argument("--seed", type=int, default=None, help="random seed (default 0); same seed, same weights")
    tr.add_argument("--config", default=None, help="JSON config file (e.g. from `samplegen tune`)")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_options(tr)
    tr.add_argument("--devices", type=int, default=1, help="training processes on this machine, one per GPU (default 1)")
    tr.add_argument("--nodes", type=int, default=1, help="machines taking part, each running this command (default 1)")
    tr.add_argument("--rdzv", default=None, metavar="HOST:PORT", help="rendezvous address when --nodes > 1")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: a GPU when there is one")
    tr.add_argument("--precision", choices=list(PRECISIONS), default=None,
                    help="bf16 autocast, fp32, or auto (the default): bf16 on a CPU with native bf16, else fp32")
    tr.add_argument("--loader-workers", type=int, default=0, help="processes reading batches ahead, 0 to 64 (default 0)")
    tr.set_defaults(func=cmd_train)


def _add_features_parser(sub: _Verbs) -> None:
    ft = sub.add_parser("features", help="compute a corpus's features into the cache ahead of training")
    ft.add_argument("--data", required=True, help="corpus folder (built, or any folder of samples)")
    ft.add_argument("--config", default=None, help="JSON config file (its data and STFT settings)")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scale_options(ft)
    ft.set_defaults(func=cmd_features)


def _add_reconstruct_parser(sub: _Verbs) -> None:
    rc = sub.add_parser("reconstruct", help="re-create notes through the model")
    rc.add_argument("run", help="run folder")
    rc.add_argument("inputs", nargs="+", metavar="FILE_OR_NAME", help="audio files or corpus note names")
    rc.add_argument("--out", required=True, help="folder for the WAVs")
    _add_device_option(rc)
    rc.set_defaults(func=cmd_reconstruct)


def _add_interpolate_parser(sub: _Verbs) -> None:
    it = sub.add_parser("interpolate", help="a series of sounds between two notes")
    it.add_argument("run")
    it.add_argument("a", metavar="A", help="audio file or corpus note name")
    it.add_argument("b", metavar="B", help="audio file or corpus note name")
    it.add_argument("--steps", type=int, default=8, help="number of sounds, ends included, 2 to 256 (default 8)")
    it.add_argument("--mode", choices=["linear", "slerp"], default="linear")
    it.add_argument("--out", required=True)
    _add_device_option(it)
    it.set_defaults(func=cmd_interpolate)


def _add_sample_parser(sub: _Verbs) -> None:
    sm = sub.add_parser("sample", help="new sounds from random points of the latent space")
    sm.add_argument("run")
    sm.add_argument("-n", type=int, default=8, help="how many, 1 to 256 (default 8)")
    sm.add_argument("--temperature", type=float, default=1.0, help="spread of the draws (default 1.0)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True)
    _add_device_option(sm)
    sm.set_defaults(func=cmd_sample)


def _add_perturb_parser(sub: _Verbs) -> None:
    pt = sub.add_parser("perturb", help="variations around one sound")
    pt.add_argument("run")
    pt.add_argument("input", metavar="FILE_OR_NAME")
    pt.add_argument("--amount", type=float, default=0.5, help="size of the nudge in prior standard deviations (default 0.5)")
    pt.add_argument("-n", type=int, default=4, help="how many, 1 to 256 (default 4)")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--out", required=True)
    _add_device_option(pt)
    pt.set_defaults(func=cmd_perturb)


def _add_evaluate_parser(sub: _Verbs) -> None:
    ev = sub.add_parser("evaluate", help="sound quality, artefacts, latent distribution and generation health of a run")
    ev.add_argument("run", nargs="?", help="run folder")
    ev.add_argument("--data", default=None, help="a folder of notes the model never saw")
    ev.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="two runs side by side on the same draws")
    ev.add_argument("--out", required=True, help="report folder")
    ev.add_argument("--draws", type=int, default=1000, help="random prior draws for generation health, 1 to 100,000 (default 1000)")
    ev.add_argument("--paths", type=int, default=100, help="interpolation paths between random corpus pairs, 1 to 1,000 (default 100)")
    ev.add_argument("--steps", type=int, default=8, help="steps per interpolation path, 3 to 64 (default 8)")
    ev.add_argument("--seed", type=int, default=0)
    _add_device_option(ev)
    ev.set_defaults(func=cmd_evaluate)


def _add_roundtrip_parser(sub: _Verbs) -> None:
    rt = sub.add_parser("roundtrip", help="what discarding phase costs on your own files (no model)")
    rt.add_argument("files", nargs="+", metavar="FILE")
    rt.add_argument("--out", required=True)
    rt.add_argument("--method", default=None, help="phase retrieval method (default: the package default)")
    rt.add_argument("--iters", type=int, default=None, help="iterations, 0 to 1,000 (default: the package default)")
    rt.set_defaults(func=cmd_roundtrip)


def _add_info_parser(sub: _Verbs) -> None:
    info = sub.add_parser("info", help="show a run's settings and its corpus note names")
    info.add_argument("run")
    info.set_defaults(func=cmd_info)


def _add_tune_parser(sub: _Verbs) -> None:
    tn = sub.add_parser("tune", help="hyper-parameter search (Optuna), resumable and shareable")
    tn.add_argument("--data", required=True, help="corpus folder")
    tn.add_argument("--trials", type=int, required=True, help="finished trials the study should hold, 1 to 1,000")
    tn.add_argument("--out", required=True, help="folder for study.db, best_config.json, plots, summary.html")
    tn.add_argument("--storage", default=None,
                    help="SQLAlchemy URL of the study (default sqlite:///OUT/study.db; e.g. "
                         "postgresql://user:pass@host/db to share one study between machines)")
    tn.add_argument("--study", default="samplegen", help="study name (default samplegen)")
    tn.add_argument("--epochs", type=int, default=40, help="epoch budget per trial (default 40)")
    tn.add_argument("--config", default=None, help="JSON config for what is not searched (duration, split...)")
    tn.add_argument("--max-unhealthy", type=float, default=0.01,
                    help="largest fraction of silent + noise-like prior draws a trial may have (default 0.01)")
    tn.add_argument("--seed", type=int, default=0)
    tn.set_defaults(func=cmd_tune)


def _add_export_parser(sub: _Verbs) -> None:
    ex = sub.add_parser("export", help="sampler instruments (SFZ, SF2), the decoder for a plug-in (ONNX) and the plug-in's model bundle")
    exs = ex.add_subparsers(dest="format", required=True, metavar="FORMAT")
    sfz = exs.add_parser("sfz", help="an SFZ instrument per SOUND: samples/NAME.wav (looped) + NAME.sfz")
    sfz.add_argument("run")
    sfz.add_argument("sounds", nargs="+", metavar="SOUND", help="corpus note name, audio file or .latent.json")
    sfz.add_argument("--out", required=True, help="folder to write")
    _add_device_option(sfz)
    sfz.set_defaults(func=cmd_export_sfz)
    sf2 = exs.add_parser("sf2", help="one SoundFont 2 file, a preset per SOUND")
    sf2.add_argument("run")
    sf2.add_argument("sounds", nargs="+", metavar="SOUND", help="corpus note name, audio file or .latent.json")
    sf2.add_argument("--out", required=True, help="the .sf2 file to write")
    _add_device_option(sf2)
    sf2.set_defaults(func=cmd_export_sf2)
    onx = exs.add_parser("onnx", help="the decoder as ONNX and TorchScript, with its recipe (decoder.json)")
    onx.add_argument("run")
    onx.add_argument("--out", required=True, help="folder to write")
    onx.set_defaults(func=cmd_export_onnx)
    plg = exs.add_parser("plugin", help="the model bundle the JUCE plug-in plays (bundle.json + tensors.safetensors)")
    plg.add_argument("run")
    plg.add_argument("--out", required=True, help="folder to write")
    plg.set_defaults(func=cmd_export_plugin)


def _add_play_parser(sub: _Verbs) -> None:
    pl = sub.add_parser("play", help="the instrument: a local web page to explore, blend and play a run's sounds")
    pl.add_argument("run")
    pl.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    pl.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    pl.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    _add_device_option(pl)
    pl.set_defaults(func=cmd_play)


def _add_demo_parser(sub: _Verbs) -> None:
    dm = sub.add_parser("demo", help="build the default corpus, train the default VAE, write example sounds")
    dm.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    dm.add_argument("--epochs", type=int, default=None, help="maximum epochs (default from config)")
    dm.add_argument("--quiet", action="store_true")
    dm.set_defaults(func=cmd_demo)


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an empty ``--out`` (it would write into the current folder) and one in a run folder the verb reads:
    a run folder holds the model alone, and is shared, resumed and loaded by the plug-in as it is."""
    out = getattr(args, "out", None)
    if out is None:
        return
    if not str(out).strip():
        raise SampleGenError("--out is empty; name the folder (or file) to write")
    runs = [r for r in [getattr(args, "run", None), *(getattr(args, "compare", None) or [])] if r]
    where = Path(out).resolve()
    for run in runs:
        folder = Path(run).resolve()
        if where == folder or folder in where.parents:
            raise SampleGenError(f"--out {out} is inside the run folder {run}, which holds the model alone; "
                                 "write to another folder")


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    """A warning as one line of the verb's output when it is raised: a ten-minute `train` says before it trains
    what it will leave out, not after."""
    print(f"warning: {terminal_safe(str(message))}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.keep_large_buffers()
    try:
        _check_out(args)
        if args.func is cmd_play:  # a server: its warnings as Python shows them, while it runs
            args.func(args)
        else:
            with warnings.catch_warnings():  # a verb's warnings as lines of their own, when they happen
                warnings.simplefilter("always", UserWarning)  # each time, not once a process (tests run many verbs)
                warnings.showwarning = _print_warning
                args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a message at exit
    except BrokenPipeError:  # `samplegen info RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SampleGenError as exc:
        print(f"samplegen: error: {terminal_safe(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system problem the library did not anticipate: still one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"samplegen: error: {exc.strerror or exc}{where}; check the path, free space and permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samplegen: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
