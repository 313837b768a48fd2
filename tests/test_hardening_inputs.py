"""Hardening (issue 18, items 3-5): crafted run folders, audio files and numbers never take the machine.

Each test builds its crafted input itself and asserts a one-line error (or a clean skip with its reason).
The memory cases also run the CLI in a child process whose address space is capped at 3 GB over what it
holds once its modules are imported: the bound must refuse the input before an allocation could hit that.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import load_file, save_file

from samplegen.cli import main
from synth import SR, harmonic_note

SRC = Path(__file__).resolve().parents[1] / "src"
#: The child sets its own limit once torch and samplegen are imported, so the 3 GB are all headroom.
LIMITED_CLI = """
import resource, sys
import torch, samplegen.cli, samplegen.checkpoint, samplegen.corpus, samplegen.generate
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 1024**3, resource.RLIM_INFINITY))
sys.exit(samplegen.cli.main(sys.argv[1:]))
"""


def run_limited(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a child process under an address-space limit of 3 GB over its baseline."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", LIMITED_CLI, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_line_error(err: str, *needles: str) -> str:
    """The CLI's stderr is exactly one ``samplegen: error:`` line holding every needle."""
    err = err.strip()
    assert err.startswith("samplegen: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def _edit_config(run: Path, section: str, **values) -> None:
    data = json.loads((run / "config.json").read_text())
    data[section].update(values)
    (run / "config.json").write_text(json.dumps(data))


# --- item 3: run folders --------------------------------------------------------------------------------


@pytest.mark.parametrize("section, values, needle", [
    ("model", {"n_bins": 10**9}, "n_bins 1000000000 is over the bound"),
    ("model", {"hidden": [16] * 200_000}, "hidden layers 200000 is over the bound"),
    ("model", {"hidden": [60_000, 60_000]}, "GB of weights, over the bound"),
    ("model", {"frame_hidden": 10**7}, "frame_hidden 10000000 is over the bound"),
    ("model", {"latent_dim": 4}, "'decoder.linear.weight' has shape"),  # fits the bounds, not the weights
    ("stft", {"n_fft": 4096}, "the config contradicts itself"),
])
def test_a_config_asking_for_a_huge_or_wrong_model_is_refused_before_allocating(run_copy, section, values,
                                                                              needle, capsys):
    _edit_config(run_copy, section, **values)
    assert main(["info", str(run_copy)]) == 2
    one_line_error(capsys.readouterr().err, needle)


def test_huge_sizes_stay_within_an_address_space_limit(run_copy):
    _edit_config(run_copy, "model", n_bins=10**9, frame_dim=4000)
    proc = run_limited(["info", str(run_copy)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    one_line_error(proc.stderr, "over the bound")


def test_the_weights_header_is_checked_before_the_data_is_read(run_copy, capsys, monkeypatch):
    from samplegen import checkpoint

    weights = load_file(run_copy / "model.safetensors")
    weights["encoder.frame.weight"] = weights["encoder.frame.weight"][:, :-1].contiguous()
    save_file(weights, run_copy / "model.safetensors")
    reads, real = [], checkpoint.read_regular_file
    monkeypatch.setattr(checkpoint, "read_regular_file", lambda *a: reads.append(a) or real(*a))
    assert main(["info", str(run_copy)]) == 2
    one_line_error(capsys.readouterr().err, "'encoder.frame.weight' has shape")
    assert [Path(a[0]).name for a in reads] == ["config.json"]  # the weights' data was never read


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "folder", "too_big"])
def test_only_regular_files_of_bounded_size_are_read(run_copy, kind, capsys):
    target = run_copy / "model.safetensors"
    target.unlink()
    if kind == "dev_zero":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        with open(target, "wb") as fh:  # sparse: 20 GB on paper, nothing on disk
            fh.truncate(20 * 10**9)
    assert main(["info", str(run_copy)]) == 2  # a FIFO would hang here and /dev/zero would eat the memory
    err = one_line_error(capsys.readouterr().err, "model.safetensors")
    expected = {"dev_zero": "a character device", "fifo": "a FIFO", "folder": "a folder", "too_big": "over the limit"}
    assert expected[kind] in err


def test_a_run_whose_weights_are_dev_zero_stays_within_an_address_space_limit(run_copy):
    for name in ("model.safetensors", "latents.safetensors"):
        (run_copy / name).unlink()
        (run_copy / name).symlink_to("/dev/zero")
    (run_copy / "config.json").unlink()
    os.mkfifo(run_copy / "config.json")
    proc = run_limited(["info", str(run_copy)], timeout=60)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "a FIFO")


@pytest.mark.parametrize("name, key", [("model.safetensors", "decoder.frame.bias"), ("stats.safetensors", "std"),
                                       ("latents.safetensors", "mu"), ("latents.safetensors", "logvar")])
def test_nan_in_any_stored_tensor_is_a_one_line_error(run_copy, name, key, capsys):
    tensors = load_file(run_copy / name)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[1] = float("nan")
    save_file(tensors, run_copy / name)
    assert main(["info", str(run_copy)]) == 2
    one_line_error(capsys.readouterr().err, name, key, "NaN or Inf")


def test_play_with_nan_latents_is_a_one_line_error(run_copy, capsys):
    tensors = load_file(run_copy / "latents.safetensors")
    tensors["mu"][0, 0] = float("nan")
    save_file(tensors, run_copy / "latents.safetensors")
    assert main(["play", str(run_copy), "--no-browser", "--port", "0"]) == 2  # before: SVD did not converge
    one_line_error(capsys.readouterr().err, "NaN or Inf")


@pytest.mark.parametrize("name", ["config.json", "corpus.json"])
def test_json_nested_100000_deep_is_a_one_line_error(run_copy, name, capsys):
    (run_copy / name).write_text("[" * 100_000 + "]" * 100_000)
    assert main(["info", str(run_copy)]) == 2
    one_line_error(capsys.readouterr().err, name, "too deeply")


def test_a_safetensors_header_that_lies_about_its_length_is_a_one_line_error(run_copy, capsys):
    raw = (run_copy / "model.safetensors").read_bytes()
    (run_copy / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    assert main(["info", str(run_copy)]) == 2
    one_line_error(capsys.readouterr().err, "model.safetensors", "not a valid safetensors file")
