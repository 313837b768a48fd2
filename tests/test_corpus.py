import csv

import numpy as np
import pytest
import soundfile as sf

from samplegen.audio import SAMPLE_RATE, cents_between
from samplegen.corpus import (MANIFEST_FIELDS, build_folder_corpus, load_corpus, mix_entries,
                              render_soundfont_corpus)
from samplegen.errors import CorpusError
from samplegen.soundfont import default_soundfont, read_presets
from synth import harmonic_note


def test_default_soundfont_lists_128_melodic_presets():
    presets = read_presets(default_soundfont().read_bytes())
    melodic = {p.program for p in presets if p.bank == 0}
    assert melodic == set(range(128))
    assert any(p.name.lower().startswith("piano") or "piano" in p.name.lower() for p in presets if p.program == 0)


def test_render_a_few_presets(tmp_path):
    corpus = render_soundfont_corpus(tmp_path / "c", programs=[0, 40], velocities=(64, 127), duration_s=1.0)
    assert len(corpus.entries) == 4
    assert corpus.audio.shape == (4, SAMPLE_RATE)
    rows = list(csv.DictReader(open(tmp_path / "c" / "manifest.csv")))
    assert list(rows[0].keys()) == MANIFEST_FIELDS
    assert {r["family"] for r in rows} == {"piano", "strings"}
    assert {int(r["velocity"]) for r in rows} == {64, 127}
    for e in corpus.entries:
        info = sf.info(tmp_path / "c" / e.file)
        assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames == SAMPLE_RATE
    piano = corpus.entries[0]
    assert piano.program == 0 and abs(cents_between(piano.pitch_hz)) < 50
    again = load_corpus(tmp_path / "c", duration_s=1.0)
    assert [e.name for e in again.entries] == [e.name for e in corpus.entries]
    assert np.allclose(again.audio, corpus.audio, atol=1e-5)


def test_another_soundfont_is_rendered_the_same_way(tmp_path):
    corpus = render_soundfont_corpus(tmp_path / "c", soundfont=default_soundfont(), programs=[24], velocities=(100,),
                                     duration_s=0.5)
    assert len(corpus.entries) == 1 and corpus.entries[0].family == "guitar"
    with pytest.raises(CorpusError, match="not a SoundFont"):
        bad = tmp_path / "bad.sf2"
        bad.write_bytes(b"nope" * 10)
        render_soundfont_corpus(tmp_path / "c2", soundfont=bad)


def _messy_folder(folder):
    folder.mkdir()
    sf.write(folder / "good1.wav", harmonic_note(0.6), 44100, subtype="PCM_16")
    (folder / "sub").mkdir()
    sf.write(folder / "sub" / "good2.flac", harmonic_note(0.6, tilt=2.0, sr=48000), 48000, subtype="PCM_24")
    sf.write(folder / "a4.aiff", harmonic_note(0.6, f0=440.0, sr=22050), 22050, subtype="PCM_16")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_bytes(b"hello, not audio" * 20)
    (folder / "notes.txt").write_text("not a sample")
    sf.write(folder / "silent.wav", np.zeros(20000), 44100)
    raw = (folder / "good1.wav").read_bytes()
    (folder / "trunc.wav").write_bytes(raw[:30])
    return folder


def test_messy_folder_skips_bad_files_with_reasons_and_warns_off_pitch(tmp_path):
    src = _messy_folder(tmp_path / "src")
    with pytest.warns(UserWarning, match="not C4"):
        corpus = build_folder_corpus(src, tmp_path / "out", duration_s=0.5)
    assert sorted(e.name for e in corpus.entries) == ["a4", "good1", "good2"]
    skipped = dict(corpus.skipped)
    assert set(skipped) == {"empty.wav", "text.wav", "notes.txt", "silent.wav", "trunc.wav"}
    assert "unsupported extension" in skipped["notes.txt"] and "silent" in skipped["silent.wav"]
    assert [f for f, _ in corpus.off_pitch] == ["a4.aiff"]
    report = (tmp_path / "out" / "corpus_report.txt").read_text()
    assert "text.wav" in report and "a4.aiff" in report
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_empty_and_all_bad_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no files"):
        load_corpus(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"junk")
    with pytest.raises(CorpusError, match="none of the 1 files"):
        build_folder_corpus(bad, tmp_path / "out")
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus(tmp_path / "nope")


def test_mixing_adds_entries_with_existing_parents(tmp_path, tiny_samples_dir):
    corpus = build_folder_corpus(tiny_samples_dir, tmp_path / "c", duration_s=0.5, mix=5, seed=3)
    mixes = [e for e in corpus.entries if e.parents]
    names = {e.name for e in corpus.entries}
    assert len(mixes) == 5 and len(corpus.entries) == 21
    assert all(a in names and b in names and a != b for a, b in (m.parents for m in mixes))
    loaded = load_corpus(tmp_path / "c", duration_s=0.5)
    assert [e.parents for e in loaded.entries] == [e.parents for e in corpus.entries]
    # a mixture is the normalised sum of its parents: correlated with both
    m = corpus.entries.index(mixes[0])
    a, b = (corpus.index(p) for p in mixes[0].parents)
    for parent in (a, b):
        assert np.corrcoef(corpus.audio[m], corpus.audio[parent])[0, 1] > 0.2
    with pytest.raises(Exception, match="mix"):
        mix_entries(corpus, -1, 0)
