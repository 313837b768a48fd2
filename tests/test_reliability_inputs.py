"""Messy sample folders: every kind of broken or odd file is loaded correctly or skipped with a reason.

Table-driven cases name each input the reliability issue lists; property-based cases (hypothesis) throw
random bytes and random signals at the reader and the corpus builder.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplegen.audio.audio_io import PEAK_CEILING_DBFS, estimate_pitch_hz, read_audio
from samplegen.audio.corpus import build_folder_corpus
from samplegen.errors import AudioError
from synth import C4, SR, harmonic_note

DURATION_S = 0.5


def _tone(sr: int = SR, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = 0.5 * np.sin(2 * np.pi * C4 * t) + 0.2 * np.sin(2 * np.pi * 2 * C4 * t)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def _wav_bytes(y: np.ndarray, sr: int = SR, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def _hour_long(folder: Path, name: str) -> None:
    """One hour at 8 kHz, written in chunks: a long take someone forgot to trim."""
    with sf.SoundFile(folder / name, "w", samplerate=8000, channels=1, subtype="PCM_16") as fh:
        block = _tone(8000, 10.0)
        for _ in range(360):
            fh.write(block)


def _nan(folder: Path, name: str, value: float) -> None:
    y = _tone()
    y[1000:1010] = value
    _write(folder, name, _wav_bytes(y, subtype="FLOAT"))


GOOD = "kept"
CASES: dict[str, tuple[object, str]] = {
    # name: (how to make it, expected: GOOD or a word of the skip reason)
    "zero_length.wav": (lambda d, n: _write(d, n, b""), "not a readable audio file"),
    "truncated_header.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone())[:30]), "not a readable audio file"),
    "truncated_data.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone())[: 44 + 20000]), GOOD),
    "wrong_extension.mp3": (lambda d, n: _write(d, n, _wav_bytes(_tone())), "unsupported extension"),
    "flac_named_wav.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), fmt="FLAC")), GOOD),
    "not_audio.wav": (lambda d, n: _write(d, n, b"<html>this is a web page</html>" * 50), "not a readable audio file"),
    "one_sample.wav": (lambda d, n: _write(d, n, _wav_bytes(np.array([0.5]))), "silent"),
    "one_hour.wav": (_hour_long, GOOD),
    "nan.wav": (lambda d, n: _nan(d, n, np.nan), "NaN or Inf"),
    "inf.wav": (lambda d, n: _nan(d, n, np.inf), "NaN or Inf"),
    "clipped.wav": (lambda d, n: _write(d, n, _wav_bytes(np.clip(_tone() * 8, -1, 1))), GOOD),
    "dc_offset.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone() * 0.5 + 0.4)), GOOD),
    "all_zeros.wav": (lambda d, n: _write(d, n, _wav_bytes(np.zeros(SR))), "silent"),
    "eight_channels.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(channels=8))), GOOD),
    "rate_8k.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(8000), 8000)), GOOD),
    "rate_192k.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(192000), 192000)), GOOD),
    "u8.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="PCM_U8")), GOOD),
    "s8.aiff": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="PCM_S8", fmt="AIFF")), GOOD),
    "s16.flac": (lambda d, n: _write(d, n, _wav_bytes(_tone(), fmt="FLAC")), GOOD),
    "s24.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="PCM_24")), GOOD),
    "s32.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="PCM_32")), GOOD),
    "f32.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="FLOAT")), GOOD),
    "f64.wav": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="DOUBLE")), GOOD),
    "vorbis.ogg": (lambda d, n: _write(d, n, _wav_bytes(_tone(), subtype="VORBIS", fmt="OGG")), GOOD),
}


@pytest.fixture(scope="module")
def messy_corpus(tmp_path_factory: pytest.TempPathFactory):
    """One folder holding every case: the build must go through all of them in one pass."""
    src = tmp_path_factory.mktemp("messy")
    for name, (make, _) in CASES.items():
        make(src, name)
    out = tmp_path_factory.mktemp("messy_out")
    corpus = build_folder_corpus(src, out, duration_s=DURATION_S)
    return src, out, corpus


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_messy_input_is_kept_correctly_or_skipped_with_its_reason(messy_corpus, name):
    _, out, corpus = messy_corpus
    expected = CASES[name][1]
    report = (out / "corpus_report.txt").read_text().splitlines()
    skipped_lines = [line for line in report if line.startswith("skipped\t") and line.split("\t")[1] == name]
    stem = Path(name).stem
    if expected == GOOD:
        assert not skipped_lines, skipped_lines
        matches = [i for i, e in enumerate(corpus.entries) if e.preset == stem]
        assert len(matches) == 1
        y = corpus.audio[matches[0]]
        assert y.shape == (int(DURATION_S * SR),) and np.isfinite(y).all()
        assert 20 * np.log10(np.max(np.abs(y))) <= PEAK_CEILING_DBFS + 0.01
        assert abs(float(np.mean(y))) < 0.01  # DC removed
        pitch = estimate_pitch_hz(y)
        assert pitch is not None and abs(1200 * np.log2(pitch / C4)) < 20, pitch  # decoded, not garbled
    else:
        assert len(skipped_lines) == 1, report
        assert expected in skipped_lines[0]
        assert all(e.preset != stem for e in corpus.entries)


def test_messy_build_leaves_only_whole_listed_files(messy_corpus):
    _, out, corpus = messy_corpus
    with open(out / "manifest.csv", newline="") as fh:
        listed = {row["file"] for row in csv.DictReader(fh)}
    on_disk = {p.name for p in out.iterdir() if p.suffix == ".wav"}
    assert on_disk == listed
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for file in listed:
        assert sf.info(out / file).frames == int(DURATION_S * SR)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), ext=st.sampled_from([".wav", ".flac", ".aiff", ".ogg"]))
def test_arbitrary_bytes_never_crash_the_reader(tmp_path, data, ext):
    path = tmp_path / f"x{ext}"
    path.write_bytes(data)
    try:
        y = read_audio(path)
    except AudioError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert y.dtype == np.float32 and np.isfinite(y).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    channels=st.integers(1, 8),
    rate=st.sampled_from([8000, 22050, 44100, 48000, 96000, 192000]),
    subtype=st.sampled_from(["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]),
    seconds=st.floats(0.0, 1.0),
    gain=st.floats(0.0, 20.0),
    dc=st.floats(-0.5, 0.5),
    corrupt=st.sampled_from([None, np.nan, np.inf, -np.inf]),
)
def test_random_signals_build_a_corpus_or_are_skipped_never_abort(tmp_path_factory, channels, rate, subtype, seconds,
                                                                  gain, dc, corrupt):
    src = tmp_path_factory.mktemp("prop_src")
    out = tmp_path_factory.mktemp("prop_out")
    n = int(rate * seconds)
    y = (_tone(rate, 1.0, channels)[:n] * gain + dc) if n else np.zeros((0, channels) if channels > 1 else 0)
    if subtype not in ("FLOAT", "DOUBLE"):
        y = np.clip(y, -1, 1)
    elif corrupt is not None and n:
        y = np.array(y, dtype=np.float64)
        y[n // 2] = corrupt
    sf.write(src / "random.wav", y, rate, subtype=subtype)
    sf.write(src / "anchor.wav", harmonic_note(0.6), SR, subtype="PCM_16")  # keeps the folder non-empty
    corpus = build_folder_corpus(src, out, duration_s=DURATION_S)
    names = [e.preset for e in corpus.entries]
    assert "anchor" in names
    if "random" in names:
        z = corpus.audio[names.index("random")]
        assert np.isfinite(z).all() and np.max(np.abs(z)) > 0
        assert 20 * np.log10(np.max(np.abs(z))) <= PEAK_CEILING_DBFS + 0.01
    else:
        assert [f for f, _ in corpus.skipped] == ["random.wav"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
