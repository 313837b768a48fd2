"""Core-pipeline figures: model size, training time, held-out quality against PCA, latency.

Usage (from the repository root, after `make install`):

    .venv/bin/python benchmarks/core.py --workdir bench-out            # corpus + training + measures
    .venv/bin/python benchmarks/core.py --workdir bench-out --run RUN  # measures of an existing run

Writes bench-out/core.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from samplegen.app import api

from samplegen.app import runtime

from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import MODEL_NAME, load_run
from samplegen.evaluation.metrics import log_spectral_distance_db, spectral_convergence_db
from samplegen.generation.generate import decode
from samplegen.model.baselines import PCABaseline
from samplegen.model.network import parameter_count
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import audio_to_features


def _to_wave(run, feats_norm: torch.Tensor) -> np.ndarray:
    mag = run.stats.denormalise(feats_norm).transpose(1, 2)
    out = []
    for start in range(0, len(mag), 32):
        out.append(spectral.retrieve_phase(mag[start : start + 32], run.config.stft, run.config.data.n_samples).numpy())
    return np.concatenate(out)


def held_out_quality(run, corpus) -> dict[str, float]:
    """LSD and SC of model, PCA (same number of components) and oracle on the held-out split, on waveforms."""
    split = np.array(run.corpus.splits)
    names = [e.name for e in corpus.entries]
    if names != run.corpus.names:
        raise SystemExit("the corpus does not match the run's corpus.json")
    feats = run.stats.normalise(audio_to_features(corpus.audio, run.config.stft))
    train_idx, val_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    ref = corpus.audio[val_idx]
    pca = PCABaseline.fit(feats[train_idx], run.config.model.latent_dim)
    with torch.no_grad():
        model_wav = np.concatenate([decode(run, run.latent_mu[val_idx][s : s + 32]) for s in range(0, len(val_idx), 32)])
    pca_wav = _to_wave(run, pca.reconstruct(feats[val_idx]))
    oracle_wav = _to_wave(run, feats[val_idx])
    result = {"n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
    for label, wav in (("model", model_wav), ("pca", pca_wav), ("oracle", oracle_wav)):
        lsd = log_spectral_distance_db(ref, wav)
        sc = spectral_convergence_db(ref, wav)
        result[f"{label}_lsd_mean"] = float(np.mean(lsd))
        result[f"{label}_lsd_median"] = float(np.median(lsd))
        result[f"{label}_sc_mean"] = float(np.mean(sc))
    return result


def latency_ms(run, repeats: int = 20) -> dict[str, float]:
    """One note from latent to waveform (decoder + phase retrieval) on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        z = torch.randn(1, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
        decode(run, z)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decode(run, z)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {"latency_ms_median": statistics.median(times), "latency_ms_min": min(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="bench-out")
    ap.add_argument("--run", default=None, help="measure this run instead of training one")
    ap.add_argument("--corpus", default=None, help="use this corpus instead of building one")
    ap.add_argument("--split", choices=["note", "instrument"], default=None, help="override train.split")
    args = ap.parse_args()
    runtime.keep_large_buffers()  # as the `samplegen` command does
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    corpus_dir = Path(args.corpus) if args.corpus else work / "corpus"
    if not (corpus_dir / "manifest.csv").is_file():
        t0 = time.perf_counter()
        api.build_corpus(corpus_dir)
        figures["corpus_build_s"] = time.perf_counter() - t0
    run_dir = Path(args.run) if args.run else work / ("run" if args.split is None else f"run-{args.split}")
    if args.run is None and not api.run_is_complete(run_dir):
        cfg = api.resolve_config()
        if args.split:
            from dataclasses import replace

            cfg = replace(cfg, train=replace(cfg.train, split=args.split))
        t0 = time.perf_counter()
        result = api.train_run(corpus_dir, run_dir, config=cfg, show_progress=sys.stderr.isatty())
        figures["train_s"] = time.perf_counter() - t0
        figures["epochs_run"] = result.epochs_run
        figures["best_epoch"] = result.best_epoch
    run = load_run(run_dir)
    figures["split"] = run.config.train.split
    figures["weights_mb"] = (run_dir / MODEL_NAME).stat().st_size / 1e6
    figures["parameters"] = parameter_count(run.model)
    figures.update(held_out_quality(run, load_corpus(corpus_dir, duration_s=run.config.data.duration_s)))
    figures.update(latency_ms(run))
    figures["phase_retrieval"] = f"{spectral.DEFAULT_METHOD}, {spectral.DEFAULT_ITERS} iterations"
    (work / f"core-{figures['split']}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(markdown_table(figures))


def markdown_table(f: dict) -> str:
    """The figures as the rows BENCHMARKS.md shows (one column per split)."""
    rows = [("split (held-out notes)", f"{f['split']} ({f['n_val']} of {f['n_train'] + f['n_val']})")]
    if "corpus_build_s" in f:
        rows.append(("corpus build (s)", f"{f['corpus_build_s']:.0f}"))
    if "train_s" in f:
        rows.append(("training (s, epochs run, best epoch)", f"{f['train_s']:.0f} ({f['epochs_run']}, {f['best_epoch']})"))
    rows += [
        ("weights (MB), parameters", f"{f['weights_mb']:.2f}, {f['parameters']:,}"),
        ("held-out LSD mean / median (dB): model", f"{f['model_lsd_mean']:.2f} / {f['model_lsd_median']:.2f}"),
        ("held-out LSD mean / median (dB): PCA, same size", f"{f['pca_lsd_mean']:.2f} / {f['pca_lsd_median']:.2f}"),
        ("held-out LSD mean / median (dB): oracle", f"{f['oracle_lsd_mean']:.2f} / {f['oracle_lsd_median']:.2f}"),
        ("held-out SC mean (dB): model / PCA / oracle",
         f"{f['model_sc_mean']:.1f} / {f['pca_sc_mean']:.1f} / {f['oracle_sc_mean']:.1f}"),
        ("latent → waveform, one note, one thread (ms, median)", f"{f['latency_ms_median']:.0f}"),
        ("phase retrieval", f["phase_retrieval"]),
    ]
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


if __name__ == "__main__":
    main()
