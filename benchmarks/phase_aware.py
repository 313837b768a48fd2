"""Phase-aware option (issue 4, item 4): a model that also learns instantaneous frequency, against the
magnitude-only default with its best phase retrieval, on the same held-out notes.

Usage (repository root):

    .venv/bin/python benchmarks/phase_aware.py --corpus demo-out/corpus --workdir bench-out/phase \\
        --out benchmarks/results/phase_aware.md

Trains (or reuses, when complete) two runs on the corpus with the same seed, split and epochs:

- ``mag``: the default configuration (log magnitude only; way back: PGHI + 10 fast Griffin–Lim iterations);
- ``if``:  the same with ``{"phase": {"mode": "if", ...}}`` (log magnitude + IF; way back: the IF
  integrated, then 0 or a few fast Griffin–Lim iterations).

``--baseline-run RUN`` measures an existing magnitude-only run instead of training ``mag`` (its
config must be the default one on the same corpus).  Then measures, on the held-out notes of the
split (the same notes for both: same seed), what ``samplegen evaluate`` measures — SC, LSD and
MR-STFT of the posterior-mean reconstruction against the original through the fixed analysis STFT —
for each way back, the oracles (true magnitude, and true magnitude + true IF), and the time per note
of latent → waveform (decoder + phase) at batch 1 on one CPU thread.  Prints a Markdown table and
writes it, with the settings, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from samplegen.app import api

from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import load_run
from samplegen.config import RunConfig
from samplegen.evaluation.evaluate import MEASURES
from samplegen.generation.generate import decode
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import LEGACY_MAGNITUDE_POWER, audio_to_features, features_to_waveform
from samplegen.spectral.phase_features import PhaseConfig


def _train(corpus: Path, out: Path, cfg: RunConfig) -> float:
    if api.run_is_complete(out):
        return float("nan")
    t0 = time.perf_counter()
    api.train_run(corpus, out, config=cfg, resume=api.run_is_partial(out), show_progress=False)
    return time.perf_counter() - t0


def _measure(ref: np.ndarray, wav: np.ndarray) -> dict[str, np.ndarray]:
    return {m: np.atleast_1d(fn(ref, wav)) for m, fn in MEASURES.items()}


def _batched(fn, items: torch.Tensor, size: int = 32) -> np.ndarray:
    return np.concatenate([np.atleast_2d(fn(items[s : s + size])) for s in range(0, len(items), size)])


def _median_ms(fn, zs: torch.Tensor) -> float:
    times = []
    for z in zs:
        t0 = time.perf_counter()
        fn(z[None])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def true_features(audio: np.ndarray, stft, phase: PhaseConfig) -> torch.Tensor:
    """A note's own features as a decoder would give them: linear magnitude (and IF), no model in between."""
    feats = audio_to_features(audio, stft, phase)
    return torch.cat([feats[..., : stft.n_bins].exp(), feats[..., stft.n_bins :]], dim=-1)


def oracle_study(corpus_dir: Path, n_notes: int, floors: list[float], iters: list[int]) -> str:
    """True magnitude + true IF (masked at each floor) → waveform, against PGHI on the true magnitude.

    No model: what the IF representation and its integration can reach at best, and how fast.
    """
    from samplegen.spectral.stft import StftConfig

    corpus = load_corpus(corpus_dir, duration_s=RunConfig().data.duration_s)
    idx = np.linspace(0, len(corpus.entries) - 1, n_notes).round().astype(int)
    ref = corpus.audio[idx]
    stft, n = StftConfig(), ref.shape[1]
    torch.set_num_threads(1)
    lines = ["| way back | IF floor (dB) | SC mean (dB) | SC median (dB) | SC worst (dB) | LSD mean (dB) | "
             "ms/note, batch 1 (phase only) |", "|---|---:|---:|---:|---:|---:|---:|"]

    def add(label: str, floor: str, feats: torch.Tensor, way) -> None:
        way(feats[:1])  # warm up
        wavs, times = [], []
        for i in range(len(feats)):
            t0 = time.perf_counter()
            wavs.append(way(feats[i : i + 1])[0].numpy())
            times.append(1000 * (time.perf_counter() - t0))
        v = _measure(ref, np.stack(wavs))
        lines.append(f"| {label} | {floor} | {v['sc_db'].mean():.2f} | {np.median(v['sc_db']):.2f} | "
                     f"{v['sc_db'].max():.2f} | {v['lsd_db'].mean():.2f} | {statistics.median(times):.1f} |")

    mag_only = true_features(ref, stft, PhaseConfig())
    for method, it in (("pghi", 0), (spectral.DEFAULT_METHOD, spectral.DEFAULT_ITERS)):
        add(f"{method} + {it} (magnitude only)", "", mag_only,
            lambda f, m=method, i=it: features_to_waveform(f, stft, PhaseConfig(), n, method=m, n_iter=i))
    for floor in floors:
        ph = PhaseConfig(mode="if", if_floor_db=floor)
        feats = true_features(ref, stft, ph)
        for it in iters:
            add(f"if + {it}", f"{floor:g}", feats,
                lambda f, i=it, p=ph: features_to_waveform(f, stft, p, n, method="if", n_iter=i))
    masked = audio_to_features(ref, stft, PhaseConfig(mode="if", if_floor_db=floors[0]))[..., stft.n_bins :]
    rms = float(masked.pow(2).mean().sqrt())
    return "\n".join(lines) + f"\n\nRMS of the IF features (floor {floors[0]:g} dB) over these notes: {rms:.3f}."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("bench-out/phase"))
    ap.add_argument("--baseline-run", type=Path, default=None, help="an existing default (magnitude-only) run")
    ap.add_argument("--config", default=None, help="base config file for both runs (default: the defaults)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs for both runs (default: the config's, 150)")
    ap.add_argument("--if-config", default='{"mode": "if"}', help="JSON of the phase section of the IF run")
    ap.add_argument("--if-iters", default="0,2,4,10", help="fast Griffin-Lim iterations after IF integration")
    ap.add_argument("--timing-notes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--oracle-only", action="store_true", help="no model: true magnitude + true IF only")
    ap.add_argument("--n-notes", type=int, default=24, help="notes of the oracle study (evenly spaced)")
    ap.add_argument("--floors", default="-60,-40,-80", help="IF floors (dB) of the oracle study")
    args = ap.parse_args()
    if args.oracle_only:
        text = oracle_study(args.corpus, args.n_notes, [float(v) for v in args.floors.split(",")],
                            [int(v) for v in args.if_iters.split(",")])
        print(text)
        if args.out is not None:
            cmd = " ".join([Path(sys.executable).name, *sys.argv])
            args.out.write_text(f"Command: `{cmd}`\n\n{text}\n")
        return

    base = api.resolve_config(args.config, epochs=args.epochs)
    phase = PhaseConfig(**json.loads(args.if_config))
    if phase.mode != "if":
        raise SystemExit("--if-config must have mode 'if'")
    # IF is learned beside the log magnitude; the magnitude-only baseline is the log model too, so the two
    # differ only in the phase information (the default's magnitude^0.7 is compared in BENCHMARKS.md's health section)
    log_features = replace(base.features, magnitude_power=LEGACY_MAGNITUDE_POWER)
    base = replace(base, features=log_features)
    if_cfg = replace(base, phase=phase)
    args.workdir.mkdir(parents=True, exist_ok=True)
    mag_dir = args.baseline_run or args.workdir / "run-mag"
    if_dir = args.workdir / f"run-if-{phase.cache_key().replace(':', '')}-w{phase.if_weight:g}"
    train_s = {"mag": _train(args.corpus, mag_dir, base) if args.baseline_run is None else float("nan"),
               "if": _train(args.corpus, if_dir, if_cfg)}

    torch.manual_seed(0)
    runs = {"mag": load_run(mag_dir), "if": load_run(if_dir)}
    if runs["mag"].config.phase.mode != "none":
        raise SystemExit(f"{mag_dir} is not a magnitude-only run")
    for key in ("data", "stft", "train"):
        a, b = getattr(runs["mag"].config, key), getattr(runs["if"].config, key)
        if key == "train":
            a, b = replace(a, epochs=1), replace(b, epochs=1)
        if a != b:
            raise SystemExit(f"the two runs differ in their {key} settings: {a} vs {b}")
    corpus = load_corpus(args.corpus, duration_s=runs["mag"].config.data.duration_s)
    names = [e.name for e in corpus.entries]
    if names != runs["mag"].corpus.names or names != runs["if"].corpus.names:
        raise SystemExit("the corpus does not match the runs' corpus.json")
    val = np.flatnonzero(np.array(runs["mag"].corpus.splits) == "val")
    if not np.array_equal(val, np.flatnonzero(np.array(runs["if"].corpus.splits) == "val")):
        raise SystemExit("the two runs hold out different notes")
    ref = corpus.audio[val]
    stft, n = runs["mag"].config.stft, runs["mag"].config.data.n_samples

    # Posterior means, as `samplegen evaluate` reconstructs held-out notes.
    mus = {}
    for key, run in runs.items():
        feats = run.stats.normalise(audio_to_features(ref, stft, run.config.phase))
        with torch.no_grad():
            mus[key] = torch.cat([run.model.encode(feats[s : s + 64])[0] for s in range(0, len(feats), 64)])

    iters = [int(v) for v in args.if_iters.split(",")]
    default = (spectral.DEFAULT_METHOD, spectral.DEFAULT_ITERS)
    ways: list[tuple[str, str, str, int]] = [("mag", "magnitude-only VAE (default)", *default)]
    ways += [("if", "IF VAE", "if", it) for it in iters]
    ways += [("if", "IF VAE, its magnitude alone", *default)]
    rows = []
    for key, label, method, it in ways:
        run = runs[key]
        wav = _batched(lambda z: decode(run, z, method=method, n_iter=it), mus[key])
        rows.append((label, f"{method} + {it}", _measure(ref, wav)))
    true_mag = true_features(ref, stft, PhaseConfig())
    true_if = true_features(ref, stft, phase)
    oracle_rows = [("oracle: true magnitude", f"{default[0]} + {default[1]}",
                    _measure(ref, _batched(lambda f: features_to_waveform(f, stft, PhaseConfig(), n).numpy(), true_mag)))]
    for it in iters:
        oracle_rows.append(("oracle: true magnitude + true IF", f"if + {it}", _measure(ref, _batched(
            lambda f: features_to_waveform(f, stft, phase, n, method="if", n_iter=it).numpy(), true_if))))

    # Time per note, latent → waveform, batch 1, one thread; ways interleaved note by note on this shared machine.
    torch.set_num_threads(1)
    zs = {k: v[: args.timing_notes] for k, v in mus.items()}
    for key, _, method, it in ways:  # warm up (numba cache, FFT plans)
        decode(runs[key], zs[key][:1], method=method, n_iter=it)
    timing: dict[int, list[float]] = {i: [] for i in range(len(ways))}
    for j in range(args.timing_notes):
        for i, (key, _, method, it) in enumerate(ways):
            t0 = time.perf_counter()
            decode(runs[key], zs[key][j : j + 1], method=method, n_iter=it)
            timing[i].append(1000 * (time.perf_counter() - t0))
    ms = [statistics.median(timing[i]) for i in range(len(ways))]

    def line(label: str, way: str, v: dict[str, np.ndarray], t: str) -> str:
        sc, lsd, mr = v["sc_db"], v["lsd_db"], v["mrstft"]
        return (f"| {label} | {way} | {sc.mean():.2f} | {np.median(sc):.2f} | {sc.max():.2f} | {lsd.mean():.2f} | "
                f"{mr.mean():.3f} | {t} |")

    load = os.getloadavg()
    out = [
        f"Held-out notes: {len(val)} of {len(names)} (`{args.corpus}`, split `{runs['mag'].config.train.split}`, "
        f"seed {runs['mag'].config.train.seed}); epochs: {runs['mag'].config.train.epochs} (mag), "
        f"{runs['if'].config.train.epochs} (IF); IF run phase settings: `{json.dumps(phase.__dict__)}`.",
        f"Runs: `{mag_dir}`, `{if_dir}`; training seconds (nan: reused): mag {train_s['mag']:.0f}, IF {train_s['if']:.0f}.",
        f"Time: median over {args.timing_notes} held-out notes of latent → waveform (decoder + phase), batch 1, "
        f"one thread (torch.set_num_threads(1)), {platform.machine()}, torch {torch.__version__}; "
        f"load average when done {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (2-core machine, shared).",
        "",
        "| system | way back (method + iterations) | SC mean (dB) | SC median (dB) | SC worst (dB) | LSD mean (dB) "
        "| MR-STFT mean | ms/note, batch 1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    out += [line(label, way, v, f"{t:.1f}") for (label, way, v), t in zip(rows, ms)]
    out += [line(label, way, v, "") for label, way, v in oracle_rows]
    text = "\n".join(out)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = " ".join([Path(sys.executable).name, *sys.argv])
        args.out.write_text(f"# Phase-aware option (issue 4, item 4)\n\nCommand: `{cmd}`\n\n{text}\n")


if __name__ == "__main__":
    main()
