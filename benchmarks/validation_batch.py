"""Validation time and accuracy by notes per pass: the default model at its PCA start on a corpus's held-out
notes (the default split), at 128 notes a pass (before the eighth session) and at 16 (the CPU default since),
against the same sums in float64.

The two batch sizes take turns in one process on one thread, so load from elsewhere falls on both alike:

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
    times: dict[int, list[float]] = {128: [], 16: []}
    losses: dict[int, float] = {}
    for _ in range(args.repeats):
        for batch, seconds in times.items():
            t0 = time.perf_counter()
            losses[batch] = training._validate(model, feats, val_idx, stats, cfg, ctx, resident, batch)["val_recon"]
            seconds.append(time.perf_counter() - t0)
    every_note = feats.read(np.arange(len(feats))).double()  # the reference: the same validation in float64
    exact = training._validate(model.double(), feats, val_idx, stats, cfg, ctx, every_note, 16)["val_recon"]
    print(f"validation of {len(val_idx)} held-out notes, one thread, median of {args.repeats}:")
    for batch, seconds in times.items():
        median = sorted(seconds)[len(seconds) // 2]
        print(f"  {batch:>3} notes a pass  {median:6.2f} s  val_recon {losses[batch]:.6f} "
              f"({(losses[batch] / exact - 1) * 100:+.3f} % from float64)")
    print(f"  float64 sums       val_recon {exact:.6f}")


if __name__ == "__main__":
    main()
