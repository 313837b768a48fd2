"""Hardening (issue 18): untrusted names never leave their output folder; a build never touches its source.

Every writer that turns a name from data (a run's corpus.json, a manifest.csv, a file's stem, a
``.latent.json``) into a file name is tried with names that climb out of ``--out`` or are absolute;
nothing may appear outside the output folder, and the output must still be inside it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from samplegen.app.cli import main
from samplegen.files import MAX_STEM_BYTES, safe_file_stem, unique_stems
from synth import SR, harmonic_note

#: ``out`` is always TMP/a/b/out, so three ``..`` land in TMP itself, where the snapshot sees them.
CLIMB = "../../../escaped/evil"


def _snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file and folder under ``root`` outside ``skip``, with the contents of the files."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            continue
        for d in dirnames:
            if here / d != skip and here / d not in skip.parents:  # the output folder and its parents may be created
                seen[str(here / d)] = b"<dir>"
        for f in filenames:  # other tests leave FIFOs, links to /dev/zero and sparse giants here: never read those
            p = here / f
            if not p.is_file():
                seen[str(p)] = b"<special>"
            elif p.stat().st_size > 16 * 1024**2:
                seen[str(p)] = f"<{p.stat().st_size} bytes, mtime {p.stat().st_mtime_ns}>".encode()
            else:
                seen[str(p)] = p.read_bytes()
    return seen


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "a" / "b" / "out"


def _writes_only_inside(tmp_path: Path, out: Path, argv: list[str], capsys) -> list[Path]:
    """Run the CLI; assert it succeeded, wrote nothing outside ``out`` (in this session's tmp) and left files in it."""
    # This session's base temp: the crafted names (climbing or absolute) all point inside it. Not the folder of
    # every session: other sessions' leftovers (and a suite running beside this one) would be read and compared.
    root = tmp_path.parent
    before = _snapshot(root, out)
    assert main(argv) == 0, capsys.readouterr().err
    assert _snapshot(root, out) == before
    assert not Path("/escaped").exists()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written
    for p in written:
        assert out.resolve() in p.resolve().parents
        assert not p.name.startswith(".")
    return written


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> tuple[Path, list[str]]:
    """A copy of the tiny run whose corpus.json names climb out of any folder (what a shared run could hold)."""
    run = tmp_path_factory.mktemp("evil") / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "corpus.json").read_text())
    evil = [CLIMB, str(tmp_path_factory.getbasetemp() / "absolute" / "evil"), "..\\..\\..\\win\\evil", "con"]
    for note, name in zip(data["notes"], evil):
        note["name"] = name
    (run / "corpus.json").write_text(json.dumps(data))
    return run, evil


# --- the one function ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    CLIMB, "/etc/passwd", "..", ".", "...", "", ".hidden", "-rf", "a\x00b", "bell\x07\x1b[31mred", "C:\\x\\y",
    "con", "CON.txt", "lpt1", "Nul.wav", "x" * 1000, "é" * 300, "ピアノ", "a/../../b", " ../ ", "\u202eevil",
])
def test_a_safe_stem_is_one_harmless_file_name(name, tmp_path):
    stem = safe_file_stem(name)
    assert stem and len(stem.encode()) <= MAX_STEM_BYTES
    assert stem.isascii() and stem.isprintable()
    assert "/" not in stem and "\\" not in stem and ".." not in stem
    assert not stem.startswith((".", "-"))
    assert stem.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
    (tmp_path / f"{stem}_original.latent.json").write_text("{}")  # a real file system takes it, suffix and all
    assert [p.parent for p in tmp_path.iterdir()] == [tmp_path]


def test_safe_names_are_kept_and_distinct_names_stay_distinct():
    for name in ("p000_acoustic_grand_piano_v016", "note01", "Kick-2.b", "mix0001_a__b"):
        assert safe_file_stem(name) == name
    assert safe_file_stem("Flûte") == "Flute"
    assert safe_file_stem("x" * 200 + "1") != safe_file_stem("x" * 200 + "2")
    assert safe_file_stem("ピアノ") != safe_file_stem("ギター")
    stems = unique_stems(["a/b", "a_b", "A_B", "a_b_2", "note"])
    assert len({s.casefold() for s in stems}) == 5 and stems[0] == "a_b" and stems[-1] == "note"


# --- every writer of a data-derived name ---------------------------------------------------------------


def test_reconstruct_keeps_corpus_names_inside_out(evil_run, tmp_path, out_dir, capsys):
    run, evil = evil_run
    written = _writes_only_inside(tmp_path, out_dir, ["reconstruct", str(run), *evil, "--out", str(out_dir)], capsys)
    names = {p.name for p in written}
    assert "escaped_evil_recon.wav" in names and "escaped_evil_original.wav" in names
    assert "con_recon.wav" in names
    assert len([n for n in names if n.endswith("_recon.wav")]) == len(evil)


def test_perturb_and_interpolate_keep_corpus_names_inside_out(evil_run, tmp_path, out_dir, capsys):
    run, evil = evil_run
    written = _writes_only_inside(tmp_path, out_dir, ["perturb", str(run), evil[1], "-n", "2", "--out", str(out_dir)],
                                  capsys)
    wavs = sorted(p.name for p in written if p.suffix == ".wav")
    assert len(wavs) == 2 and all(n.endswith(("absolute_evil_vary_00.wav", "absolute_evil_vary_01.wav")) for n in wavs)
    shutil.rmtree(out_dir)
    _writes_only_inside(tmp_path, out_dir, ["interpolate", str(run), evil[0], evil[2], "--steps", "3",
                                            "--out", str(out_dir)], capsys)


def test_sample_and_a_latent_file_with_a_dotted_name_stay_inside_out(evil_run, tmp_path, out_dir, capsys):
    run, _ = evil_run
    _writes_only_inside(tmp_path, out_dir, ["sample", str(run), "-n", "2", "--out", str(out_dir)], capsys)
    point = tmp_path / "...latent.json"  # its name is ".."
    point.write_text(json.dumps({"z": [0.1, -0.2, 0.3]}))
    shutil.rmtree(out_dir)
    written = _writes_only_inside(tmp_path, out_dir, ["perturb", str(run), str(point), "-n", "1", "--out", str(out_dir)],
                                  capsys)
    assert len([p for p in written if p.suffix == ".wav"]) == 1


def test_export_sfz_and_sf2_keep_corpus_names_inside_out(evil_run, tmp_path, out_dir, capsys):
    run, evil = evil_run
    written = _writes_only_inside(tmp_path, out_dir, ["export", "sfz", str(run), evil[0], evil[1], evil[3],
                                                      "--out", str(out_dir)], capsys)
    sfz = sorted(p for p in written if p.suffix == ".sfz")
    assert len(sfz) == 3 and len([p for p in written if p.suffix == ".wav"]) == 3
    for p in sfz:
        sample = next(line for line in p.read_text().splitlines() if line.startswith("sample="))[len("sample="):]
        assert (p.parent / sample).is_file() and ".." not in sample
    shutil.rmtree(out_dir)
    _writes_only_inside(tmp_path, out_dir, ["export", "sf2", str(run), evil[0], "--out", str(out_dir / "x.sf2")],
                        capsys)


def test_roundtrip_keeps_files_of_the_same_stem_apart(tmp_path, out_dir, capsys):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "con.wav", harmonic_note(0.3), SR)
    written = _writes_only_inside(tmp_path, out_dir, ["roundtrip", str(tmp_path / "one" / "con.wav"),
                                                      str(tmp_path / "two" / "con.wav"), "--iters", "2",
                                                      "--out", str(out_dir)], capsys)
    assert len(written) == 4


def test_evaluate_data_with_a_crafted_manifest_writes_only_inside_out(tiny_run, tmp_path, out_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    names = [CLIMB, str(tmp_path / "absolute"), "a/b", "a_b"]
    with open(data / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "file", "program", "preset", "family", "velocity", "parent_a", "parent_b", "pitch_hz"])
        for i, name in enumerate(names):
            sf.write(data / f"x{i}.wav", harmonic_note(0.5, tilt=1 + i / 2), SR)
            w.writerow([name, f"x{i}.wav", "", "", "", "", "", "", ""])
    written = _writes_only_inside(tmp_path, out_dir, ["evaluate", str(tiny_run), "--data", str(data), "--out",
                                                      str(out_dir), "--draws", "4", "--paths", "2", "--steps", "3"],
                                  capsys)
    data_wavs = {p.name for p in written if p.name.startswith("data_")}
    assert len(data_wavs) == 3 * len(names)  # the four notes' original, oracle and model, none overwriting another
    assert "data_escaped_evil_model.wav" in data_wavs


def _manifest(folder: Path, rows: list[tuple[str, str]]) -> None:
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "file", "program", "preset", "family", "velocity", "parent_a", "parent_b", "pitch_hz"])
        w.writerows([name, file, "", "", "", "", "", "", ""] for name, file in rows)


def test_files_a_manifest_lists_outside_its_folder_are_skipped_with_the_reason(tiny_run, tmp_path, out_dir,
                                                                               capsys):
    """Before, a crafted manifest made ``evaluate --data`` read any audio file and copy it into its report."""
    from samplegen.audio.corpus import load_corpus
    from samplegen.training.feature_cache import FeatureSettings, build_features

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    sf.write(data / "x0.wav", harmonic_note(0.5), SR)
    sf.write(tmp_path / "outside.wav", harmonic_note(0.5, tilt=3.0), SR)
    (data / "link.wav").symlink_to(tmp_path / "outside.wav")
    climbs = "it climbs out with '..'"
    crafted = {"../outside.wav": climbs, str(tmp_path / "outside.wav"): "an absolute path",
               "sub/../../outside.wav": climbs, "sub\\..\\..\\outside.wav": climbs,
               "link.wav": "a symbolic link leads out of it", "": "an empty path"}
    _manifest(data, [("inside", "x0.wav"), *((f"crafted{i}", f) for i, f in enumerate(crafted))])
    corpus = load_corpus(data, duration_s=0.5)
    assert [e.name for e in corpus.entries] == ["inside"]
    assert {f: r.split(" (")[-1].removesuffix("); refusing to read it") for f, r in corpus.skipped} == crafted
    settings = FeatureSettings(duration_s=0.5, n_fft=2048, hop_length=512, prepare="built")
    feats = build_features(data, settings, cache_dir=tmp_path / "cache", workers=1)
    assert [e.name for e in feats.entries] == ["inside"] and len(feats.skipped) == len(crafted)
    assert all("which is not a file inside" in reason for _, reason in feats.skipped)
    _writes_only_inside(tmp_path, out_dir, ["evaluate", str(tiny_run), "--data", str(data), "--out", str(out_dir),
                                            "--draws", "4", "--paths", "2", "--steps", "3"], capsys)
    with open(out_dir / "per_note.csv", newline="") as fh:
        assert [row["name"] for row in csv.DictReader(fh) if row["split"] == "data"] == ["inside"]


def test_a_run_whose_corpus_json_points_outside_its_corpus_is_a_one_line_error(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "corpus.json").read_text())
    data["notes"][0]["file"] = "../../../../../../etc/passwd.wav"
    (run / "corpus.json").write_text(json.dumps(data))
    assert main(["reconstruct", str(run), data["notes"][0]["name"], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplegen: error: ") and "\n" not in err
    assert "corpus.json lists '../../../../../../etc/passwd.wav', which is not a file inside" in err
    assert not (tmp_path / "out").exists()


def test_names_that_would_be_spreadsheet_formulas_are_quoted_in_per_note_csv(tiny_run, tmp_path, capsys):
    """OWASP's advice on CSV injection: a cell starting with = + - @ tab or CR gets a leading quote."""
    data = tmp_path / "data"
    data.mkdir()
    names = ['=HYPERLINK("http://example.com","x")', "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "plain-name"]
    for i in range(len(names)):
        sf.write(data / f"x{i}.wav", harmonic_note(0.5, tilt=1 + i / 4), SR)
    _manifest(data, [(name, f"x{i}.wav") for i, name in enumerate(names)])
    out = tmp_path / "out"
    assert main(["evaluate", str(tiny_run), "--data", str(data), "--out", str(out), "--draws", "4", "--paths", "2",
                 "--steps", "3"]) == 0, capsys.readouterr().err
    with open(out / "per_note.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows if r["split"] == "data"] == [f"'{n}" for n in names[:-1]] + ["plain-name"]
    assert all(not r["name"].startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows)
    assert all(float(r["model_lsd_db"]) >= 0 for r in rows)  # the numbers stay numbers


def test_a_file_named_like_a_formula_is_quoted_in_the_manifest(tmp_path):
    from samplegen.audio.corpus import build_folder_corpus, load_corpus

    src = tmp_path / "samples"
    src.mkdir()
    sf.write(src / "=cmd.wav", harmonic_note(0.5), SR)
    sf.write(src / "plain.wav", harmonic_note(0.5, tilt=2.0), SR)
    build_folder_corpus(src, tmp_path / "corpus", duration_s=0.5)
    with open(tmp_path / "corpus" / "manifest.csv", newline="") as fh:
        assert [r["preset"] for r in csv.DictReader(fh)] == ["'=cmd", "plain"]
    assert [e.name for e in load_corpus(tmp_path / "corpus", duration_s=0.5).entries] == ["cmd", "plain"]


# --- corpus build never touches its source ------------------------------------------------------------


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """TMP/lib/samples: three of the user's own notes, with a sub-folder."""
    src = tmp_path / "lib" / "samples"
    (src / "sub").mkdir(parents=True)
    for i, where in enumerate(("a.wav", "b.wav", "sub/c.wav")):
        sf.write(src / where, harmonic_note(0.6, tilt=1 + i / 3), SR, subtype="PCM_16")
    return src


@pytest.mark.parametrize("where", ["same", "inside", "deeper", "parent", "symlink"])
def test_corpus_build_refuses_an_out_that_overlaps_the_source(samples, where, capsys):
    lib = samples.parent
    out = {"same": samples, "inside": samples / "corpus", "deeper": samples / "sub" / "x", "parent": lib,
           "symlink": lib / "link"}[where]
    if where == "symlink":
        out.symlink_to(samples, target_is_directory=True)
    before = _tree(lib)
    assert main(["corpus", "build", "--from", str(samples), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplegen: error: --out") and "\n" not in err and "outside" in err
    assert _tree(lib) == before


def test_corpus_build_into_a_sibling_folder_works_and_keeps_the_source(samples, capsys):
    before = _tree(samples)
    out = samples.parent / "corpus"
    assert main(["corpus", "build", "--from", str(samples), "--out", str(out), "--duration", "0.5", "--mix", "0"]) == 0
    assert _tree(samples) == before
    assert (out / "manifest.csv").is_file() and len(list(out.glob("*.wav"))) == 3


# --- interrupted writes -------------------------------------------------------------------------------


def test_an_export_killed_between_its_files_leaves_no_recipe_and_the_next_one_is_whole(tiny_run, tmp_path,
                                                                                        monkeypatch):
    import torch

    from samplegen.app import api
    from samplegen.errors import ParameterError
    from samplegen.app.export import check_decoder_bundle

    out = tmp_path / "decoder"
    paths = api.export_onnx(tiny_run, out)
    assert check_decoder_bundle(out)["files"]["onnx"]["name"] == "decoder.onnx"
    old_onnx = paths["onnx"].read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the moment after decoder.onnx is replaced, before the rest

    monkeypatch.setattr(torch.jit, "trace", killed)
    with pytest.raises(KeyboardInterrupt):
        api.export_onnx(tiny_run, out)
    monkeypatch.undo()
    assert not (out / "decoder.json").exists()  # no recipe beside a graph it was not written for
    with pytest.raises(ParameterError, match="no complete decoder export"):
        check_decoder_bundle(out)
    stale = [out / ".decoder.onnx.tmp", out / ".decoder.json.k1ll3d.tmp", out / ".decoder.torchscript.pt.x.tmp"]
    for p in stale:
        p.write_bytes(b"left by a kill")
    (out / "keep.txt").write_text("the user's")
    api.export_onnx(tiny_run, out)
    assert check_decoder_bundle(out)
    assert sorted(p.name for p in out.iterdir()) == ["decoder.json", "decoder.onnx", "decoder.torchscript.pt",
                                                     "keep.txt"]
    (out / "decoder.onnx").write_bytes(old_onnx[:-1] + bytes([old_onnx[-1] ^ 1]))  # another export's graph
    with pytest.raises(ParameterError, match="not the ones"):
        check_decoder_bundle(out)


def test_a_killed_corpus_build_is_not_taken_for_a_smaller_corpus(samples, tmp_path, monkeypatch, capsys):
    from samplegen.audio import corpus as corpus_mod

    out = tmp_path / "corpus"

    def killed(corpus):
        raise KeyboardInterrupt  # notes written, manifest not yet

    monkeypatch.setattr(corpus_mod, "_write_manifest", killed)
    assert main(["corpus", "build", "--from", str(samples), "--out", str(out), "--duration", "0.5", "--mix", "0"]) == 130
    monkeypatch.undo()
    assert list(out.glob("*.wav")) and not (out / "manifest.csv").exists()
    capsys.readouterr()
    for argv in (["features", "--data", str(out), "--quiet"], ["corpus", "build", "--from", str(out), "--out",
                                                                 str(tmp_path / "again")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "interrupted corpus build" in err and "\n" not in err
    with pytest.raises(corpus_mod.CorpusError, match="interrupted"):
        corpus_mod.load_corpus(out, duration_s=0.5)
    (out / ".a.1234.wav.tmp").write_bytes(b"half a note")  # as earlier versions named it
    (out / ".b.wav.k1ll3d.tmp").write_bytes(b"half a note")  # as files.atomic_write names it
    assert main(["corpus", "build", "--from", str(samples), "--out", str(out), "--duration", "0.5", "--mix", "0"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert len(corpus_mod.load_corpus(out, duration_s=0.5).entries) == 3
