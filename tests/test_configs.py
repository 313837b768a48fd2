"""The example configurations shipped in configs/: each is what today's code reads and writes, and each trains."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from samplegen import checkpoint
from samplegen.app.cli import main
from samplegen.config import load_config_file

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.json"))
EXAMPLES = runpy.run_path(str(REPO / "scripts" / "example_configs.py"))


def test_the_four_examples_are_shipped():
    assert SHIPPED == ["ae.json", "default.json", "if.json", "tiny.json"]
    assert sorted(EXAMPLES["VARIANTS"]) == [name.removesuffix(".json") for name in SHIPPED]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_is_current_and_trains(name, tiny_samples_dir, tmp_path):
    shipped = json.loads((CONFIGS / name).read_text())
    # Full and current: what scripts/example_configs.py writes from today's defaults, read back unchanged.
    assert shipped == EXAMPLES["example"](name.removesuffix(".json")), \
        f"configs/{name} is out of date: PYTHONPATH=src python scripts/example_configs.py"
    cfg = load_config_file(CONFIGS / name)
    assert cfg.resolved().to_dict() == shipped
    # Its small copy (the tiny example's sizes, one epoch, not compiled: tests/test_train.py covers compiling)
    # goes through `samplegen train --config`.
    tiny = json.loads((CONFIGS / "tiny.json").read_text())
    small = {**shipped, "data": tiny["data"], "model": {**tiny["model"], "kind": shipped["model"]["kind"]},
             "train": {**shipped["train"], "epochs": 1, "batch_size": 4, "compile": False}}
    (tmp_path / "small.json").write_text(json.dumps(small))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_samples_dir), "--out", str(run), "--config", str(tmp_path / "small.json"),
                 "--workers", "1", "--device", "cpu", "--quiet"]) == 0
    loaded = checkpoint.load_run(run)
    assert loaded.config.model.kind == cfg.model.kind and loaded.config.phase == cfg.phase
    assert loaded.config.features == cfg.features and loaded.latent_mu.shape == (16, 3)
    assert (run / checkpoint.HISTORY_CSV).read_text().count("\n") == 2  # the header and the one epoch
