"""GPU figures in one run: phase retrieval and generation on the device, and training samples/s of the
default model, this code against older code (``--before``) and against its own GPU options.

Usage on a CUDA machine (from the repository root, with the package importable):

    git archive <old-commit> src | tar -x -C /tmp/before      # the code to compare with
    python benchmarks/scale_gpu.py --workdir /tmp/sg --before /tmp/before/src --notes-npy notes.npy --out sg.json
    python benchmarks/scale_gpu.py --workdir /tmp/g --device cpu --notes 64 --distinct 16 --epochs 2 \\
        --rows after:fp32:32,after:fp32:32:ungraphed,before:fp32:32 --before /tmp/before/src   # a smoke run

What it measures, in this order (the JSON file is rewritten after each part, so a run cut short keeps
what it finished):

- phase retrieval (:func:`samplegen.spectral.stft.retrieve_phase`) on the true magnitudes of real notes
  (``--corpus``: 64 notes evenly spaced through a corpus's manifest, as ``phase_retrieval.py`` takes them;
  ``--save-notes FILE`` keeps them as an (N, samples) float32 array that ``--notes-npy`` reads back, for a
  GPU machine without the corpus; synthetic notes without either): ms per note
  at batch N and 4·N, and spectral convergence (mean, median, worst) for the CPU default (PGHI, whose heap
  walk runs on the host, + 10 iterations) and the device method (rtpghi) at 0/10/20/30 iterations, and
  without its CUDA graph ("ungraphed") or its fused FGLA ("unfused");
- generation: :func:`samplegen.generation.generate.decode` at batch 256, notes/s, with the device's default
  phase retrieval and with the CPU default, and the decoder alone (a default-size model trained one epoch);
- training: :func:`samplegen.training.train.train` itself, default model, on ``--notes`` notes of 2 s
  (``--distinct`` synthetic notes tiled at random gains: throughput does not depend on the content);
  samples/s = training notes / median epoch time after the first (validation and checkpoint included) and
  the best validation loss.  ``--rows`` lists them as code:precision:batch[:variant], code "after" (this
  code) or "before" (``--before``'s, in a child process), variant "ungraphed" (the step launched from Python,
  not recorded as one CUDA graph: :data:`samplegen.training.train.STEP_GRAPH` "off") or "plain" (that, with
  the step compiled in ``torch.compile``'s default mode instead of
  :data:`samplegen.training.train.CUDA_COMPILE_MODE`).
  ``--budget-s`` skips the rows that would start after that many seconds; ``--training-only`` measures
  nothing else;
- with ``--profile DIR``: torch.profiler tables (top operations by device and by host time) of one decode()
  at batch 256 and of 2 training epochs at batch 32, in DIR.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # phase_retrieval.load_notes, for --corpus

import samplegen  # noqa: E402
from samplegen.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from synth import note_family  # noqa: E402

try:
    from samplegen.audio.corpus import CorpusEntry
    from samplegen.spectral import stft as spectral
    from samplegen.spectral.features import audio_to_features
    from samplegen.training import train as train_module
    from samplegen.training.feature_cache import NoteFeatures
except ImportError:  # --before code from before the package was split into subpackages (b3494d4, the issue's)
    from samplegen import spectral  # type: ignore[no-redef]
    from samplegen import train as train_module  # type: ignore[no-redef]
    from samplegen.corpus import CorpusEntry  # type: ignore[no-redef]
    from samplegen.feature_cache import NoteFeatures  # type: ignore[no-redef]
    from samplegen.features import audio_to_log_features as audio_to_features  # type: ignore[no-redef]

DEFAULT_ROWS = ("after:fp32:32,after:fp32:32:ungraphed,after:bf16:32,after:bf16:256,before:fp32:32,"
                "after:fp32:32:plain,after:fp32:256")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int = 1) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm: compiles, caches, allocator
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def phase_figures(audio: torch.Tensor, device: str) -> list[dict]:
    """Each method on true magnitudes: ms per note at batch N (and 4·N for the defaults), SC per note."""
    cfg = spectral.StftConfig()
    n = audio.shape[1]
    mag = spectral.magnitude(audio.to(device), cfg)
    big = mag.repeat(4, 1, 1)
    rows = []
    runs = [("pghi", 10, ""), ("rtpghi", 0, ""), ("rtpghi", 10, ""), ("rtpghi", 20, ""), ("rtpghi", 30, "")]
    if hasattr(spectral, "FUSED_ON_DEVICE"):  # the device's own FGLA and graphed recursion, and without them
        runs += [("rtpghi", 0, "ungraphed"), ("rtpghi", 30, "unfused"), ("rtpghi", 30, "unfused+ungraphed")]
    for method, iters, variant in runs:
        out: dict[str, torch.Tensor] = {}

        def run(m: torch.Tensor = mag) -> None:
            out["wav"] = spectral.retrieve_phase(m, cfg, n, method=method, n_iter=iters)

        with _phase_variant(variant):
            seconds = _timed(run, device, repeats=3)
            rebuilt = spectral.magnitude(out["wav"], cfg)
            sc = (20 * torch.log10((rebuilt - mag).flatten(1).norm(dim=1) / mag.flatten(1).norm(dim=1))).cpu()
            row = {"method": method, "iters": iters, "variant": variant or "default", "batch": len(mag),
                   "ms_per_note": 1000 * seconds / len(mag), "sc_mean_db": float(sc.mean()),
                   "sc_median_db": float(sc.median()), "sc_worst_db": float(sc.max())}
            if (method, iters) in (("pghi", 10), ("rtpghi", 30), ("rtpghi", 0)):
                row["ms_per_note_batch4x"] = 1000 * _timed(lambda: run(big), device, repeats=3) / len(big)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


@contextlib.contextmanager
def _phase_variant(variant: str) -> Iterator[None]:
    """Phase retrieval with the device's fused FGLA ("unfused") and/or graphed recursion ("ungraphed") off."""
    saved = getattr(spectral, "FUSED_ON_DEVICE", None), getattr(spectral, "RTPGHI_GRAPHS", None)
    if "unfused" in variant:
        spectral.FUSED_ON_DEVICE = False
    if "ungraphed" in variant:
        spectral.RTPGHI_GRAPHS = False
    try:
        yield
    finally:
        if saved[0] is not None:
            spectral.FUSED_ON_DEVICE, spectral.RTPGHI_GRAPHS = saved


def generation_figures(workdir: Path, device: str, batch: int) -> dict:
    """decode() at ``batch``: the device default and the CPU default phase retrieval, and the decoder alone."""
    from samplegen import checkpoint
    from samplegen.generation.generate import decode

    feats, _ = tiled_features(workdir, 256, 64, device)
    run_dir = workdir / "gen-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = RunConfig(data=DataConfig(duration_s=2.0), train=TrainConfig(epochs=1, compile=False))
    train_module.train(feats, run_dir, cfg, show_progress=False, device=device)
    run = checkpoint.load_run(run_dir, device=device)
    z = torch.randn(batch, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    default = spectral.default_phase(device)
    result = {"batch": batch, "default_method": f"{default[0]} + {default[1]}"}
    result["notes_per_s"] = batch / _timed(lambda: decode(run, z), device, repeats=3)
    result["rtpghi20_notes_per_s"] = batch / _timed(lambda: decode(run, z, method="rtpghi", n_iter=20), device, 3)
    result["cpu_default_notes_per_s"] = batch / _timed(lambda: decode(run, z, method="pghi", n_iter=10), device)
    if hasattr(spectral, "FUSED_ON_DEVICE"):
        with _phase_variant("unfused+ungraphed"):
            result["unfused_ungraphed_notes_per_s"] = batch / _timed(lambda: decode(run, z), device, repeats=3)
    with torch.no_grad():
        zd = z.to(device)
        result["decoder_only_notes_per_s"] = batch / _timed(lambda: run.model.decode(zd), device, repeats=5)
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def training_figures(feats: NoteFeatures, workdir: Path, device: str, epochs: int, spec: str) -> dict:
    """One row of ``--rows``, trained with the code that is imported."""
    _, precision, batch_text, *rest = spec.split(":")
    variant = rest[0] if rest else "default"
    batch = int(batch_text)
    torch._dynamo.reset()  # each row compiles afresh (and never meets dynamo's recompile limit)
    if variant in ("plain", "ungraphed"):
        train_module.STEP_GRAPH = "off"  # type: ignore[attr-defined]
    if variant == "plain":
        train_module.CUDA_COMPILE_MODE = None  # type: ignore[attr-defined]
    cfg = RunConfig(data=DataConfig(duration_s=2.0),
                    train=TrainConfig(epochs=epochs, batch_size=batch, patience=epochs, precision=precision))
    out = workdir / ("run-" + spec.replace(":", "-").replace("+", "-"))
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = train_module.train(feats, out, cfg, show_progress=False, device=device)
    total = time.perf_counter() - t0
    rows = (out / "history.csv").read_text().splitlines()[1:]
    seconds = [float(r.split(",")[-1]) for r in rows]
    steady = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    n_train = round(0.8 * len(feats))
    return {"row": spec, "precision": precision, "batch": batch, "variant": variant, "epochs": result.epochs_run,
            "total_s": total, "first_epoch_s": seconds[0], "epoch_s_median": steady,
            "train_samples_per_s": n_train / steady, "best_val_loss": result.best_val_loss}


def profiles(workdir: Path, device: str, out_dir: Path) -> None:
    """torch.profiler tables (top ops by device time and by host time) of decode() at batch 256, with the
    run :func:`generation_figures` trained, and of training at batch 32 (2 epochs of 4,096 notes)."""
    from torch.profiler import ProfilerActivity, profile

    from samplegen import checkpoint
    from samplegen.generation.generate import decode

    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    device_key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"

    def write(name: str, prof: profile, note: str) -> None:
        averages = prof.key_averages()
        text = note + "\n\n" + averages.table(sort_by=device_key, row_limit=30) + "\n\n" + \
            averages.table(sort_by="self_cpu_time_total", row_limit=30)
        (out_dir / name).write_text(text)

    run = checkpoint.load_run(workdir / "gen-run", device=device)
    z = torch.randn(256, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    decode(run, z)  # warm
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        decode(run, z)
        _sync(device)
    write("profile_decode.txt", prof, f"decode, batch 256, {time.perf_counter() - t0:.3f} s under the profiler")

    feats, _ = tiled_features(workdir, 4096, 512, device)
    cfg = RunConfig(data=DataConfig(duration_s=2.0), train=TrainConfig(epochs=2, batch_size=32, patience=2))
    out = workdir / "run-profiled"
    shutil.rmtree(out, ignore_errors=True)
    torch._dynamo.reset()
    train_module.train(feats, out, cfg, show_progress=False, device=device)  # compiles, so the profile does not
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        train_module.train(feats, out, cfg, show_progress=False, device=device)
        _sync(device)
    epochs = (out / "history.csv").read_text().splitlines()[1:]
    write("profile_train.txt", prof, f"train, batch 32, 2 epochs of {round(0.8 * len(feats))} training notes: "
          f"{time.perf_counter() - t0:.3f} s under the profiler; epoch seconds "
          + ", ".join(r.split(",")[-1] for r in epochs))


def tiled_features(workdir: Path, notes: int, distinct: int, device: str) -> tuple[NoteFeatures, torch.Tensor]:
    """``notes`` rows of features: ``distinct`` synthetic notes repeated, each copy at its own gain."""
    audio = torch.from_numpy(np.stack(note_family(distinct, seconds=2.0, seed=0)))
    base = audio_to_features(audio.to(device), spectral.StftConfig()).cpu()
    reps = -(-notes // distinct)
    gains = torch.from_numpy(np.random.default_rng(0).uniform(-1.5, 1.5, reps * distinct)).float()
    tensor = (base.repeat(reps, 1, 1) + gains[:, None, None])[:notes]  # log magnitude: a gain adds
    entries = [CorpusEntry(f"n{i:05d}", f"n{i:05d}.wav") for i in range(notes)]
    return NoteFeatures.from_tensor(workdir, entries, tensor), audio[:64]


def _child_row(a: argparse.Namespace, spec: str) -> dict:
    """A "before" row, measured in a child process that imports the package from ``--before``."""
    out = a.workdir / "before" / (spec.replace(":", "-") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, __file__, "--workdir", str(out.parent), "--device", a.device, "--notes", str(a.notes),
            "--distinct", str(a.distinct), "--epochs", str(a.epochs), "--child-row", spec.replace("before", "after"),
            "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(a.before.resolve()), os.environ.get("PYTHONPATH", "")]))
    subprocess.run(args, env=env, check=True)
    row = json.loads(out.read_text())
    row["row"] = spec
    return row


def measure(a: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    specs = [] if a.rows == "none" else a.rows.split(",")
    for spec in specs:
        parts = spec.split(":")
        if not (3 <= len(parts) <= 4 and parts[0] in ("before", "after") and parts[1] in ("fp32", "bf16")
                and parts[2].isdigit() and (len(parts) == 3 or parts[3] in ("plain", "ungraphed"))):
            raise SystemExit(f"--rows: {spec!r} is not code:precision:batch[:variant] (see --help)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else (platform.processor() or "cpu")
    result: dict = {"device": name, "torch": torch.__version__, "code": str(Path(samplegen.__file__).parent),
                    "notes": a.notes, "host_threads": torch.get_num_threads(), "train": [], "skipped": []}

    def save() -> None:
        a.out.write_text(json.dumps(result, indent=2))

    if not a.training_only:
        _phase_and_generation(a, result, save)
    feats, _ = tiled_features(a.workdir, a.notes, a.distinct, a.device) if specs else (None, None)
    compile_mode = getattr(train_module, "CUDA_COMPILE_MODE", None)
    step_graph = getattr(train_module, "STEP_GRAPH", None)
    for spec in specs:
        if time.perf_counter() - t_start > a.budget_s:
            result["skipped"].append(spec)
            continue
        if spec.startswith("before") and a.before is None:
            raise SystemExit(f"row {spec!r} needs --before")
        try:
            if spec.startswith("before"):
                row = _child_row(a, spec)
            else:
                row = training_figures(feats, a.workdir, a.device, a.epochs, spec)
        except Exception as exc:  # noqa: BLE001 - one failed row is reported; the others still run
            row = {"row": spec, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        train_module.CUDA_COMPILE_MODE = compile_mode  # type: ignore[attr-defined]
        train_module.STEP_GRAPH = step_graph  # type: ignore[attr-defined]
        result["train"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        save()
    result["seconds"] = time.perf_counter() - t_start
    save()
    return result


def _phase_and_generation(a: argparse.Namespace, result: dict, save: Callable[[], None]) -> None:
    """The phase retrieval and generation figures (and ``--profile``'s tables) into ``result``."""
    if a.corpus is not None:
        from phase_retrieval import load_notes

        audio = torch.from_numpy(load_notes(a.corpus, 64)[1])
        result["phase_notes"] = f"{len(audio)} notes of {a.corpus}"
        if a.save_notes is not None:
            np.save(a.save_notes, audio.numpy())
    elif a.notes_npy is not None:
        audio = torch.from_numpy(np.load(a.notes_npy).astype(np.float32))
        result["phase_notes"] = f"{len(audio)} notes from {a.notes_npy.name}"
    else:
        audio = torch.from_numpy(np.stack(note_family(64, seconds=2.0, seed=1)))
        result["phase_notes"] = "64 synthetic notes"
    result["phase"] = phase_figures(audio, a.device)
    save()
    result["generate"] = generation_figures(a.workdir, a.device, 256)
    save()
    if a.profile is not None:
        profiles(a.workdir, a.device, a.profile)


def table(r: dict) -> str:
    lines = [f"device: {r['device']}, torch {r['torch']}, {r['host_threads']} host threads; "
             f"phase on {r.get('phase_notes', 'no notes')}; training on {r['notes']} notes"]
    if "generate" in r:
        lines += [""] + _phase_table(r)
    lines += ["", "| training row | samples/s | first epoch s | best val loss |", "|---|---:|---:|---:|"]
    for t in r["train"]:
        if "error" in t:
            lines.append(f"| {t['row']} | failed: {t['error'][:120]} | | |")
            continue
        lines.append(f"| {t['row']} | {t['train_samples_per_s']:,.0f} | {t['first_epoch_s']:.1f} | "
                     f"{t['best_val_loss']:.4f} |")
    if r["skipped"]:
        lines.append(f"\nskipped (time budget): {', '.join(r['skipped'])}")
    return "\n".join(lines)


def _phase_table(r: dict) -> list[str]:
    lines = ["| phase retrieval | ms/note (batch) | ms/note (4× batch) | SC mean / median / worst (dB) |",
             "|---|---:|---:|---|"]
    for p in r["phase"]:
        big = f"{p['ms_per_note_batch4x']:.2f}" if "ms_per_note_batch4x" in p else ""
        variant = "" if p.get("variant", "default") == "default" else f" ({p['variant']})"
        lines.append(f"| {p['method']} + {p['iters']}{variant} | {p['ms_per_note']:.2f} ({p['batch']}) | {big} | "
                     f"{p['sc_mean_db']:.2f} / {p['sc_median_db']:.2f} / {p['sc_worst_db']:.2f} |")
    g = r["generate"]
    lines += ["", "| generate.decode, batch 256 | notes/s |", "|---|---:|",
              f"| device default ({g['default_method']}) | {g['notes_per_s']:,.0f} |",
              f"| rtpghi + 20 | {g.get('rtpghi20_notes_per_s', float('nan')):,.0f} |",
              f"| CPU default (pghi + 10) | {g['cpu_default_notes_per_s']:,.0f} |",
              f"| device default, unfused and ungraphed | {g.get('unfused_ungraphed_notes_per_s', float('nan')):,.0f} |",
              f"| decoder alone | {g['decoder_only_notes_per_s']:,.0f} |"]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale-gpu"))
    p.add_argument("--out", type=Path, help="the JSON file (default WORKDIR/scale_gpu.json)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--notes", type=int, default=20480)
    p.add_argument("--distinct", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rows", default=DEFAULT_ROWS, help='training rows, or "none"')
    p.add_argument("--budget-s", type=float, default=float("inf"))
    p.add_argument("--corpus", type=Path, help="a corpus folder: 64 of its notes for the phase figures")
    p.add_argument("--save-notes", type=Path, help="with --corpus: save those notes as .npy for --notes-npy")
    p.add_argument("--notes-npy", type=Path, help="real 2-second notes for the phase figures, (N, samples) float32")
    p.add_argument("--before", type=Path, help="a src/ folder of older code for the 'before' rows")
    p.add_argument("--training-only", action="store_true", help="only the training rows: no phase or generation")
    p.add_argument("--profile", type=Path, help="a folder for torch.profiler tables of decode and of training")
    p.add_argument("--child-row", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.out = a.out or a.workdir / "scale_gpu.json"
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or pass --device cpu for a smoke run)")
    if a.child_row:
        a.workdir.mkdir(parents=True, exist_ok=True)
        feats, _ = tiled_features(a.workdir, a.notes, a.distinct, a.device)
        a.out.write_text(json.dumps(training_figures(feats, a.workdir, a.device, a.epochs, a.child_row)))
        return
    print(table(measure(a)))


if __name__ == "__main__":
    main()
