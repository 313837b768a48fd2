"""Where a training spike comes from: trains a config for a few epochs and records, at every training step,
the encoder's largest |μ| and log σ² and the batch's KL, then prints the steps around the largest KL.

A spike shows in history.csv as an epoch whose mean KL is thousands of times the usual ~100-300; this says
whether the mean or the variance head threw it:

    .venv/bin/python benchmarks/kl_spike_probe.py --corpus CORPUS --out /tmp/probe --epochs 6 \\
        --config '{"model": {"log_head": true, "log_head_residual": false, "logvar_ceiling": false},
                   "train": {"log_weight": 0.5, "seed": 1}}'

(``logvar_ceiling`` false: the clamp of runs before format 6, under which the spike happens.) Steps run eagerly
(``train.compile`` false), so the hook sees each one.

The config's own ``train.epochs`` (default 150) sets the schedules; ``--epochs`` only stops the run early.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from samplegen.audio.corpus import load_corpus
from samplegen.config import RunConfig
from samplegen.model.network import Encoder, kl_divergence
from samplegen.training.train import train


class _Enough(Exception):
    """Raised after the epochs asked for: the run's schedules stay those of its full length."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True, help="a new run folder")
    ap.add_argument("--config", default="{}", help="JSON config fragment, as `samplegen train --config` reads")
    ap.add_argument("--epochs", type=int, default=6, help="stop after this many epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps: list[tuple[float, float, float]] = []

    def record(module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(module, Encoder) and torch.is_grad_enabled():  # training steps, not validation
            mu, logvar = output  # type: ignore[misc]
            with torch.no_grad():
                steps.append((float(mu.abs().max()), float(logvar.max()), float(kl_divergence(mu, logvar).sum(1).mean())))

    def stop(epoch: int, _row: dict[str, float]) -> None:
        if epoch >= args.epochs:
            raise _Enough

    cfg = RunConfig.from_dict(json.loads(args.config), require_version=False)
    cfg = replace(cfg, train=replace(cfg.train, compile=False))
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(load_corpus(args.corpus), Path(args.out), cfg, show_progress=False, on_epoch=stop)
    except _Enough:
        pass
    finally:
        hook.remove()
    worst = max(range(len(steps)), key=lambda i: steps[i][2])
    print(f"{len(steps)} training steps; the largest KL at step {worst + 1}")
    print("| step | max abs mu | max log var | batch KL |\n|---:|---:|---:|---:|")
    for i in range(max(0, worst - 3), min(len(steps), worst + 4)):
        print(f"| {i + 1} | {steps[i][0]:.1f} | {steps[i][1]:.2f} | {steps[i][2]:,.0f} |")


if __name__ == "__main__":
    main()
