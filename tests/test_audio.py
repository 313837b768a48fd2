"""The loader on every format, bit depth, channel layout and rate; note preparation; pitch."""

import os

import numpy as np
import pytest
import soundfile as sf

from samplegen.audio.audio_io import (C4_HZ, SAMPLE_RATE, TARGET_RMS_DBFS, cents_between, estimate_pitch_hz,
                                      estimate_pitches_hz, prepare_note,
                                      read_audio, write_wav)
from samplegen.errors import AudioError, ParameterError
from synth import harmonic_note

FORMATS = [
    ("wav", "WAV", "PCM_U8"), ("wav", "WAV", "PCM_16"), ("wav", "WAV", "PCM_24"), ("wav", "WAV", "PCM_32"),
    ("wav", "WAV", "FLOAT"), ("wav", "WAV", "DOUBLE"),
    ("flac", "FLAC", "PCM_S8"), ("flac", "FLAC", "PCM_16"), ("flac", "FLAC", "PCM_24"),
    ("aiff", "AIFF", "PCM_S8"), ("aif", "AIFF", "PCM_16"), ("aiff", "AIFF", "PCM_24"), ("aiff", "AIFF", "PCM_32"),
    ("aiff", "AIFF", "FLOAT"), ("aiff", "AIFF", "DOUBLE"),
    ("ogg", "OGG", "VORBIS"),
]


def _sine(sr, seconds=0.5, freq=440.0, amp=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    y = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


@pytest.mark.parametrize("ext, fmt, subtype", FORMATS)
def test_every_format_and_depth_loads_at_44k_mono(tmp_path, ext, fmt, subtype):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _sine(48000), 48000, format=fmt, subtype=subtype)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - int(0.5 * SAMPLE_RATE)) <= 1
    peak = np.max(np.abs(y[1000:-1000]))
    tol = 0.05 if subtype in ("PCM_U8", "PCM_S8", "VORBIS") else 0.01
    assert peak == pytest.approx(0.5, abs=tol)
    assert cents_between(estimate_pitch_hz(y), 440.0) == pytest.approx(0.0, abs=5)


@pytest.mark.parametrize("channels", [2, 6, 8])
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 96000, 192000])
def test_channels_are_mixed_down_and_rates_converted(tmp_path, channels, rate):
    path = tmp_path / "multi.wav"
    sf.write(path, _sine(rate, freq=300.0, channels=channels), rate, subtype="PCM_24")
    y = read_audio(path)
    assert abs(len(y) - int(0.5 * SAMPLE_RATE)) <= 2
    assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.5, abs=0.02)
    assert cents_between(estimate_pitch_hz(y), 300.0) == pytest.approx(0.0, abs=5)


def test_opposite_channels_cancel_to_silence_and_preparation_says_so(tmp_path):
    y = _sine(44100)
    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([y, -y], axis=1), 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):
        prepare_note(read_audio(path))


@pytest.mark.parametrize("content, reason", [
    (b"", "not a readable audio file"),
    (b"this is a text file, not audio" * 10, "not a readable audio file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
])
def test_bad_files_raise_audio_error_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        read_audio(path)


def test_truncated_data_still_loads_what_is_there_or_reports(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, _sine(44100, seconds=1.0), 44100, subtype="PCM_16")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    try:
        y = read_audio(path)
    except AudioError as exc:
        assert "readable" in str(exc)
    else:
        assert 0 < len(y) <= 44100


def test_nan_samples_wrong_extension_and_missing_file(tmp_path):
    path = tmp_path / "nan.wav"
    y = _sine(44100)
    y[100] = np.nan
    sf.write(path, y, 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        read_audio(path)
    with pytest.raises(AudioError, match="unsupported extension"):
        read_audio(tmp_path / "x.mp4")
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "missing.wav")


def test_prepare_note_aligns_onset_fixes_length_and_loudness():
    late = harmonic_note(3.0, onset_s=0.7, decay=0.5)
    y = prepare_note(late, duration_s=2.0)
    assert len(y) == 2 * SAMPLE_RATE
    onset = np.argmax(np.abs(y) > 0.01 * np.abs(y).max())
    assert 0.002 * SAMPLE_RATE <= onset <= 0.01 * SAMPLE_RATE
    # trimmed with a fade: the last samples are near silent though the tone was still sounding
    assert np.max(np.abs(y[-50:])) < 0.01 * np.max(np.abs(y))
    loud = y[: SAMPLE_RATE // 2]
    rms_db = 20 * np.log10(np.sqrt(np.mean(loud**2)))
    assert rms_db == pytest.approx(TARGET_RMS_DBFS, abs=3.0)
    assert np.max(np.abs(y)) <= 10 ** (-1 / 20) + 1e-6


def test_prepare_note_pads_short_notes_and_rejects_silence():
    y = prepare_note(harmonic_note(0.3), duration_s=1.0)
    assert len(y) == SAMPLE_RATE and np.all(y[int(0.31 * SAMPLE_RATE):] == 0)
    with pytest.raises(AudioError, match="silent"):
        prepare_note(np.zeros(44100))
    with pytest.raises(ParameterError, match="duration_s"):
        prepare_note(harmonic_note(0.3), duration_s=0)


def test_pitch_of_detuned_tones_from_c2_to_c6_is_recovered_within_3_cents():
    """Five timbres (sine; 1/k harmonics; odd harmonics; no fundamental; a slightly inharmonic pluck in noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE

    def tone(f0: float, timbre: str) -> np.ndarray:
        ks = {"sine": [1], "harmonic": range(1, 13), "odd": range(1, 13, 2), "no_fundamental": range(2, 10),
              "pluck": range(1, 13)}[timbre]
        stretch = 1e-5 if timbre == "pluck" else 0.0  # piano-like: partial k at k·f0·sqrt(1 + B k²)
        y = sum(np.exp(-2 * k * t) * np.sin(2 * np.pi * k * f0 * np.sqrt(1 + stretch * k * k) * t) / k
                for k in ks if k * f0 < SAMPLE_RATE / 2)
        if timbre == "pluck":
            y = y + rng.normal(0, 0.03 * np.std(y), len(t))
        return (0.3 * np.minimum(1.0, t / 0.01) * y / np.max(np.abs(y))).astype(np.float32)

    tones = [(C4_HZ * 2 ** (octave + cents / 1200), timbre) for octave in (-2, -1, 0, 1, 2)
             for cents in (-45, -17, 0, 9, 33) for timbre in ("sine", "harmonic", "odd", "no_fundamental", "pluck")]
    found = estimate_pitches_hz(np.stack([tone(f0, timbre) for f0, timbre in tones]))
    errors = [abs(cents_between(f, f0)) if np.isfinite(f) else np.inf for f, (f0, _) in zip(found, tones)]
    worst = int(np.argmax(errors))
    assert errors[worst] <= 3, (tones[worst], errors[worst])


def test_pitch_of_noise_is_none():
    assert estimate_pitch_hz(np.random.default_rng(0).standard_normal(44100).astype(np.float32)) is None


def test_write_wav_is_atomic_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    out = write_wav(tmp_path / "a.wav", harmonic_note(0.2))
    info = sf.info(out)
    assert info.samplerate == SAMPLE_RATE and info.subtype == "PCM_24"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)  # the disk fills up while the file is written
    with pytest.raises(AudioError, match="cannot write.*free space"):
        write_wav(tmp_path / "b.wav", harmonic_note(0.2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_atomically_written_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    from samplegen.audio.audio_io import write_wav
    from samplegen.files import write_json

    old = os.umask(0o022)
    try:
        wav = write_wav(tmp_path / "a.wav", np.zeros(100, np.float32))
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    for p in (wav, tmp_path / "a.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
