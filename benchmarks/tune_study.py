"""A study on a corpus, and the default configuration trained with the same epoch budget, scored alike.

Usage (repository root, after `make install`):

    .venv/bin/python benchmarks/tune_study.py --data bench-out/corpus --out bench-out/tune --trials 12 --epochs 30

Prints a Markdown table: held-out LSD (dB, on magnitudes, as the study scores trials) of the default
configuration and of the study's best feasible trial, both at --epochs, and the study's wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from samplegen import api, runtime
from samplegen.config import RunConfig
from samplegen.corpus import load_corpus
from samplegen.tune import health, heldout_lsd_db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    runtime.keep_large_buffers()
    out = Path(args.out)
    t0 = time.perf_counter()
    result = api.tune(args.data, out, args.trials, epochs=args.epochs, progress=print)
    study_s = time.perf_counter() - t0
    corpus = load_corpus(args.data)
    default_run = out / "default-run"
    if not api.run_is_complete(default_run):
        cfg = RunConfig()
        api.train_run(args.data, default_run, config=replace(cfg, train=replace(cfg.train, epochs=args.epochs)),
                      show_progress=False)
    default_lsd = heldout_lsd_db(default_run, corpus)
    default_health = health(default_run, corpus)
    figures = {"trials": result.n_finished, "epochs_per_trial": args.epochs, "study_wall_s": study_s,
               "best_lsd_db": result.best_value, "default_lsd_db": default_lsd, "default_health": default_health,
               "best_config": str(result.best_config)}
    (out / "tune_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print("| configuration | held-out LSD on magnitudes (dB), %d epochs |\n|---|---:|" % args.epochs)
    print(f"| default | {default_lsd:.3f} |")
    print(f"| study best ({result.n_finished} trials, {study_s / 60:.0f} min) | "
          f"{'none feasible' if result.best_value is None else f'{result.best_value:.3f}'} |")


if __name__ == "__main__":
    main()
