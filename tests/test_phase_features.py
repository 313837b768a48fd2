"""Phase-aware option: instantaneous frequency beside the log magnitude (samplegen.spectral.phase_features)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_CONFIG
from samplegen.spectral.features import (LOG_FLOOR, FeatureConfig, FeatureStats, adjust_stats, audio_to_features,
                                         split_features)
from synth import SR, harmonic_note
from samplegen.config import RunConfig
from samplegen.errors import ParameterError
from samplegen.evaluation.metrics import spectral_convergence_db
from samplegen.spectral import phase_features as P
from samplegen.spectral.stft import StftConfig, retrieve_phase, stft

CFG = StftConfig()


def _if_round_trip_db(x: np.ndarray, n_iter: int, lock: bool = True, floor_db: float | None = -60.0) -> float:
    spec = stft(torch.from_numpy(x)[None], CFG)
    ifd = P.instantaneous_frequency(spec, CFG, floor_db)
    y = P.waveform_from_if(spec.abs(), ifd, CFG, len(x), n_iter, lock=lock)[0].numpy()
    assert y.shape == x.shape
    return float(spectral_convergence_db(x, y))


def test_if_of_a_steady_sinusoid_is_its_offset_from_the_bin_centre():
    # A partial 0.3 bins above bin 40: its advance per hop exceeds bin 40's by 2π·0.3·hop/n_fft.
    n = np.arange(SR)
    x = torch.from_numpy(np.sin(2 * np.pi * (40.3 / CFG.n_fft) * n))[None]
    ifd = P.instantaneous_frequency(stft(x, CFG), CFG)
    expected = 2 * 0.3 * CFG.hop_length / CFG.n_fft
    assert torch.allclose(ifd[0, 40, 3:-3], torch.full_like(ifd[0, 40, 3:-3], expected), atol=1e-3)
    assert float(ifd.abs().max()) <= 1.0
    assert torch.all(ifd[:, :, 0] == 0)


def test_if_is_zero_below_the_floor():
    x = torch.from_numpy(harmonic_note(0.5, decay=0.5))[None]
    spec = stft(x, CFG)
    ifd = P.instantaneous_frequency(spec, CFG, floor_db=-40.0)
    quiet = spec.abs() < spec.abs().max() * 10 ** (-40 / 20)
    assert quiet.any() and (~quiet).any()
    assert torch.all(ifd[quiet] == 0)
    assert (ifd[~quiet] != 0).float().mean() > 0.5


def test_integrated_if_of_a_sustained_tone_needs_no_iteration():
    # Measured: −25.5 dB with the integrated phase alone (PGHI alone on the corpus: −24.4 dB mean).
    assert _if_round_trip_db(harmonic_note(2.0, decay=0.5), n_iter=0) < -22.0


def test_integrated_if_plus_four_iterations_beats_the_default_retrieval():
    # Measured on this decaying tone: −37.6 dB (IF + 4 fast Griffin–Lim iterations) against
    # −25.8 dB for the magnitude-only default (PGHI + 10 iterations).
    x = harmonic_note(2.0)
    if_db = _if_round_trip_db(x, n_iter=4)
    mag = stft(torch.from_numpy(x), CFG).abs()
    default_db = float(spectral_convergence_db(x, retrieve_phase(mag, CFG, len(x)).numpy()))
    assert if_db < -33.0
    assert if_db < default_db - 5.0


def test_peak_locking_is_what_makes_integration_work():
    # Integrating each bin on its own leaves the bins of one partial incoherent (measured −4.5 dB).
    x = harmonic_note(2.0, decay=0.5)
    assert _if_round_trip_db(x, 0, lock=False) > -10.0
    assert _if_round_trip_db(x, 0, lock=True) < _if_round_trip_db(x, 0, lock=False) - 15.0


def test_phase_from_if_without_lock_is_the_cumulative_sum():
    ifd = torch.rand(2, CFG.n_bins, 9, generator=torch.Generator().manual_seed(0)) * 2 - 1
    phase = P.phase_from_if(ifd, CFG).double()
    k = torch.arange(CFG.n_bins, dtype=torch.float64)
    step = 2 * math.pi * k * CFG.hop_length / CFG.n_fft
    manual = math.pi * k
    for t in range(1, 9):
        manual = manual + step + math.pi * ifd[1, :, t].double()
    diff = torch.remainder(phase[1, :, 8] - manual + math.pi, 2 * math.pi) - math.pi
    assert float(diff.abs().max()) < 1e-4


def test_batched_equals_one_by_one():
    notes = [harmonic_note(0.5, decay=d) for d in (0.5, 3.0, 6.0)]
    spec = stft(torch.from_numpy(np.stack(notes)), CFG)
    ifd = P.instantaneous_frequency(spec, CFG, -60.0)
    batch = P.waveform_from_if(spec.abs(), ifd, CFG, len(notes[0]), 2)
    for i in range(3):
        one = P.waveform_from_if(spec.abs()[i : i + 1], ifd[i : i + 1], CFG, len(notes[0]), 2)
        assert torch.allclose(batch[i], one[0], atol=1e-5)


def test_features_are_log_magnitude_then_if():
    audio = np.stack([harmonic_note(0.5), harmonic_note(0.5, decay=0.5)])
    plain = audio_to_features(audio, CFG, P.PhaseConfig())
    assert torch.equal(plain, audio_to_features(audio, CFG))
    torch.testing.assert_close(plain, torch.log(torch.clamp(stft(torch.from_numpy(audio).float(), CFG).abs(),
                                                            min=LOG_FLOOR)).transpose(1, 2))
    both = audio_to_features(audio, CFG, P.PhaseConfig(mode="if"))
    assert both.shape == (2, CFG.n_frames(len(audio[0])), 2 * CFG.n_bins)
    assert torch.allclose(both[..., : CFG.n_bins], plain)
    mag, ifd = split_features(both, CFG.n_bins)
    assert ifd is not None and float(ifd.abs().max()) <= 1.0


def test_an_if_runs_stats_whiten_if_without_compressing_it():
    audio = np.stack([harmonic_note(0.5), harmonic_note(0.5, decay=0.5)])
    phase = P.PhaseConfig(mode="if", if_weight=4.0)
    feats = audio_to_features(audio, CFG, phase)
    stats = adjust_stats(FeatureStats.fit(feats, magnitude_power=0.0), phase)
    assert stats.magnitude_bins == CFG.n_bins
    assert torch.all(stats.mean[CFG.n_bins :] == 0) and torch.allclose(stats.std[CFG.n_bins :],
                                                                       torch.tensor(P.IF_SCALE / 2))
    decoded = stats.denormalise(stats.normalise(feats))
    # magnitude comes back linear (the log undone once), IF as it went in
    torch.testing.assert_close(decoded[..., : CFG.n_bins], feats[..., : CFG.n_bins].exp(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(decoded[..., CFG.n_bins :], feats[..., CFG.n_bins :], rtol=0, atol=1e-6)


def test_phase_config_round_trip_and_old_configs_load():
    cfg = RunConfig(features=FeatureConfig(magnitude_power=0.0),
                    phase=P.PhaseConfig(mode="if", if_floor_db=-50.0, if_weight=0.5, n_iter=4)).resolved()
    assert cfg.model.n_bins == 2 * cfg.stft.n_bins
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    old = RunConfig().resolved().to_dict()
    del old["phase"]  # a run written before the option existed
    loaded = RunConfig.from_dict(old)
    assert loaded.phase == P.PhaseConfig() and loaded.phase.mode == "none"
    assert loaded.resolved().model.n_bins == CFG.n_bins


@pytest.mark.parametrize("section, word", [
    ({"mode": "mel"}, "phase.mode"),
    ({"if_floor_db": 10.0}, "if_floor_db"),
    ({"if_weight": 0}, "if_weight"),
    ({"n_iter": -1}, "n_iter"),
    ({"lock": True}, "unknown"),
])
def test_bad_phase_settings_are_refused_by_name(section, word):
    with pytest.raises(ParameterError, match=word):
        RunConfig.from_dict({"phase": section}, require_version=False)


def test_cache_keeps_magnitude_and_if_features_apart():
    from samplegen.training.feature_cache import FeatureSettings

    plain = FeatureSettings(duration_s=0.5, n_fft=2048, hop_length=512, prepare="built")
    with_if = replace(plain, phase=P.PhaseConfig(mode="if").cache_key())
    assert plain.as_dict() == {k: v for k, v in plain.__dict__.items() if k != "phase"}  # old caches still match
    assert plain.digest() != with_if.digest()
    assert with_if.frame_shape == (plain.frame_shape[0], 2 * plain.frame_shape[1])


@pytest.fixture(scope="module")
def if_run(tmp_path_factory: pytest.TempPathFactory, tiny_samples_dir: Path) -> Path:
    """A tiny run trained with the phase-aware option, from a config file as `samplegen train --config` reads it."""
    from samplegen.app import api

    folder = tmp_path_factory.mktemp("if-run")
    cfg_file = folder / "if.json"
    cfg_file.write_text(json.dumps({**TINY_CONFIG, "features": {"magnitude_power": 0.0},
                                      "phase": {"mode": "if", "n_iter": 2}}))
    api.train_run(tiny_samples_dir, folder / "run", config=cfg_file, show_progress=False)
    return folder / "run"


def test_tiny_phase_aware_run_trains_generates_and_evaluates(if_run: Path, tmp_path: Path, tiny_samples_dir: Path):
    from samplegen.app import api
    from samplegen.model.baselines import PCABaseline
    from samplegen.checkpoint import load_run
    from samplegen.audio.corpus import load_corpus
    from samplegen.evaluation.evaluate import sound_quality
    from samplegen.generation.generate import decode

    saved = json.loads((if_run / "config.json").read_text())
    assert saved["phase"] == {"mode": "if", "if_floor_db": -60.0, "if_weight": 1.0, "n_iter": 2}
    loaded = load_run(if_run)
    assert loaded.stats.magnitude_bins == loaded.config.stft.n_bins == loaded.config.model.n_bins // 2
    run = load_run(if_run)
    n = run.config.data.n_samples
    assert run.model.cfg.n_bins == 2 * run.config.stft.n_bins
    wav = decode(run, torch.zeros(2, run.config.model.latent_dim))
    assert wav.shape == (2, n) and np.isfinite(wav).all() and np.abs(wav).max() > 1e-4
    # The magnitude-only way back still works on the same run, by name.
    assert decode(run, torch.zeros(run.config.model.latent_dim), method="pghi", n_iter=1).shape == (n,)
    paths = api.sample(if_run, tmp_path / "new", n=2)
    assert len([p for p in paths if p.suffix == ".wav"]) == 2
    corpus = load_corpus(tiny_samples_dir, duration_s=run.config.data.duration_s)
    feats = audio_to_features(corpus.audio[:4], run.config.stft, run.config.phase)
    pca = PCABaseline.fit(run.stats.normalise(feats), 2)
    q = sound_quality(run, corpus.audio[:4], [e.name for e in corpus.entries[:4]], pca)
    # True magnitude + true IF through the integration: the oracle is close to the original.
    assert np.mean(q.values["oracle"]["sc_db"]) < -15.0
    assert np.isfinite(q.values["model"]["lsd_db"]).all()


def test_onnx_export_refuses_a_phase_aware_run(if_run: Path, tmp_path: Path):
    from samplegen.app import api

    with pytest.raises(ParameterError, match="magnitude-only"):
        api.export_onnx(if_run, tmp_path / "onnx")


def test_decode_method_if_needs_an_if_run(tiny_run: Path):
    from samplegen.checkpoint import load_run
    from samplegen.generation.generate import decode

    run = load_run(tiny_run)
    assert run.config.phase.mode == "none"
    with pytest.raises(ParameterError, match="phase.mode='if'"):
        decode(run, torch.zeros(run.config.model.latent_dim), method="if")



def test_a_run_folder_written_before_the_option_loads_and_decodes_the_same(tiny_run: Path, tmp_path: Path):
    import shutil

    from samplegen.checkpoint import load_run
    from samplegen.generation.generate import decode

    old = tmp_path / "old-run"
    shutil.copytree(tiny_run, old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["phase"]  # config.json as runs wrote it before the phase section existed
    (old / "config.json").write_text(json.dumps(cfg))
    a, b = load_run(tiny_run), load_run(old)
    assert b.config.phase.mode == "none" and b.config == a.config
    z = torch.zeros(2, a.config.model.latent_dim)
    assert np.array_equal(decode(a, z), decode(b, z))


def test_if_needs_the_log_magnitude() -> None:
    with pytest.raises(ParameterError, match="magnitude_power"):
        RunConfig(features=FeatureConfig(magnitude_power=0.7), phase=P.PhaseConfig(mode="if"))
