"""How well `corpus build --retune` tunes a corpus: each retuned note's pitch measured again, as stored.

Usage (repository root, after `make install`):

    .venv/bin/samplegen corpus build --out bench-out/corpus
    .venv/bin/python benchmarks/corpus_pitch.py --corpus bench-out/corpus

For every note of the manifest with a ``retuned_cents``: the shift the build applied and the distance of the
stored note from the nearest C, both in cents (``samplegen.audio.audio_io.estimate_pitch_hz``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from samplegen.audio.audio_io import estimate_pitch_hz, read_audio
from samplegen.audio.corpus import MANIFEST_NAME, cents_from_c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    args = ap.parse_args()
    root = Path(args.corpus)
    with open(root / MANIFEST_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    retuned = [r for r in rows if r.get("retuned_cents")]
    shifts = np.array([abs(float(r["retuned_cents"])) for r in retuned])
    after = [estimate_pitch_hz(read_audio(root / r["file"])) for r in retuned]
    left = np.array([abs(cents_from_c(hz)) for hz in after if hz is not None])
    print(f"{len(rows)} notes, {len(retuned)} retuned")
    if len(retuned):
        print(f"shift applied, cents: median {np.median(shifts):.1f}, max {shifts.max():.1f}")
        print(f"stored note from the nearest C, cents: median {np.median(left):.2f}, max {left.max():.1f}; "
              f"{np.mean(left <= 5):.1%} within 5 cents ({len(retuned) - len(left)} without a pitch now)")


if __name__ == "__main__":
    main()
