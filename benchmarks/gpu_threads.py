"""Phase retrieval on a CUDA device from several threads at once gives what one thread gives.

rtpghi records a CUDA graph on the first batch of each shape, and GPU work from another thread during a
recording breaks it; :data:`samplegen.spectral.stft.DEVICE_LOCK` makes SampleGen's own GPU work take turns.
This check runs :func:`samplegen.spectral.stft.retrieve_phase` from six threads on three batch sizes (so graphs
are recorded while other threads wait) and compares every result with the single-threaded one. Exit status 1 on
any error or difference over 1e-4.

    python benchmarks/gpu_threads.py --notes-npy notes.npy     # 2-second notes, (N >= 64, samples) float32
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from samplegen.spectral import stft as spectral  # noqa: E402
from synth import note_family  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes-npy", type=Path, help="real notes; 64 synthetic 2-second notes without it")
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    raw = np.load(a.notes_npy) if a.notes_npy else np.stack(note_family(64, seconds=2.0, seed=1))
    audio = torch.from_numpy(raw.astype(np.float32)).to(a.device)
    cfg, n = spectral.StftConfig(), audio.shape[1]
    mags = {b: spectral.magnitude(audio[:b], cfg) for b in (64, 32, 16)}
    reference = {b: spectral.retrieve_phase(m, cfg, n).cpu() for b, m in mags.items()}
    spectral._recorded.clear()  # the threads record the graphs again, side by side
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[str] = []

    def work(i: int, b: int) -> None:
        try:
            for _ in range(3):
                results[(i, b)] = spectral.retrieve_phase(mags[b], cfg, n).cpu()
        except Exception as exc:  # noqa: BLE001 - every thread's failure is reported
            errors.append(f"thread {i}: {type(exc).__name__}: {str(exc)[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i, b)) for i, b in enumerate([64, 32, 16, 64, 32, 16])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worst = max((float((w - reference[b]).abs().max()) for (_, b), w in results.items()), default=float("nan"))
    print(f"6 threads: {time.perf_counter() - t0:.2f} s, {len(results)} results, largest difference from one "
          f"thread {worst:.2e}, errors: {errors or 'none'}")
    sys.exit(1 if errors or len(results) < 6 or not worst <= 1e-4 else 0)


if __name__ == "__main__":
    main()
