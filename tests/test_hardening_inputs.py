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
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import load_file, save_file

from samplegen.app.cli import main
from synth import SR, harmonic_note

SRC = Path(__file__).resolve().parents[1] / "src"
#: The child sets its own limit once torch and samplegen are imported, so the 3 GB are all headroom.
LIMITED_CLI = """
import resource, sys
import torch, samplegen.app.cli, samplegen.checkpoint, samplegen.audio.corpus, samplegen.generation.generate
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 1024**3, resource.RLIM_INFINITY))
sys.exit(samplegen.app.cli.main(sys.argv[1:]))
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
def run_copy(tiny_run: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the tiny run to tamper with; removed afterwards (it may hold FIFOs and sparse giants)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    yield run
    shutil.rmtree(run)


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


def _tamper_state(run: Path, how: str) -> None:
    from safetensors import safe_open

    with safe_open(run / "train_state.safetensors", "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if how == "deep_history":
        meta["history"] = "[" * 100_000 + "]" * 100_000
    elif how == "history_not_a_list":
        meta["history"] = '"x"'
    elif how == "moment_shape":
        key = next(k for k in tensors if k.startswith("opt.") and k.endswith("exp_avg"))
        tensors[key] = tensors[key].flatten()[:1].clone()
    else:
        key = next(k for k in tensors if k.startswith("opt.") and k.endswith("exp_avg_sq"))
        tensors[key].view(-1)[0] = float("inf")
    save_file(tensors, run / "train_state.safetensors", metadata=meta)


@pytest.mark.parametrize("how", ["deep_history", "history_not_a_list", "moment_shape", "inf_moment"])
def test_a_tampered_train_state_is_a_one_line_error_on_resume(run_copy, tiny_samples_dir, how, capsys):
    _tamper_state(run_copy, how)
    (run_copy / "latents.safetensors").unlink()  # an unfinished run, as --resume expects
    assert main(["train", "--data", str(tiny_samples_dir), "--out", str(run_copy), "--resume", "--quiet",
                 "--epochs", "6", "--device", "cpu"]) == 2
    one_line_error(capsys.readouterr().err, "train_state.safetensors")


# --- item 4: audio that decompresses into gigabytes ----------------------------------------------------


def _lying_wav(path: Path, channels: int, sparse_bytes: int) -> None:
    """A 16-bit WAV header claiming ``channels`` channels, followed by a sparse hole (nothing on disk)."""
    block = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, SR, SR * block, block, 16)
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    header += b"data" + struct.pack("<I", 0xFFFFFFF0 - len(header))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(sparse_bytes)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Iterator[Path]:
    """Two good notes beside a sparse WAV claiming 1,024 channels, an all-zero note, a DC-only note and a FIFO."""
    src = tmp_path / "samples"
    src.mkdir()
    sf.write(src / "good1.wav", harmonic_note(0.6), SR, subtype="PCM_16")
    sf.write(src / "good2.wav", harmonic_note(0.6, tilt=2.0), SR, subtype="PCM_16")
    _lying_wav(src / "lying.wav", 1024, 2 * 10**9)
    sf.write(src / "zeros.wav", np.zeros(SR // 2), SR, subtype="PCM_16")
    sf.write(src / "dc.wav", np.full(SR // 2, 0.4), SR, subtype="PCM_16")
    os.mkfifo(src / "fifo.wav")
    yield src
    shutil.rmtree(src)


def _report(out: Path) -> dict[str, str]:
    rows = [line.split("\t") for line in (out / "corpus_report.txt").read_text().splitlines()[1:]]
    return {r[1]: r[2] for r in rows if r[0] == "skipped"}


def test_a_folder_of_crafted_audio_builds_under_an_address_space_limit(messy_folder, tmp_path):
    out = tmp_path / "corpus"
    proc = run_limited(["corpus", "build", "--from", str(messy_folder), "--out", str(out), "--duration", "0.5", "--mix", "0"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    skipped = _report(out)
    assert "over the bound" in skipped["lying.wav"] and "1024 channels" in skipped["lying.wav"]
    assert skipped["zeros.wav"] == "silent"
    assert "constant (DC)" in skipped["dc.wav"]
    assert "not a regular file" in skipped["fifo.wav"]
    assert sorted(p.name for p in out.glob("*.wav")) == ["good1.wav", "good2.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "samples"]  # nothing written elsewhere


def test_links_to_folders_are_listed_as_skipped_not_dropped_silently(tmp_path):
    """Item 8: a linked folder (here one outside the sample folder, and one looping back into it) used to vanish."""
    from samplegen.audio.corpus import LINKED_FOLDER
    from samplegen.training.feature_cache import FeatureSettings, build_features

    src, elsewhere = tmp_path / "samples", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    sf.write(src / "good1.wav", harmonic_note(0.6), SR, subtype="PCM_16")
    sf.write(src / "sub" / "good2.wav", harmonic_note(0.6, tilt=2.0), SR, subtype="PCM_16")
    sf.write(elsewhere / "private.wav", harmonic_note(0.6, tilt=0.5), SR, subtype="PCM_16")
    (src / "more").symlink_to(elsewhere, target_is_directory=True)
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)
    out = tmp_path / "corpus"
    assert main(["corpus", "build", "--from", str(src), "--out", str(out), "--duration", "0.5", "--mix", "0"]) == 0
    assert _report(out) == {"more": LINKED_FOLDER, os.path.join("sub", "loop"): LINKED_FOLDER}
    assert sorted(p.name for p in out.glob("*.wav")) == ["good1.wav", "good2.wav"]
    settings = FeatureSettings(duration_s=0.5, n_fft=2048, hop_length=512, prepare="raw")
    feats = build_features(src, settings, cache_dir=tmp_path / "cache", workers=1)
    assert sorted(feats.skipped) == [("more", LINKED_FOLDER), (os.path.join("sub", "loop"), LINKED_FOLDER)]


def test_a_file_that_runs_out_of_memory_is_skipped_and_the_build_goes_on(messy_folder, tmp_path, monkeypatch):
    from samplegen.audio import audio_io as audio
    from samplegen.audio import corpus

    real = audio.read_audio

    def greedy(path, *args, **kwargs):
        if Path(path).name == "good2.wav":
            raise MemoryError  # what a file too large for this machine raises half-way through its decoding
        return real(path, *args, **kwargs)

    monkeypatch.setattr(audio, "read_audio", greedy)
    built = corpus.build_folder_corpus(messy_folder, tmp_path / "corpus", duration_s=0.5)
    assert [e.name for e in built.entries] == ["good1"]
    assert _report(tmp_path / "corpus")["good2.wav"] == "needs more memory than is available"


def test_the_decoded_size_is_bounded_by_channels_times_frames_not_seconds(tmp_path):
    from samplegen.audio import audio_io as audio
    from samplegen.errors import AudioError

    path = tmp_path / "wide.wav"
    _lying_wav(path, 64, 40 * 1024**2)  # 20 s of 64 channels: 21 M values, under the bound, read in blocks
    y = audio.read_audio(path)
    assert y.shape == (sf.info(path).frames,) and not y.any()
    _lying_wav(path, 512, 320 * 1024**2)  # the same 20 s of 512 channels: 168 M values
    with pytest.raises(AudioError, match=r"512 channels .* over the bound"):
        audio.read_audio(path)
    path.unlink()


# --- item 5: numbers, points, SoundFonts and caches -----------------------------------------------------


@pytest.mark.parametrize("argv, needle", [
    (["sample", "{run}", "-n", "20000"], "n=20000 must be an integer from 1 to 256"),
    (["perturb", "{run}", "{note}", "-n", "0"], "n=0 must be an integer from 1 to 256"),
    (["interpolate", "{run}", "{note}", "{note}", "--steps", "1000000"], "steps=1000000 must be an integer from 2"),
    (["sample", "{run}", "--seed", str(2**64)], f"seed={2**64} must be a whole number from 0 to {2**63 - 1}"),
    (["perturb", "{run}", "{note}", "--seed", "-1"], "seed=-1 must be a whole number"),
    (["evaluate", "{run}", "--seed", str(2**63)], "must be a whole number from 0"),
    (["train", "--data", "{samples}", "--seed", str(2**70)], "must be a whole number from 0"),
    (["corpus", "build", "--from", "{samples}", "--seed", "-5"], "seed=-5 must be a whole number"),
    (["corpus", "build", "--from", "{samples}", "--duration", "1e6"], "between 0.1 and 30 seconds"),
    (["corpus", "build", "--from", "{samples}", "--duration", "1e-5"], "between 0.1 and 30 seconds"),
    (["corpus", "build", "--duration", "1e6"], "between 0.1 and 30 seconds"),  # the SoundFont: before rendering
    (["train", "--data", "{samples}", "--loader-workers", "-1"], "loader_workers=-1 must be an integer from 0 to 64"),
    (["evaluate", "{run}", "--draws", "1000000000"], "--draws 1000000000 must be an integer from 1 to 100,000"),
    (["evaluate", "{run}", "--paths", "1000000"], "--paths 1000000 must be an integer from 1 to 1,000"),
    (["evaluate", "{run}", "--steps", "100000"], "--steps 100000 must be an integer from 3 to 64"),
    (["evaluate", "{run}", "--steps", "2"], "--steps 2 must be an integer from 3 to 64"),
    (["tune", "--data", "{samples}", "--trials", "1000000"], "--trials 1000000 must be an integer from 1 to 1,000"),
    (["tune", "--data", "{samples}", "--trials", "0"], "--trials 0 must be an integer from 1 to 1,000"),
])
def test_out_of_range_numbers_are_one_line_errors_and_write_nothing(argv, needle, tiny_run, tiny_samples_dir,
                                                                    tmp_path, capsys):
    note = json.loads((tiny_run / "corpus.json").read_text())["notes"][0]["name"]
    out = tmp_path / "out"
    argv = [a.format(run=tiny_run, note=note, samples=tiny_samples_dir) for a in argv] + ["--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys.readouterr().err, needle)
    assert not out.exists()


@pytest.mark.parametrize("text, needle", [
    ('{"z": [1' + "0" * 400 + ', 0, 0]}', "not a latent point file"),  # 10^400 as an integer: float() overflows
    ('{"z": [1e400, 0, 0]}', "not finite numbers within"),  # 10^400 as a float: inf
    ('{"z": [NaN, 0, 0]}', "not finite numbers within"),
    ('{"z": [1e20, 0, 0]}', "not finite numbers within ±1000"),  # decoded, this was noise (at 10^30 an overflow)
    ('{"z": ' + "[" * 100_000 + "]" * 100_000 + "}", "too deeply"),
    ('{"z": [1, 2]}', "size (2,); this run needs 3 numbers"),
])
def test_a_crafted_latent_file_is_a_one_line_error(text, needle, tiny_run, tmp_path, capsys):
    point = tmp_path / "crafted.latent.json"
    point.write_text(text)
    assert main(["perturb", str(tiny_run), str(point), "-n", "1", "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys.readouterr().err, needle)


def _soundfont(path: Path, tamper: str) -> Path:
    from samplegen.audio.soundfont import Sf2Sound, sf2_bytes

    raw = bytearray(sf2_bytes([Sf2Sound("a", harmonic_note(0.5)), Sf2Sound("b", harmonic_note(0.5, tilt=2.0))]))
    where = raw.index(b"phdr" if tamper == "programs" else b"shdr") + 8
    if tamper == "programs":  # preset a: program 300; preset b: bank 40000
        raw[where + 20 : where + 22] = struct.pack("<H", 300)
        raw[where + 38 + 22 : where + 38 + 24] = struct.pack("<H", 40000)
    elif tamper == "one_program":
        where = raw.index(b"phdr") + 8
        raw[where + 20 : where + 22] = struct.pack("<H", 300)
    else:  # sample 'a' ends far past the data: the renderer panics (a Rust index error)
        raw[where + 20 : where + 28] = struct.pack("<II", 0xFFFFFF00, 0xFFFFFFF0)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("tamper, needle", [("programs", "outside MIDI's range (program 0-127, bank 0-16383)"),
                                            ("sample_header", "sample header 'a' is damaged")])
def test_a_crafted_soundfont_is_a_one_line_error(tamper, needle, tmp_path, capsys):
    sf2 = _soundfont(tmp_path / "x.sf2", tamper)
    assert main(["corpus", "build", "--soundfont", str(sf2), "--out", str(tmp_path / "out"), "--duration", "0.5"]) == 2
    one_line_error(capsys.readouterr().err, needle)


def test_a_preset_outside_midi_is_skipped_with_its_reason_and_the_rest_rendered(tmp_path, capsys):
    sf2 = _soundfont(tmp_path / "x.sf2", "one_program")
    out = tmp_path / "out"
    assert main(["corpus", "build", "--soundfont", str(sf2), "--out", str(out), "--duration", "0.5", "--mix", "0"]) == 0
    assert "program 300, bank 0 is outside MIDI's range" in _report(out)["a"]
    assert len(list(out.glob("*.wav"))) == 8  # preset b at the eight velocities


def test_presets_sharing_bank_and_program_give_one_note_each_not_two_copies(tmp_path):
    """Item 8: two presets 'same' at bank 0, program 0 wrote one file twice; MIDI can select only the later one."""
    from samplegen.audio.corpus import render_soundfont_corpus
    from samplegen.audio.soundfont import Sf2Sound, sf2_bytes

    dull, bright = harmonic_note(0.5, n_harmonics=4), harmonic_note(0.5, n_harmonics=20, tilt=0.2)
    raw = bytearray(sf2_bytes([Sf2Sound("same", dull), Sf2Sound("same", bright), Sf2Sound("other", dull)]))
    phdr = raw.index(b"phdr") + 8
    raw[phdr + 38 + 20 : phdr + 38 + 22] = struct.pack("<H", 0)  # the second 'same' at program 0 too
    raw[phdr + 38 : phdr + 38 + 20] = b"same".ljust(20, b"\0")  # and named 'same' again (sf2_bytes wrote 'same~2')
    (tmp_path / "x.sf2").write_bytes(bytes(raw))
    out = tmp_path / "out"
    corpus = render_soundfont_corpus(out, tmp_path / "x.sf2", velocities=(64, 100), duration_s=0.5)
    names = [e.name for e in corpus.entries]
    assert names == ["p000_same_v064", "p000_same_v100", "p002_other_v064", "p002_other_v100"]
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(e.file for e in corpus.entries)
    assert "listed later, which is the one MIDI plays" in _report(out)["same"]

    def high_share(y: np.ndarray) -> float:  # energy above the 4th harmonic of C4 (1,047 Hz)
        power = np.abs(np.fft.rfft(y)) ** 2
        return float(power[np.fft.rfftfreq(len(y), 1 / 44100) > 1200].sum() / power.sum())

    kept = sf.read(out / corpus.entries[1].file)[0]
    other = sf.read(out / corpus.entries[3].file)[0]
    assert high_share(kept) > 0.2 > 0.02 > high_share(other)  # the kept note is the preset MIDI plays: the bright one


def test_the_renderer_panicking_is_a_one_line_error(tmp_path, monkeypatch):
    import midirenderer

    from samplegen.errors import CorpusError
    from samplegen.audio.soundfont import Preset, render_note

    panic = type("PanicException", (BaseException,), {})  # what pyo3 raises; not importable by name

    def boom(*args):
        raise panic("index out of bounds")

    monkeypatch.setattr(midirenderer, "render_wave_from", boom)
    with pytest.raises(CorpusError, match="cannot render preset 'a': the renderer failed"):
        render_note(b"", Preset("a", 0, 0), 100)


@pytest.mark.parametrize("tamper", ["deep_index", "shard_outside", "row_past_the_end", "truncated_shard",
                                    "shard_is_a_fifo"])
def test_a_tampered_feature_cache_is_recomputed(tamper, tiny_samples_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["features", "--data", str(tiny_samples_dir), "--cache", str(cache), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    (folder,) = cache.iterdir()
    index = json.loads((folder / "index.json").read_text())
    (shard,) = {loc[0] for loc in index["notes"].values()}
    if tamper == "deep_index":
        (folder / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    elif tamper == "shard_outside":
        for loc in index["notes"].values():
            loc[0] = "../../../../etc/passwd"
        (folder / "index.json").write_text(json.dumps(index))
    elif tamper == "row_past_the_end":
        for loc in index["notes"].values():
            loc[1] += 10**6
        (folder / "index.json").write_text(json.dumps(index))
    elif tamper == "truncated_shard":
        os.truncate(folder / shard, 200)
    else:
        (folder / shard).unlink()
        os.mkfifo(folder / shard)
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    assert "features of 16 notes cached" in capsys.readouterr().out
    from samplegen.training.feature_cache import FeatureSettings, build_features

    index = json.loads((folder / "index.json").read_text())
    shards = {loc[0] for loc in index["notes"].values()}
    assert len(index["notes"]) == 16 and all((folder / s).is_file() for s in shards)
    feats = build_features(tiny_samples_dir, FeatureSettings(**index["settings"]), cache_dir=cache, workers=1)
    assert len(feats) == 16 and np.isfinite(feats.read(range(16)).numpy()).all()
    shutil.rmtree(cache)


# --- item 6: the instrument server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_app(tiny_run):
    from samplegen.checkpoint import load_run
    from samplegen.app.instrument import Instrument
    from samplegen.app.server import create_app

    return create_app(Instrument(load_run(tiny_run)), hosts=["studio.local"])


@pytest.mark.parametrize("host, ok", [("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
                                      ("LOCALHOST", True), ("studio.local:8765", True), ("evil.example:8765", False),
                                      ("evil.example", False), ("127.0.0.1.evil.example", False),
                                      ("192.168.1.9:8765", False), ("", False)])
def test_only_the_hosts_it_was_started_for_are_answered(served_app, host, ok):
    from fastapi.testclient import TestClient

    with TestClient(served_app) as client:
        for path in ("/api/info", "/"):
            r = client.get(path, headers={"Host": host})
            assert (r.status_code == 200) == ok, (path, r.status_code)
            if not ok:
                assert r.status_code == 400 and "started for" in r.json()["detail"]
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_listening_everywhere_accepts_addresses_but_not_names():
    from samplegen.app.server import LocalOrigin

    guard = LocalOrigin(None, hosts=["0.0.0.0"])
    assert guard.allowed("192.168.1.9") and guard.allowed("127.0.0.1") and guard.allowed("localhost")
    assert not guard.allowed("evil.example") and not LocalOrigin(None).allowed("192.168.1.9")


def test_a_connection_that_never_finishes_its_headers_is_closed(served_app, monkeypatch):
    import http.client
    import socket
    import time

    from samplegen.app import server

    monkeypatch.setattr(server, "HEADER_TIMEOUT_S", 0.5)
    with server.running(served_app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
            fine = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            fine.request("GET", "/api/info")
            assert fine.getresponse().status == 200  # a whole request is answered meanwhile
            fine.close()
            start = time.monotonic()
            assert slow.recv(64) == b""  # closed by the server, not by the 5-second client timeout
            assert time.monotonic() - start < 3


# --- item 8 ---------------------------------------------------------------------------------------------


def test_info_piped_into_head_ends_quietly(run_copy):
    data = json.loads((run_copy / "corpus.json").read_text())
    for i, note in enumerate(data["notes"]):
        note["name"] = f"note{i:02d}_" + "x" * 8000  # 16 notes x 8 KB: more than a pipe holds
    (run_copy / "corpus.json").write_text(json.dumps(data))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(f"'{sys.executable}' -m samplegen.app.cli info '{run_copy}' | head -c 100", shell=True,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.startswith("run ") and len(proc.stdout) == 100
    assert proc.stderr == ""  # before: "samplegen: error: Broken pipe; check the path, free space and permissions"


def test_control_characters_in_names_do_not_reach_the_terminal(run_copy, capsys):
    data = json.loads((run_copy / "corpus.json").read_text())
    data["notes"][0]["name"] = "evil\x1b]0;owned\x07\x1b[2J\nsecond line"
    (run_copy / "corpus.json").write_text(json.dumps(data))
    assert main(["info", str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "evil\\x1b]0;owned\\x07\\x1b[2J\\nsecond line" in out
    assert main(["perturb", str(run_copy), "nope\x1b[2J", "--out", str(run_copy.parent / "o")]) == 2
    one_line_error(capsys.readouterr().err, "nope\\x1b[2J")


# --- a careless user's inputs (eighteenth session's probe) ------------------------------------------------


def test_an_empty_out_or_one_inside_the_run_folder_is_refused(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty --out would have written here
    assert main(["sample", str(tiny_run), "-n", "1", "--out", ""]) == 2
    one_line_error(capsys.readouterr().err, "--out is empty")
    assert not list(tmp_path.iterdir())
    before = sorted(p.name for p in tiny_run.iterdir())
    for argv in (["sample", str(tiny_run), "-n", "1"], ["export", "onnx", str(tiny_run)],
                 ["evaluate", "--compare", str(tiny_run), str(tiny_run)]):
        for out in (tiny_run, tiny_run / "sounds"):
            assert main([*argv, "--out", str(out)]) == 2
            one_line_error(capsys.readouterr().err, "inside the run folder", "another folder")
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_roundtrip_checks_every_file_before_writing_and_refuses_silence(tmp_path, capsys):
    good, silent, text = tmp_path / "good.wav", tmp_path / "silent.wav", tmp_path / "text.wav"
    sf.write(good, harmonic_note(0.5), SR)
    sf.write(silent, np.zeros(SR // 2, dtype=np.float32), SR)
    text.write_text("not audio")
    out = tmp_path / "out"
    for files, needle in (([good, text], "text.wav: not a readable audio file"), ([silent], "silent.wav is silent")):
        assert main(["roundtrip", *map(str, files), "--out", str(out)]) == 2
        one_line_error(capsys.readouterr().err, needle)
        assert not out.exists()
    assert main(["roundtrip", str(good), "--iters", "100000000", "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, "--iters 100000000 must be an integer from 0 to 1000")


def test_a_sound_that_cannot_be_used_is_named_in_the_error(tiny_run, tmp_path, capsys):
    good, silent = tmp_path / "good.wav", tmp_path / "silent.wav"
    sf.write(good, harmonic_note(0.5), SR)
    sf.write(silent, np.zeros(SR // 2, dtype=np.float32), SR)
    out = tmp_path / "out"
    assert main(["reconstruct", str(tiny_run), str(good), str(silent), "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, f"{silent}: silent")
    assert main(["reconstruct", str(tiny_run), str(tmp_path), "--out", str(out)]) == 2
    one_line_error(capsys.readouterr().err, f"{tmp_path} is a folder")
    assert main(["reconstruct", str(tiny_run), " ", "--out", str(out)]) == 2  # not "  is a folder" (the cwd)
    one_line_error(capsys.readouterr().err, "a sound's name is empty", "samplegen info RUN")
    assert main(["export", "sf2", str(tiny_run), str(good), "--out", str(tmp_path / ".sf2")]) == 2
    one_line_error(capsys.readouterr().err, "has no name before .sf2")
    assert not out.exists()


def test_a_latent_point_far_outside_the_prior_is_refused(tiny_run):
    import torch

    from samplegen.checkpoint import load_run
    from samplegen.errors import ParameterError
    from samplegen.generation.generate import decode

    run = load_run(tiny_run)
    z = torch.zeros(1, run.config.model.latent_dim)
    z[0, 0] = 1e6
    with pytest.raises(ParameterError, match="within ±1000"):
        decode(run, z)


def test_a_host_that_cannot_be_listened_on_says_to_fix_the_host(tiny_run, capsys):
    assert main(["play", str(tiny_run), "--no-browser", "--host", "999.1.1.1", "--port", "0"]) == 2
    one_line_error(capsys.readouterr().err, "cannot listen on 999.1.1.1", "pass --host")


def test_a_corpus_note_whose_file_has_gone_is_reconstructed_with_a_warning(tiny_run, tmp_path, capsys):
    moved = tmp_path / "run"
    shutil.copytree(tiny_run, moved)
    index = json.loads((moved / "corpus.json").read_text())
    index["corpus_path"] = str(tmp_path / "gone")
    (moved / "corpus.json").write_text(json.dumps(index))
    note = index["notes"][0]["name"]
    assert main(["reconstruct", str(moved), note, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "1 reconstructions, 0 originals" in printed and "no original written" in printed


def test_a_point_from_another_run_warns_and_one_of_true_values_is_refused(tiny_run, tmp_path, capsys):
    from samplegen.checkpoint import load_run

    dim = load_run(tiny_run).config.model.latent_dim
    other = tmp_path / "other.latent.json"
    other.write_text(json.dumps({"format_version": 1, "z": [0.1] * dim, "source": "x", "run": "/runs/someone-else"}))
    assert main(["perturb", str(tiny_run), str(other), "-n", "1", "--out", str(tmp_path / "out")]) == 0
    assert "made with run 'someone-else'" in capsys.readouterr().out
    truthy = tmp_path / "true.latent.json"
    truthy.write_text(json.dumps({"format_version": 1, "z": [True] * dim}))
    assert main(["perturb", str(tiny_run), str(truthy), "-n", "1", "--out", str(tmp_path / "out2")]) == 2
    one_line_error(capsys.readouterr().err, "must be a list of numbers")


def test_audio_at_a_sample_rate_no_recording_has_is_refused(tmp_path):
    from samplegen.audio.audio_io import read_audio
    from samplegen.errors import AudioError

    sf.write(tmp_path / "slow.wav", np.zeros(100, dtype=np.float32) + 0.1, 1)
    with pytest.raises(AudioError, match="sample rate of 1 Hz"):
        read_audio(tmp_path / "slow.wav")
