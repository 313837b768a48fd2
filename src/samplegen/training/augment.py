"""Augmentation at training time: each step, half the batch's notes heard through a random, smooth equaliser.

A preset the model never heard is often a known one through another filter: brighter, duller, a resonance
moved. The corpus's two-note mixtures (``corpus build --mix``) teach the decoder what lies between notes; a
random equaliser teaches the encoder and decoder a note's filtering as something that varies, so an unseen
preset's is less often new to it (BENCHMARKS.md, "Time structure, length, and a random equaliser"). A
linear filter multiplies a note's STFT magnitude by its gain at each bin, so the equaliser is exact on the features and
adds to their log magnitude: nothing is rendered, and the feature cache stays as it is.

Each step's curves are a pure function of (seed, epoch, step), so a resumed run sees the very same ones.
"""

from __future__ import annotations

import math

import torch

from samplegen.spectral.features import LOG_FLOOR

#: Share of each batch's notes that go through an equaliser (the others are heard as they are).
EQ_SHARE = 0.5
#: The curve's tilt, in dB per octave around 1 kHz, is drawn with this share of ``eq_db`` as its standard deviation.
EQ_TILT_SHARE = 0.25
#: Bell bumps per curve, centred anywhere from 100 Hz to 10 kHz (log-uniform), 0.5-1.5 octaves wide.
EQ_BUMPS = 2
_DB_PER_NEPER = 20.0 / math.log(10.0)


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one training step's curves: the same for a run resumed at that step."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 1009 + int(step))


def random_eq_nepers(n: int, n_bins: int, sample_rate: int, eq_db: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` random equaliser curves, Tensor[n x n_bins] of gains in nepers (natural log), zero for the notes
    left as they are: a tilt around 1 kHz plus :data:`EQ_BUMPS` bells whose gains have ``eq_db`` dB as their
    standard deviation."""
    f = torch.linspace(0, sample_rate / 2, n_bins).clamp_min(20.0)
    octaves = torch.log2(f / 1000.0)
    curve = torch.randn(n, 1, generator=generator) * (eq_db * EQ_TILT_SHARE) * octaves
    low, span = math.log2(100.0 / 1000.0), math.log2(10000.0 / 100.0)
    for _ in range(EQ_BUMPS):
        centre = torch.rand(n, 1, generator=generator) * span + low
        gain = torch.randn(n, 1, generator=generator) * eq_db
        width = 0.5 + torch.rand(n, 1, generator=generator)
        curve = curve + gain * torch.exp(-0.5 * ((octaves - centre) / width) ** 2)
    chosen = (torch.rand(n, 1, generator=generator) < EQ_SHARE).float()
    return curve * chosen / _DB_PER_NEPER


def equalised(raw: torch.Tensor, nepers: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Log magnitudes ``raw`` (Tensor[B x T x C·F], magnitude first; IF, if any, after it) through the curves
    ``nepers`` (Tensor[B x F]), floored where the features floor them."""
    out = raw.clone()
    gains = nepers[:, None, :].to(raw)
    out[..., :n_bins] = (out[..., :n_bins] + gains).clamp_min(math.log(LOG_FLOOR))
    return out
