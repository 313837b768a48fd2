"""Validation time and accuracy by way of passing: the default model at its PCA start on a corpus's held-out
notes (the default split), eager at 128 notes a pass (before the eighth session) and at 16 (the eighth's), and
compiled at 16 in float32 and in bf16 (the twelfth session's, in the training step's precision), against the
same sums in float64.

The ways take turns in one process on one thread, so load from elsewhere falls on all alike:

    .venv/bin/python benchmarks/validation_batch.py --corpus demo-out/corpus --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samplegen.audio.corpus import load_corpus
from samplegen.config import RunConfig
from samplegen.spectral.features import adjust_stats
from samplegen.training import distributed
from samplegen.training import train as training
from samplegen.training.data_stats import fit_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="a corpus folder (samplegen corpus build)")
    ap.add_argument("--repeats", type=int, default=3, help="timed validations per batch size (median kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = RunConfig()
    feats = training._checked_features(load_corpus(args.corpus), cfg)
    val_mask = training.split_groups(feats, cfg.train.val_fraction, cfg.train.seed, cfg.train.split)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    ctx = distributed.current()
    stats = adjust_stats(fit_stats(feats, train_idx, ctx, magnitude_power=cfg.features.magnitude_power), cfg.phase)
    model, _ = training._model_and_optimiser(cfg, feats, train_idx, stats, "cpu", pca_start=True)
    resident = training._resident_features(feats, "cpu")
    compiled = training._CompiledStep(training._ValidationPass(model, cfg.train.log_weight > 0), what="validation pass")
    ways = {  # label: (notes a pass, validation pass or None for the eager one, bf16 autocast)
        "eager, 128 notes a pass": (128, None, False),
        "eager, 16 notes a pass": (16, None, False),
        "compiled, 16 a pass": (16, compiled, False),
        "compiled, 16 a pass, bf16": (16, compiled, True),
    }
    for _, (batch, way, bf16) in ways.items():  # compile outside the timing (the first call of each shape)
        if way is not None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                training._validate(model, feats, val_idx, cfg, ctx, resident, batch, way)
    times: dict[str, list[float]] = {label: [] for label in ways}
    losses: dict[str, float] = {}
    for _ in range(args.repeats):
        for label, (batch, way, bf16) in ways.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses[label] = training._validate(model, feats, val_idx, cfg, ctx, resident, batch,
                                                   way)["val_recon"]
            times[label].append(time.perf_counter() - t0)
    every_note = feats.read(np.arange(len(feats))).double()  # the reference: the same validation in float64
    exact = training._validate(model.double(), feats, val_idx, cfg, ctx, every_note, 16)["val_recon"]
    print(f"validation of {len(val_idx)} held-out notes, one thread, median of {args.repeats}:")
    for label, seconds in times.items():
        median = sorted(seconds)[len(seconds) // 2]
        print(f"  {label:<26} {median:6.2f} s  val_recon {losses[label]:.6f} "
              f"({(losses[label] / exact - 1) * 100:+.3f} % from float64)")
    print(f"  {'float64 sums':<26}         val_recon {exact:.6f}")


if __name__ == "__main__":
    main()
