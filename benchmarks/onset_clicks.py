"""Onset clicks before and after the fade-in inside phase retrieval (issue 19, item 1).

Counts notes that start on a click (:func:`samplegen.evaluation.metrics.has_onset_click`: a first-sample jump
above 10 % of the peak or a burst above 4 kHz in the first 2 ms louder than the note's body) when
the same magnitudes are turned back into waveforms with no fade-in (``fade_in=0``, the code before
the fix) and with the default 3 ms fade kept inside the iterations; and the corpus's own files.

    .venv/bin/python benchmarks/onset_clicks.py --corpus demo-out/corpus --notes 24
    .venv/bin/python benchmarks/onset_clicks.py --corpus demo-out/corpus --run demo-out/run   # + a model's notes

Rows: oracle magnitudes of ``--notes`` corpus notes (evenly spaced) through the default method
(PGHI + 10 FGLA) and SPSI alone; with ``--run``, the model's posterior means of those notes and
32 prior draws through the default method; the corpus originals as they are. One CPU thread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from samplegen import checkpoint

from samplegen.evaluation import metrics

from samplegen.audio.corpus import load_corpus
from samplegen.generation.generate import decode_magnitude
from samplegen.spectral import stft as spectral


def _row(name: str, before: np.ndarray | None, after: np.ndarray) -> str:
    def cells(audio: np.ndarray) -> tuple[int, float, float, float]:
        jump, hf = (np.atleast_1d(v) for v in metrics.onset_click(audio))
        return int(np.sum(metrics.has_onset_click(audio))), float(np.median(jump)), float(jump.max()), float(hf.max())

    a = cells(after)
    if before is None:
        return f"| {name} | — | {a[0]} / {len(after)} | {100 * a[1]:.2f} % / {100 * a[2]:.1f} % | {a[3]:+.1f} dB |"
    b = cells(before)
    return (f"| {name} | {b[0]} / {len(before)} | {a[0]} / {len(after)} | {100 * b[1]:.1f} % / {100 * b[2]:.1f} % "
            f"| {b[3]:+.1f} → {a[3]:+.1f} dB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--notes", type=int, default=24)
    p.add_argument("--run", help="a trained run: also its reconstructions and prior draws")
    a = p.parse_args()
    torch.set_num_threads(1)
    corpus = load_corpus(a.corpus)
    audio = torch.from_numpy(np.asarray(corpus.audio, dtype=np.float32))
    pick = np.linspace(0, len(audio) - 1, a.notes).round().astype(int)
    cfg, length = spectral.StftConfig(), audio.shape[1]
    mag = spectral.magnitude(audio[pick], cfg)

    def both(m: torch.Tensor, method: str = spectral.DEFAULT_METHOD, n_iter: int = spectral.DEFAULT_ITERS
             ) -> tuple[np.ndarray, np.ndarray]:
        return tuple(spectral.retrieve_phase(m, cfg, length, method, n_iter, fade_in=f).numpy()  # type: ignore[return-value]
                     for f in (0, spectral.FADE_IN))

    print("| notes | clicks, no fade | clicks, fade | jump median / max, no fade | burst max, no fade → fade |")
    print("|---|---|---|---|---|")
    print(_row(f"{a.notes} corpus notes, oracle magnitude, PGHI + 10", *both(mag)))
    print(_row("the same, SPSI alone", *both(mag, "spsi", 0)))
    if a.run:
        run = checkpoint.load_run(a.run)
        with torch.no_grad():
            z = torch.cat([run.latent_mu[torch.from_numpy(pick)],
                           torch.randn(32, run.latent_mu.shape[1], generator=torch.Generator().manual_seed(0))])
            model_mag = decode_magnitude(run, z)
        print(_row(f"the run's {a.notes} posterior means + 32 prior draws, PGHI + 10", *both(model_mag)))
    print(_row(f"the {len(audio)} corpus originals", None, audio.numpy()))


if __name__ == "__main__":
    main()
