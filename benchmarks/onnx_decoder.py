"""Time per note of the exported decoder in ONNX Runtime on one core, and of the phase retrieval after it.

Usage (repository root, after `make install`):

    .venv/bin/python benchmarks/onnx_decoder.py --run RUN --out bench-out/onnx

Exports RUN's decoder to --out, then times onnxruntime (intra-op threads 1) at batch 1 and the
package's phase retrieval (one torch thread) on its output; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from samplegen.app import api

from samplegen.app import runtime

from samplegen.app.export import onnxruntime_without_telemetry
from samplegen.checkpoint import load_run
from samplegen.spectral import stft as spectral

ort = onnxruntime_without_telemetry()


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default="bench-out/onnx")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    runtime.keep_large_buffers()
    torch.set_num_threads(1)
    paths = api.export_onnx(args.run, args.out)
    run = load_run(args.run)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(paths["onnx"]), opts, providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((1, run.config.model.latent_dim)).astype(np.float32)
    out = session.run(None, {"z": z})[0]
    mag = run.stats.denormalise(torch.from_numpy(out)).transpose(1, 2)
    onnx_ms = _median_ms(lambda: session.run(None, {"z": z}), args.repeats)
    phase_ms = _median_ms(lambda: spectral.retrieve_phase(mag, run.config.stft, run.config.data.n_samples),
                          args.repeats)
    print(f"machine: {platform.machine()}, onnxruntime {ort.__version__}, torch {torch.__version__}, one thread")
    print("| step | ms per 2-second note (median) |\n|---|---:|")
    print(f"| decoder in ONNX Runtime (batch 1) | {onnx_ms:.1f} |")
    print(f"| phase retrieval ({spectral.DEFAULT_METHOD} + {spectral.DEFAULT_ITERS} FGLA iterations) | {phase_ms:.1f} |")
    print(f"| total | {onnx_ms + phase_ms:.1f} |")


if __name__ == "__main__":
    main()
