"""Writes the example configurations shipped in configs/: full (every key explicit) and resolved, so each
reads as the complete set of settings `samplegen train --config FILE` trains with.

    PYTHONPATH=src python scripts/example_configs.py           # rewrite configs/*.json
    PYTHONPATH=src python scripts/example_configs.py --check   # exit 1 when one differs from today's code

tests/test_configs.py checks them the same way and trains a small copy of each, so a shipped file that
the code no longer reads (or no longer writes the same) fails `make test`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samplegen.config import RunConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

#: Each example as the keys it changes from the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # the plain auto-encoder baseline (`samplegen train --model ae` gives the same)
    "ae": {"model": {"kind": "ae"}},
    # learns instantaneous frequency beside the log magnitude (phase.mode "if" needs magnitude_power 0)
    "if": {"phase": {"mode": "if"}, "features": {"magnitude_power": 0.0}},
    # a model small enough to train in seconds on a CPU: the test suite's runs use it
    # (frame_hidden kept at 128, the default until the tenth session, so the tests' runs stay what they were)
    "tiny": {"data": {"duration_s": 0.5},
             # the log head's width and the PCA layers' rate as the test suite was measured with (the eleventh
             # session's defaults): a head of 512 would double this small model's time for nothing it tests
             "model": {"frame_dim": 4, "hidden": [32, 16, 16, 8], "latent_dim": 3, "frame_hidden": 128,
                       "log_head_hidden": 256},
             # compile false: on a model this small compiling costs far more than it saves
             "train": {"epochs": 4, "batch_size": 8, "kl_warmup_epochs": 1, "patience": 10, "val_fraction": 0.25,
                       "compile": False, "pca_lr_scale": 0.1}},
}


def example(name: str) -> dict[str, Any]:
    """The full, resolved configuration of example ``name``, as configs/NAME.json holds it."""
    return RunConfig.from_dict(VARIANTS[name], require_version=False).resolved().to_dict()


def text(name: str) -> str:
    return json.dumps(example(name), indent=2) + "\n"


def main(argv: list[str]) -> int:
    stale = [name for name in VARIANTS
             if not (CONFIGS / f"{name}.json").is_file() or (CONFIGS / f"{name}.json").read_text() != text(name)]
    if "--check" in argv:
        for name in stale:
            print(f"configs/{name}.json is out of date; rewrite it with: PYTHONPATH=src python scripts/example_configs.py")
        return 1 if stale else 0
    CONFIGS.mkdir(exist_ok=True)
    for name in stale:
        (CONFIGS / f"{name}.json").write_text(text(name))
        print(f"wrote configs/{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
