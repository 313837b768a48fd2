"""Run folders: safetensors weights + JSON config, written atomically, read without pickle.

Layout of a run folder::

    config.json            resolved RunConfig (format_version checked on load, see samplegen.formats)
    model.safetensors      best weights (by validation loss)
    stats.safetensors      per-bin mean/std of the compressed magnitude (config.features)
    latents.safetensors    posterior means (and log-variances) of every corpus note
    corpus.json            names, families, presets, split and files of those notes, their measured
                           pitch and retune, and the corpus path
    history.csv / .png     loss terms per epoch
    train_state.safetensors  last epoch's weights, optimiser and RNG state (resume)

Every file is written through :func:`samplegen.files.atomic_write` (a temporary name in the same
folder, renamed into place), so a crash leaves either the old file or the new one, never half of one.

A run folder may come from someone else, so nothing in it is trusted: only regular files of bounded
size are read, the model's sizes are bounded and checked against the weights' own header before
anything is allocated, and every stored tensor must hold finite numbers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes

from samplegen.config import RunConfig
from samplegen.errors import CheckpointError, ParameterError, did_you_mean
from samplegen.files import open_regular, parse_json, read_regular_file, save_tensors, write_json
from samplegen.formats import CORPUS_INDEX, MODEL, RUN_CONFIG, check_version
from samplegen.model.network import ModelConfig, SampleModel
from samplegen.spectral.features import FeatureStats

CONFIG_NAME = "config.json"
MODEL_NAME = "model.safetensors"
STATS_NAME = "stats.safetensors"
LATENTS_NAME = "latents.safetensors"
CORPUS_NAME = "corpus.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
STATE_NAME = "train_state.safetensors"

#: Largest model a run folder may ask for (float32 weights); the default model needs about 21 MB.
MAX_MODEL_BYTES = 2 * 1024**3
#: Upper bounds of each size in a run's config, checked before the model is built (so that building it
#: on the meta device to learn its shapes is itself quick). Far above any model trained here.
MODEL_SIZE_BOUNDS = {"n_bins": 16385, "n_frames": 16384, "frame_dim": 4096, "latent_dim": 1024,
                     "frame_hidden": 65536, "log_head_hidden": 65536, "hidden width": 65536, "hidden layers": 32}
#: Largest config.json read from a run folder (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1024**2
#: Largest JSON file read from a run folder (corpus.json of about 400,000 notes).
MAX_JSON_BYTES = 64 * 1024**2
#: Largest safetensors file read without a tighter bound: train_state holds the weights and Adam's two moments.
MAX_TENSOR_FILE_BYTES = 3 * MAX_MODEL_BYTES + 64 * 1024**2
#: Room for a safetensors header (names, shapes, metadata such as train_state's history) beyond the data.
HEADER_ROOM = 64 * 1024**2


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of a run folder: a regular file of at most ``max_bytes``; anything else is a CheckpointError."""
    path = Path(path)
    try:
        raw = read_regular_file(path, max_bytes, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a SampleGen run folder?") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    return parse_json(raw, path, CheckpointError)


def _damaged(path: Path, why: object) -> CheckpointError:
    return CheckpointError(f"{path} is not a valid safetensors file ({why}); it may be truncated or tampered with")


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name → shape of each tensor in a safetensors file, from its header alone (the data is not read).

    Lets a loader compare a file with what the config asks for before allocating anything.
    """
    path = Path(path)
    try:
        fd, size = open_regular(path, MAX_TENSOR_FILE_BYTES, CheckpointError)
        with os.fdopen(fd, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 2 <= header_len <= min(HEADER_ROOM, size - 8):
                raise _damaged(path, f"header of {header_len} bytes in a file of {size}")
            header = parse_json(fh.read(header_len), path, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a SampleGen run folder?") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return {name: tuple(int(n) for n in info["shape"]) for name, info in header.items() if name != "__metadata__"}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"header entry {exc}") from None


def load_tensors(path: str | Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: a regular file of at most ``max_bytes`` whose tensors all hold finite numbers.

    Anything else (a pickle, a truncated file, a special file, NaN weights) is a CheckpointError.
    """
    path = Path(path)
    try:
        raw = read_regular_file(path, max_bytes, CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is this a SampleGen run folder?") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        tensors = st_load_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        metadata = dict(header.get("__metadata__") or {})
    except (SafetensorError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise _damaged(path, exc) from None
    for name, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: '{name}' holds NaN or Inf; the file is damaged or was tampered with")
    return tensors, metadata


@dataclass
class CorpusIndex:
    """What a run remembers of its corpus: one row per note, in latent order."""

    names: list[str]
    families: list[str]
    presets: list[str]
    splits: list[str]  # "train" or "val"
    files: list[str]  # relative to corpus_path
    corpus_path: str
    #: Per note, from the corpus manifest: the pitch measured when the corpus was built (None: unpitched or not
    #: measured) and the shift that retuned it to a C (0: none). Runs saved before these have neither.
    pitches_hz: list[float | None] = field(default_factory=list)
    retuned_cents: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        n = len(self.names)
        pitches = self.pitches_hz or [None] * n
        shifts = self.retuned_cents or [0.0] * n
        return {
            "format_version": CORPUS_INDEX.current,
            "corpus_path": self.corpus_path,
            "notes": [
                {"name": n, "family": f, "preset": p, "split": s, "file": fi, "pitch_hz": hz, "retuned_cents": c}
                for n, f, p, s, fi, hz, c in zip(self.names, self.families, self.presets, self.splits, self.files,
                                                  pitches, shifts)
            ],
        }

    @classmethod
    def from_json(cls, data: Any, where: str | Path = CORPUS_NAME) -> "CorpusIndex":
        if isinstance(data, dict):
            check_version(CORPUS_INDEX, data.get("format_version"), where)
        try:
            notes = data["notes"]
            return cls(
                names=[str(n["name"]) for n in notes],
                families=[str(n["family"]) for n in notes],
                presets=[str(n["preset"]) for n in notes],
                splits=[str(n["split"]) for n in notes],
                files=[str(n.get("file", "")) for n in notes],
                corpus_path=str(data.get("corpus_path", "")),
                pitches_hz=[_pitch(n.get("pitch_hz")) for n in notes],
                retuned_cents=[float(n.get("retuned_cents") or 0.0) for n in notes],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{CORPUS_NAME} is malformed ({exc})") from None


def _pitch(value: Any) -> float | None:
    """A stored pitch in Hz, or None for none (or for anything that is not a positive number)."""
    if value is None or isinstance(value, bool):
        return None
    hz = float(value)
    return hz if math.isfinite(hz) and hz > 0 else None


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

    @property
    def device(self) -> torch.device:
        """Where the model is (``load_run``'s ``device``): decoding and phase retrieval run there."""
        return next(self.model.parameters()).device

    def index(self, name: str) -> int:
        """Row of corpus note ``name``; a clear error that suggests close names otherwise."""
        try:
            return self.corpus.names.index(name)
        except ValueError:
            hint = did_you_mean(name, self.corpus.names, otherwise="; `samplegen info RUN` lists them")
            raise ParameterError(f"'{name}' is neither an audio file nor a note of this run's corpus{hint}") from None


def save_run_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / CONFIG_NAME, config.to_dict())


def save_model(run_dir: Path, model: SampleModel, weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model``'s weights (or a copy of them taken earlier, ``weights``) as the run's model file."""
    save_tensors(run_dir / MODEL_NAME, model.state_dict() if weights is None else weights,
                 metadata={"format": "samplegen-model", "format_version": str(MODEL.current), "kind": model.cfg.kind})


def load_weights(path: Path, max_bytes: int = MAX_TENSOR_FILE_BYTES) -> dict[str, torch.Tensor]:
    """A run's model file (see :func:`load_tensors`), once its format version is one this SampleGen reads."""
    weights, metadata = load_tensors(path, max_bytes)
    check_version(MODEL, metadata.get("format_version"), path)
    return weights


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run folder for generation: config, weights, statistics, corpus latents.

    Only JSON and safetensors are read. The config's sizes are bounded and checked against the STFT
    and against the weights' header before the model is built; each file is then read within a bound
    that follows from those sizes, and every tensor must match its shape and hold finite numbers.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a folder; pass the --out folder of `samplegen train`")
    config = read_run_config(run_dir / CONFIG_NAME)
    expected = expected_shapes(config.model)
    _check_shapes(run_dir / MODEL_NAME, tensor_shapes(run_dir / MODEL_NAME), expected)
    n_bytes = 4 * sum(math.prod(shape) for shape in expected.values())
    weights = load_weights(run_dir / MODEL_NAME, max_bytes=n_bytes + HEADER_ROOM)
    model = SampleModel(config.model)
    _load_state(model, weights, run_dir / MODEL_NAME)
    model.to(device).eval()
    stats_t, _ = load_tensors(run_dir / STATS_NAME, max_bytes=16 * config.model.n_bins + HEADER_ROOM)
    try:
        stats = FeatureStats.from_tensors(stats_t, config.model.n_bins, config.features.magnitude_power,
                                          config.stft.n_bins)
    except ParameterError as exc:
        raise CheckpointError(f"{run_dir / STATS_NAME}: {exc}") from None
    corpus = CorpusIndex.from_json(read_json(run_dir / CORPUS_NAME), run_dir / CORPUS_NAME)
    latent_shape = (len(corpus.names), config.model.latent_dim)
    latents, _ = load_tensors(run_dir / LATENTS_NAME, max_bytes=16 * math.prod(latent_shape) + HEADER_ROOM)
    mu = latents.get("mu")
    logvar = latents.get("logvar")
    if mu is None or mu.shape != latent_shape or (logvar is not None and logvar.shape != latent_shape):
        raise CheckpointError(f"{run_dir / LATENTS_NAME} does not match {CORPUS_NAME} and the config")
    return Run(run_dir, config, model, stats, mu.float(), None if logvar is None else logvar.float(), corpus)


def read_run_config(path: Path) -> RunConfig:
    """A run folder's config.json, its format version, keys and sizes checked; CheckpointError naming the file."""
    data = read_json(path, max_bytes=MAX_CONFIG_BYTES)
    check_version(RUN_CONFIG, data.get("format_version") if isinstance(data, dict) else None, path)
    try:
        config = RunConfig.from_dict(data)
        check_model_size(config)
    except ParameterError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return config


def check_model_size(config: RunConfig) -> None:
    """Refuse a config whose model would be absurdly large or contradicts its own STFT and note length.

    A run's config.json is untrusted: ``n_bins`` of 10^9 or 200,000 hidden layers would allocate gigabytes
    (or hang) before any other check. ParameterError names the size and its bound.
    """
    m = config.model
    sizes = {"n_bins": m.n_bins, "n_frames": m.n_frames, "frame_dim": m.frame_dim, "latent_dim": m.latent_dim,
             "frame_hidden": m.frame_hidden, "log_head_hidden": m.log_head_hidden, "hidden width": max(m.hidden),
             "hidden layers": len(m.hidden)}
    for name, value in sizes.items():
        if value > MODEL_SIZE_BOUNDS[name]:
            raise ParameterError(f"model {name} {value} is over the bound of {MODEL_SIZE_BOUNDS[name]}")
    derived = config.resolved().model
    if (m.n_bins, m.n_frames) != (derived.n_bins, derived.n_frames):
        raise ParameterError(f"model n_bins x n_frames = {m.n_bins} x {m.n_frames}, but the STFT and note length "
                             f"give {derived.n_bins} x {derived.n_frames}; the config contradicts itself")
    n_bytes = 4 * sum(math.prod(shape) for shape in expected_shapes(m).values())
    if n_bytes > MAX_MODEL_BYTES:
        raise ParameterError(f"the model would need {n_bytes / 1e9:.1f} GB of weights, over the bound of "
                             f"{MAX_MODEL_BYTES / 1e9:.1f} GB")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name → shape of every weight of a model of ``cfg``, learnt without allocating (the meta device)."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in SampleModel(cfg).state_dict().items()}


def _check_shapes(where: Path, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where} does not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, shape in found.items():
        if shape != expected[key]:
            raise CheckpointError(f"{where}: '{key}' has shape {shape}, the config needs {expected[key]}")


def _load_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    _check_shapes(where, {k: tuple(v.shape) for k, v in weights.items()},
                  {k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(weights)


def saved_run_config(run_dir: str | Path, epochs: int | None = None) -> RunConfig | None:
    """The configuration a run folder was started with, or None when it holds none.

    The one place a resumed run's settings come from (the command, the folder launcher and the
    training loop all ask here): only ``train.epochs`` may be raised, to ``epochs``; the folder may
    not be the user's own, so its sizes are checked before anything is built from them.
    """
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    cfg = read_run_config(path)
    if epochs is not None and epochs != cfg.train.epochs:
        cfg = replace(cfg, train=replace(cfg.train, epochs=epochs))
    return cfg

