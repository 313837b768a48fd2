"""Sustain loops over a corpus: which notes loop, how steady the held note is, and what crosses the release.

Usage (repository root, after `make install`):

    .venv/bin/python benchmarks/loop_ripple.py --corpus bench-out/corpus
    git show b3494d4:src/samplegen/loop.py > /tmp/loop_before.py      # the loop finder before issue 19
    .venv/bin/python benchmarks/loop_ripple.py --corpus bench-out/corpus --finder /tmp/loop_before.py

For every note of a corpus rendered from a SoundFont (the key is held for ``--hold`` seconds, 1.5 for the
default 2-second notes) the loop finder (``samplegen.audio.sustain_loop``, or the ``find_loop`` of the file ``--finder``
names, crossfaded where that module can) is asked for a loop, and:

- ripple: ``samplegen.audio.sustain_loop.loop_ripple_db`` of the note held through three passes of its loop
  (peak-to-peak level in 50 ms windows, dB), and the ripple the loop adds: that minus the note's own ripple
  over the same stretch played once (its vibrato, tremolo, beating); the target is 1 dB;
- crosses the release: the loop ends after the key was released;
- decaying, looped: the note falls more than 6 dB while the key is held (0.3 s to the release), yet loops
  (it drones on);
- steady, not looped: the note holds within 3 dB while the key is held, yet gets no loop (it stops dead).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from types import ModuleType

import numpy as np

from samplegen.audio import sustain_loop as loop_module
from samplegen.audio.corpus import load_corpus
from samplegen.audio.sustain_loop import level_ripple_db, loop_ripple_db

SR = 44100


def _finder(path: str | None) -> ModuleType:
    if path is None:
        return loop_module
    spec = importlib.util.spec_from_file_location("loop_under_test", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _held_drop_db(y: np.ndarray, hold_s: float) -> float:
    """Level at the end of the hold under the level at its start (dB, 100 ms windows)."""
    def level(t: float) -> float:
        seg = y[int(t * SR) : int((t + 0.1) * SR)]
        return float(10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-20))

    return level(0.3) - level(hold_s - 0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--finder", default=None, help="an older sustain-loop finder file to measure instead of "
                    "samplegen.audio.sustain_loop")
    ap.add_argument("--hold", type=float, default=1.5, help="seconds the key was held when rendering (default 1.5)")
    args = ap.parse_args()
    finder = _finder(args.finder)
    corpus = load_corpus(args.corpus)
    release = int(args.hold * SR)
    ripples, added, crosses, drones, dead = [], [], 0, 0, 0
    for y in corpus.audio:
        found = finder.find_loop(y, SR)
        drop = _held_drop_db(y, args.hold)
        if found is None:
            dead += drop < 3.0
            continue
        stored = finder.crossfaded(y, found) if hasattr(finder, "crossfaded") else y
        ripples.append(loop_ripple_db(stored, found, SR))
        added.append(ripples[-1] - level_ripple_db(y[found.start : found.end], SR))
        crosses += found.end > release
        drones += drop > 6.0
    print(f"{len(corpus.entries)} notes, {len(ripples)} looped")
    for what, values in (("ripple", np.array(ripples)), ("ripple the loop adds", np.array(added))):
        if len(values):
            print(f"{what} dB: median {np.median(values):.2f}, 90th percentile {np.percentile(values, 90):.2f}, "
                  f"max {values.max():.2f}; {np.mean(values <= 1.0):.0%} of loops within 1 dB")
    print(f"loops crossing the release: {crosses}; decaying notes looped: {drones}; steady notes not looped: {dead}")


if __name__ == "__main__":
    main()
