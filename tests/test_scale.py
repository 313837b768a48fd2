"""Feature cache, streamed statistics, and data-parallel training with two gloo processes."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from samplegen import checkpoint

from samplegen.app import api

from samplegen.audio.corpus import load_corpus
from samplegen.config import load_config_file
from samplegen.model.network import SampleModel, init_from_pca
from samplegen.spectral.features import FeatureStats, audio_to_features
from samplegen.spectral.stft import StftConfig
from samplegen.training import distributed
from samplegen.training.data_stats import fit_stats, init_model_from_pca
from samplegen.training.feature_cache import INDEX_NAME, FeatureSettings, NoteFeatures, build_features
from samplegen.training.train import train


def _settings(duration_s: float = 0.5, **kw) -> FeatureSettings:
    return FeatureSettings(duration_s=duration_s, n_fft=2048, hop_length=512, prepare="built", **kw)


def test_cached_features_equal_the_in_memory_ones_and_names_match(tiny_samples_dir, tmp_path):
    feats = build_features(tiny_samples_dir, _settings(), cache_dir=tmp_path)
    corpus = load_corpus(tiny_samples_dir, duration_s=0.5)
    assert [e.name for e in feats.entries] == [e.name for e in corpus.entries]
    expected = audio_to_features(corpus.audio, StftConfig())
    got = feats.read(np.arange(len(feats)))
    assert got.shape == expected.shape == (16, 44, 1025)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # Rows come back in the order asked for, whatever shard order they sit in.
    torch.testing.assert_close(feats.read([5, 0, 5]), expected[[5, 0, 5]], atol=1e-4, rtol=0)
    # The shards are plain .npy files any NumPy opens memory-mapped.
    shard = next(tmp_path.glob("*/shard-*.npy"))
    assert np.load(shard, mmap_mode="r").shape == (16, 44, 1025)


def test_second_build_reuses_the_cache_and_keys_follow_content_and_settings(tiny_samples_dir, tmp_path):
    build_features(tiny_samples_dir, _settings(), cache_dir=tmp_path / "c")
    (folder,) = (tmp_path / "c").iterdir()
    shards = sorted(folder.glob("shard-*.npy"))
    # A renamed copy of the corpus (same content) computes nothing new.
    copy = shutil.copytree(tiny_samples_dir, tmp_path / "renamed")
    again = build_features(copy, _settings(), cache_dir=tmp_path / "c")
    assert sorted(folder.glob("shard-*.npy")) == shards and len(again) == 16
    # Changed content: one new row; changed STFT settings: a separate folder.
    y, sr = sf.read(copy / "note03.wav")
    sf.write(copy / "note03.wav", y[::-1].copy(), sr)
    build_features(copy, _settings(), cache_dir=tmp_path / "c")
    assert len(sorted(folder.glob("shard-*.npy"))) == len(shards) + 1
    index = json.loads((folder / INDEX_NAME).read_text())
    assert len(index["notes"]) == 17
    other = FeatureSettings(duration_s=0.5, n_fft=1024, hop_length=256, prepare="built")
    assert build_features(copy, other, cache_dir=tmp_path / "c").frame_shape == (87, 513)
    assert len(list((tmp_path / "c").iterdir())) == 2


def test_process_pool_gives_the_same_features_and_skips_unreadable_files(tiny_samples_dir, tmp_path):
    src = shutil.copytree(tiny_samples_dir, tmp_path / "src")
    (src / "broken.wav").write_bytes(b"RIFF not really")
    serial = build_features(src, _settings(), cache_dir=tmp_path / "a", workers=1)
    pooled = build_features(src, _settings(), cache_dir=tmp_path / "b", workers=2, pool_min_files=0)
    assert [f for f, _ in pooled.skipped] == ["broken.wav"]
    assert len(pooled) == len(serial) == 16
    assert torch.equal(pooled.read(np.arange(16)), serial.read(np.arange(16)))


def test_float16_storage_halves_the_shard_and_stays_close(tiny_samples_dir, tmp_path):
    f32 = build_features(tiny_samples_dir, _settings(), cache_dir=tmp_path)
    f16 = build_features(tiny_samples_dir, _settings(dtype="float16"), cache_dir=tmp_path)
    a, b = f32.read(np.arange(16)), f16.read(np.arange(16))
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.01  # nats of log magnitude: under 0.1 dB
    sizes = sorted(p.stat().st_size for p in tmp_path.glob("*/shard-*.npy"))
    assert sizes[0] * 2 - sizes[1] < 1024


@pytest.mark.parametrize("power,log_head", [(0.0, False), (0.7, True)])
def test_streamed_statistics_and_pca_start_match_the_in_memory_ones(power, log_head):
    torch.manual_seed(0)
    x = torch.randn(70, 9, 33) * torch.linspace(0.5, 3, 33) + torch.linspace(-4, 2, 33)
    feats = NoteFeatures.from_tensor(Path("."), [None] * 70, x)  # type: ignore[list-item]
    rows = np.arange(3, 70)
    stats = fit_stats(feats, rows, distributed.Context(), magnitude_power=power)
    ref = FeatureStats.fit(x[rows], magnitude_power=power)
    torch.testing.assert_close(stats.mean, ref.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.std, ref.std, atol=1e-5, rtol=1e-5)
    from samplegen.model.network import ModelConfig

    # the head of run format 4, which starts at each bin's mean level (a residual head starts at zero)
    cfg = ModelConfig(n_bins=33, n_frames=9, frame_dim=4, hidden=(16, 8), latent_dim=3, log_head=log_head,
                      log_head_residual=False)
    a, b = SampleModel(cfg), SampleModel(cfg)
    b.load_state_dict(a.state_dict())  # the same random hidden layers
    for model in (a, b):
        model.decoder.set_feature_map(stats.mean, stats.std, power)
    init_model_from_pca(a, feats, rows, stats)  # streamed in batches of 64 notes
    init_from_pca(b, stats.normalise(x[rows]))
    assert a.encoder.linear.weight.abs().sum() > 0
    if log_head:
        assert a.decoder.log_frame.bias.abs().sum() > 0  # each bin's mean log level
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-4, rtol=1e-4, msg=name)


def test_bf16_on_a_cpu_trains_in_bf16_close_to_float32(tiny_samples_dir, tiny_config_file, tmp_path, monkeypatch):
    """precision bf16 autocasts on a CPU too (where it has native bf16, a compiled step is about 1.5x faster);
    without native bf16 it warns that it is emulated, and still does what it was asked."""
    from samplegen.training import train as train_module

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1, precision="fp32"))
    corpus = load_corpus(tiny_samples_dir, duration_s=0.5)
    train(corpus, tmp_path / "fp32", cfg, show_progress=False)
    bf16 = replace(cfg, train=replace(cfg.train, precision="bf16"))
    monkeypatch.setattr(train_module, "_cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16 instructions, so it is emulated"):
        train(corpus, tmp_path / "bf16", bf16, show_progress=False)
    a, _ = checkpoint.load_tensors(tmp_path / "fp32" / "model.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "bf16" / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # it did round to bf16
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-2, rtol=2e-2, msg=k)


@pytest.mark.parametrize("device, native, expected", [
    ("cpu", True, "bf16"), ("cpu", False, "fp32"), ("cuda:0", True, "fp32"), ("cuda", False, "fp32")])
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, device, native, expected):
    from samplegen.training import train as train_module

    monkeypatch.setattr(train_module, "_cpu_has_bf16", lambda: native)
    assert train_module.resolved_precision("auto", device) == expected
    assert train_module.resolved_precision("fp32", device) == "fp32"  # an explicit choice is kept
    assert train_module.resolved_precision("bf16", device) == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_auto_chose_and_resumes_with_it(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                   monkeypatch, native):
    """config.json says what the run trained with, never "auto"; resuming on another CPU keeps it."""
    from samplegen.training import train as train_module

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1, precision="auto"))
    corpus = load_corpus(tiny_samples_dir, duration_s=0.5)
    monkeypatch.setattr(train_module, "_cpu_has_bf16", lambda: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never asks for emulated bf16, so never warns about it
        train(corpus, tmp_path / "run", cfg, show_progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"]
    assert saved == ("bf16" if native else "fp32")
    monkeypatch.setattr(train_module, "_cpu_has_bf16", lambda: not native)
    more = replace(cfg, train=replace(cfg.train, epochs=2))
    train(corpus, tmp_path / "run", more, resume=True, show_progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"] == saved


def _assert_same_training(run_a: Path, run_b: Path) -> None:
    a, _ = checkpoint.load_tensors(run_a / "train_state.safetensors")
    b, _ = checkpoint.load_tensors(run_b / "train_state.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
    ha = (run_a / "history.csv").read_text().splitlines()
    hb = (run_b / "history.csv").read_text().splitlines()
    assert len(ha) == len(hb)
    for ra, rb in zip(ha[1:], hb[1:]):
        va, vb = [float(v) for v in ra.split(",")[:-1]], [float(v) for v in rb.split(",")[:-1]]
        np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_two_gloo_processes_match_one_and_resume(tiny_samples_dir, tiny_config_file, tmp_path):
    """Same global batch: 2 processes × 4 notes per step against 1 × 8, up to float summation order.

    12 training notes in batches of 8, so the second step holds 4.  Rank 0 alone writes the
    folder; a finished run resumed for one more epoch matches one process doing the same. In float32: bf16's
    rounding of the two halves' sums is not the whole batch's.
    """
    cfg = load_config_file(tiny_config_file)
    # the equaliser on: drawn for the global batch, so the processes' notes get the curves one process gives them
    cfg = replace(cfg, train=replace(cfg.train, epochs=3, patience=100, precision="fp32", eq_augment_db=6.0))
    kw = dict(show_progress=False, device="cpu")
    one = api.train_run(tiny_samples_dir, tmp_path / "one", config=cfg, **kw)
    two = api.train_run(tiny_samples_dir, tmp_path / "two", config=cfg, devices=2, **kw)
    assert two.epochs_run == one.epochs_run == 3 and two.run_dir == tmp_path / "two"
    assert not list((tmp_path / "two").glob(".*.tmp"))
    _assert_same_training(tmp_path / "one", tmp_path / "two")
    api.train_run(tiny_samples_dir, tmp_path / "one", epochs=4, resume=True, **kw)
    two = api.train_run(tiny_samples_dir, tmp_path / "two", epochs=4, resume=True, devices=2, **kw)
    assert two.epochs_run == 4
    _assert_same_training(tmp_path / "one", tmp_path / "two")
    assert checkpoint.load_run(tmp_path / "two").latent_mu.shape == (16, 3)


def test_launcher_refuses_bad_requests(tiny_samples_dir, tmp_path):
    from samplegen.errors import ParameterError

    with pytest.raises(ParameterError, match="rdzv"):
        api.train_run(tiny_samples_dir, tmp_path / "r", devices=1, nodes=2, device="cpu", show_progress=False)
    with pytest.raises(ParameterError, match="devices"):
        api.train_run(tiny_samples_dir, tmp_path / "r", devices=0, nodes=2, device="cpu", show_progress=False)


def test_cli_features_fills_the_cache_that_train_then_reads(tiny_samples_dir, tiny_config_file, tmp_path, capsys):
    from samplegen.app import cli

    cache = tmp_path / "cache"
    assert cli.main(["features", "--data", str(tiny_samples_dir), "--config", str(tiny_config_file),
                     "--cache", str(cache), "--quiet"]) == 0
    assert "features of 16 notes cached" in capsys.readouterr().out
    (folder,) = cache.iterdir()
    shards = sorted(folder.glob("shard-*.npy"))
    assert cli.main(["train", "--data", str(tiny_samples_dir), "--out", str(tmp_path / "run"), "--config",
                     str(tiny_config_file), "--epochs", "1", "--cache", str(cache), "--device", "cpu", "--quiet"]) == 0
    assert sorted(folder.glob("shard-*.npy")) == shards  # nothing computed twice
    assert checkpoint.load_run(tmp_path / "run").latent_mu.shape == (16, 3)
