"""Training-step time of the default decoder against one with the log head (`model.log_head`), as a ratio.

Both models take turns in one process on one thread (batch 32, default shapes, random features), so
load from elsewhere falls on both alike:

    .venv/bin/python benchmarks/log_head_step.py --steps 12
"""

from __future__ import annotations

import argparse
import time

import torch

from samplegen.model.network import ModelConfig, SampleModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, log_target = torch.randn(32, 173, 1025), torch.randn(32, 173, 1025) - 5.0
    mean, std = torch.full((1025,), 0.1), torch.full((1025,), 0.05)
    runs = {}
    for log_head in (False, True):
        model = SampleModel(ModelConfig(log_head=log_head))
        model.attach_feature_stats(mean, std, 0.7)
        model.decoder.set_feature_map(mean, std, 0.7)
        runs[log_head] = (model, torch.optim.Adam(model.parameters()), [])
    for _ in range(args.steps):
        for model, optimiser, times in runs.values():
            t0 = time.perf_counter()
            terms = model.losses(x, log_target=log_target)
            (terms["recon"] + 0.5 * terms["log_l1"] + 1e-4 * terms["kl"]).backward()
            optimiser.step()
            optimiser.zero_grad()
            times.append(time.perf_counter() - t0)
    median = {k: sorted(v[2])[len(v[2]) // 2] for k, v in runs.items()}
    print(f"training step, batch 32, one thread (median of {args.steps}): default {median[False] * 1000:.0f} ms, "
          f"log head {median[True] * 1000:.0f} ms, ratio {median[True] / median[False]:.2f}")


if __name__ == "__main__":
    main()
