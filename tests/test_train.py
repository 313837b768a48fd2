import csv
import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from samplegen import checkpoint

from samplegen.app import api
from samplegen.audio.corpus import load_corpus
from samplegen.config import load_config_file
from samplegen.errors import CheckpointError
from samplegen.model.network import SampleModel
from samplegen.training.train import TrainingError, train


def test_run_folder_is_self_contained(tiny_run):
    for name in ["config.json", "model.safetensors", "stats.safetensors", "latents.safetensors",
                 "corpus.json", "history.csv", "history.png", "train_state.safetensors"]:
        assert (tiny_run / name).is_file(), name
    run = checkpoint.load_run(tiny_run)
    assert run.latent_mu.shape == (16, 3)
    assert set(run.corpus.splits) == {"train", "val"}
    rows = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    # Training starts at the PCA baseline, the best linear fit of the training notes, so in four epochs of KL
    # warm-up its training error moves little either way; what it learns shows on the held-out notes.
    assert float(rows[-1]["val_recon"]) < float(rows[0]["val_recon"])
    assert not list(tiny_run.glob("*.tmp")) and not list(tiny_run.glob(".*.tmp"))


def test_save_load_gives_identical_outputs(tiny_run, tmp_path):
    a = checkpoint.load_run(tiny_run)
    checkpoint.save_model(tmp_path, a.model)
    m = SampleModel(a.config.model)
    weights, _ = checkpoint.load_tensors(tmp_path / "model.safetensors")
    m.load_state_dict(weights)
    z = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.equal(a.model.decode(z), m.eval().decode(z))
    b = checkpoint.load_run(tiny_run)
    with torch.no_grad():
        assert torch.equal(a.model.decode(z), b.model.decode(z))


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_tampered_and_pickled_weights_are_refused(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "r1")
    raw = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or tampered"):
        checkpoint.load_run(run)
    (run / "model.safetensors").write_bytes(b"\xff" * 8 + raw[8:])
    with pytest.raises(CheckpointError):
        checkpoint.load_run(run)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (run / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        checkpoint.load_run(run)
    assert not marker.exists()


def test_config_that_does_not_match_weights_is_refused(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "r2")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["latent_dim"] = 5
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load_run(run)
    cfg["model"]["latent_dim"] = 3
    cfg["model"]["surprise"] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="surprise"):
        checkpoint.load_run(run)


def test_resume_after_a_kill_ends_with_the_same_weights(tiny_samples_dir, tiny_config_file, tmp_path, monkeypatch):
    import samplegen.training.train as train_module

    cfg = load_config_file(tiny_config_file)
    # with the equaliser on: its curves are a function of the step, so a resumed run draws the same ones
    cfg = replace(cfg, train=replace(cfg.train, epochs=4, patience=100, eq_augment_db=6.0))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "full", cfg, show_progress=False)

    real_write = train_module._write_history_csv

    def killed_after_epoch_2(path, history):
        real_write(path, history)
        if len(history) == 2:
            raise KeyboardInterrupt  # the process dies right after epoch 2's checkpoint

    monkeypatch.setattr(train_module, "_write_history_csv", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path / "part", cfg, show_progress=False)
    monkeypatch.setattr(train_module, "_write_history_csv", real_write)
    assert api.run_is_partial(tmp_path / "part")
    before_kill = list(csv.DictReader(open(tmp_path / "part" / "history.csv")))
    trained = []
    result = train(corpus, tmp_path / "part", cfg, resume=True, show_progress=False,
                   on_epoch=lambda epoch, row: trained.append(epoch))
    # It went on from the saved epoch: only epochs 3 and 4 were trained, and the log continues the killed run's
    # (epochs 1 and 2 keep the times measured before the kill, which a run started over would measure again).
    assert trained == [3, 4] and result.epochs_run == 4
    after = list(csv.DictReader(open(tmp_path / "part" / "history.csv")))
    assert [int(r["epoch"]) for r in after] == [1, 2, 3, 4] and after[:2] == before_kill
    # ... and it ends exactly where the uninterrupted run does.
    full, _ = checkpoint.load_tensors(tmp_path / "full" / "train_state.safetensors")
    part, _ = checkpoint.load_tensors(tmp_path / "part" / "train_state.safetensors")
    assert full.keys() == part.keys()
    for key in full:
        assert torch.equal(full[key], part[key]), key


def test_a_kill_between_the_last_state_and_its_history_row_loses_no_row(tiny_samples_dir, tiny_config_file,
                                                                        tmp_path, monkeypatch):
    import samplegen.training.train as train_module

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=2, patience=100))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    real_write = train_module._write_history_csv

    def killed_before_the_last_row(path, history):
        if len(history) == 2:
            raise KeyboardInterrupt  # the final epoch's state is on disk, its history row is not
        real_write(path, history)

    monkeypatch.setattr(train_module, "_write_history_csv", killed_before_the_last_row)
    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path / "run", cfg, show_progress=False)
    monkeypatch.setattr(train_module, "_write_history_csv", real_write)
    assert len(list(csv.DictReader(open(tmp_path / "run" / "history.csv")))) == 1
    trained = []
    train(corpus, tmp_path / "run", cfg, resume=True, show_progress=False, on_epoch=lambda e, row: trained.append(e))
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert trained == [] and [int(r["epoch"]) for r in rows] == [1, 2]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_samples_dir, tiny_config_file,
                                                                               tmp_path, monkeypatch):
    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    real = SampleModel.forward  # the training step's call
    calls = {"n": 0}

    def flaky(self, raw, eps, log_scale):
        calls["n"] += 1
        terms = real(self, raw, eps, log_scale)
        return terms._replace(recon=terms.recon * float("nan")) if calls["n"] > 3 else terms

    monkeypatch.setattr(SampleModel, "forward", flaky)
    with pytest.raises(TrainingError, match="last good checkpoint"):
        train(corpus, tmp_path / "nan", cfg, show_progress=False)
    weights, _ = checkpoint.load_tensors(tmp_path / "nan" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_existing_run_without_resume_is_refused(tiny_run, tiny_samples_dir, tiny_config_file):
    with pytest.raises(TrainingError, match="--resume"):
        api.train_run(tiny_samples_dir, tiny_run, config=tiny_config_file, show_progress=False)


@pytest.mark.skipif(sys.platform == "win32", reason="the run folder lock is flock's (POSIX)")
def test_a_run_folder_another_process_trains_is_refused_and_left_alone(tiny_samples_dir, tiny_config_file,
                                                                       tmp_path):
    """A second `train` into a folder a first one is writing (a --resume in another terminal, or two starts at
    once) stops before writing anything there; the lock leaves with its process."""
    import fcntl

    from samplegen.training.train import LOCK_NAME

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    run = tmp_path / "run"
    run.mkdir()
    with open(run / LOCK_NAME, "a") as other:  # what the first process holds
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TrainingError, match="being trained by another samplegen process"):
            train(corpus, run, cfg, show_progress=False)
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]
    train(corpus, run, cfg, show_progress=False)  # released (and a lock file alone is an empty folder)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with open(run / LOCK_NAME, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TrainingError, match="being trained by another samplegen process"):
            train(corpus, run, replace(cfg, train=replace(cfg.train, epochs=3)), resume=True, show_progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert len(list(csv.DictReader(open(run / "history.csv")))) == 1


def test_same_seed_same_weights(tiny_samples_dir, tiny_config_file, tmp_path):
    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=2))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "a", cfg, show_progress=False)
    train(corpus, tmp_path / "b", cfg, show_progress=False)
    a, _ = checkpoint.load_tensors(tmp_path / "a" / "model.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_after_stopping_early_resumes_without_training_more(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                   monkeypatch):
    import samplegen.training.train as train_module

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=30, patience=2, kl_warmup_epochs=0))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    full = train(corpus, tmp_path / "full", cfg, show_progress=False)
    assert full.stopped_early and full.epochs_run < 30

    real = train_module._write_latents

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # dies while writing its latents, after the early stop

    monkeypatch.setattr(train_module, "_write_latents", killed)
    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path / "part", cfg, show_progress=False)
    monkeypatch.setattr(train_module, "_write_latents", real)
    part = train(corpus, tmp_path / "part", cfg, resume=True, show_progress=False)
    assert part.stopped_early and part.epochs_run == full.epochs_run
    a, _ = checkpoint.load_tensors(tmp_path / "full" / "train_state.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "part" / "train_state.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_features_kept_on_the_device_train_the_same_weights(tiny_samples_dir, tiny_config_file, tmp_path, monkeypatch):
    # On a GPU the whole feature set is indexed where it lives instead of read batch by batch; the
    # same rows in the same order must give the same run.  Forced here on the CPU.
    import numpy as np

    from samplegen.training import train as train_module

    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "streamed", cfg, show_progress=False)
    used = []

    def resident(feats, device):
        used.append(device)
        return feats.read(np.arange(len(feats)))

    monkeypatch.setattr(train_module, "_resident_features", resident)
    train(corpus, tmp_path / "resident", cfg, show_progress=False)
    assert used == ["cpu"]
    a, _ = checkpoint.load_tensors(tmp_path / "streamed" / "model.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "resident" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    la, _ = checkpoint.load_tensors(tmp_path / "streamed" / "latents.safetensors")
    lb, _ = checkpoint.load_tensors(tmp_path / "resident" / "latents.safetensors")
    assert torch.allclose(la["mu"], lb["mu"], atol=1e-5)


def test_a_failed_checkpoint_write_stops_training_with_its_error(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                  monkeypatch):
    # Checkpoints are written on a background thread; a write that fails must not pass unnoticed.
    from samplegen.training import train as train_module

    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)

    def broken(*args, **kwargs):
        raise CheckpointError("disk full (simulated)")

    monkeypatch.setattr(train_module, "_write_history_csv", broken)
    with pytest.raises(CheckpointError, match="disk full"):
        train(corpus, tmp_path / "run", cfg, show_progress=False)


def _killed_after_epoch_2_and_resumed(corpus, run: Path, cfg, monkeypatch) -> None:
    """Train ``run``, the process dying right after epoch 2's checkpoint, then resume it to the end."""
    import samplegen.training.train as train_module

    real_write = train_module._write_history_csv

    def killed_after_epoch_2(path, history):
        real_write(path, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_history_csv", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(corpus, run, cfg, show_progress=False)
    monkeypatch.setattr(train_module, "_write_history_csv", real_write)
    train(corpus, run, cfg, resume=True, show_progress=False)


def test_a_compiled_step_trains_the_eager_model_and_resumes(tiny_samples_dir, tiny_config_file, tmp_path,
                                                            monkeypatch):
    """train.compile changes how a step and validation run, not what they compute: in float32, weights and
    validation losses within float rounding of eager training; and a compiled run at the default precision
    (bf16 on a CPU that has it) killed after epoch 2 and resumed ends where an uninterrupted one does."""
    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=3, patience=100, precision="fp32"))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    compiled = replace(cfg, train=replace(cfg.train, compile=True))
    train(corpus, tmp_path / "eager", cfg, show_progress=False)
    train(corpus, tmp_path / "compiled", compiled, show_progress=False)
    a, _ = checkpoint.load_tensors(tmp_path / "eager" / "train_state.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "compiled" / "train_state.safetensors")
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in model_keys)
    assert any(not torch.equal(a[k], b[k]) for k in model_keys)  # it did run another program
    # validation is compiled too, and measures what the eager one does
    val_loss = {run: [float(r["val_loss"]) for r in csv.DictReader(open(tmp_path / run / "history.csv"))]
                for run in ("eager", "compiled")}
    assert len(val_loss["eager"]) == 3
    assert val_loss["compiled"] == pytest.approx(val_loss["eager"], rel=1e-3)
    compiled = replace(cfg, train=replace(cfg.train, compile=True, precision="auto"))
    train(corpus, tmp_path / "whole", compiled, show_progress=False)
    b, _ = checkpoint.load_tensors(tmp_path / "whole" / "train_state.safetensors")
    _killed_after_epoch_2_and_resumed(corpus, tmp_path / "part", compiled, monkeypatch)
    c, _ = checkpoint.load_tensors(tmp_path / "part" / "train_state.safetensors")
    assert all(torch.allclose(b[k], c[k], rtol=1e-5, atol=1e-7) for k in model_keys)


def test_where_the_step_cannot_compile_training_goes_on_eagerly(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                 monkeypatch):
    """A machine without a C++ compiler fails at the first compiled call: one warning each for the step and validation,
    then the eager run's weights."""
    def no_compiler(module, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n(long compiler log)")
        return call

    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "eager", cfg, show_progress=False)
    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning) as caught:
        train(corpus, tmp_path / "fallback", replace(cfg, train=replace(cfg.train, compile=True)), show_progress=False)
    told = sorted(str(w.message).split(" here (")[0] for w in caught if "cannot compile" in str(w.message))
    assert told == ["torch.compile cannot compile the training step", "torch.compile cannot compile the validation pass"]
    assert all("(RuntimeError: InductorError" in str(w.message) for w in caught if "cannot compile" in str(w.message))
    a, _ = checkpoint.load_tensors(tmp_path / "eager" / "model.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "fallback" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_pca_started_layers_learn_at_their_share_of_the_learning_rate(tiny_samples_dir, tiny_config_file,
                                                                          tmp_path, monkeypatch):
    """train.pca_lr_scale slows the frame layers and linear paths that the PCA start sets, and only them."""
    import samplegen.training.train as train_module

    starts: list[dict[str, torch.Tensor]] = []
    real_groups = train_module._parameter_groups

    def recording_start(model, scale):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_groups(model, scale)

    monkeypatch.setattr(train_module, "_parameter_groups", recording_start)
    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    moved: dict[float, tuple[float, float]] = {}
    for scale in (1.0, 1e-3):
        run = tmp_path / f"scale{scale}"
        train(corpus, run, replace(cfg, train=replace(cfg.train, epochs=2, pca_lr_scale=scale)), show_progress=False)
        end, _ = checkpoint.load_tensors(run / "train_state.safetensors")
        start = starts[-1]
        step = {k: float((end["model." + k] - v).abs().max()) for k, v in start.items() if "model." + k in end}
        pca = max(v for k, v in step.items() if k.startswith(train_module.PCA_STARTED))
        rest = max(v for k, v in step.items() if k.startswith(("encoder.stack.", "decoder.stack.")))
        moved[scale] = (pca, rest)
    assert moved[1e-3][0] < 0.01 * moved[1.0][0]  # a thousandth of the rate: the PCA parts all but stay
    assert moved[1e-3][1] > 0.3 * moved[1.0][1]   # while the stacks learn as before
    assert json.loads((tmp_path / "scale0.001" / "config.json").read_text())["train"]["pca_lr_scale"] == 1e-3


def test_the_training_equaliser_is_smooth_reproducible_and_leaves_half_the_notes_alone():
    import math

    from samplegen.spectral.features import LOG_FLOOR
    from samplegen.training.augment import equalised, random_eq_nepers, step_generator

    def curves(eq_db: float, epoch: int = 3, step: int = 5, n: int = 400) -> torch.Tensor:
        return random_eq_nepers(n, 1025, 44100, eq_db, step_generator(0, epoch, step))

    c = curves(6.0)
    assert torch.equal(c, curves(6.0)) and not torch.equal(c, curves(6.0, step=6))  # a function of the step
    untouched = (c == 0).all(dim=1).float().mean().item()
    assert 0.4 < untouched < 0.6
    db = c * 20 / math.log(10)
    moved = db[(db != 0).any(dim=1)]
    assert 1.0 < moved.abs().median() < 10.0  # dB-sized: a filter, not a new note
    # smooth on a log-frequency scale: above 500 Hz (bin 24, a 24th of an octave a bin) under 1 dB from bin to bin
    assert db[:, 24:].diff(dim=1).abs().max() < 1.0
    assert torch.equal(curves(0.0), torch.zeros(400, 1025))
    # log magnitudes with an IF half after them: only the magnitude moves, and never below the features' floor
    raw = torch.cat([torch.full((4, 7, 1025), math.log(LOG_FLOOR)), torch.randn(4, 7, 1025)], dim=-1)
    gains = torch.full((4, 1025), -1.0)
    gains[0] = 1.0
    out = equalised(raw, gains, 1025)
    assert torch.equal(out[..., 1025:], raw[..., 1025:]) and torch.equal(out[1:, :, :1025], raw[1:, :, :1025])
    assert torch.allclose(out[0, :, :1025], raw[0, :, :1025] + 1.0)


def test_a_mixture_is_held_out_with_a_parent_and_counts_in_the_validation_loss(tiny_samples_dir, tiny_config_file,
                                                                              tmp_path, monkeypatch):
    """A mixture is held out when either parent is, so it never trains beside a held-out note; held-out mixtures
    count in the validation loss that picks the best epoch (without them training on unseen presets stopped three
    times earlier: BENCHMARKS.md, "Validation without the mixtures")."""
    import numpy as np

    from samplegen.audio.corpus import build_folder_corpus
    from samplegen.training import train as train_module

    cfg = load_config_file(tiny_config_file)
    corpus = build_folder_corpus(tiny_samples_dir, tmp_path / "c", duration_s=cfg.data.duration_s, mix=12, seed=1)
    cfg = replace(cfg, train=replace(cfg.train, epochs=1))
    mask = train_module.split_groups(corpus, cfg.train.val_fraction, cfg.train.seed)
    rows = {e.name: i for i, e in enumerate(corpus.entries)}
    mixtures = [i for i, e in enumerate(corpus.entries) if e.parents is not None]
    assert any(mask[i] for i in mixtures) and not all(mask[i] for i in mixtures)
    assert all(any(mask[rows[p]] for p in corpus.entries[i].parents) == mask[i] for i in mixtures)
    seen: list[set[int]] = []
    real_validate = train_module._validate

    def spying(model, feats, val_idx, *args, **kwargs):
        seen.append({int(i) for i in val_idx})
        return real_validate(model, feats, val_idx, *args, **kwargs)

    monkeypatch.setattr(train_module, "_validate", spying)
    train(corpus, tmp_path / "run", cfg, show_progress=False)
    assert seen and all(rows_seen == {int(i) for i in np.flatnonzero(mask)} for rows_seen in seen)
    assert [s == "val" for s in checkpoint.load_run(tmp_path / "run").corpus.splits] == list(mask)


def test_the_recorded_step_trains_as_the_step_by_step_loop_and_resumes(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                        monkeypatch):
    """On one GPU the whole optimisation step is recorded as a CUDA graph (``train.STEP_GRAPH``). What it needs
    besides the recording -- the batch and noise copied into fixed buffers, the learning rate and KL weight as
    tensors filled before each step, the epoch's shorter last batch left to the plain loop -- runs here without
    recording, and must train what the plain loop trains (the warm-up changes the learning rate at every
    step, so a stale one shows). Its checkpoint keeps plain numbers, and a killed run resumes."""
    import samplegen.training.train as train_module

    cfg = load_config_file(tiny_config_file)
    cfg = replace(cfg, train=replace(cfg.train, epochs=3, patience=100, precision="fp32"))
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    train(corpus, tmp_path / "plain", cfg, show_progress=False)

    monkeypatch.setattr(train_module, "STEP_GRAPH", "always")
    sizes = []
    real_step = train_module._StepGraph.step

    def counted(self, raw, *args):
        sizes.append(len(raw))
        return real_step(self, raw, *args)

    monkeypatch.setattr(train_module._StepGraph, "step", counted)
    train(corpus, tmp_path / "graph", cfg, show_progress=False)
    # 12 training notes in batches of 8: the full batch of each epoch took the graph's path, the 4 left the loop's
    assert sizes == [8, 8, 8]
    a, _ = checkpoint.load_tensors(tmp_path / "plain" / "train_state.safetensors")
    b, meta = checkpoint.load_tensors(tmp_path / "graph" / "train_state.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    groups = json.loads(meta["param_groups"])
    assert all(type(g["lr"]) is float and g["capturable"] is False for g in groups)
    val = {run: [float(r["val_loss"]) for r in csv.DictReader(open(tmp_path / run / "history.csv"))]
           for run in ("plain", "graph")}
    assert val["graph"] == pytest.approx(val["plain"], rel=1e-5)

    _killed_after_epoch_2_and_resumed(corpus, tmp_path / "part", cfg, monkeypatch)
    c, _ = checkpoint.load_tensors(tmp_path / "part" / "train_state.safetensors")
    assert all(torch.allclose(b[k], c[k], rtol=1e-6, atol=1e-8) for k in b)
