"""Where random draws come from: the prior N(0, I) against a Gaussian fitted to the training notes' latents.

With the KL weight at 1e-4 the corpus's posterior means spread wider than the prior and along correlated
directions (``latent.posterior_mean_var`` in `samplegen evaluate`'s metrics), so prior draws fall in the centre
of the corpus's cloud. This draws the same number of notes from each source, decodes them as `evaluate`'s
health draws are decoded, and judges them as `evaluate` judges draws (pitch, NDB/K, Fréchet, novelty,
silent and noise-like fractions) against the run's training notes:

    .venv/bin/python benchmarks/draw_sources.py RUN --draws 1000

Prints one Markdown row per source.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import load_run
from samplegen.evaluation import generation_measures as GM
from samplegen.evaluation import metrics as M
from samplegen.evaluation.evaluate import HEALTH_PHASE, _mels_and_pitches, health_thresholds, measured_splits
from samplegen.generation.generate import decode


def fitted_gaussian(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Cholesky factor of the training latents' covariance."""
    mean = mu.mean(axis=0)
    cov = np.cov(mu, rowvar=False) + 1e-6 * np.eye(mu.shape[1])
    return mean, np.linalg.cholesky(cov)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = load_run(args.run)
    corpus = load_corpus(run.corpus.corpus_path)
    train_idx, _ = measured_splits(run, corpus)
    real_mels, _ = _mels_and_pitches(corpus.audio[train_idx])
    real = GM.RealNotes.fit(real_mels, [run.corpus.families[i] for i in train_idx], args.seed)
    thresholds = health_thresholds(run, corpus.audio)
    mu = run.latent_mu.numpy()[train_idx]
    mean, chol = fitted_gaussian(mu)
    eps = torch.randn(args.draws, mu.shape[1], generator=torch.Generator().manual_seed(args.seed)).numpy()
    sources = {
        "prior N(0, I)": eps,
        "fitted Gaussian": mean + eps @ chol.T,
        "fitted Gaussian, T=0.8": mean + 0.8 * eps @ chol.T,
    }
    print(f"posterior means' variance per dimension: {np.round(mu.var(axis=0), 2).tolist()}")
    print("| source | within 25 cents | NDB/K | Fréchet | nearest / typical | silent / noise-like |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, z in sources.items():
        wavs = np.concatenate([np.atleast_2d(decode(run, torch.from_numpy(z[s : s + 64]).float(), *HEALTH_PHASE))
                               for s in range(0, len(z), 64)])
        mels, hz = _mels_and_pitches(wavs)
        j = GM.judge(real, mels, hz)
        silent = M.is_silent(wavs, thresholds).mean()
        noisy = M.is_noise_like(wavs, thresholds).mean()
        frechet = j["realism"]["frechet"] if j["realism"] else float("nan")
        print(f"| {name} | {100 * j['pitch']['within_25']:.1f} % | {j['diversity']['ndb_k']:.2f} | {frechet:.2f} | "
              f"{j['novelty']['nearest_over_typical']:.2f} | {100 * silent:.1f} / {100 * noisy:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
