"""Every CLI verb, run as a user would (in-process through main(), and once as a real subprocess)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import soundfile as sf

from samplegen.app.cli import main
from synth import SR, harmonic_note

VERBS = ["corpus", "demo", "evaluate", "export", "features", "info", "interpolate", "perturb", "play", "reconstruct",
         "roundtrip", "sample", "train", "tune"]


def test_the_verb_list_is_every_verb_the_command_has():
    # A verb added to the parser without joining VERBS would escape the help test below.
    import argparse

    from samplegen.app.cli import build_parser

    subparsers = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1 and sorted(subparsers[0].choices) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: samplegen " + verb in capsys.readouterr().out


def _wavs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wav"))


def _check_wavs(paths: list[Path], seconds: float) -> None:
    assert paths
    for p in paths:
        info = sf.info(p)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames == int(round(seconds * SR)), p


def test_reconstruct_from_file_and_name(tiny_run, tmp_path, capsys):
    ext = tmp_path / "mine.flac"
    sf.write(ext, harmonic_note(0.7, tilt=1.2), 48000)
    name = json.loads((tiny_run / "corpus.json").read_text())["notes"][0]["name"]
    assert main(["reconstruct", str(tiny_run), str(ext), name, "--out", str(tmp_path / "rec")]) == 0
    wavs = _wavs(tmp_path / "rec")
    _check_wavs(wavs, 0.5)
    stems = {p.stem for p in wavs}
    assert {"mine_recon", "mine_original", f"{name}_recon", f"{name}_original"} <= stems
    assert str(tmp_path / "rec") in capsys.readouterr().out


def test_interpolate_sample_perturb(tiny_run, tmp_path):
    names = [n["name"] for n in json.loads((tiny_run / "corpus.json").read_text())["notes"]]
    assert main(["interpolate", str(tiny_run), names[0], names[1], "--steps", "5", "--mode", "slerp",
                 "--out", str(tmp_path / "i")]) == 0
    _check_wavs(_wavs(tmp_path / "i"), 0.5)
    assert len(_wavs(tmp_path / "i")) == 5
    assert main(["sample", str(tiny_run), "-n", "3", "--temperature", "0.8", "--out", str(tmp_path / "s")]) == 0
    assert len(_wavs(tmp_path / "s")) == 3
    _check_wavs(_wavs(tmp_path / "s"), 0.5)
    assert main(["perturb", str(tiny_run), names[2], "--amount", "0.3", "-n", "2", "--out", str(tmp_path / "p")]) == 0
    assert len(_wavs(tmp_path / "p")) == 2
    # a saved latent point is an input too
    point = next((tmp_path / "s").glob("*.latent.json"))
    assert main(["perturb", str(tiny_run), str(point), "-n", "1", "--out", str(tmp_path / "p2")]) == 0
    _check_wavs(_wavs(tmp_path / "p2"), 0.5)


def test_same_seed_same_samples(tiny_run, tmp_path):
    for d, device in (("a", []), ("b", ["--device", "cpu"])):  # "auto" is the CPU on a machine without a GPU
        assert main(["sample", str(tiny_run), "-n", "2", "--seed", "3", "--out", str(tmp_path / d), *device]) == 0
    a, _ = sf.read(tmp_path / "a" / "sample_000.wav")
    b, _ = sf.read(tmp_path / "b" / "sample_000.wav")
    assert (a == b).all()


def test_a_second_batch_into_the_same_folder_keeps_the_first(tiny_run, tmp_path, capsys):
    """Another seed (or pair, or amount) into a folder of earlier sounds: the earlier ones stay, the new ones
    are named _2, _3…; before, sample_000.wav was replaced without a word."""
    out = tmp_path / "s"
    assert main(["sample", str(tiny_run), "-n", "2", "--seed", "3", "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["sample", str(tiny_run), "-n", "2", "--seed", "4", "--out", str(out)]) == 0
    assert main(["sample", str(tiny_run), "-n", "1", "--seed", "5", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in first} == first
    assert sorted(p.name for p in out.glob("*.wav")) == ["sample_000.wav", "sample_000_2.wav", "sample_000_3.wav",
                                                         "sample_001.wav", "sample_001_2.wav"]
    assert "sample_000_3.wav" in capsys.readouterr().out  # the command says where the new sound is
    assert json.loads((out / "sample_000_3.latent.json").read_text())["source"].endswith("seed=5")


@pytest.mark.parametrize("argv, message", [
    (["sample", "{run}", "-n", "0", "--out", "{tmp}/x"], "n=0"),
    (["sample", "{run}", "--temperature", "-1", "--out", "{tmp}/x"], "temperature"),
    (["reconstruct", "{run}", "no_such_note", "--out", "{tmp}/x"], "no_such_note"),
    (["reconstruct", "{run}", "missing.wav", "--out", "{tmp}/x"], "no such file"),
    (["interpolate", "{run}", "a", "b", "--steps", "1", "--out", "{tmp}/x"], ""),
    (["sample", "{tmp}/not_a_run", "--out", "{tmp}/x"], "not a folder"),
])
def test_bad_input_is_a_one_line_error(tiny_run, tmp_path, capsys, argv, message):
    argv = [a.format(run=tiny_run, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplegen: error:") and "\n" not in err and message in err
    assert not (tmp_path / "x").exists() or not _wavs(tmp_path / "x")


def test_train_on_a_raw_folder_via_the_console_script(tiny_samples_dir, tiny_config_file, tmp_path):
    exe = Path(sys.executable).parent / "samplegen"
    cmd = [str(exe), "train", "--data", str(tiny_samples_dir), "--out", str(tmp_path / "run"),
           "--config", str(tiny_config_file), "--epochs", "2", "--model", "ae", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "run folder" in done.stdout
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["kind"] == "ae" and cfg["train"]["epochs"] == 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("module", ["samplegen", "samplegen.cli"])
def test_python_dash_m_runs_the_same_command(module):
    done = subprocess.run([sys.executable, "-m", module, "info", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: samplegen info")


def test_corpus_build_from_a_folder(tiny_samples_dir, tmp_path, capsys):
    (tiny_samples_dir.parent / "mixed").mkdir(exist_ok=True)
    assert main(["corpus", "build", "--from", str(tiny_samples_dir), "--out", str(tmp_path / "c"), "--mix", "2",
                 "--duration", "0.5"]) == 0
    assert (tmp_path / "c" / "manifest.csv").is_file()
    assert "18 notes" in capsys.readouterr().out


def test_demo_end_to_end_with_tiny_settings(tmp_path, tiny_config_file):
    from samplegen.app import api

    lines: list[str] = []
    result = api.demo(tmp_path / "demo", config=tiny_config_file, programs=[0, 24, 40, 56], velocities=(64, 100),
                      show_progress=False, log=lines.append)
    assert set(result.outputs) == {"reconstructions", "interpolation", "samples", "variations"}
    _check_wavs(result.outputs["samples"], 0.5)
    assert len(result.outputs["interpolation"]) == 8
    assert any(p.stem.endswith("_original") for p in result.outputs["reconstructions"])
    # a second run reuses the corpus and the trained run
    again = api.demo(tmp_path / "demo", config=tiny_config_file, show_progress=False, log=lines.append)
    assert again.train is None and any("reusing trained run" in line for line in lines)


def test_the_allocator_setting_takes_effect_on_linux():
    import sys

    from samplegen.app import runtime

    assert runtime.keep_large_buffers() is sys.platform.startswith("linux")


def test_train_with_progress_bars_shown(tiny_samples_dir, tiny_config_file, tmp_path, capsys):
    from samplegen.app.cli import main as cli_main

    code = cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(tmp_path / "run"),
                     "--config", str(tiny_config_file), "--epochs", "1"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "training finished" in out
    # The result is compared with the PCA start, in plain words either way (issue 19).
    assert "held-out reconstruction error" in out or "WORSE than the PCA it started from" in out
    # A raw folder trains as it is; the user is told what `corpus build` would have added.
    assert "warning: " in out and "is a folder of samples, not a built corpus" in out
    assert f"corpus build --from {tiny_samples_dir}" in out
    # ... before it trains: a warning is printed when it is raised, not when the verb ends
    assert out.index("is a folder of samples") < out.index("training finished")


def test_training_on_a_built_corpus_gives_no_raw_folder_hint(tiny_samples_dir, tiny_config_file, tmp_path, capsys):
    from samplegen.app.cli import main as cli_main

    assert cli_main(["corpus", "build", "--from", str(tiny_samples_dir), "--out", str(tmp_path / "corpus")]) == 0
    code = cli_main(["train", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "run"),
                     "--config", str(tiny_config_file), "--epochs", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "training finished" in out and "not a built corpus" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no GPU")
@pytest.mark.parametrize("argv", [
    ["sample", "{run}", "--device", "cuda", "--out", "{tmp}/x"],
    ["evaluate", "{run}", "--device", "cuda", "--out", "{tmp}/x"],
    ["export", "sfz", "{run}", "{note}", "--device", "cuda", "--out", "{tmp}/x"],
    ["play", "{run}", "--device", "cuda", "--no-browser", "--port", "0"],
])
def test_asking_for_a_gpu_without_one_is_a_one_line_error(tiny_run, tmp_path, capsys, argv):
    from samplegen.checkpoint import load_run

    note = load_run(tiny_run).corpus.names[0]
    assert main([a.format(run=tiny_run, tmp=tmp_path, note=note) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplegen: error:") and "\n" not in err and "--device cpu" in err
    assert not (tmp_path / "x").exists()
