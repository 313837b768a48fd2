"""How well can any output frame that is a mix of k fixed spectra match the corpus? (issue: fidelity)

Projects every frame of a corpus onto its top-k principal frame axes and back, with no model and no
phase retrieval, and prints the log-spectral distance of the result (dB; per frame, RMS over bins,
both floored 80 dB below the note's peak; mean over frames and notes), in two feature domains:
magnitude^0.7 standardised per bin (the default features) and the log magnitude standardised per bin.
A decoder whose last layer is a linear map from k values per frame cannot do better than this bound.

A second table asks how much of the LSD is fine detail rather than the note's shape: each note's power
spectrogram averaged over a few neighbouring frames (and bins), with nothing else lost. Noise-like
parts of a note have magnitudes that scatter from frame to frame around their mean (Rayleigh-like), so a
model that gets every note's smooth spectrogram exactly right but not that scatter lands about here.

    .venv/bin/python benchmarks/frame_basis_bound.py --corpus demo-out/corpus --ks 32,64,128,256,512
"""

from __future__ import annotations

import argparse
import math

import torch

from samplegen.audio.corpus import load_corpus
from samplegen.config import RunConfig
from samplegen.spectral.features import audio_to_features


def lsd_db(log_ref: torch.Tensor, log_hat: torch.Tensor) -> float:
    """LSD of natural-log magnitudes Tensor[N x T x F], floored 80 dB below each note's peak."""
    to_db = 20 / math.log(10)
    ref, hat = log_ref * to_db, log_hat * to_db
    floor = ref.flatten(1).amax(1)[:, None, None] - 80
    diff = torch.maximum(ref, floor) - torch.maximum(hat, floor)
    return float(diff.pow(2).mean(-1).sqrt().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--ks", default="32,64,128,256,512")
    ap.add_argument("--every", type=int, default=5, help="measure every n-th note (all notes fit the axes)")
    args = ap.parse_args()
    cfg = RunConfig().resolved()
    log_mag = audio_to_features(load_corpus(args.corpus).audio, cfg.stft)  # N x T x F, natural log
    n_bins = log_mag.shape[-1]
    measured = torch.arange(0, len(log_mag), args.every)
    domains = {
        "magnitude^0.7": (lambda v: torch.exp(0.7 * v), lambda c: torch.log(c.clamp_min(1e-4**0.7)) / 0.7),
        "log magnitude": (lambda v: v, lambda c: c),
    }
    print("| domain | " + " | ".join(f"k = {k}" for k in args.ks.split(",")) + " |")
    print("|---|" + "---:|" * len(args.ks.split(",")))
    for name, (forward, inverse) in domains.items():
        x = forward(log_mag)
        flat = x.reshape(-1, n_bins)
        mean, std = flat.mean(0), flat.std(0).clamp_min(1e-2)
        frames = ((flat[::3] - mean) / std).double()
        evals, evecs = torch.linalg.eigh(frames.T @ frames / len(frames))
        axes = evecs[:, evals.argsort(descending=True)].float()
        sub = (x[measured] - mean) / std
        cells = []
        for k in (int(k) for k in args.ks.split(",")):
            basis = axes[:, :k]
            cells.append(f"{lsd_db(log_mag[measured], inverse((sub @ basis) @ basis.T * std + mean)):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| power averaged over (frames × bins) | LSD (dB) |\n|---|---:|")
    power = torch.exp(2 * log_mag[measured])[:, None]
    for frames_, bins_ in ((3, 1), (5, 1), (9, 1), (1, 3), (3, 3)):
        padded = torch.nn.functional.pad(power, (bins_ // 2, bins_ // 2, frames_ // 2, frames_ // 2), mode="replicate")
        smooth = torch.nn.functional.conv2d(padded, torch.full((1, 1, frames_, bins_), 1.0 / (frames_ * bins_)))[:, 0]
        print(f"| {frames_} × {bins_} | {lsd_db(log_mag[measured], 0.5 * torch.log(smooth.clamp_min(1e-20))):.2f} |")


if __name__ == "__main__":
    main()
