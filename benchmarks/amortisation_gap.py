"""Is a run's reconstruction error the encoder's or the decoder's? (issue 13)

For notes of one split, the waveform LSD and SC (default phase retrieval, as `samplegen evaluate` measures) of the
decoder at the encoder's posterior mean, and at a latent optimised for each note with the decoder fixed (Adam on
the training loss's reconstruction terms, feature MSE + log weight · log-magnitude L1). If optimising the latent
gains little, no better encoder can: the decoder is what limits the fit.

    .venv/bin/python benchmarks/amortisation_gap.py demo-out/run --split train --notes 48
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from samplegen.checkpoint import Run, load_run
from samplegen.evaluation import metrics
from samplegen.evaluation.evaluate import _decode_batched, _run_corpus
from samplegen.spectral.features import audio_to_features


def waveform_scores(run: Run, audio: np.ndarray, z: torch.Tensor) -> dict[str, float]:
    """Mean waveform LSD and SC (dB) of the notes decoded from latents ``z`` against ``audio``."""
    wav = _decode_batched(run, z.detach())
    return {"lsd_db": float(np.mean(metrics.log_spectral_distance_db(audio, wav))),
            "sc_db": float(np.mean(metrics.spectral_convergence_db(audio, wav)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--split", choices=["val", "train"], default="train", help="held-out (val) or training notes")
    ap.add_argument("--notes", type=int, default=48, help="notes measured, drawn at random from the split")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps on the latents")
    ap.add_argument("--lr", type=float, default=0.02)
    args = ap.parse_args()
    torch.manual_seed(0)
    run = load_run(args.run)
    corpus = _run_corpus(run)
    rows = np.flatnonzero(np.array(run.corpus.splits) == args.split)
    rows = np.sort(np.random.default_rng(0).choice(rows, min(args.notes, len(rows)), replace=False))
    audio = corpus.audio[rows]
    raw = audio_to_features(audio, run.config.stft, run.config.phase)
    model = run.model
    model.attach_feature_stats(run.stats)
    x = run.stats.normalise(raw)
    with torch.no_grad():
        mu = model.encode(x)[0]
    result = {"notes": len(rows), "split": args.split, "encoder": waveform_scores(run, audio, mu)}
    for p in model.parameters():
        p.requires_grad_(False)
    z = mu.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=args.lr)
    for _ in range(args.steps):
        recon, log_l1 = model.reconstruction_losses(z, x, raw)
        loss = recon + run.config.train.log_weight * log_l1
        opt.zero_grad()
        loss.backward()
        opt.step()
    result["optimised"] = waveform_scores(run, audio, z) | {
        "loss": float(loss.detach()), "mean_latent_move": float((z.detach() - mu).norm(dim=1).mean())}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
