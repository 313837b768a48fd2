"""Scale figures: feature throughput (files/s) and peak memory training on a large synthetic corpus.

Usage (from the repository root, after `make install`):

    .venv/bin/python benchmarks/scale.py all --workdir /tmp/scale-bench --notes 50000 --seconds 0.5

Stages (each a fresh process, so each peak resident set is its own):

    make-corpus   N synthetic harmonic notes as 16-bit 48 kHz WAVs (so reading resamples to 44.1 kHz)
    features      build the feature cache cold (every core), then again warm; files/s and peak RSS
    train         `samplegen train`'s API path for E epochs of the default model on that cache; peak RSS

Writes WORKDIR/scale.json and prints the figures.  Disk: about N × (seconds × 96 kB) of WAVs plus
N × 0.18 MB of float32 features per 0.5 s (check `df -h` first); `--keep` leaves them for a re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SR_FILES = 48000
C4 = 261.6255653005986


def _peak_mb() -> dict[str, float]:
    """Peak resident set of this process and of its largest child, in MB (Linux reports kB)."""
    return {"self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "largest_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def make_corpus(out: Path, n: int, seconds: float, seed: int = 0) -> None:
    """Harmonic C4 notes whose tilt, decay, attack and partial count vary: a learnable family."""
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR_FILES))) / SR_FILES
    partials = np.sin(2 * np.pi * C4 * np.arange(1, 13)[:, None] * t[None, :])  # 12 x n
    for i in range(n):
        k = np.arange(1, 13)
        amps = k ** -rng.uniform(0.5, 2.5) * (k <= rng.integers(3, 13))
        env = np.minimum(1.0, t / rng.uniform(0.002, 0.05)) * np.exp(-rng.uniform(0.5, 6.0) * t)
        y = (amps @ partials) * env
        y = 0.3 * y / np.max(np.abs(y))
        sf.write(out / f"note{i:06d}.wav", y, SR_FILES, subtype="PCM_16")


def stage_features(data: Path, cache: Path, seconds: float, workers: int | None) -> dict:
    from samplegen.training.feature_cache import FeatureSettings, build_features

    settings = FeatureSettings(duration_s=seconds, n_fft=2048, hop_length=512, prepare="raw")
    n_files = sum(1 for _ in data.iterdir())
    t0 = time.perf_counter()
    feats = build_features(data, settings, cache_dir=cache, workers=workers)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_features(data, settings, cache_dir=cache, workers=workers)
    warm = time.perf_counter() - t0
    return {"files": n_files, "notes": len(feats), "workers": workers or os.cpu_count(), "cold_s": cold,
            "cold_files_per_s": n_files / cold, "warm_s": warm, "warm_files_per_s": n_files / warm,
            "cache_gb": sum(p.stat().st_size for p in cache.rglob("*.npy")) / 1e9, **_peak_mb()}


def stage_train(data: Path, cache: Path, out: Path, seconds: float, epochs: int) -> dict:
    from samplegen.app import api
    from samplegen.config import RunConfig, DataConfig, TrainConfig

    cfg = RunConfig(data=DataConfig(duration_s=seconds), train=TrainConfig(epochs=epochs))
    t0 = time.perf_counter()
    result = api.train_run(data, out, config=cfg, show_progress=False, device="cpu", cache=cache)
    return {"epochs": result.epochs_run, "seconds": time.perf_counter() - t0,
            "best_val_loss": result.best_val_loss, **_peak_mb()}


def _run_stage(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"stage {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["all", "make-corpus", "features", "train"])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scale-bench"))
    p.add_argument("--notes", type=int, default=50000)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the WAVs and the cache")
    a = p.parse_args()
    data, cache, run = a.workdir / "wavs", a.workdir / "cache", a.workdir / "run"
    if a.stage == "make-corpus":
        t0 = time.perf_counter()
        make_corpus(data, a.notes, a.seconds)
        print(json.dumps({"seconds": time.perf_counter() - t0}))
    elif a.stage == "features":
        print(json.dumps(stage_features(data, cache, a.seconds, a.workers)))
    elif a.stage == "train":
        print(json.dumps(stage_train(data, cache, run, a.seconds, a.epochs)))
    else:
        a.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run, ignore_errors=True)
        common = ["--workdir", str(a.workdir), "--notes", str(a.notes), "--seconds", str(a.seconds)]
        result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
                  "notes": a.notes, "seconds_per_note": a.seconds}
        if not data.is_dir() or sum(1 for _ in data.iterdir()) != a.notes:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            result["make_corpus"] = _run_stage(["make-corpus", *common])
        shutil.rmtree(cache, ignore_errors=True)
        result["features"] = _run_stage(["features", *common] + (["--workers", str(a.workers)] if a.workers else []))
        result["train"] = _run_stage(["train", *common, "--epochs", str(a.epochs)])
        (a.workdir / "scale.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        if not a.keep:
            for folder in (data, cache):
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
