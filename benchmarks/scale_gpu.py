"""GPU figures: training samples/s (fp32 against bf16, with the quality each reaches) and generation notes/s.

Usage on a CUDA machine (from the repository root, after `pip install -e .` with a CUDA torch):

    python benchmarks/scale_gpu.py --workdir /tmp/scale-gpu                 # 2,048 notes of 2 s, 20 epochs
    python benchmarks/scale_gpu.py --workdir /tmp/g --device cpu --notes 64 --epochs 2   # a smoke run anywhere

What it measures:

- training: :func:`samplegen.train.train` itself (features in memory on the device, default
  model, batch 32 and 256), samples per second = training notes / epoch time (median over
  epochs after the first, validation included), fp32 and bf16 autocast; the best validation
  loss of each says whether bf16 keeps quality;
- generation: :func:`samplegen.generate.decode` (decoder + default phase retrieval: PGHI on
  the CPU, 10 FGLA iterations on the device) at batch 1 and 256, notes per second; and the
  decoder alone.

Writes WORKDIR/scale_gpu.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from samplegen import checkpoint  # noqa: E402
from samplegen.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from samplegen.corpus import CorpusEntry  # noqa: E402
from samplegen.feature_cache import NoteFeatures  # noqa: E402
from samplegen.features import audio_to_log_features  # noqa: E402
from samplegen.generate import decode  # noqa: E402
from samplegen.train import train  # noqa: E402
from synth import note_family  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_figures(feats: NoteFeatures, workdir: Path, device: str, epochs: int, batch: int, precision: str) -> dict:
    cfg = RunConfig(data=DataConfig(duration_s=2.0),
                    train=TrainConfig(epochs=epochs, batch_size=batch, patience=epochs, precision=precision))
    out = workdir / f"run-{precision}-b{batch}"
    import shutil

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


def generation_figures(run_dir: Path, device: str, batch: int, repeats: int) -> dict:
    run = checkpoint.load_run(run_dir, device=device)
    z = torch.randn(batch, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    decode(run, z[:1])  # first call compiles PGHI (numba) and warms the device
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale-gpu"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--notes", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=20)
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine (or pass --device cpu for a smoke run)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    audio = np.stack(note_family(a.notes, seconds=2.0, seed=0))
    from samplegen.spectral import StftConfig

    tensor = audio_to_log_features(audio, StftConfig())  # on the CPU, as the cache delivers them
    entries = [CorpusEntry(f"n{i:05d}", f"n{i:05d}.wav") for i in range(a.notes)]
    feats = NoteFeatures.from_tensor(a.workdir, entries, tensor)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else (platform.processor() or "cpu")
    result = {"device": name, "torch": torch.__version__, "notes": a.notes, "train": [], "generate": []}
    for batch in (32, 256):
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not a.device.startswith("cuda"):
                continue
            result["train"].append(training_figures(feats, a.workdir, a.device, a.epochs, batch, precision))
    fp32_run = Path(result["train"][0]["run"])
    for batch, repeats in ((1, 20), (256, 3)):
        result["generate"].append(generation_figures(fp32_run, a.device, batch, repeats))
    (a.workdir / "scale_gpu.json").write_text(json.dumps(result, indent=2))
    print(f"device: {name}\n")
    print("| training | batch | samples/s | best val loss |\n|---|---|---|---|")
    for r in result["train"]:
        print(f"| {r['precision']} | {r['batch']} | {r['train_samples_per_s']:.0f} | {r['best_val_loss']:.4f} |")
    print("\n| generation batch | notes/s (with phase retrieval) | notes/s (decoder alone) |\n|---|---|---|")
    for r in result["generate"]:
        print(f"| {r['batch']} | {r['notes_per_s']:.1f} | {r['decoder_only_notes_per_s']:.0f} |")


if __name__ == "__main__":
    main()
