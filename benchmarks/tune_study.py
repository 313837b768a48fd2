"""A study on a corpus, the default configuration at the same epoch budget, and the winner confirmed at full length.

Usage (repository root, after `make install`):

    .venv/bin/python benchmarks/tune_study.py --data demo-out/corpus --out bench-out/tune --trials 8 --epochs 15 \\
        --confirm --default-run demo-out/run

Every figure is the held-out log-spectral distance `samplegen evaluate` reports (waveforms after the
default phase retrieval, through the fixed 2048/512 analysis STFT), so trials with different STFT sizes
compare fairly. With --confirm the study's best configuration is trained again with the default's full
epoch budget and early stopping, and compared with the default run (trained here unless --default-run
gives a finished one), with its training time, weight size and generation health (the core issue's limits:
weights <= 20 MB, training <= 6 min). The study resumes from its SQLite file if interrupted.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from samplegen.app import api

from samplegen.app import runtime
from samplegen.app.tune import health, heldout_lsd_db
from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import MODEL_NAME
from samplegen.config import RunConfig, load_config_file


def _train(data: str, run: Path, cfg: RunConfig) -> float:
    """Train unless already finished; seconds spent (0 when reused)."""
    if api.run_is_complete(run):
        return 0.0
    t0 = time.perf_counter()
    api.train_run(data, run, config=cfg, show_progress=False, resume=api.run_is_partial(run))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--confirm", action="store_true", help="train the best configuration at full length and compare")
    ap.add_argument("--default-run", default=None, help="a finished run of the default configuration (full length)")
    args = ap.parse_args()
    runtime.keep_large_buffers()
    out = Path(args.out)
    t0 = time.perf_counter()
    result = api.tune(args.data, out, args.trials, epochs=args.epochs, progress=print)
    study_s = time.perf_counter() - t0
    corpus = load_corpus(args.data)
    base = RunConfig()
    short_default = out / "default-run"
    # the default at the study's budget, its KL warm-up scaled as the study scales every trial's
    warmup = int(round(base.train.kl_warmup_epochs * args.epochs / base.train.epochs))
    _train(args.data, short_default, replace(base, train=replace(base.train, epochs=args.epochs,
                                                                 kl_warmup_epochs=warmup)))
    figures: dict = {"trials": result.n_finished, "epochs_per_trial": args.epochs, "study_wall_s": study_s,
                     "best_lsd_db": result.best_value, "default_lsd_db": heldout_lsd_db(short_default, corpus),
                     "default_health": health(short_default, corpus), "best_config": str(result.best_config)}
    rows = [(f"default, {args.epochs} epochs", figures["default_lsd_db"], "", ""),
            (f"study best, {args.epochs} epochs ({result.n_finished} trials, {study_s / 60:.0f} min)",
             result.best_value, "", "")]
    if args.confirm and result.best_config is not None:
        full_default = Path(args.default_run) if args.default_run else out / "default-full"
        default_s = _train(args.data, full_default, base)
        best_cfg = load_config_file(result.best_config)
        best_cfg = replace(best_cfg, train=replace(best_cfg.train, epochs=base.train.epochs,
                                                   patience=base.train.patience))
        best_s = _train(args.data, out / "best-full", best_cfg)
        for name, run, secs in (("default", full_default, default_s), ("study best", out / "best-full", best_s)):
            lsd = heldout_lsd_db(run, corpus)
            mb = (run / MODEL_NAME).stat().st_size / 1e6
            figures[f"full_{name.replace(' ', '_')}"] = {"lsd_db": lsd, "train_s": secs, "weights_mb": mb,
                                                         "health": health(run, corpus)}
            rows.append((f"{name}, full length ({base.train.epochs} epochs max, early stopping)", lsd,
                         f"{secs:.0f}" if secs else "(reused)", f"{mb:.2f}"))
    (out / "tune_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print("| configuration | held-out LSD (dB) | training (s) | weights (MB) |\n|---|---:|---:|---:|")
    for name, lsd, secs, mb in rows:
        print(f"| {name} | {'none feasible' if lsd is None else f'{lsd:.3f}'} | {secs} | {mb} |")


if __name__ == "__main__":
    main()
