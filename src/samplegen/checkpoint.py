"""Run folders: safetensors weights + JSON config, written atomically, read without pickle.

Layout of a run folder::

    config.json            resolved RunConfig (format_version checked on load)
    model.safetensors      best weights (by validation loss)
    stats.safetensors      per-bin mean/std of the compressed magnitude (config.features)
    latents.safetensors    posterior means (and log-variances) of every corpus note
    corpus.json            names, families, presets and split of those notes
    history.csv / .png     loss terms per epoch
    train_state.safetensors  last epoch's weights, optimiser and RNG state (resume)

Every file is written to a temporary name in the same folder and renamed into
place, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from samplegen.config import RunConfig
from samplegen.errors import CheckpointError, ParameterError
from samplegen.files import regular_file_mode
from samplegen.features import FeatureStats
from samplegen.model import SampleModel

CONFIG_NAME = "config.json"
MODEL_NAME = "model.safetensors"
STATS_NAME = "stats.safetensors"
LATENTS_NAME = "latents.safetensors"
CORPUS_NAME = "corpus.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
STATE_NAME = "train_state.safetensors"


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write through ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write to {path.parent}: {exc.strerror}; choose a writable output folder") from None
    try:
        os.fchmod(fd, regular_file_mode())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _silent_unlink(tmp)
        raise CheckpointError(f"cannot write {path}: {exc.strerror}; check free space and permissions") from None
    except BaseException:
        _silent_unlink(tmp)
        raise
    return path


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a SampleGen run folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}); the run folder is damaged") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous and moved to the CPU)."""
    data = st_save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, lambda fh: fh.write(data))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is a CheckpointError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a SampleGen run folder?") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        tensors = st_load_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it may be truncated or tampered with") from None
    metadata = header.get("__metadata__") or {}
    return tensors, dict(metadata)


@dataclass
class CorpusIndex:
    """What a run remembers of its corpus: one row per note, in latent order."""

    names: list[str]
    families: list[str]
    presets: list[str]
    splits: list[str]  # "train" or "val"
    files: list[str]  # relative to corpus_path
    corpus_path: str

    def to_json(self) -> dict[str, Any]:
        return {
            "corpus_path": self.corpus_path,
            "notes": [
                {"name": n, "family": f, "preset": p, "split": s, "file": fi}
                for n, f, p, s, fi in zip(self.names, self.families, self.presets, self.splits, self.files)
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> "CorpusIndex":
        try:
            notes = data["notes"]
            return cls(
                names=[str(n["name"]) for n in notes],
                families=[str(n["family"]) for n in notes],
                presets=[str(n["preset"]) for n in notes],
                splits=[str(n["split"]) for n in notes],
                files=[str(n.get("file", "")) for n in notes],
                corpus_path=str(data.get("corpus_path", "")),
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{CORPUS_NAME} is malformed ({exc})") from None


@dataclass
class Run:
    """A trained model with everything generation needs, loaded from a run folder."""

    path: Path
    config: RunConfig
    model: SampleModel
    stats: FeatureStats
    latent_mu: torch.Tensor  # N x L
    latent_logvar: torch.Tensor | None  # N x L (None for the AE)
    corpus: CorpusIndex

    def index(self, name: str) -> int:
        """Row of corpus note ``name``; a clear error that suggests close names otherwise."""
        try:
            return self.corpus.names.index(name)
        except ValueError:
            import difflib

            close = difflib.get_close_matches(name, self.corpus.names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `samplegen info RUN` lists them"
            raise ParameterError(f"'{name}' is neither an audio file nor a note of this run's corpus{hint}") from None


def save_run_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / CONFIG_NAME, config.to_dict())


def save_model(run_dir: Path, model: SampleModel) -> None:
    save_tensors(run_dir / MODEL_NAME, model.state_dict(), metadata={"format": "samplegen-model", "kind": model.cfg.kind})


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run folder for generation: config, weights, statistics, corpus latents.

    Only JSON and safetensors are read; shapes are checked against the config.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a folder; pass the --out folder of `samplegen train`")
    try:
        config = RunConfig.from_dict(read_json(run_dir / CONFIG_NAME))
    except ParameterError as exc:
        raise CheckpointError(f"{run_dir / CONFIG_NAME}: {exc}") from None
    model = SampleModel(config.model)
    weights, _ = load_tensors(run_dir / MODEL_NAME)
    _load_state(model, weights, run_dir / MODEL_NAME)
    model.to(device).eval()
    stats_t, _ = load_tensors(run_dir / STATS_NAME)
    try:
        stats = FeatureStats.from_tensors(stats_t, config.model.n_bins, config.features.magnitude_power)
    except ParameterError as exc:
        raise CheckpointError(f"{run_dir / STATS_NAME}: {exc}") from None
    latents, _ = load_tensors(run_dir / LATENTS_NAME)
    corpus = CorpusIndex.from_json(read_json(run_dir / CORPUS_NAME))
    mu = latents.get("mu")
    if mu is None or mu.ndim != 2 or mu.shape != (len(corpus.names), config.model.latent_dim):
        raise CheckpointError(f"{run_dir / LATENTS_NAME} does not match {CORPUS_NAME} and the config")
    logvar = latents.get("logvar")
    return Run(run_dir, config, model, stats, mu, logvar, corpus)


def _load_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where} does not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, tensor in weights.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{where}: '{key}' has shape {tuple(tensor.shape)}, the config needs {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: '{key}' holds NaN or Inf")
    model.load_state_dict(weights)
