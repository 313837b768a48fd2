"""Seconds per epoch of a short default run (training and validation: the history's ``seconds``), with an
optional change to the configuration, on the machine's default threads.

The first epoch compiles the training step, so it is reported apart. Run it alone; to compare code, run it in
two checkouts one after the other:

    .venv/bin/python benchmarks/epoch_time.py --corpus demo-out/corpus --out /tmp/et --epochs 12 \\
        --variant '{"model": {"frame_hidden": 256}}'
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from samplegen.audio.corpus import load_corpus
from samplegen.config import RunConfig
from samplegen.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="a corpus folder (samplegen corpus build)")
    ap.add_argument("--out", required=True, help="a new run folder")
    ap.add_argument("--epochs", type=int, default=12, help="epochs to train (the cosine schedule follows)")
    ap.add_argument("--variant", default="{}", help='changes to the default, as JSON: {"section": {"key": value}}')
    args = ap.parse_args()
    settings = RunConfig().to_dict()
    for section, values in json.loads(args.variant).items():
        settings[section].update(values)
    settings["train"]["epochs"] = args.epochs
    train(load_corpus(args.corpus), args.out, RunConfig.from_dict(settings), show_progress=False)
    with open(Path(args.out) / "history.csv") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)]
    print(f"{args.variant}: first epoch {seconds[0]:.1f} s, then {statistics.mean(seconds[1:]):.2f} s an epoch "
          f"(mean of {len(seconds) - 1})")


if __name__ == "__main__":
    main()
