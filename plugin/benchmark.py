"""The plug-in's figures in BENCHMARKS.md: decode time of one new note, and the audio thread's cost per block.

    .venv/bin/python plugin/benchmark.py RUN [--points 8] [--seconds 60]

RUN is a trained run (the default config's, for the published figures); `make plugin` must have built the
plug-in. Prints:

- one new note (decoder + PGHI + fast Griffin-Lim, one thread): the plug-in's engine (samplegen-engine) and
  Python's `samplegen.generation.generate.decode` with torch on one thread, on the same prior draws, and the
  engine's pitch tracker on each (the key the note is played from);

All times are CPU time of the working thread (on a shared machine closer to one core's cost than the wall clock):
- the audio thread: SECONDS of 16 voices (re-struck every second across C2-C6, so 16 or more always sound)
  rendered by pedalboard in 512-sample blocks, with the plug-in in its real-time mode (it never waits for the
  decoder); time per block, host overhead included, against the block's 11.6 ms budget at 44.1 kHz.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ENGINE = HERE / "build" / "samplegen-engine_artefacts" / "Release" / "samplegen-engine"
VST3 = HERE / "build" / "SampleGen_artefacts" / "Release" / "VST3" / "SampleGen.vst3"
SR, BLOCK = 44100, 512


def decode_times(run_dir: Path, bundle: Path, points: int, work: Path) -> tuple[float, float, float]:
    """Milliseconds per note: (plug-in engine, Python, the engine's pitch tracker), the same ``points`` prior draws."""
    from samplegen.checkpoint import load_run
    from samplegen.generation.generate import decode

    run = load_run(run_dir)
    z = torch.randn(points, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    (work / "z.f32").write_bytes(z.numpy().astype("<f4").tobytes())
    subprocess.run([str(ENGINE), str(bundle), str(work / "z.f32"), str(work)], check=True)
    timing = dict(line.split() for line in (work / "timing.txt").read_text().splitlines())
    torch.set_num_threads(1)
    decode(run, z[:1])  # numba compiles PGHI's heap walk once (cached on disk)
    start = time.thread_time()
    for i in range(points):
        decode(run, z[i : i + 1])
    python_ms = (time.thread_time() - start) / points * 1000
    return float(timing["note_ms"]), python_ms, float(timing["pitch_ms"])


def block_cost(bundle: Path, seconds: float) -> float:
    """CPU microseconds of the rendering thread per 512-sample block at 16 voices, host included."""
    import pedalboard

    os.environ["SAMPLEGEN_PLUGIN_BUNDLE"] = str(bundle)
    os.environ["SAMPLEGEN_PLUGIN_REALTIME"] = "1"
    plugin = pedalboard.load_plugin(str(VST3))
    keys = np.linspace(36, 84, 16).round().astype(int)
    midi = []
    for t in range(int(seconds)):
        for k in keys:
            midi += [([0x90, int(k), 100], t + 0.001 * int(k)), ([0x80, int(k), 0], t + 0.95)]
    plugin([], duration=0.5, sample_rate=SR, num_channels=2, buffer_size=BLOCK)  # warm up
    start = time.thread_time()
    out = plugin(midi, duration=seconds, sample_rate=SR, num_channels=2, buffer_size=BLOCK)
    elapsed = time.thread_time() - start
    assert np.isfinite(out).all()
    return elapsed / (out.shape[1] / BLOCK) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    if not ENGINE.is_file() or not VST3.is_dir():
        sys.exit("the plug-in is not built: run `make plugin`")
    from samplegen.app import api

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        api.export_plugin(args.run, work / "bundle")
        engine_ms, python_ms, pitch_ms = decode_times(Path(args.run), work / "bundle", args.points, work)
        print(f"one new note, one thread: plug-in engine {engine_ms:.1f} ms, Python {python_ms:.1f} ms "
              f"(mean of {args.points} prior draws); then the engine's pitch tracker {pitch_ms:.1f} ms")
        us = block_cost(work / "bundle", args.seconds)
        print(f"audio thread, 16 voices: {us:.0f} us per {BLOCK}-sample block "
              f"({100 * us / (BLOCK / SR * 1e6):.1f} % of its {BLOCK / SR * 1e3:.1f} ms budget; {args.seconds:.0f} s rendered)")


if __name__ == "__main__":
    main()
