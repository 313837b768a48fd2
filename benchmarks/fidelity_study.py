"""Fidelity study (issue: fidelity): train variants of the model and measure them as `samplegen evaluate` does.

Each variant is a JSON config fragment (as `samplegen train --config` reads); each is trained on the
same corpus with the given seeds, then its reconstructions of training notes (200) and held-out notes
are measured on waveforms through the fixed analysis STFT (LSD, SC, MR-STFT), beside PCA with the
same latent size.  Generation health is left to `samplegen evaluate`.

    .venv/bin/python benchmarks/fidelity_study.py --corpus demo-out/corpus --out runs/fidelity \\
        --variant default='{}' --variant wide='{"model": {"frame_hidden": 256}}' --seeds 0,1,2

Prints one Markdown row per (variant, seed) and appends it to OUT/results.md: variant, seed, training
LSD / SC, held-out LSD / SC / MR-STFT, held-out PCA LSD, epochs run (best), training seconds, weights (MB),
the largest epoch-mean KL (a spike shows there).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import load_run
from samplegen.config import RunConfig
from samplegen.evaluation.evaluate import split_quality
from samplegen.model.network import size_megabytes
from samplegen.training.train import train


def measure(run_dir: Path, corpus) -> dict[str, dict[str, float]]:
    """Mean LSD / SC / MR-STFT of the model and PCA on 200 training notes and every held-out note."""
    run = load_run(run_dir)
    sets, _, _ = split_quality(run, corpus)
    out = {label: {f"{system}_{m}": float(np.mean(v)) for system in ("model", "pca") for m, v in qs.values[system].items()}
           for label, qs in sets.items()}
    out["size_mb"] = {"weights": size_megabytes(run.model)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=JSON config fragment")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="where to train (measuring runs on the CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--split", default=None, help='"note" or "instrument" (default: the config\'s)')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.variant:
        name, _, fragment = spec.partition("=")
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = json.loads(fragment or "{}")
            data.setdefault("train", {})["seed"] = seed
            if args.epochs:
                data["train"]["epochs"] = args.epochs
            if args.split:
                data["train"]["split"] = args.split
            cfg = RunConfig.from_dict(data, require_version=False)
            run_dir = out / f"{name}-s{seed}"
            t0 = time.perf_counter()
            result = train(corpus, run_dir, cfg, show_progress=False, device=args.device)
            seconds = time.perf_counter() - t0
            m = measure(run_dir, corpus)
            history = list(csv.DictReader(open(run_dir / "history.csv")))
            m["history"] = {"max_train_kl": max(float(r["train_kl"]) for r in history),
                            "max_train_recon_after_1": max([float(r["train_recon"]) for r in history[1:]] or [0.0]),
                            "seconds_per_epoch": float(np.median([float(r["seconds"]) for r in history]))}
            tr, ho = m["train"], m["heldout"]
            row = (f"| {name} | {seed} | {tr['model_lsd_db']:.2f} / {tr['model_sc_db']:.1f} | "
                   f"{ho['model_lsd_db']:.2f} / {ho['model_sc_db']:.1f} / {ho['model_mrstft']:.2f} | "
                   f"{ho['pca_lsd_db']:.2f} | {result.epochs_run} ({result.best_epoch}) | {seconds:.0f} | "
                   f"{m['size_mb']['weights']:.1f} | {m['history']['max_train_kl']:.0f} |")
            print(row, flush=True)
            with open(out / "results.md", "a") as fh:
                fh.write(row + "  <!-- " + json.dumps({"config": data, **m}) + " -->\n")


if __name__ == "__main__":
    main()
