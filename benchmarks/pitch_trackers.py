"""Which pitch tracker judges SampleGen's notes: accuracy and speed of the ones that run here offline.

Usage (repository root, after `make install`; basic-pitch is optional, its wheel is only unpacked):

    .venv/bin/pip download basic-pitch==0.4.0 --no-deps -d /tmp/bp    # optional: the ONNX model inside
    .venv/bin/python benchmarks/pitch_trackers.py --corpus demo-out/corpus --basic-pitch-wheel /tmp/bp/basic_pitch-0.4.0-py2.py3-none-any.whl

Trackers, each asked for one f0 per note from the same 0.5 s of the note after its attack:

- ``yin``: :func:`samplegen.audio.audio_io.estimate_pitch_hz` (YIN over the whole segment, parabolic refinement);
- ``librosa_yin``: ``librosa.yin`` frame by frame (4096-sample frames), the median of the frames;
- ``librosa_pyin``: ``librosa.pyin`` (its default 10-cent pitch grid), the median of the voiced frames;
- ``basic_pitch``: Spotify's basic-pitch ONNX model through onnxruntime (its TensorFlow requirement is not
  needed for that): the contour (3 bins a semitone) averaged over the segment, the peak refined by a parabola.

Synthetic tones: five timbres (sine; harmonic 1/k; odd harmonics; a missing fundamental; a decaying,
slightly inharmonic pluck with noise 30 dB down) at C2, C3, C4, C5, C6, each detuned by -40, -17, 0, +9 and
+33 cents: error against the known f0.  Corpus notes: their true pitch is unknown (some SoundFont samples
are detuned), so each of ``--shifted`` notes is also resampled 30 cents up and the tracker must recover the
30-cent shift (real timbres, known answer); and the share of notes measured within a semitone of C4
(every note was rendered at C4: an octave error or a lost note falls outside).
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from typing import Callable

import numpy as np
import soxr

from samplegen.audio import audio_io
from samplegen.audio.corpus import load_corpus

SR = audio_io.SAMPLE_RATE
Tracker = Callable[[np.ndarray], "float | None"]


def _segment(y: np.ndarray) -> np.ndarray:
    start = min(audio_io.onset_sample(y) + int(0.05 * SR), max(0, len(y) - int(0.2 * SR)))
    return y[start : start + int(0.5 * SR)]


def librosa_yin(y: np.ndarray) -> float | None:
    import librosa

    f = librosa.yin(_segment(y).astype(np.float32), fmin=50, fmax=2000, sr=SR, frame_length=4096)
    f = f[np.isfinite(f)]
    return float(np.median(f)) if len(f) else None


def librosa_pyin(y: np.ndarray) -> float | None:
    import librosa

    f, voiced, _ = librosa.pyin(_segment(y).astype(np.float32), fmin=50, fmax=2000, sr=SR, frame_length=4096)
    f = f[voiced & np.isfinite(f)]
    return float(np.median(f)) if len(f) else None


def basic_pitch_tracker(wheel: str) -> Tracker:
    """basic-pitch's ONNX contour model: 22.05 kHz, windows of 43,844 samples, 264 contour bins from A0."""
    import onnxruntime as ort

    with zipfile.ZipFile(wheel) as zf:
        model = zf.read("basic_pitch/saved_models/icassp_2022/nmp.onnx")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    n_in = 22050 * 2 - 256

    def track(y: np.ndarray) -> float | None:
        x = soxr.resample(_segment(y).astype(np.float32), SR, 22050)
        x = np.pad(x, (0, max(0, n_in - len(x))))[:n_in].astype(np.float32)
        contour = session.run(["StatefulPartitionedCall:0"], {"serving_default_input_2:0": x[None, :, None]})[0][0]
        frames = int(len(_segment(y)) / SR * 22050 / 256)
        c = contour[:frames].mean(axis=0)
        k = int(np.argmax(c))
        if c[k] < 0.1:
            return None
        shift = 0.0
        if 0 < k < len(c) - 1:
            a, b, d = c[k - 1], c[k], c[k + 1]
            den = a - 2 * b + d
            shift = 0.5 * (a - d) / den if abs(den) > 1e-12 else 0.0
        return float(27.5 * 2 ** ((k + shift - 1) / 36))  # bin 1 is A0 (basic_pitch.constants)

    return track


def _tone(f0: float, timbre: str, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = np.minimum(1.0, t / 0.01)
    if timbre == "sine":
        y = np.sin(2 * np.pi * f0 * t)
    elif timbre == "harmonic":
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 13) if k * f0 < SR / 2)
    elif timbre == "odd":
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 13, 2) if k * f0 < SR / 2)
    elif timbre == "missing_fundamental":
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(2, 10) if k * f0 < SR / 2)
    else:  # a pluck: partial k at k f0 sqrt(1 + B k^2), B = 1e-5, decaying, with noise 30 dB down
        y = sum(np.exp(-3 * k * t) * np.sin(2 * np.pi * k * f0 * np.sqrt(1 + 1e-5 * k * k) * t) / k
                for k in range(1, 13) if k * f0 < SR / 2)
        y = y + rng.normal(0, 10 ** (-30 / 20) * np.std(y), len(t))
    return (0.3 * env * y / np.max(np.abs(y))).astype(np.float32)


def _cents(hz: float | None, ref: float) -> float:
    return float("nan") if hz is None or hz <= 0 else float(1200 * np.log2(hz / ref))


def _summary(err: np.ndarray) -> dict[str, float]:
    a = np.abs(err)
    ok = a[np.isfinite(a)]
    return {"n": int(len(a)), "none_or_nan": float(np.mean(~np.isfinite(a))),
            "median_abs_cents": float(np.median(ok)) if len(ok) else float("nan"),
            "p95_abs_cents": float(np.percentile(ok, 95)) if len(ok) else float("nan"),
            "within_3_cents": float(np.mean(a <= 3)), "gross_over_50_cents": float(np.mean(~(a <= 50)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a built corpus folder (samplegen corpus build)")
    ap.add_argument("--basic-pitch-wheel", default=None, help="basic_pitch-0.4.0 wheel (pip download, --no-deps)")
    ap.add_argument("--shifted", type=int, default=200, help="corpus notes also measured 30 cents up")
    ap.add_argument("--skip-pyin-corpus", action="store_true", help="pYIN on the synthetic tones only (it is slow)")
    ap.add_argument("--trackers", default=None, help="comma-separated subset of the trackers to run")
    args = ap.parse_args()
    trackers: dict[str, Tracker] = {"yin": audio_io.estimate_pitch_hz, "librosa_yin": librosa_yin,
                                    "librosa_pyin": librosa_pyin}
    if args.basic_pitch_wheel:
        trackers["basic_pitch"] = basic_pitch_tracker(args.basic_pitch_wheel)
    if args.trackers:
        trackers = {k: v for k, v in trackers.items() if k in args.trackers.split(",")}
    rng = np.random.default_rng(0)
    tones = [(timbre, 65.40639132514966 * 2**octave * 2 ** (det / 1200))
             for timbre in ("sine", "harmonic", "odd", "missing_fundamental", "pluck")
             for octave in range(5) for det in (-40, -17, 0, 9, 33)]
    synth = [_tone(f0, timbre, rng) for timbre, f0 in tones]
    corpus = load_corpus(args.corpus)
    pick = np.random.default_rng(1).choice(len(corpus.audio), size=min(args.shifted, len(corpus.audio)), replace=False)
    ratio = 2 ** (30 / 1200)
    shifted = {int(i): soxr.resample(corpus.audio[i], SR * ratio, SR).astype(np.float32) for i in pick}
    result: dict[str, dict] = {}
    for name, track in trackers.items():
        t0 = time.perf_counter()
        err = np.array([_cents(track(y), f0) for y, (_, f0) in zip(synth, tones)])
        per_note_s = (time.perf_counter() - t0) / len(synth)
        row: dict = {"synthetic": _summary(err), "seconds_per_note": per_note_s,
                     "synthetic_by_timbre": {tb: _summary(err[[i for i, (t, _) in enumerate(tones) if t == tb]])
                                             for tb in dict.fromkeys(t for t, _ in tones)}}
        if name != "librosa_pyin" or not args.skip_pyin_corpus:
            own = np.array([_cents(track(y), audio_io.C4_HZ) for y in corpus.audio])
            up = np.array([_cents(track(shifted[int(i)]), audio_io.C4_HZ) for i in pick])
            row["corpus_shift_30_cents"] = _summary(up - own[pick] - 30)
            row["corpus_within_100_cents_of_c4"] = float(np.mean(np.abs(own) <= 100))
            row["corpus_within_50_cents_of_c4"] = float(np.mean(np.abs(own) <= 50))
        result[name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
