"""GPU figures, before and after in one run: training samples/s (fp32 and bf16, the quality each
reaches), generation notes/s and the phase retrieval behind it.

Usage on a CUDA machine (from the repository root, after `pip install -e .` with a CUDA torch):

    git archive <old-commit> src | tar -x -C /tmp/before      # the code to compare with, if any
    python benchmarks/scale_gpu.py --workdir /tmp/scale-gpu --before /tmp/before/src
    python benchmarks/scale_gpu.py --workdir /tmp/g --device cpu --notes 64 --distinct 64 --epochs 2   # a smoke run

What it measures, with the code it is run with (and, given ``--before``, the same again in a child
process that imports the package from that folder instead):

- training: :func:`samplegen.training.train.train` itself, default model, batch 32 and 256, fp32 and bf16
  autocast, on ``--notes`` notes of 2 s (``--distinct`` synthetic notes, tiled with random gains: the
  throughput does not depend on the content); samples per second = training notes / epoch time
  (median over the epochs after the first, validation and checkpoint included); the best validation
  loss of each says whether bf16 keeps quality;
- phase retrieval: the default method (:func:`samplegen.spectral.stft.retrieve_phase`) on the true
  magnitudes of 64 synthetic notes, ms per note at batch 1 and 64, and its spectral convergence;
- generation: :func:`samplegen.generation.generate.decode` (decoder + default phase retrieval) at batch 256,
  notes per second, and the decoder alone.

Writes WORKDIR/scale_gpu.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from samplegen import checkpoint  # noqa: E402
import samplegen  # noqa: E402
from samplegen.audio.corpus import CorpusEntry  # noqa: E402
from samplegen.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from samplegen.generation.generate import decode  # noqa: E402
from samplegen.spectral import stft as spectral  # noqa: E402
from samplegen.spectral.features import audio_to_features  # noqa: E402
from samplegen.training.feature_cache import NoteFeatures  # noqa: E402
from samplegen.training.train import train  # noqa: E402
from synth import note_family  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_figures(feats: NoteFeatures, workdir: Path, device: str, epochs: int, batch: int, precision: str) -> dict:
    cfg = RunConfig(data=DataConfig(duration_s=2.0),
                    train=TrainConfig(epochs=epochs, batch_size=batch, patience=epochs, precision=precision))
    out = workdir / f"run-{precision}-b{batch}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = train(feats, out, cfg, show_progress=False, device=device)
    total = time.perf_counter() - t0
    rows = (out / "history.csv").read_text().splitlines()[1:]
    seconds = [float(r.split(",")[-1]) for r in rows]
    steady = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    n_train = round(0.8 * len(feats))
    return {"precision": precision, "batch": batch, "epochs": result.epochs_run, "total_s": total,
            "epoch_s_median": steady, "train_samples_per_s": n_train / steady,
            "best_val_loss": result.best_val_loss, "run": str(out)}


def phase_figures(audio: torch.Tensor, device: str) -> dict:
    """The default phase retrieval on true magnitudes: ms per note (batch 1 and all) and SC."""
    cfg = spectral.StftConfig()
    mag = spectral.magnitude(audio.to(device), cfg)
    n = audio.shape[1]
    spectral.retrieve_phase(mag[:1], cfg, n)  # compiles/loads the heap walk, warms the device
    _sync(device)
    t0 = time.perf_counter()
    for i in range(8):
        spectral.retrieve_phase(mag[i], cfg, n)
    _sync(device)
    one = (time.perf_counter() - t0) / 8
    t0 = time.perf_counter()
    wav = spectral.retrieve_phase(mag, cfg, n)
    _sync(device)
    batched = (time.perf_counter() - t0) / len(mag)
    rebuilt = spectral.magnitude(wav, cfg)
    sc = 20 * torch.log10((rebuilt - mag).flatten(1).norm(dim=1) / mag.flatten(1).norm(dim=1))
    return {"ms_per_note_batch1": 1000 * one, "ms_per_note_batched": 1000 * batched, "batch": len(mag),
            "sc_mean_db": float(sc.mean()), "sc_worst_db": float(sc.max())}


def generation_figures(run_dir: Path, device: str, batch: int, repeats: int) -> dict:
    run = checkpoint.load_run(run_dir, device=device)
    z = torch.randn(batch, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    decode(run, z[:2])  # first call compiles PGHI (numba) and warms the device
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        decode(run, z)
    _sync(device)
    full = (time.perf_counter() - t0) / repeats
    with torch.no_grad():
        zd = z.to(device)
        run.model.decode(zd)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            run.model.decode(zd)
        _sync(device)
    model_only = (time.perf_counter() - t0) / repeats
    return {"batch": batch, "notes_per_s": batch / full, "seconds_per_call": full,
            "decoder_only_notes_per_s": batch / model_only}


def tiled_features(workdir: Path, notes: int, distinct: int, device: str) -> tuple[NoteFeatures, torch.Tensor]:
    """``notes`` rows of features: ``distinct`` synthetic notes repeated, each copy at its own gain."""
    audio = torch.from_numpy(np.stack(note_family(distinct, seconds=2.0, seed=0)))
    base = audio_to_features(audio.to(device), spectral.StftConfig()).cpu()
    reps = -(-notes // distinct)
    gains = torch.from_numpy(np.random.default_rng(0).uniform(-1.5, 1.5, reps * distinct)).float()
    tensor = (base.repeat(reps, 1, 1) + gains[:, None, None])[:notes]  # log magnitude: a gain adds
    entries = [CorpusEntry(f"n{i:05d}", f"n{i:05d}.wav") for i in range(notes)]
    return NoteFeatures.from_tensor(workdir, entries, tensor), audio[:64]


def measure(a: argparse.Namespace) -> dict:
    a.workdir.mkdir(parents=True, exist_ok=True)
    feats, audio = tiled_features(a.workdir, a.notes, a.distinct, a.device)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else (platform.processor() or "cpu")
    result = {"device": name, "torch": torch.__version__, "code": str(Path(samplegen.__file__).parent),
              "notes": a.notes, "host_threads": torch.get_num_threads(), "train": [], "generate": []}
    for batch in (32, 256):
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not a.device.startswith("cuda"):
                continue
            result["train"].append(training_figures(feats, a.workdir, a.device, a.epochs, batch, precision))
            print(json.dumps(result["train"][-1]), file=sys.stderr, flush=True)
    del feats
    result["phase"] = phase_figures(audio, a.device)
    result["generate"].append(generation_figures(Path(result["train"][0]["run"]), a.device, 256, 3))
    return result


def table(results: list[tuple[str, dict]]) -> str:
    lines = [f"device: {results[0][1]['device']}, torch {results[0][1]['torch']}, "
             f"{results[0][1]['notes']} notes, {results[0][1]['host_threads']} host threads\n",
             "| code | what | figure |", "|---|---|---|"]
    for label, r in results:
        for t in r["train"]:
            lines.append(f"| {label} | training {t['precision']} batch {t['batch']}: samples/s (best val loss) | "
                         f"{t['train_samples_per_s']:,.0f} ({t['best_val_loss']:.4f}) |")
        p = r["phase"]
        lines.append(f"| {label} | default phase retrieval, ms/note batch 1 / batch {p['batch']} (SC mean, worst) | "
                     f"{p['ms_per_note_batch1']:.1f} / {p['ms_per_note_batched']:.2f} "
                     f"({p['sc_mean_db']:.1f}, {p['sc_worst_db']:.1f} dB) |")
        for g in r["generate"]:
            lines.append(f"| {label} | generate.decode batch {g['batch']}: notes/s (decoder alone) | "
                         f"{g['notes_per_s']:,.0f} ({g['decoder_only_notes_per_s']:,.0f}) |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale-gpu"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--notes", type=int, default=20480)
    p.add_argument("--distinct", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--before", type=Path, help="a src/ folder of older code to measure first, in a child process")
    p.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or pass --device cpu for a smoke run)")
    results = []
    if a.before is not None:
        before_dir = a.workdir / "before"
        args = [sys.executable, __file__, "--workdir", str(before_dir), "--device", a.device, "--notes", str(a.notes),
                "--distinct", str(a.distinct), "--epochs", str(a.epochs), "--json-only"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(a.before.resolve()), os.environ.get("PYTHONPATH", "")]))
        subprocess.run(args, env=env, check=True)
        results.append(("before", json.loads((before_dir / "scale_gpu.json").read_text())))
    result = measure(a)
    (a.workdir / "scale_gpu.json").write_text(json.dumps(result, indent=2))
    if a.json_only:
        return
    results.append(("after" if a.before is not None else "this code", result))
    print(table(results))


if __name__ == "__main__":
    main()
