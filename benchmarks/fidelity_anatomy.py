"""Where a run's reconstruction error lives (issue 13): by level, by frequency, and at which scale.

On held-out notes (or training notes, ``--split train``), the decoder's magnitude (posterior mean, no phase
retrieval) against the notes' own magnitude, both in the run's STFT and floored 80 dB below each note's peak as
LSD floors them:

- the log-spectral distance, beside the same notes' distance as `samplegen evaluate` measures it (waveforms after
  phase retrieval), so what phase retrieval adds shows; and the share of its squared dB error in bins by level (re the note's peak), with
  the error's mean (a bias) and RMS (its scatter) in each band;
- the distance by time (the onset's frames against the rest);
- the share by frequency range (bin 12 is C4's fundamental at the default STFT);
- the distance left after both are power-averaged over k frames (or k bins): if the error were
  frame-to-frame scatter, averaging both would remove most of it; error that survives the
  averaging is in the broad envelope, which a better model can reach.

    .venv/bin/python benchmarks/fidelity_anatomy.py demo-out/run --notes 80
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from samplegen.checkpoint import load_run
from samplegen.evaluation.evaluate import _features, _run_corpus, measured_splits
from samplegen.evaluation.metrics import log_spectral_distance_db
from samplegen.generation.generate import decode

DB = 20.0 / np.log(10.0)


def lsd_db(truth: torch.Tensor, other: torch.Tensor) -> float:
    """LSD of two Tensor[B x T x F] magnitudes, floored 80 dB below each truth's peak."""
    floor = truth.amax(dim=(1, 2), keepdim=True) * 1e-4
    d = DB * (torch.maximum(truth, floor).log() - torch.maximum(other, floor).log())
    return d.pow(2).mean(dim=2).sqrt().mean().item()


def power_average(mag: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Magnitude of the power averaged over k neighbours along ``dim`` (1: frames, 2: bins)."""
    p = mag.pow(2).movedim(dim, -1)
    flat = p.reshape(-1, 1, p.shape[-1])
    avg = torch.nn.functional.avg_pool1d(flat, k, 1, k // 2, count_include_pad=False).reshape(p.shape)
    return avg.movedim(-1, dim).sqrt()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--notes", type=int, default=80, help="notes measured (the first N of the split)")
    ap.add_argument("--split", choices=["val", "train"], default="val", help="held-out (val) or training notes")
    args = ap.parse_args()
    run = load_run(args.run)
    corpus = _run_corpus(run)
    measured = measured_splits(run, corpus)[0 if args.split == "train" else 1][: args.notes]  # own notes, no mixtures
    feats = _features(run, corpus.audio[measured])
    with torch.no_grad():
        out = run.model.decode(run.model.encode(feats)[0])
    truth, model = run.stats.denormalise(feats).double(), run.stats.denormalise(out).double()
    n = run.config.stft.n_bins
    truth, model = truth[..., :n], model[..., :n]
    which = "held-out" if args.split == "val" else "training"
    print(f"{len(measured)} {which} notes of {args.run}; decoder magnitude against the notes' (no phase retrieval)\n")
    print(f"LSD: {lsd_db(truth, model):.2f} dB")
    waves = decode(run, run.model.encode(feats)[0].detach())
    print(f"the same notes as `samplegen evaluate` measures them (waveforms after phase retrieval, the fixed "
          f"analysis STFT): LSD {np.mean(log_spectral_distance_db(corpus.audio[measured], waves)):.2f} dB\n")

    peak = truth.amax(dim=(1, 2), keepdim=True)
    floor = peak * 1e-4
    level = DB * (torch.maximum(truth, floor) / peak).log()
    signed = DB * (torch.maximum(model, floor).log() - torch.maximum(truth, floor).log())  # model − notes, dB
    err = signed.pow(2)
    print("| bins at (dB re the note's peak) | share of bins | share of squared error | mean error (dB) | RMS error (dB) |"
          "\n|---|---:|---:|---:|---:|")
    for lo, hi in [(-81, -79.99), (-79.99, -60), (-60, -40), (-40, -20), (-20, 0.01)]:
        m = (level > lo) & (level <= hi)
        name = "at the -80 floor" if hi < -79 else f"{lo:.0f} to {hi:.0f}"
        print(f"| {name} | {m.double().mean().item() * 100:.0f} % | {err[m].sum().item() / err.sum().item() * 100:.0f} % "
              f"| {signed[m].mean().item():+.2f} | {err[m].mean().sqrt().item():.2f} |")
    per_frame = err.mean(dim=2).sqrt()  # LSD's per-frame distance, Tensor[N x T]
    spans = [(0, 10), (10, 40), (40, 100), (100, per_frame.shape[1])]
    print("\n| frames | " + " | ".join(f"{a}-{b}" for a, b in spans) + " |\n|---|" + "---:|" * len(spans))
    print("| LSD (dB) | " + " | ".join(f"{per_frame[:, a:b].mean().item():.2f}" for a, b in spans) + " |")
    share = err.sum(dim=(0, 1))
    share = share / share.sum()
    edges = [0, 12, 25, 50, 100, 200, 400, 700, n]
    print("\n| bins | " + " | ".join(f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])) + " |")
    print("|---|" + "---:|" * (len(edges) - 1))
    print("| share of squared error | " + " | ".join(f"{share[a:b].sum().item() * 100:.0f} %"
                                                     for a, b in zip(edges[:-1], edges[1:])) + " |")
    print("\n| both power-averaged over | LSD model vs notes | LSD notes vs their own average |\n|---|---:|---:|")
    for k, dim, unit in [(3, 1, "frames"), (9, 1, "frames"), (17, 1, "frames"), (3, 2, "bins"), (9, 2, "bins")]:
        t_avg, m_avg = power_average(truth, k, dim), power_average(model, k, dim)
        print(f"| {k} {unit} | {lsd_db(t_avg, m_avg):.2f} dB | {lsd_db(truth, t_avg):.2f} dB |")


if __name__ == "__main__":
    main()
