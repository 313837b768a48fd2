"""The feature representation: compression round trips, known values, and the blend it was chosen for."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from samplegen.checkpoint import CONFIG_NAME, load_run
from samplegen.config import RunConfig
from samplegen.errors import ParameterError
from samplegen.spectral.features import LOG_FLOOR, FeatureConfig, FeatureStats, compress_log, expand_magnitude, log_magnitude

POWERS = (0.0, 0.3, 0.5, 1.0)


def compress_magnitude(mag: torch.Tensor, power: float) -> torch.Tensor:
    """The compression's definition, the reference the package's log-domain version is held to:
    linear magnitude → max(mag, LOG_FLOOR)**power, or its natural log for power = 0."""
    floored = torch.clamp(mag, min=LOG_FLOOR)
    return torch.log(floored) if power == 0.0 else floored.pow(power)


def test_known_values():
    mag = torch.tensor([4.0, 1.0, 0.0, 1e-6], dtype=torch.float64)
    torch.testing.assert_close(compress_magnitude(mag, 0.5), torch.tensor([2.0, 1.0, 0.01, 0.01], dtype=torch.float64))
    torch.testing.assert_close(compress_magnitude(mag, 1.0), torch.tensor([4.0, 1.0, 1e-4, 1e-4], dtype=torch.float64))
    # p = 0 is the log (the Box–Cox limit), floored like log_magnitude
    torch.testing.assert_close(compress_magnitude(mag, 0.0), log_magnitude(mag))
    assert float(compress_magnitude(torch.tensor(100.0), 0.0)) == pytest.approx(math.log(100.0))


@pytest.mark.parametrize("power", POWERS)
def test_round_trip_above_the_floor(power):
    mag = torch.logspace(-4, 2.5, 200, dtype=torch.float64)
    torch.testing.assert_close(expand_magnitude(compress_magnitude(mag, power), power), mag, rtol=1e-10, atol=0)
    # the same through the log layer the cache stores
    log = log_magnitude(mag)
    torch.testing.assert_close(compress_log(log, power), compress_magnitude(mag, power), rtol=1e-10, atol=0)
    torch.testing.assert_close(expand_magnitude(compress_log(log, power), power), mag, rtol=1e-10, atol=0)


@pytest.mark.parametrize("power", (0.3, 0.5, 1.0))
def test_values_below_the_floor_come_back_as_silence_not_nan(power):
    out = expand_magnitude(torch.tensor([-3.0, 0.0, LOG_FLOOR**power / 2]), power)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full((3,), LOG_FLOOR), rtol=1e-5, atol=0)


@pytest.mark.parametrize("bad", (-0.1, 1.5, float("nan"), True))
def test_power_out_of_range_is_refused(bad):
    with pytest.raises(ParameterError, match="power"):
        compress_log(torch.zeros(2), bad)
    with pytest.raises(ParameterError, match="magnitude_power"):
        FeatureConfig(magnitude_power=bad)


@pytest.mark.parametrize("power", POWERS)
def test_stats_whiten_the_compressed_magnitude_and_invert(power):
    g = torch.Generator().manual_seed(0)
    log = log_magnitude(torch.rand(6, 9, 17, generator=g, dtype=torch.float64) * torch.linspace(1.0, 50, 17,
                                                                                                 dtype=torch.float64))
    stats = FeatureStats.fit(log, magnitude_power=power)
    x = stats.normalise(log)
    torch.testing.assert_close(x.mean(dim=(0, 1)), torch.zeros(17, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 1), unbiased=False), torch.ones(17, dtype=torch.float64), atol=1e-4, rtol=0)
    # the way out is the linear magnitude the phase retrieval reads, not the log
    torch.testing.assert_close(stats.denormalise(x), log.exp(), atol=1e-8, rtol=1e-5)
    # the statistics are those of the compressed magnitude itself
    torch.testing.assert_close(stats.mean.double(), compress_magnitude(log.exp(), power).mean(dim=(0, 1)), atol=1e-5,
                               rtol=1e-6)


@pytest.mark.parametrize("bins", (0, 9, 34))
def test_stats_know_which_bins_are_magnitude(bins):
    with pytest.raises(ParameterError, match="magnitude_bins"):
        FeatureStats(mean=torch.zeros(17), std=torch.ones(17), magnitude_power=0.7, magnitude_bins=bins)
    with pytest.raises(ParameterError, match="power"):
        FeatureStats(mean=torch.zeros(17), std=torch.ones(17), magnitude_power=1.5, magnitude_bins=17)


def test_a_blend_of_two_disjoint_notes_dips_by_a_known_amount():
    """Why the representation matters: the mid-point of two equally loud notes that share no bins.

    Each partial comes back at 0.5**(1/p) of its amplitude, so the mid-point is 10·log10(1 / (2 · 0.5**(2/p))) dB
    below either end: 3 dB for the linear magnitude, 9 dB for the square root, far more for the log.
    """
    a = torch.full((10, 64), LOG_FLOOR, dtype=torch.float64)
    b = a.clone()
    a[:, 5] = 30.0
    b[:, 40] = 30.0

    def midpoint_db_below_ends(power):
        mid = expand_magnitude(0.5 * compress_magnitude(a, power) + 0.5 * compress_magnitude(b, power), power)
        return 10 * math.log10(float(a.pow(2).sum()) / float(mid.pow(2).sum()))

    for power in (1.0, 0.7, 0.5):
        assert midpoint_db_below_ends(power) == pytest.approx(-10 * math.log10(2 * 0.5 ** (2 / power)), abs=0.05)
    assert midpoint_db_below_ends(0.0) > 40  # the geometric mean with the floor


@pytest.mark.parametrize("power", (2 / 3, 0.75, 1.0))
def test_from_a_power_of_two_thirds_no_blend_dips_more_than_6_db(power):
    """(t·a^p + (1−t)·b^p)^(2/p) ≥ t^(2/p)·a² + (1−t)^(2/p)·b² for 2/p ≥ 1, so no blend's energy falls below
    2 · 0.5^(2/p) ≥ 1/4 of the quieter end's: whatever the spectrograms' overlap."""
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        a = torch.rand(8, 33, generator=g, dtype=torch.float64) ** 6 * 50 * (torch.rand(8, 33, generator=g) > 0.7)
        b = torch.rand(8, 33, generator=g, dtype=torch.float64) ** 6 * 5 * (torch.rand(8, 33, generator=g) > 0.7)
        quieter = min(float(a.pow(2).sum()), float(b.pow(2).sum()))
        for t in torch.linspace(0, 1, 11, dtype=torch.float64):
            mid = expand_magnitude((1 - t) * compress_magnitude(a, power) + t * compress_magnitude(b, power), power)
            assert float(mid.pow(2).sum()) >= quieter * 0.25 * (1 - 1e-9)


def test_config_round_trip_and_format_1_runs_are_read_as_log():
    cfg = RunConfig(features=FeatureConfig(magnitude_power=0.3)).resolved()
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["features"] == {"magnitude_power": 0.3}
    assert RunConfig.from_dict(data) == cfg
    legacy = {k: v for k, v in data.items() if k != "features"}
    legacy["format_version"] = 1
    assert RunConfig.from_dict(legacy).features.magnitude_power == 0.0
    # a user's partial file (no version) takes today's default
    assert RunConfig.from_dict({}, require_version=False).features == FeatureConfig()


def test_a_format_1_run_folder_loads_and_decodes_as_log(tiny_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    data = json.loads((old / CONFIG_NAME).read_text())
    data.pop("features")
    data["format_version"] = 1
    (old / CONFIG_NAME).write_text(json.dumps(data))
    new_run, old_run = load_run(tiny_run), load_run(old)
    assert old_run.config.features.magnitude_power == old_run.stats.magnitude_power == 0.0
    assert new_run.stats.magnitude_power == new_run.config.features.magnitude_power == 0.7
    assert new_run.stats.magnitude_bins == new_run.config.model.n_bins
    with torch.no_grad():
        z = torch.zeros(1, old_run.config.model.latent_dim)
        # the model's output is the whitened log itself, as format 1 decoded it
        want = torch.exp(old_run.stats.mean + old_run.stats.std * old_run.model.decode(z))
        torch.testing.assert_close(old_run.stats.denormalise(old_run.model.decode(z)), want)
    assert np.isfinite(want.numpy()).all()
