"""CPU cost of one training step for the fidelity variants, as ratios within one run (issue: fidelity).

One optimisation step (forward, backward, gradient clipping, Adam) on a batch of 32 random
default-size notes (173 frames x 1025 bins), for each (frame_hidden, log_weight) pair; prints
milliseconds per step (median of 8 after 3 warm-up steps) and the ratio to the first row.

    .venv/bin/python benchmarks/step_time.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from samplegen.model import ModelConfig, SampleModel

VARIANTS = ((0, 0.0), (0, 0.3), (128, 0.0), (128, 0.3), (256, 0.3), (512, 0.3))


def step_ms(frame_hidden: int, log_weight: float, x: torch.Tensor, log_target: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = SampleModel(ModelConfig(n_bins=x.shape[2], n_frames=x.shape[1], frame_hidden=frame_hidden))
    model.attach_feature_stats(torch.full((x.shape[2],), 0.1), torch.full((x.shape[2],), 0.05), 0.7)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(11):
        t0 = time.perf_counter()
        terms = model.losses(x, log_target=log_target if log_weight else None)
        loss = terms["recon"] + 1e-4 * terms["kl"] + log_weight * terms["log_l1"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 173, 1025, generator=g)
    log_target = torch.rand(32, 173, 1025, generator=g) * -9.0
    base = None
    print("| frame_hidden | log_weight | ms per step | ratio |\n|---:|---:|---:|---:|")
    for hidden, weight in VARIANTS:
        ms = step_ms(hidden, weight, x, log_target)
        base = base or ms
        print(f"| {hidden} | {weight:g} | {ms:.0f} | {ms / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
