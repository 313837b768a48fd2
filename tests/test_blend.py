"""The blend-level term: closed-form level, penalty only for a deficit, gradient reaches the decoder."""

from __future__ import annotations

import math

import torch

from samplegen.blend import blend_level_loss, level_db
from samplegen.features import FeatureStats


def _stats(n_bins: int = 6) -> FeatureStats:
    return FeatureStats(mean=torch.linspace(-3, 1, n_bins), std=torch.full((n_bins,), 2.0))


def test_level_is_the_energy_of_the_linear_magnitude_in_db():
    stats = _stats()
    feats = torch.randn(3, 5, 6)
    mag = torch.exp(stats.denormalise(feats)).double()
    expected = 10 * torch.log10((mag**2).sum(dim=(1, 2)))
    assert torch.allclose(level_db(feats, stats).double(), expected, atol=1e-4)


class _Const(torch.nn.Module):
    """A decoder whose output level is set by one parameter (dB offset applied to every element)."""

    def __init__(self, template: torch.Tensor, offset_db: float, stats: FeatureStats) -> None:
        super().__init__()
        self.template, self.stats = template, stats
        self.offset = torch.nn.Parameter(torch.tensor(offset_db))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        shift = self.offset * math.log(10) / 20 / self.stats.std  # dB → normalised log-magnitude units
        return self.template.expand(z.shape[0], -1, -1) + shift


def test_no_penalty_within_the_margin_and_a_squared_deficit_beyond_it():
    stats = _stats()
    batch = torch.zeros(4, 5, 6)  # four notes of the same level
    mu = torch.randn(4, 2)
    g = torch.Generator().manual_seed(0)
    quiet_ok = _Const(batch[0], -2.0, stats)  # 2 dB below: inside a 3 dB margin
    assert blend_level_loss(quiet_ok, mu, batch, stats, g, margin_db=3.0).item() == 0.0
    too_quiet = _Const(batch[0], -10.0, stats)  # 10 dB below: 7 dB past the margin
    loss = blend_level_loss(too_quiet, mu, batch, stats, g, margin_db=3.0)
    assert math.isclose(loss.item(), 49.0, rel_tol=1e-3)
    loss.backward()
    assert too_quiet.offset.grad is not None and too_quiet.offset.grad.item() < 0  # raising the level lowers it


def test_same_generator_same_pairs():
    stats = _stats()
    batch, mu = torch.randn(8, 5, 6), torch.randn(8, 2)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 30), torch.nn.Unflatten(1, (5, 6)))
    a = blend_level_loss(dec, mu, batch, stats, torch.Generator().manual_seed(3), 0.0)
    b = blend_level_loss(dec, mu, batch, stats, torch.Generator().manual_seed(3), 0.0)
    assert torch.equal(a, b)


def test_training_with_the_term_logs_it(tiny_samples_dir, tiny_config_file, tmp_path):
    import csv
    from dataclasses import replace

    from samplegen.config import load_config_file
    from samplegen.corpus import load_corpus
    from samplegen.train import train

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, blend_weight=0.01, blend_margin_db=0.0, epochs=2))
    train(load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s), tmp_path / "run", cfg, show_progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    values = [float(r["train_blend"]) for r in rows]
    assert len(values) == 2 and all(math.isfinite(v) and v >= 0 for v in values)
