"""Training on a corpus folder in one process, in several, or under torchrun.

Each process computes nothing twice: rank 0 fills the feature cache (with
every core), the others wait at a barrier and then read the same cache, and
:func:`samplegen.training.train.train` does the rest.  See docs/scaling.md.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from samplegen.audio.corpus import MANIFEST_NAME
from samplegen.checkpoint import saved_run_config
from samplegen.config import RunConfig
from samplegen.errors import ParameterError, SampleGenError
from samplegen.training import distributed
from samplegen.training.feature_cache import FeatureSettings, NoteFeatures, build_features
from samplegen.training.train import TrainingError, TrainResult, train

def folder_features(data: str | Path, cfg: RunConfig, *, cache: str | Path | None = None, workers: int | None = None,
                    dtype: str = "float32", show_progress: bool = False) -> NoteFeatures:
    """The features of a corpus folder for a run's settings, from the cache (computed there when missing)."""
    settings = FeatureSettings(duration_s=cfg.data.duration_s, n_fft=cfg.stft.n_fft, hop_length=cfg.stft.hop_length,
                               prepare="built", dtype=dtype, sample_rate=cfg.data.sample_rate,
                               phase=cfg.phase.cache_key())
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="features", unit="note", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        assert bar is not None
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return build_features(data, settings, cache_dir=cache, workers=workers, progress=progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _config_for(data_cfg: RunConfig, out: Path, resume: bool) -> RunConfig:
    """A resumed run computes features with its saved settings, not the command line's."""
    saved = saved_run_config(out) if resume else None
    return data_cfg if saved is None else saved


def train_in_group(data: str | Path, out: str | Path, cfg: RunConfig, *, resume: bool = False,
                   show_progress: bool = True, cache: str | Path | None = None, workers: int | None = None,
                   dtype: str = "float32", loader_workers: int = 0, device: str = "cpu") -> TrainResult:
    """Features then training, in this process, as one member of the process group (or alone)."""
    ctx = distributed.current()
    feat_cfg = _config_for(cfg, Path(out), resume)
    feats = None
    if ctx.is_main:
        if Path(data).is_dir() and not (Path(data) / MANIFEST_NAME).is_file():
            warnings.warn(f"{data} is a folder of samples, not a built corpus: its notes train at their own pitch and "
                          f"without the two-note mixtures that smooth blends; `samplegen corpus build --from {data} "
                          "--out CORPUS` tunes them and adds the mixtures", stacklevel=2)
        feats = folder_features(data, feat_cfg, cache=cache, workers=workers, dtype=dtype, show_progress=show_progress)
    distributed.barrier(ctx)
    if feats is None:
        feats = folder_features(data, feat_cfg, cache=cache, workers=1, dtype=dtype)
    return train(feats, out, cfg, resume=resume, show_progress=show_progress, device=device,
                 loader_workers=loader_workers)


def _worker(data: str, out: str, cfg_dict: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Entry point of each process started by :func:`distributed.launch`."""
    try:
        distributed.join_from_env(options.pop("device"))
        ctx = distributed.current()
        result = train_in_group(data, out, RunConfig.from_dict(cfg_dict), device=ctx.device, **options)
        return {"ok": True, **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}}
    except SampleGenError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        distributed.leave()


def train_folder(data: str | Path, out: str | Path, cfg: RunConfig, *, resume: bool = False, show_progress: bool = True,
                 devices: int = 1, nodes: int = 1, rdzv: str | None = None, device: str = "auto",
                 cache: str | Path | None = None, workers: int | None = None, dtype: str = "float32",
                 loader_workers: int = 0) -> TrainResult:
    """Train on a corpus folder: alone, with ``devices`` processes here (× ``nodes`` machines), or under torchrun.

    Returns the result as rank 0 saw it (on a machine without rank 0, its own first process's).
    """
    for name, value in (("devices", devices), ("nodes", nodes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ParameterError(f"{name}={value!r} must be a positive integer")
    options: dict[str, Any] = dict(resume=resume, show_progress=show_progress, cache=None if cache is None else str(cache),
                   workers=workers, dtype=dtype, loader_workers=loader_workers)
    if distributed.launched_by_torchrun():
        distributed.join_from_env(device)
        try:
            return train_in_group(data, out, cfg, device=distributed.current().device, **options)
        finally:
            distributed.leave()
    if devices * nodes == 1:
        return train_in_group(data, out, cfg, device=distributed.resolve_device(device), **options)
    if distributed.resolve_device(device) == "cuda" and torch.cuda.device_count() < devices:
        raise ParameterError(f"devices={devices} but this machine has {torch.cuda.device_count()} GPU(s); "
                             "lower --devices or pass --device cpu")
    options["device"] = "cpu" if device == "cpu" else "auto"
    # Processes share the cores: without this each would start one thread per core.
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = saved or str(max(1, (os.cpu_count() or 1) // devices))
    try:
        results = distributed.launch(_worker, (str(data), str(out), cfg.to_dict(), options),
                                     devices=devices, nodes=nodes, rdzv=rdzv)
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    first = results[min(results)]
    if not first["ok"]:
        raise TrainingError(first["error"])
    return TrainResult(Path(first["run_dir"]), first["epochs_run"], first["best_epoch"], first["best_val_loss"],
                       first["stopped_early"], first["seconds"])
