import csv

import numpy as np
import pytest
import soundfile as sf

from samplegen.audio.audio_io import (C4_HZ, SAMPLE_RATE, cents_between, estimate_pitch_hz, onset_sample, prepare_note,
                                      read_audio)
from samplegen.audio.corpus import (MANIFEST_FIELDS, build_folder_corpus, load_corpus, mix_entries,
                                    render_soundfont_corpus)
from samplegen.audio.soundfont import default_soundfont, read_presets
from samplegen.errors import CorpusError, ParameterError
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


def test_messy_folder_skips_bad_files_with_reasons_and_refuses_a_note_that_is_no_c(tmp_path):
    src = _messy_folder(tmp_path / "src")
    corpus = build_folder_corpus(src, tmp_path / "out", duration_s=0.5)
    assert sorted(e.name for e in corpus.entries) == ["good1", "good2"]
    skipped = dict(corpus.skipped)
    assert set(skipped) == {"a4.aiff", "empty.wav", "text.wav", "notes.txt", "silent.wav", "trunc.wav"}
    assert "unsupported extension" in skipped["notes.txt"] and "silent" in skipped["silent.wav"]
    assert "measured A4" in skipped["a4.aiff"] and "--keep-off-pitch" in skipped["a4.aiff"]
    report = (tmp_path / "out" / "corpus_report.txt").read_text()
    assert "text.wav" in report and "a4.aiff" in report
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    # Kept on request, it is listed as off pitch.
    with pytest.warns(UserWarning, match="not C4"):
        kept = build_folder_corpus(src, tmp_path / "kept", duration_s=0.5, keep_off_pitch=True)
    assert [f for f, _ in kept.off_pitch] == ["a4.aiff"]
    assert "off-pitch\ta4.aiff\t+900 cents" in (tmp_path / "kept" / "corpus_report.txt").read_text()


def _sustained(f0: float, seconds: float = 1.2, sr: int = SAMPLE_RATE) -> np.ndarray:
    return harmonic_note(seconds, f0=f0, decay=0.5, sr=sr)


def test_a_detuned_note_is_retuned_to_c4_within_5_cents_and_its_original_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, cents in (("flat60", -60.0), ("celesta_flat113", -113.0), ("sharp30", 30.0), ("in_tune", 0.0)):
        sf.write(src / f"{name}.wav", _sustained(C4_HZ * 2 ** (cents / 1200)), SAMPLE_RATE, subtype="FLOAT")
    corpus = build_folder_corpus(src, tmp_path / "out", duration_s=1.0)
    shifts = {e.name: e.retuned_cents for e in corpus.entries}
    assert shifts["in_tune"] == 0.0
    assert shifts["flat60"] == pytest.approx(60, abs=5) and shifts["celesta_flat113"] == pytest.approx(113, abs=5)
    assert shifts["sharp30"] == pytest.approx(-30, abs=5)
    out = tmp_path / "out"
    for e in corpus.entries:  # every stored note is C4 within 5 cents
        assert abs(cents_between(estimate_pitch_hz(read_audio(out / e.file)))) < 5, e.name
    original = read_audio(out / "originals" / "flat60.wav")  # the note as it was, kept
    assert cents_between(estimate_pitch_hz(original)) == pytest.approx(-60, abs=5)
    assert not (out / "originals" / "in_tune.wav").exists()
    rows = {r["name"]: r for r in csv.DictReader(open(out / "manifest.csv"))}
    assert float(rows["flat60"]["retuned_cents"]) == pytest.approx(60, abs=5) and rows["in_tune"]["retuned_cents"] == ""
    assert cents_between(float(rows["flat60"]["pitch_hz"])) == pytest.approx(-60, abs=5)  # measured before the retune
    report = (out / "corpus_report.txt").read_text()
    assert "3 retuned" in report and "retuned\tflat60\tmeasured B3 +40 cents, shifted +60 cents" in report
    assert [e.retuned_cents for e in load_corpus(out, duration_s=1.0).entries] == [e.retuned_cents for e in corpus.entries]
    # --no-retune keeps every note as it is.
    with pytest.warns(UserWarning, match=r"2 file\(s\) .* not C4 .*celesta_flat113.wav \(-113 cents\)"):
        plain = build_folder_corpus(src, tmp_path / "plain", duration_s=1.0, retune=False)
    assert not plain.retuned and not (tmp_path / "plain" / "originals").exists()
    assert cents_between(estimate_pitch_hz(plain.audio[plain.index("flat60")])) == pytest.approx(-60, abs=5)


def test_an_octave_from_c4_is_kept_and_listed_not_retuned(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "c3.wav", _sustained(C4_HZ / 2 * 2 ** (-20 / 1200)), SAMPLE_RATE, subtype="FLOAT")
    with pytest.warns(UserWarning, match="not C4"):
        corpus = build_folder_corpus(src, tmp_path / "out", duration_s=1.0)
    assert corpus.entries[0].retuned_cents == pytest.approx(20, abs=5)  # brought to C3, not moved an octave
    assert corpus.off_pitch[0][1] == pytest.approx(-1200, abs=5)


def test_a_recording_with_room_noise_before_the_note_is_aligned_on_the_note():
    rng = np.random.default_rng(0)
    lead = int(0.4 * SAMPLE_RATE)
    note = _sustained(C4_HZ, seconds=1.0)
    noisy = np.concatenate([np.zeros(lead, dtype=np.float32), note])
    noisy = noisy + 10 ** (-30 / 20) * np.max(np.abs(note)) * rng.standard_normal(len(noisy)).astype(np.float32)
    assert onset_sample(noisy) == pytest.approx(lead, abs=0.01 * SAMPLE_RATE)
    def rise_s(y: np.ndarray) -> float:  # when the note reaches -12 dB of its peak, in 1 ms frames
        level = np.abs(y[: len(y) // 44 * 44]).reshape(-1, 44).max(axis=1)
        return float(np.argmax(level >= 0.25 * level.max())) / 1000

    lead_in = rise_s(prepare_note(noisy, duration_s=0.5)) - rise_s(prepare_note(note, duration_s=0.5))
    assert 0 <= lead_in < 0.01  # at most 10 ms of the noise kept (400 ms before)
    # A clean note is aligned as before: 5 ms before its first sound.
    assert onset_sample(np.concatenate([np.zeros(lead, dtype=np.float32), note])) == pytest.approx(lead, abs=130)


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


def test_a_users_folder_takes_families_from_sub_folders_and_reads_oga(tmp_path):
    src = tmp_path / "src"
    for family, name in (("Strings", "violin"), ("Strings", "cello"), ("brass", "horn")):
        (src / family).mkdir(parents=True, exist_ok=True)
        sf.write(src / family / f"{name}.wav", _sustained(C4_HZ, seconds=0.6), SAMPLE_RATE)
    sf.write(src / "loose.oga", _sustained(C4_HZ, seconds=0.6), SAMPLE_RATE, format="OGG", subtype="VORBIS")
    corpus = build_folder_corpus(src, tmp_path / "out", duration_s=0.5)
    assert {e.name: e.family for e in corpus.entries} == {"horn": "brass", "cello": "strings", "violin": "strings",
                                                         "loose": "unknown"}
    assert not corpus.skipped
    from samplegen.training.feature_cache import FeatureSettings, build_features

    settings = FeatureSettings(duration_s=0.5, n_fft=256, hop_length=128, prepare="raw")
    cached = build_features(src, settings, workers=1)  # training on the raw folder: the same families
    assert {e.name: e.family for e in cached.entries} == {e.name: e.family for e in corpus.entries}


def test_a_runs_corpus_index_keeps_each_notes_measured_pitch_and_retune():
    from samplegen.checkpoint import CorpusIndex

    index = CorpusIndex(["a", "b"], ["organ", "unknown"], ["A", "B"], ["train", "val"], ["a.wav", "b.wav"], "/c",
                        pitches_hz=[246.9, None], retuned_cents=[100.0, 0.0])
    again = CorpusIndex.from_json(index.to_json())
    assert again.pitches_hz == [246.9, None] and again.retuned_cents == [100.0, 0.0]
    older = index.to_json()  # a run saved before pitches were kept
    for note in older["notes"]:
        del note["pitch_hz"], note["retuned_cents"]
    assert CorpusIndex.from_json(older).retuned_cents == [0.0, 0.0]
    older["notes"][0]["pitch_hz"] = -3  # nonsense reads as no pitch
    assert CorpusIndex.from_json(older).pitches_hz == [None, None]


def test_corpus_build_mixes_by_default_and_not_when_told(tmp_path, tiny_samples_dir, capsys):
    """Without --mix a corpus gets its default share of mixtures (they smooth the model's blends); --mix 0 none."""
    from samplegen.app.cli import main
    from samplegen.audio.corpus import DEFAULT_MIXTURES, default_mix_count

    assert default_mix_count(1023) == DEFAULT_MIXTURES and default_mix_count(16) == 5 and default_mix_count(1) == 0
    assert main(["corpus", "build", "--from", str(tiny_samples_dir), "--out", str(tmp_path / "d"), "--duration", "0.5"]) == 0
    built = load_corpus(tmp_path / "d", duration_s=0.5)
    originals = [e for e in built.entries if e.parents is None]
    assert len(built.entries) - len(originals) == default_mix_count(len(originals)) > 0
    assert "two-note mixtures" in capsys.readouterr().out
    assert main(["corpus", "build", "--from", str(tiny_samples_dir), "--out", str(tmp_path / "n"), "--duration", "0.5",
                 "--mix", "0"]) == 0
    assert all(e.parents is None for e in load_corpus(tmp_path / "n", duration_s=0.5).entries)
    capsys.readouterr()
    # Built again without mixtures into the first folder: its mixtures go, and the build says so.
    assert main(["corpus", "build", "--from", str(tiny_samples_dir), "--out", str(tmp_path / "d"), "--duration", "0.5",
                 "--mix", "0"]) == 0
    mixes = default_mix_count(len(originals))
    assert f"removed {mixes} file(s) an earlier build wrote into" in capsys.readouterr().out
    assert len(list((tmp_path / "d").glob("*.wav"))) == len(originals)


def _old_mixture_pairs(originals: list[int], n: int, seed: int) -> list[tuple[int, int]]:
    """The pairs mix_entries drew before it kept them distinct (duplicates and both orders included)."""
    rng = np.random.default_rng(seed)
    return [tuple(int(i) for i in rng.choice(originals, size=2, replace=False)) for _ in range(n)]


def _notes_corpus(tmp_path, count: int):
    from samplegen.audio.corpus import Corpus, CorpusEntry
    from synth import note_family

    audio = np.stack([prepare_note(y, duration_s=0.25) for y in note_family(count, seconds=0.3, seed=2)])
    entries = [CorpusEntry(f"n{i:02d}", f"n{i:02d}.wav") for i in range(count)]
    return Corpus(tmp_path, entries, audio)


def test_mixtures_are_distinct_pairs_drawn_as_before_until_a_pair_repeats(tmp_path):
    """Each mixture is another unordered pair; the draws are the old ones, a pair already mixed is drawn again."""
    from samplegen.audio.corpus import DEFAULT_MIXTURES, default_mix_count, distinct_pairs

    for count, n, seed in ((6, 15, 0), (6, 10, 5), (40, 60, 1)):
        corpus = mix_entries(_notes_corpus(tmp_path, count), n, seed)
        index = {e.name: i for i, e in enumerate(corpus.entries)}
        pairs = [(index[e.parents[0]], index[e.parents[1]]) for e in corpus.entries if e.parents]
        assert len(pairs) == n and len({frozenset(p) for p in pairs}) == n and all(a != b for a, b in pairs)
        old = _old_mixture_pairs(list(range(count)), n, seed)
        first_repeat = next((k for k in range(n) if frozenset(old[k]) in {frozenset(p) for p in old[:k]}), n)
        assert pairs[:first_repeat] == old[:first_repeat], (count, n, seed, first_repeat)
        if count == 6 and n == 15:
            assert first_repeat < n  # this draw does repeat a pair: the re-draw is exercised
    # The default corpus (1,023 notes, 300 mixtures, seed 0) draws no pair twice: its mixtures are what they were.
    old = _old_mixture_pairs(list(range(1023)), DEFAULT_MIXTURES, 0)
    assert len({frozenset(p) for p in old}) == DEFAULT_MIXTURES == default_mix_count(1023)
    assert all(default_mix_count(n) <= distinct_pairs(n) for n in range(0, 50))


def test_more_mixtures_than_pairs_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys):
    from samplegen.app.cli import main
    from samplegen.errors import ParameterError
    from synth import note_family

    src = tmp_path / "src"
    src.mkdir()
    for i, note in enumerate(note_family(4, seconds=0.6, seed=1)):
        sf.write(src / f"note{i}.wav", note, SAMPLE_RATE, subtype="PCM_16")
    for mix in ("20", "7", "1000000000"):
        out = tmp_path / f"out{mix}"
        assert main(["corpus", "build", "--from", str(src), "--out", str(out), "--duration", "0.5", "--mix", mix]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the progress bar
        assert len(err) == 1 and "6 distinct pairs of 4 notes" in err[0] and "--mix 6 or fewer" in err[0], err
        assert not out.exists()
    with pytest.raises(ParameterError, match="6 distinct pairs"):
        build_folder_corpus(src, tmp_path / "lib", duration_s=0.5, mix=7)
    assert not (tmp_path / "lib").exists()
    with pytest.raises(ParameterError, match="distinct pairs"):  # a SoundFont's 2 notes make 1 pair
        render_soundfont_corpus(tmp_path / "sf", programs=[0], velocities=(64, 127), duration_s=0.5, mix=2)
    assert not (tmp_path / "sf").exists()
    corpus = build_folder_corpus(src, tmp_path / "all", duration_s=0.5, mix=6)  # every pair, once
    mixes = [frozenset(e.parents) for e in corpus.entries if e.parents]
    assert len(mixes) == len(set(mixes)) == 6
    assert len(list((tmp_path / "all").glob("mix*.wav"))) == 6


def test_a_rebuild_into_the_same_folder_removes_the_notes_it_no_longer_lists_and_nothing_else(tmp_path, tiny_samples_dir):
    out = tmp_path / "c"
    first = build_folder_corpus(tiny_samples_dir, out, duration_s=0.5, mix=5, seed=3)
    old_mixes = {e.file for e in first.entries if e.parents}
    (out / "my_notes.txt").write_text("the user's own file")
    (out / "originals").mkdir(exist_ok=True)
    (out / "originals" / "note00.wav").write_bytes((out / "note00.wav").read_bytes())  # as a retuned build leaves it
    with open(out / "manifest.csv", "a") as fh:  # a name no build writes must not be followed
        fh.write("escape,../outside.wav,,x,unknown,,,,,\n")
    (tmp_path / "outside.wav").write_bytes(b"not ours")
    second = build_folder_corpus(tiny_samples_dir, out, duration_s=0.5, mix=5, seed=4)
    new_mixes = {e.file for e in second.entries if e.parents}
    assert old_mixes - new_mixes, "the two seeds drew the same pairs; the test needs different ones"
    on_disk = {p.name for p in out.glob("*.wav")}
    assert on_disk == {e.file for e in second.entries}  # the first build's other mixtures are gone
    assert not (out / "originals" / "note00.wav").exists()  # note00 is not retuned this time
    assert second.removed == len(old_mixes - new_mixes) + 1
    assert (out / "my_notes.txt").exists() and (tmp_path / "outside.wav").exists()
    assert len(load_corpus(out, duration_s=0.5).entries) == len(second.entries)


def test_a_build_from_a_built_corpus_is_refused(tmp_path, tiny_samples_dir):
    """Its mixtures and originals/ would be taken for notes of their own (a retuned note twice, mixtures of
    mixtures)."""
    built = tmp_path / "c"
    build_folder_corpus(tiny_samples_dir, built, duration_s=0.5, mix=2)
    with pytest.raises(ParameterError, match="is a built corpus already; train on it"):
        build_folder_corpus(built, tmp_path / "again", duration_s=0.5)
    assert not (tmp_path / "again").exists()


def test_a_build_into_a_folder_of_other_files_is_refused_and_touches_nothing(tmp_path, tiny_samples_dir):
    """Another tool's manifest and takes (or a run folder) are not a corpus: the build would overwrite that
    manifest and bury the folder in its notes. An empty folder, or one holding only hidden files, is fine."""
    out = tmp_path / "c"
    out.mkdir()
    theirs = "file,comment\nkeep_me.wav,a take I like\n"
    (out / "manifest.csv").write_text(theirs)
    (out / "keep_me.wav").write_bytes((tiny_samples_dir / "note00.wav").read_bytes())
    with pytest.raises(ParameterError, match="already holds files that are not a corpus .keep_me.wav, ...."):
        build_folder_corpus(tiny_samples_dir, out, duration_s=0.5, mix=0)
    assert sorted(p.name for p in out.iterdir()) == ["keep_me.wav", "manifest.csv"]
    assert (out / "manifest.csv").read_text() == theirs
    hidden = tmp_path / "h"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"finder")
    assert len(build_folder_corpus(tiny_samples_dir, hidden, duration_s=0.5, mix=0).entries) > 0
