"""Training faults: SIGKILL at random moments, a full disk, an unwritable folder."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from samplegen import checkpoint
from samplegen.app.cli import main as cli_main
from samplegen.audio.corpus import load_corpus
from samplegen.config import load_config_file
from samplegen.training.train import train

EPOCHS = 24


def _train_cmd(data: Path, out: Path, config: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "samplegen.app.cli", "train", "--data", str(data), "--out", str(out),
           "--config", str(config), "--epochs", str(EPOCHS), "--quiet"]
    return cmd + (["--resume"] if resume else [])


def _env() -> dict[str, str]:
    # One thread: float sums in the same order in every process, so "same weights" means bit-identical.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(tiny_samples_dir, tiny_config_file, tmp_path):
    t0 = time.perf_counter()
    subprocess.run(_train_cmd(tiny_samples_dir, tmp_path / "full", tiny_config_file), env=_env(), check=True,
                   capture_output=True)
    full_s = time.perf_counter() - t0

    rng = np.random.default_rng(20261124)
    part = tmp_path / "part"
    kills = 0
    for attempt in range(3):
        resume = attempt > 0
        proc = subprocess.Popen(_train_cmd(tiny_samples_dir, part, tiny_config_file, resume=resume), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(float(rng.uniform(0.3, 0.9)) * full_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "no kill landed: the training finished before every kill moment"
    done = subprocess.run(_train_cmd(tiny_samples_dir, part, tiny_config_file, resume=True), env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    for name in (checkpoint.STATE_NAME, checkpoint.MODEL_NAME, checkpoint.LATENTS_NAME):
        a, _ = checkpoint.load_tensors(tmp_path / "full" / name)
        b, _ = checkpoint.load_tensors(part / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert (tmp_path / "full" / "history.csv").read_text().count("\n") == (part / "history.csv").read_text().count("\n")


def test_killed_before_the_first_epoch_ended_resumes_from_the_start(tiny_samples_dir, tiny_config_file, tmp_path):
    cfg = load_config_file(tiny_config_file)
    corpus = load_corpus(tiny_samples_dir, duration_s=cfg.data.duration_s)
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_run_config(run, cfg.resolved())  # what a run killed in its first epoch leaves behind
    trained = []
    result = train(corpus, run, None, resume=True, show_progress=False,
                   on_epoch=lambda epoch, row: trained.append(epoch))
    # Started over from epoch 1 with the saved settings, and ended where a run never killed ends.
    assert trained == list(range(1, result.epochs_run + 1)) and trained[0] == 1
    train(corpus, tmp_path / "uninterrupted", cfg, show_progress=False)
    for name in (checkpoint.STATE_NAME, checkpoint.MODEL_NAME, checkpoint.LATENTS_NAME):
        a, _ = checkpoint.load_tensors(tmp_path / "uninterrupted" / name)
        b, _ = checkpoint.load_tensors(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_full_disk_is_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                          monkeypatch, capsys):
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync_then_full(fd):
        calls["n"] += 1
        if calls["n"] > 12:  # the config, the first epochs' checkpoints, then the disk fills up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    out = tmp_path / "run"
    code = cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(out), "--config", str(tiny_config_file),
                     "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "free space" in err
    monkeypatch.setattr(os, "fsync", real_fsync)
    weights, _ = checkpoint.load_tensors(out / checkpoint.MODEL_NAME)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(out), "--resume", "--quiet"]) == 0


def test_an_unwritable_output_folder_is_a_clear_error(tiny_samples_dir, tiny_config_file, tmp_path, monkeypatch,
                                                     capsys):
    # Tests run as root in CI, where permission bits do not stop a write: the refusal is injected where the
    # operating system would give it.
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code = cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(tmp_path / "run"),
                     "--config", str(tiny_config_file), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Permission denied" in err and "writable" in err


def test_an_output_path_that_cannot_be_a_folder_is_a_clear_error(tiny_samples_dir, tiny_config_file, tmp_path,
                                                                  capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(blocker / "run"),
                     "--config", str(tiny_config_file), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "samplegen: error:" in err and "Traceback" not in err
