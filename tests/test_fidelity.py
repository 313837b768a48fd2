"""The model's fidelity parts: the nonlinear frame decoder, the log-magnitude loss, the learning-rate
warm-up, and runs saved before them (format 2) loading as they were."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from samplegen.app import api
from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import CONFIG_NAME, load_run
from samplegen.config import RunConfig, load_config_file
from samplegen.evaluation.evaluate import _features, sound_quality
from samplegen.model.baselines import PCABaseline
from samplegen.model.network import (LSD_FLOOR_NEPERS, QUIET_GATE_DB, ModelConfig, SampleModel, _quiet_blend_log_l1,
                                     _QuietBlendLogL1, init_from_pca, log_levels, quiet_blend)
from samplegen.spectral.features import LOG_FLOOR, FeatureStats
from samplegen.training.train import learning_rate_at, train


def test_the_default_model_has_the_fidelity_parts():
    cfg = RunConfig()
    assert cfg.model.frame_hidden > 0 and cfg.train.log_weight > 0 and cfg.train.lr_warmup_epochs > 0


@pytest.mark.parametrize("power", [0.7, 0.0])
def test_log_l1_and_its_gradient_match_autograd(power):
    torch.manual_seed(0)
    mean = torch.rand(65, dtype=torch.float64) * 0.3 + 0.05
    std = torch.rand(65, dtype=torch.float64) * 0.2 + 0.02
    if power == 0.0:
        mean, std = mean - 4.0, std * 10
    out = torch.randn(4, 10, 65, dtype=torch.float64, requires_grad=True)
    log_target = torch.rand(4, 10, 65, dtype=torch.float64) * -9.0
    model = SampleModel(ModelConfig(n_bins=65, n_frames=10))
    model.attach_feature_stats(FeatureStats(mean, std, power, 65))
    ours = model.log_magnitude_l1(out, log_target)
    (grad,) = torch.autograd.grad(ours, out)

    values = out * std + mean
    floor = log_target.amax(dim=(1, 2), keepdim=True) - LSD_FLOOR_NEPERS
    if power > 0:
        predicted = torch.log(values.clamp_min(LOG_FLOOR**power)) / power
        floor = floor.clamp_min(math.log(LOG_FLOOR))
    else:
        predicted = values
    ref = (torch.maximum(predicted, floor) - torch.maximum(log_target, floor)).abs().mean()
    (ref_grad,) = torch.autograd.grad(ref, out)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-9)
    assert float(grad.abs().sum()) > 0


@pytest.mark.parametrize("adds_level", [True, False], ids=["residual head", "level-writing head"])
def test_the_log_heads_fused_loss_and_gradients_match_autograd(adds_level):
    """Training's log_l1 of the log head's blend, written out, equals the blend then log_l1 through autograd."""
    torch.manual_seed(0)
    mean = torch.rand(33, dtype=torch.float64) * 0.2 + 0.01
    std = torch.rand(33, dtype=torch.float64) * 0.1 + 0.01
    p = torch.tensor(0.7, dtype=torch.float64)
    out = torch.randn(3, 7, 33, dtype=torch.float64, requires_grad=True)
    quiet = (torch.randn(3, 7, 33, dtype=torch.float64) * 3 - (0 if adds_level else 8)).requires_grad_()
    log_target = torch.rand(3, 7, 33, dtype=torch.float64) * -12.0
    model = SampleModel(ModelConfig(n_bins=33, n_frames=7))
    model.attach_feature_stats(FeatureStats(mean, std, float(p), 33))
    ref = model.log_magnitude_l1(quiet_blend(out, quiet, mean, std, p, adds_level), log_target)
    ours = _QuietBlendLogL1.apply(out, quiet, log_target, mean, std, p, adds_level)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-6)  # log_l1 works in float32
    alone, no_out, no_quiet = _quiet_blend_log_l1(out, quiet, log_target, mean, std, p, adds_level, with_grad=False)
    assert float(alone) == float(ours.detach()) and no_out is None and no_quiet is None  # validation's loss alone
    for g_ours, g_ref in zip(torch.autograd.grad(ours, (out, quiet)), torch.autograd.grad(ref, (out, quiet))):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-12)
        assert float(g_ours.abs().sum()) > 0


def test_the_training_steps_seeded_log_l1_gives_the_same_gradients_as_autograd():
    """SampleModel.forward (the step) returns the log head's log_l1 as a value and its gradient as seeds; backward
    from them gives every parameter the gradient that losses() gives through autograd, for the same weight."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_bins=33, n_frames=7, frame_dim=4, hidden=(16, 8), latent_dim=3, frame_hidden=8,
                      log_head_hidden=8)
    log_mag = torch.rand(5, 7, 33) * -10.0
    stats = FeatureStats.fit(log_mag, 0.7)
    model = SampleModel(cfg)
    model.decoder.set_feature_map(stats.mean, stats.std, 0.7)
    for layer in model.modules():  # off the PCA-like zeros, so every path has a gradient
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.3)
    model.attach_feature_stats(stats)
    eps, weight = torch.randn(5, 3), 0.5
    terms = model(log_mag, eps, torch.tensor(weight))
    assert len(terms.seeds) == 2 and not terms.log_l1.requires_grad
    loss = terms.recon + weight * terms.log_l1 + 1e-4 * terms.kl
    torch.autograd.backward([loss, *(t for t, _ in terms.seeds)], [None, *(g for _, g in terms.seeds)])
    seeded = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = model.losses(stats.normalise(log_mag), eps=eps, log_target=log_mag)
    assert float(ref["log_l1"].detach()) == pytest.approx(float(terms.log_l1), rel=1e-6)
    (ref["recon"] + weight * ref["log_l1"] + 1e-4 * ref["kl"]).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(seeded[name], p.grad, rtol=1e-5, atol=1e-8, msg=name)
    assert float(seeded["decoder.log_mlp.2.weight"].abs().sum()) > 0  # the head learns from the seeds


def test_the_log_head_draws_the_quiet_bins_and_leaves_the_loud_ones():
    """Bins far below the note's loudest come from the log head; loud bins are the compressed branch's."""
    mean, std, p = torch.full((64,), 0.05), torch.full((64,), 0.1), torch.tensor(0.7)
    level = torch.zeros(2, 5, 64)
    level[..., 32:] = -12.0  # nepers: -104 dB, under the gate (and the floor); bins 0-31 at the peak
    out = (torch.exp(p * level) - mean) / std
    quiet = torch.full((2, 5, 64), -9.0)  # what the log head says: -78 dB
    drawn = torch.log(quiet_blend(out, quiet, mean, std, p, adds_level=False) * std + mean) / p
    torch.testing.assert_close(drawn[..., :32], level[..., :32], rtol=0, atol=1e-3)  # the gate is 0.99995 open
    cap = QUIET_GATE_DB / 20 * math.log(10) + 1.0  # the head's soft ceiling, re the peak
    torch.testing.assert_close(drawn[..., 32:], cap - torch.nn.functional.softplus(cap - quiet[..., 32:]), rtol=0, atol=1e-3)
    assert float((drawn[..., 32:] + 9.0).abs().max()) < 0.02  # 37 dB under the ceiling the head passes within 0.2 dB


def test_frame_decoder_starts_at_pca_and_is_not_limited_to_its_basis():
    """Frames on a curved path (a moving peak) are no mix of 2 basis spectra; the frame MLP can draw them."""
    torch.manual_seed(0)
    bins = torch.arange(65, dtype=torch.float32)
    centres = torch.rand(24, 10, 1) * 50 + 7
    x = torch.exp(-0.5 * ((bins - centres) / 2.0) ** 2)  # 24 notes x 10 frames x 65 bins
    x = (x - x.mean()) / x.std()
    results = {}
    for hidden in (0, 64):
        torch.manual_seed(0)
        model = SampleModel(ModelConfig(kind="ae", n_bins=65, n_frames=10, frame_dim=2, hidden=(64, 32), latent_dim=20,
                                        frame_hidden=hidden, log_head=False))
        init_from_pca(model, x)
        with torch.no_grad():
            start = float(model.losses(x)["recon"])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(300):
            loss = model.losses(x)["recon"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[hidden] = (start, float(loss.detach()))
    assert results[0][0] == pytest.approx(results[64][0], rel=1e-5)  # the same PCA start
    frames = x.reshape(-1, 65)
    pca2 = PCABaseline.fit(frames, 2)
    bound = float(((pca2.reconstruct(frames) - frames) ** 2).mean())  # the best any rank-2 frame layer can do
    assert results[0][1] > 0.9 * bound
    assert results[64][1] < 0.5 * bound


def test_lr_warmup_ramps_step_by_step_then_follows_the_cosine():
    cfg = RunConfig(train=replace(RunConfig().train, lr_warmup_epochs=2, epochs=10, learning_rate=1e-3))
    ramp = [learning_rate_at(1 + s // 5, cfg, s % 5, 5) for s in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(learning_rate_at(1, cfg) / 10)
    assert learning_rate_at(3, cfg, 0, 5) == learning_rate_at(3, cfg)


def test_lr_warmup_keeps_the_model_near_its_pca_start(tiny_samples_dir, tiny_config_file, tmp_path):
    """Adam's first full-size steps throw a PCA-started model off its start (on a GPU: loss spikes of
    100-1000x in the first epochs of wider models); the warm-up keeps the first epoch near the start."""
    base = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=base.data.duration_s)
    first_epoch = {}
    for warmup in (0, 3):
        cfg = replace(base, train=replace(base.train, epochs=3, learning_rate=1e-2, lr_warmup_epochs=warmup,
                                          val_fraction=0.0, kl_warmup_epochs=0))
        train(corpus, tmp_path / f"w{warmup}", cfg, show_progress=False)
        rows = (tmp_path / f"w{warmup}" / "history.csv").read_text().splitlines()
        first_epoch[warmup] = float(rows[1].split(",")[4])  # train_recon of epoch 1
    assert first_epoch[3] < 0.5 * first_epoch[0]


@pytest.mark.parametrize("ceiling", [True, False], ids=["log-variance ceiling", "clamp of runs before format 6"])
def test_a_variance_head_thrown_up_in_one_step_does_not_turn_the_batch_to_noise(ceiling):
    """The training spikes' cause (benchmarks/kl_spike_probe.py): one Adam step threw the log σ² head's raw output
    from about -4 to past 20, and σ² = 5·10⁸ turned the batch's latents to noise. Under the ceiling such a
    throw leaves log σ² below 0 (σ no wider than the prior's), so the batch stays at the scale of a prior draw."""
    torch.manual_seed(0)
    x = torch.randn(64, 12, 33)
    model = SampleModel(ModelConfig(n_bins=33, n_frames=12, frame_dim=4, hidden=(32, 16), latent_dim=4,
                                    frame_hidden=0, logvar_ceiling=ceiling))
    init_from_pca(model, x)
    eps = torch.randn(64, 4)
    with torch.no_grad():
        before = model.losses(x, eps=eps)
        assert model.encoder.logvar is not None
        model.encoder.logvar.bias.add_(30.0)  # the step that threw it
        after = model.losses(x, eps=eps)
        _, logvar = model.encode(x)
    assert logvar is not None
    if ceiling:
        assert float(logvar.max()) <= 0.0
        assert float(after["kl"]) < 10 * float(before["kl"]) + 4 * 0.5  # + at most ½ nat a dimension
        assert float(after["recon"]) < 4 * float(before["recon"]) + 2.0  # prior-scale noise on unit-variance latents
    else:  # what happened before: log σ² at its clamp, KL and reconstruction error of another order
        assert float(logvar.max()) == 20.0
        assert float(after["kl"]) > 1e6 and float(after["recon"]) > 1e4


def test_trained_briefly_it_reconstructs_closer_than_pca(tiny_samples_dir, tiny_config_file, tmp_path):
    data = json.loads(tiny_config_file.read_text())
    data["train"].update({"epochs": 80, "val_fraction": 0.0, "patience": 100})
    cfg = RunConfig.from_dict(data, require_version=False)
    assert cfg.model.frame_hidden > 0 and cfg.train.log_weight > 0
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "run", cfg, show_progress=False)
    run = load_run(tmp_path / "run")
    feats = _features(run, corpus.audio)
    pca = PCABaseline.fit(feats, run.config.model.latent_dim)  # the same latent size
    quality = sound_quality(run, corpus.audio, [e.name for e in corpus.entries], pca, feats=feats)
    model_lsd = float(np.mean(quality.values["model"]["lsd_db"]))
    pca_lsd = float(np.mean(quality.values["pca"]["lsd_db"]))
    assert model_lsd < pca_lsd - 0.15, (model_lsd, pca_lsd)  # measured: 1.79 against 2.02 dB


OLD_RUNS = {  # format: (what its runs were trained with, the keys its config.json lacks)
    2: ({"model": {"frame_hidden": 0, "log_head": False, "log_head_residual": False, "logvar_ceiling": False,
                   "log_head_hidden": 0},
         "train": {"log_weight": 0.0, "lr_warmup_epochs": 0, "adam_beta2": 0.999, "precision": "fp32",
                   "pca_lr_scale": 1.0, "eq_augment_db": 0.0}},
        [("model", "frame_hidden"), ("model", "log_head"), ("model", "log_head_residual"), ("model", "logvar_ceiling"),
         ("train", "log_weight"), ("train", "lr_warmup_epochs"), ("train", "adam_beta2"), ("train", "precision"),
         ("train", "pca_lr_scale"), ("model", "log_head_hidden"), ("train", "eq_augment_db")]),
    4: ({"model": {"log_head": True, "log_head_residual": False, "logvar_ceiling": False, "log_head_hidden": 0},
         "train": {"log_weight": 0.5, "pca_lr_scale": 1.0, "eq_augment_db": 0.0}},
        [("model", "log_head_residual"), ("model", "logvar_ceiling"), ("train", "pca_lr_scale"),
         ("model", "log_head_hidden"), ("train", "eq_augment_db")]),
    5: ({"model": {"logvar_ceiling": False, "log_head_hidden": 0}, "train": {"pca_lr_scale": 1.0, "eq_augment_db": 0.0}},
        [("model", "logvar_ceiling"), ("train", "pca_lr_scale"), ("model", "log_head_hidden"), ("train", "eq_augment_db")]),
    6: ({"model": {"log_head_hidden": 0}, "train": {"pca_lr_scale": 1.0, "eq_augment_db": 0.0}},
        [("train", "pca_lr_scale"), ("model", "log_head_hidden"), ("train", "eq_augment_db")]),
    7: ({"model": {"log_head_hidden": 0}, "train": {"eq_augment_db": 0.0}},
        [("model", "log_head_hidden"), ("train", "eq_augment_db")]),
    8: ({"train": {"eq_augment_db": 0.0}}, [("train", "eq_augment_db")]),
}


@pytest.mark.parametrize("version", sorted(OLD_RUNS))
def test_an_old_format_run_loads_and_decodes_as_it_was_trained(tiny_samples_dir, tiny_config_file, tmp_path, version):
    """Runs saved before format 3 have no frame decoder, no log loss and no log head; a format-4 log head wrote the
    quiet bins' level itself; before format 6 log σ² was clamped, not kept below 0; before format 7 every layer
    learned at the same rate; before format 9 no note went through the training equaliser. Their config lacks the
    keys that came later; they decode, generate and resume."""
    trained_with, missing = OLD_RUNS[version]
    data = json.loads(tiny_config_file.read_text())
    for section, values in trained_with.items():
        data[section].update(values)
    data["train"]["epochs"] = 2
    (tmp_path / "old.json").write_text(json.dumps(data))
    api.train_run(tiny_samples_dir, tmp_path / "new", config=tmp_path / "old.json", show_progress=False)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    saved = json.loads((old / CONFIG_NAME).read_text())
    saved["format_version"] = version
    for section, key in missing:
        saved[section].pop(key)
    (old / CONFIG_NAME).write_text(json.dumps(saved))
    a, b = load_run(tmp_path / "new"), load_run(old)
    for section, values in trained_with.items():
        assert all(getattr(getattr(b.config, section), key) == value for key, value in values.items())
    assert b.config == a.config
    z = torch.randn(3, a.config.model.latent_dim)
    x = torch.randn(2, a.config.model.n_frames, a.config.model.n_bins) * 3
    with torch.no_grad():
        assert torch.equal(a.model.decode(z), b.model.decode(z))
        for ours, theirs in zip(a.model.encode(x), b.model.encode(x)):
            assert ours is not None and theirs is not None and torch.equal(ours, theirs)
    for verb in (lambda r, o: api.sample(r, o, n=2), lambda r, o: api.perturb(r, a.corpus.names[0], o, n=2)):
        assert verb(old, tmp_path / "out")
    # ... and trains on from its saved state (its optimiser's groups are as they were saved)
    api.train_run(tiny_samples_dir, old, epochs=3, resume=True, show_progress=False)
    assert len((old / "history.csv").read_text().splitlines()) == 1 + 3
    assert load_run(old).config == replace(b.config, train=replace(b.config.train, epochs=3))  # the raise recorded


@pytest.mark.parametrize("which", ["tiny_run", "level_head_run"])
def test_every_generation_verb_and_the_sampler_exports_work_on_a_log_head_run(which, request, tmp_path):
    """The generation verbs, SFZ and SF2 on a model with the log head (today's default, and run format 4's): sounds
    that are neither silent nor clipped nor NaN."""
    import soundfile as sf

    run_dir = request.getfixturevalue(which)
    run = load_run(run_dir)
    assert run.model.cfg.log_head and run.model.cfg.log_head_residual == (which == "tiny_run")
    assert (run.model.cfg.log_head_hidden > 0) == (which == "tiny_run")  # today's head has its own MLP
    a, b = run.corpus.names[:2]
    wavs = [*api.reconstruct(run_dir, [a], tmp_path / "rec", with_originals=False),
            *api.interpolate(run_dir, a, b, tmp_path / "blend", steps=3),
            *api.sample(run_dir, tmp_path / "draws", n=2), *api.perturb(run_dir, a, tmp_path / "nudge", n=2)]
    assert len(wavs) == 1 + 3 + 2 + 2
    for path in wavs:
        audio, _ = sf.read(path)
        peak = float(np.abs(audio).max())
        assert np.isfinite(audio).all() and 0.05 < peak <= 1.0, (path.name, peak)
    assert api.export_sfz(run_dir, [a, b], tmp_path / "sfz")
    assert api.export_sf2(run_dir, [a, b], tmp_path / "inst.sf2").stat().st_size > 1000


def test_the_log_heads_network_starts_at_zero_and_changes_only_the_quiet_bins():
    """A log head with its own network starts where the linear head does (the PCA start); once its network is set,
    it moves the bins under the gate and leaves the loud ones almost as they were."""
    torch.manual_seed(0)
    x = torch.randn(6, 10, 65)
    decoded = {}
    for hidden in (0, 16):
        torch.manual_seed(0)
        model = SampleModel(ModelConfig(n_bins=65, n_frames=10, frame_dim=4, hidden=(32, 16), latent_dim=3,
                                        frame_hidden=8, log_head_hidden=hidden))
        model.decoder.set_feature_map(torch.full((65,), 0.2), torch.full((65,), 0.1), 0.7)
        init_from_pca(model, x)
        decoded[hidden] = model.decoder.parts(model.encode(x)[0].detach())
        if hidden:
            with torch.no_grad():
                torch.nn.init.normal_(model.decoder.log_mlp[-1].weight, std=1.0)
                moved = model.decoder.parts(model.encode(x)[0].detach())[1]
    assert model.decoder.log_mlp is not None and model.cfg.log_head_hidden == 16
    assert torch.equal(decoded[0][1], decoded[16][1])  # the same start
    level = log_levels(model.decoder, decoded[16][0]) * (20 / math.log(10))  # the first branch's level, dB
    loud = level - level.amax(dim=(1, 2), keepdim=True) > QUIET_GATE_DB + 40  # 40 dB above the gate
    assert 0 < int(loud.sum()) < loud.numel()
    change = (moved - decoded[16][1]).abs()  # measured: at most 0.005 on the loud bins, 0.13 in all
    assert change.max() > 1e-2 and change[loud].max() < 0.1 * change.max()
