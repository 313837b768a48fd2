"""The blend-level term: decoded points between two notes must not fall silent.

Every corpus note is loudness-normalised, so a real note never sits far below
its neighbours in level. A decoder trained only on log-magnitude error learns
the *mean log* spectrum where it is unsure, and between two notes whose energy
lies in different places (a short pluck and a slow pad) that mean is far
quieter than either: the "silence (!!)" the seed heard when interpolating.
Measured on the default corpus, even interpolating the notes' true log
spectrograms dips more than 6 dB below the quieter end on 28 % of random pairs.

This term looks at a random blend of two posterior means of the batch, decodes
it, and penalises only a level *deficit*: the squared number of dB by which it
falls more than ``margin_db`` below the quieter of the two notes. It does not
tell the decoder what the blend should sound like.
"""

from __future__ import annotations

import math

import torch

from samplegen.features import FeatureStats

_DB_PER_NEPER_POWER = 10.0 / math.log(10.0)


def level_db(feats_norm: torch.Tensor, stats: FeatureStats) -> torch.Tensor:
    """Energy of normalised log-magnitude features, Tensor[B x T x F] → Tensor[B] in dB (arbitrary reference)."""
    log_mag = stats.denormalise(feats_norm)
    return _DB_PER_NEPER_POWER * torch.logsumexp(2.0 * log_mag.flatten(1), dim=1)


def blend_level_loss(decoder: torch.nn.Module, mu: torch.Tensor, batch: torch.Tensor, stats: FeatureStats,
                     generator: torch.Generator | None, margin_db: float) -> torch.Tensor:
    """Mean squared level deficit (dB²) of decoded blends of random pairs in the batch.

    Parameters
    ----------
    decoder : latent Tensor[B x L] → normalised features Tensor[B x T x F]
    mu : posterior means of ``batch`` (no gradient needed: only the decoder is taught)
    batch : the notes' normalised features, whose levels set the floor
    generator : source of the pairing and blend weights (seeded per epoch for exact resume)
    margin_db : allowed dip below the quieter note before any penalty
    """
    n = mu.shape[0]
    if n < 2:
        return torch.zeros((), device=mu.device)
    partner = torch.randperm(n, generator=generator).to(mu.device)
    weight = torch.rand(n, 1, generator=generator).to(mu.device)
    blended = decoder((1.0 - weight) * mu + weight * mu[partner])
    with torch.no_grad():
        ends = level_db(batch, stats)
        floor = torch.minimum(ends, ends[partner]) - margin_db
    return torch.relu(floor - level_db(blended, stats)).pow(2).mean()
