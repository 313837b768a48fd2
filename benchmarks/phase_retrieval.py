"""Phase retrieval figures: spectral convergence and time per note, against librosa.griffinlim.

Oracle magnitudes of real notes (the true STFT magnitude of each note) go
through every method of :mod:`samplegen.spectral.stft` at several iteration
counts; the waveform is compared with the note through the fixed analysis
STFT of docs/design.md (Hann, 2048/512, 44.1 kHz).  Times are per note, on one
CPU thread (torch.set_num_threads(1), numba and BLAS single-threaded), at
batch 1 and at batch 64.

Usage (from the repository root):

    .venv/bin/python benchmarks/phase_retrieval.py --corpus /tmp/corpus_default --n-notes 24 \\
        --out benchmarks/results/phase_retrieval.md

The corpus is a folder of 44.1 kHz mono 2-second WAVs with a manifest.csv
(``file`` column), as written by ``samplegen corpus``; notes are taken
evenly spaced through the manifest.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from samplegen.evaluation.metrics import spectral_convergence_db  # noqa: E402
from samplegen.spectral import stft as spectral  # noqa: E402

SR = 44100
CFG = spectral.StftConfig(2048, 512)


def load_notes(corpus: Path, n_notes: int) -> tuple[list[str], np.ndarray]:
    rows = list(csv.DictReader(open(corpus / "manifest.csv", newline="")))
    if not rows:
        raise SystemExit(f"{corpus}/manifest.csv lists no notes")
    picks = np.unique(np.linspace(0, len(rows) - 1, min(n_notes, len(rows))).round().astype(int))
    names, audio = [], []
    for i in picks:
        wav, sr = sf.read(corpus / rows[i]["file"], dtype="float32")
        if sr != SR or wav.ndim != 1:
            raise SystemExit(f"{rows[i]['file']}: expected 44.1 kHz mono, got {sr} Hz, shape {wav.shape}")
        names.append(rows[i].get("name", rows[i]["file"]))
        audio.append(wav)
    n = min(len(a) for a in audio)
    return names, np.stack([a[:n] for a in audio])


def timed(fn, repeats: int = 1) -> tuple[object, float]:
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - start) / repeats


def numba_first_call_seconds() -> tuple[float, float]:
    """First PGHI call in a fresh process: with an empty numba cache (compile), then with it filled."""
    code = ("import time, torch; from samplegen import spectral as s; c = s.StftConfig(); "
            "m = torch.rand(1, c.n_bins, 173); t = time.perf_counter(); s.pghi_phase(m, c); "
            "print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout) for _ in range(2)]
    return out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/corpus_default"))
    parser.add_argument("--n-notes", type=int, default=24)
    parser.add_argument("--iters", default="0,8,16,32,64,100")
    parser.add_argument("--batch-iters", default="0,16,32", help="iteration counts also timed at batch 64")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here as well")
    args = parser.parse_args(argv)
    import librosa

    torch.set_num_threads(1)
    names, audio = load_notes(args.corpus, args.n_notes)
    n = audio.shape[1]
    iters = [int(i) for i in args.iters.split(",")]
    batch_iters = {int(i) for i in args.batch_iters.split(",")}
    mags = spectral.magnitude(torch.from_numpy(audio), CFG)
    compile_s, cached_s = numba_first_call_seconds()
    spectral.retrieve_phase(mags[0], CFG, n, "pghi", 1)  # warm up (numba cache load, torch FFT plans)

    rows: list[tuple[str, int, np.ndarray, float, float | None]] = []
    for method in spectral.PHASE_METHODS:
        for it in iters:
            sc, secs = [], []
            for i in range(len(names)):
                wav, dt = timed(lambda: spectral.retrieve_phase(mags[i], CFG, n, method, it))
                secs.append(dt)
                sc.append(spectral_convergence_db(audio[i], wav.numpy()))
            batch_s = None
            if it in batch_iters:
                idx = np.arange(args.batch) % len(names)
                _, dt = timed(lambda: spectral.retrieve_phase(mags[idx], CFG, n, method, it))
                batch_s = dt / args.batch
            rows.append((method, it, np.array(sc), float(np.median(secs)), batch_s))
            print(f"{method:5s} {it:4d}  SC mean {np.mean(sc):6.1f} dB  {np.median(secs) * 1e3:7.1f} ms/note", file=sys.stderr)
    lib_rows = []
    for it in (32, 100):
        sc, secs = [], []
        for i in range(len(names)):
            m = np.abs(librosa.stft(audio[i], n_fft=CFG.n_fft, hop_length=CFG.hop_length, window="hann", center=True))
            wav, dt = timed(lambda: librosa.griffinlim(m, n_iter=it, hop_length=CFG.hop_length, n_fft=CFG.n_fft,
                                                        window="hann", center=True, momentum=0.99, length=n,
                                                        random_state=0))
            secs.append(dt)
            sc.append(spectral_convergence_db(audio[i], wav))
        lib_rows.append(("librosa.griffinlim (momentum 0.99)", it, np.array(sc), float(np.median(secs)), None))
        print(f"librosa {it:4d}  SC mean {np.mean(sc):6.1f} dB  {np.median(secs) * 1e3:7.1f} ms/note", file=sys.stderr)

    default = next(r for r in rows if r[0] == spectral.DEFAULT_METHOD and r[1] == spectral.DEFAULT_ITERS) \
        if spectral.DEFAULT_ITERS in iters else None
    lines = [
        f"Oracle magnitude → waveform on {len(names)} notes of `{args.corpus}` (evenly spaced through its manifest), "
        f"{n / SR:.2f} s each; model STFT and analysis STFT both Hann 2048/512 at 44.1 kHz.",
        f"SC = 20·log10(‖|Y|−|X|‖/‖|X|‖) per note (lower is better; worst = highest). Time: median per note, "
        f"one CPU thread (torch.set_num_threads(1), BLAS/numba one thread), {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, librosa {librosa.__version__}; batch {args.batch} = its wall time / {args.batch}.",
        f"Methods: `gl` plain Griffin–Lim, `fgla` fast Griffin–Lim (momentum 0.99) from random phase, "
        f"`spsi` / `pghi` fast Griffin–Lim from an SPSI / PGHI estimate (n_iter 0: the estimate alone). "
        f"Default: `{spectral.DEFAULT_METHOD}`, {spectral.DEFAULT_ITERS} iterations.",
        f"PGHI's numba kernel: first call in a fresh process {compile_s:.2f} s with an empty cache (compile), "
        f"{cached_s * 1e3:.0f} ms with the on-disk cache.",
        "",
        "| method | n_iter | SC mean (dB) | SC median (dB) | SC worst (dB) | ms/note, batch 1 | ms/note, batch 64 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, it, sc, b1, b64 in rows + lib_rows:
        mark = " **(default)**" if default is not None and (method, it) == (default[0], default[1]) else ""
        lines.append(f"| {method}{mark} | {it} | {sc.mean():.1f} | {np.median(sc):.1f} | {sc.max():.1f} | "
                     f"{b1 * 1e3:.0f} | {'' if b64 is None else f'{b64 * 1e3:.0f}'} |")
    if default is not None:
        lib32, lib100 = lib_rows
        lines += ["", f"Default vs librosa: SC mean {default[2].mean():.1f} dB vs {lib100[2].mean():.1f} dB (100 iterations); "
                      f"time {default[3] * 1e3:.0f} ms vs {lib32[3] * 1e3:.0f} ms for 32 librosa iterations "
                      f"({default[3] / lib32[3]:.2f}×); notes where the default beats librosa-100: "
                      f"{int((default[2] <= lib100[2]).sum())}/{len(names)}."]
    worst = sorted(zip(rows[[r[:2] for r in rows].index((default[0], default[1]))][2], names))[-3:] if default else []
    if worst:
        lines += ["", "Worst notes for the default: " + ", ".join(f"{nm} ({v:.1f} dB)" for v, nm in reversed(worst)) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
