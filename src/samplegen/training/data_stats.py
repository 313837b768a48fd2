"""Normalisation statistics and the PCA start, streamed over the features in batches.

Holding every training note in memory to fit the per-bin statistics and the
PCA start costs more than the corpus (0.7 MB per 2-second note).  Here the
statistics are running sums (float64) over batches, split across processes
and summed with one all-reduce; the PCA start is fitted on at most
:data:`PCA_NOTES` training notes (all of them for a corpus of the default
size), which bounds its memory whatever the corpus size.
"""

from __future__ import annotations

import numpy as np
import torch

from samplegen.model.network import SampleModel, init_frame_layers, init_linear_paths, init_log_head, log_levels
from samplegen.spectral.features import FeatureStats, compress_log
from samplegen.training import distributed
from samplegen.training.feature_cache import NoteFeatures

#: Notes the PCA start is fitted on, at most: its Gram matrix is PCA_NOTES² doubles (134 MB).
PCA_NOTES = 4096
#: Notes read at once while streaming.
STREAM_BATCH = 64


def fit_stats(feats: NoteFeatures, rows: np.ndarray, ctx: distributed.Context, magnitude_power: float,
              min_std: float = 1e-2) -> FeatureStats:
    """Per-bin mean and standard deviation of the compressed magnitude over notes ``rows`` and all their frames.

    Each process sums its share (rows[rank::world]); the sums are added over
    processes, so every process gets the same statistics. Every bin is taken for magnitude: a run that
    learns IF passes these through :func:`samplegen.spectral.features.adjust_stats`.
    """
    n_bins = feats.frame_shape[1]
    acc = torch.zeros(2 * n_bins + 1, dtype=torch.float64)
    for batch in feats.batches(rows[ctx.rank :: ctx.world], STREAM_BATCH):
        x = compress_log(batch.reshape(-1, n_bins).double(), magnitude_power)
        acc[:n_bins] += x.sum(dim=0)
        acc[n_bins : 2 * n_bins] += x.pow(2).sum(dim=0)
        acc[-1] += x.shape[0]
    distributed.all_reduce_sum(acc, ctx)
    count = acc[-1]
    mean = acc[:n_bins] / count
    var = (acc[n_bins : 2 * n_bins] / count - mean.pow(2)).clamp_min(0.0)
    return FeatureStats(mean=mean.float().contiguous(), std=var.sqrt().float().clamp(min=min_std).contiguous(),
                        magnitude_power=float(magnitude_power), magnitude_bins=n_bins)


def pca_rows(rows: np.ndarray, seed: int, limit: int = PCA_NOTES) -> np.ndarray:
    """The training rows the PCA start is fitted on: all of them, or ``limit`` drawn with ``seed``."""
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


@torch.no_grad()
def init_model_from_pca(model: SampleModel, feats: NoteFeatures, rows: np.ndarray, stats: FeatureStats,
                        frame_stride: int = 3) -> None:
    """Start ``model`` at the PCA baseline of normalised notes ``rows``
    (see :func:`samplegen.model.network.init_from_pca`).

    Two passes over ``rows``: the covariance of every ``frame_stride``-th
    frame (the same frames as the in-memory version picks), then the notes'
    frame-layer coefficients for the note-level PCA.
    """
    n_frames, n_bins = feats.frame_shape
    s1 = torch.zeros(n_bins, dtype=torch.float64)
    s2 = torch.zeros(n_bins, n_bins, dtype=torch.float64)
    s_log = torch.zeros(n_bins, dtype=torch.float64)
    count = 0
    done = 0
    for batch in feats.batches(rows, STREAM_BATCH):
        x = stats.normalise(batch)
        flat_start = done * n_frames  # index of this batch's first frame in the flattened (notes · frames) order
        first = (-flat_start) % frame_stride
        frames = x.reshape(-1, n_bins)[first::frame_stride].double()
        s1 += frames.sum(dim=0)
        s2 += frames.T @ frames
        if model.cfg.head_writes_level:  # it starts at each bin's mean log level
            s_log += log_levels(model.decoder, frames.float()).double().sum(dim=0)
        count += frames.shape[0]
        done += len(batch)
    mean = s1 / count
    cov = s2 / count - torch.outer(mean, mean)
    init_frame_layers(model, mean, cov)
    init_log_head(model, (s_log / count).float())
    coeffs = torch.cat([model.encoder.frame(stats.normalise(b)).flatten(1) for b in feats.batches(rows, STREAM_BATCH)])
    init_linear_paths(model, coeffs)
