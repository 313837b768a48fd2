"""Training-step time of the default model, eager, through ``torch.compile`` (``train.compile``) and compiled with
bf16 autocast (``train.precision``), with and without the log head (``model.log_head``), as ratios to the eager
default step; and the compiled bf16 log-head step as it was until the thirteenth session (its log_l1 gradient
through autograd, features normalised outside the compiled pass, Adam's loop over the parameters).

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


def _model(log_head: bool, stats: FeatureStats) -> SampleModel:
    model = SampleModel(ModelConfig(log_head=log_head))
    model.attach_feature_stats(stats)
    model.decoder.set_feature_map(stats.mean, stats.std, 0.7)
    return model


def _step(net: Any, raw: torch.Tensor, stats: FeatureStats, log_weight: float) -> None:
    """Forward and backward as training runs them (SampleModel.forward, the log head's gradient as seeds)."""
    terms = net(raw, None, torch.tensor(log_weight))
    loss = terms.recon + log_weight * terms.log_l1 + 1e-4 * terms.kl
    torch.autograd.backward([loss, *(t for t, _ in terms.seeds)], [None, *(g for _, g in terms.seeds)])


def _step_before(net: Any, raw: torch.Tensor, stats: FeatureStats, log_weight: float) -> None:
    terms = net(stats.normalise(raw), raw)
    (terms["recon"] + log_weight * terms["log_l1"] + 1e-4 * terms["kl"]).backward()


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
            model = _model(log_head, stats)
            name = ("log head" if log_head else "default") + ", " + mode
            variants[name] = (model if mode == "eager" else torch.compile(model, dynamic=False), _step,
                              torch.optim.Adam(model.parameters(), fused=True), [], 0.5 if log_head else 0.1,
                              mode.endswith("bf16"))
    # The step as it was until the thirteenth session: log_l1's gradient through autograd (the compiled backward
    # computed the blend again), the features normalised eagerly before the compiled pass, Adam's loop.
    model = _model(True, stats)
    compiled_losses = torch.compile(lambda x, log_target: model.losses(x, log_target=log_target), dynamic=False)
    variants["log head, compiled bf16, as before"] = (compiled_losses, _step_before, torch.optim.Adam(model.parameters()),
                                                      [], 0.5, True)
    for step in range(args.steps + 2):
        for net, run_step, optimiser, times, log_weight, bf16 in variants.values():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                run_step(net, raw, stats, log_weight)
            optimiser.step()
            optimiser.zero_grad()
            if step >= 2:
                times.append(time.perf_counter() - t0)
    median = {name: sorted(v[3])[len(v[3]) // 2] for name, v in variants.items()}
    base = median["default, eager"]
    print(f"training step, batch 32, one thread, median of {args.steps}:")
    for name, seconds in median.items():
        print(f"  {name:<36} {seconds * 1000:5.0f} ms  {seconds / base:.2f}x the eager default")


if __name__ == "__main__":
    main()
