"""Training-step time of the default model, eager, through ``torch.compile`` (``train.compile``) and compiled with
bf16 autocast (``train.precision``), with and without the log head (``model.log_head``), as ratios to the eager
default step.

Every variant takes turns in one process on one thread (batch 32, default shapes, random features, Adam), so
load from elsewhere falls on all alike; each variant's first two steps (compiling, for the compiled ones) are
not counted:

    .venv/bin/python benchmarks/train_step.py --steps 20
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from samplegen.model.network import ModelConfig, SampleModel
from samplegen.spectral.features import FeatureStats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 2 untimed ones)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    raw = torch.randn(32, 173, 1025) - 5.0  # log magnitudes: the step normalises them
    stats = FeatureStats(torch.full((1025,), 0.1), torch.full((1025,), 0.05), 0.7, 1025)
    variants: dict[str, tuple[Any, ...]] = {}
    for log_head in (False, True):
        for mode in ("eager", "compiled", "compiled bf16"):
            model = SampleModel(ModelConfig(log_head=log_head))
            model.attach_feature_stats(stats)
            model.decoder.set_feature_map(stats.mean, stats.std, 0.7)
            name = ("log head" if log_head else "default") + ", " + mode
            variants[name] = (model if mode == "eager" else torch.compile(model, dynamic=False),
                              torch.optim.Adam(model.parameters()), [], 0.5 if log_head else 0.1, mode.endswith("bf16"))
    for step in range(args.steps + 2):
        for net, optimiser, times, log_weight, bf16 in variants.values():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                terms = net(raw, None, torch.tensor(log_weight))
            loss = terms.recon + log_weight * terms.log_l1 + 1e-4 * terms.kl
            torch.autograd.backward([loss, *(t for t, _ in terms.seeds)], [None, *(g for _, g in terms.seeds)])
            optimiser.step()
            optimiser.zero_grad()
            if step >= 2:
                times.append(time.perf_counter() - t0)
    median = {name: sorted(v[2])[len(v[2]) // 2] for name, v in variants.items()}
    base = median["default, eager"]
    print(f"training step, batch 32, one thread, median of {args.steps}:")
    for name, seconds in median.items():
        print(f"  {name:<24} {seconds * 1000:5.0f} ms  {seconds / base:.2f}x the eager default")


if __name__ == "__main__":
    main()
