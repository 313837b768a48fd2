"""Shared fixtures: a tiny corpus folder and a tiny trained run, made once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth import SR, note_family

#: The shipped tiny example (configs/tiny.json): a model that trains in seconds, for every test that needs a run.
TINY_CONFIG = json.loads((Path(__file__).resolve().parent.parent / "configs" / "tiny.json").read_text())


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw folder of 16 short harmonic C4 notes (a user's own samples)."""
    folder = tmp_path_factory.mktemp("samples")
    for i, note in enumerate(note_family(16, seconds=0.6, seed=1)):
        sf.write(folder / f"note{i:02d}.wav", note, SR, subtype="PCM_16")
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_samples_dir: Path, tiny_config_file: Path) -> Path:
    """A tiny VAE (the default decoder, log head included) trained for a few epochs on the tiny corpus."""
    from samplegen.app import api

    run = tmp_path_factory.mktemp("runs") / "tiny"
    api.train_run(tiny_samples_dir, run, config=tiny_config_file, show_progress=False)
    return run


def tiny_variant_run(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path, name: str,
                     changes: dict[str, dict]) -> Path:
    """The tests' tiny config with ``changes`` merged into its sections, trained on ``samples_dir``."""
    from samplegen.app import api

    cfg = json.loads(json.dumps(TINY_CONFIG))
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path_factory.mktemp(f"cfg-{name}") / f"{name}.json"
    path.write_text(json.dumps(cfg))
    run = tmp_path_factory.mktemp(f"runs-{name}") / name
    api.train_run(samples_dir, run, config=path, show_progress=False)
    return run


@pytest.fixture(scope="session")
def no_head_run(tmp_path_factory: pytest.TempPathFactory, tiny_samples_dir: Path) -> Path:
    """The tiny VAE without the decoder's log head (``model.log_head`` false, the default until the sixth
    session) and the log weight it trains with."""
    return tiny_variant_run(tmp_path_factory, tiny_samples_dir, "no_head",
                            {"model": {"log_head": False}, "train": {"log_weight": 0.1}})


@pytest.fixture(scope="session")
def level_head_run(tmp_path_factory: pytest.TempPathFactory, tiny_samples_dir: Path) -> Path:
    """The tiny VAE with a log head that writes the quiet bins' level itself, as run format 4's did (a linear head)."""
    return tiny_variant_run(tmp_path_factory, tiny_samples_dir, "level_head",
                            {"model": {"log_head": True, "log_head_residual": False, "log_head_hidden": 0},
                             "train": {"log_weight": 0.5}})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def feature_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write to the user's ~/.cache: the feature cache lives in the session's tmp folder."""
    import os

    old = os.environ.get("SAMPLEGEN_CACHE")
    os.environ["SAMPLEGEN_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if old is None:
        os.environ.pop("SAMPLEGEN_CACHE", None)
    else:
        os.environ["SAMPLEGEN_CACHE"] = old
