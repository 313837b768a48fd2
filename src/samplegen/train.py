"""The training loop, top to bottom, and its progress display.

Everything random is a pure function of (seed, epoch): the shuffling order
and the reparameterisation noise of epoch e come from generators seeded with
(seed, e), and the KL weight is a function of the step.  So a run that is
killed and resumed from its last checkpoint ends with exactly the weights of
an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from samplegen import checkpoint as ckpt
from samplegen.config import RunConfig
from samplegen.corpus import Corpus
from samplegen.errors import CheckpointError, SampleGenError
from samplegen.features import FeatureStats, audio_to_log_features
from samplegen.model import SampleModel, init_from_pca

HISTORY_FIELDS = ["epoch", "lr", "beta", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "seconds"]


class TrainingError(SampleGenError):
    """Training cannot go on (a NaN loss, an existing run without --resume)."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float


def split_groups(corpus: Corpus, val_fraction: float, seed: int, by: str = "note") -> np.ndarray:
    """Boolean mask of held-out notes.

    ``by="note"`` holds out random notes.  ``by="instrument"`` holds out whole
    presets: velocity layers of one preset are near-duplicates, so this is the
    test of notes from instruments never seen.  User files are their own
    group; a mixture is held out if a parent is.
    """
    n = len(corpus.entries)
    keys = [
        f"program:{e.program}:{e.preset}" if (e.program is not None and by == "instrument") else f"file:{e.name}"
        for e in corpus.entries
    ]
    is_mix = [e.parents is not None for e in corpus.entries]
    groups = sorted({k for k, m in zip(keys, is_mix) if not m})
    order = np.random.default_rng(seed).permutation(len(groups))
    target = val_fraction * sum(1 for m in is_mix if not m)
    held: set[str] = set()
    count = 0
    sizes = {g: keys.count(g) for g in groups}
    for gi in order:
        if count >= target:
            break
        held.add(groups[gi])
        count += sizes[groups[gi]]
    val = np.array([k in held for k in keys])
    names = {e.name: i for i, e in enumerate(corpus.entries)}
    for i, e in enumerate(corpus.entries):
        if e.parents is not None:
            val[i] = any(val[names[p]] for p in e.parents if p in names)
    if val_fraction > 0 and (val.all() or not val.any()) and n > 1:
        val = np.zeros(n, dtype=bool)
        val[np.random.default_rng(seed).permutation(n)[: max(1, int(round(val_fraction * n)))]] = True
    return val


def beta_at(step: int, cfg: RunConfig, steps_per_epoch: int) -> float:
    """KL weight at a given optimisation step: linear warm-up to ``train.beta``."""
    warm = cfg.train.kl_warmup_epochs * steps_per_epoch
    if cfg.model.kind != "vae":
        return 0.0
    return cfg.train.beta if warm == 0 else cfg.train.beta * min(1.0, step / warm)


def learning_rate_at(epoch: int, cfg: RunConfig) -> float:
    """Cosine decay from ``train.learning_rate`` to a tenth of it at the last epoch."""
    progress = (epoch - 1) / max(1, cfg.train.epochs - 1)
    return cfg.train.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 17 + stream)


def train(corpus: Corpus, out_dir: str | Path, config: RunConfig | None = None, *, resume: bool = False,
          show_progress: bool = True, device: str | torch.device = "cpu",
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train a VAE (or the AE baseline) on a corpus and write a self-contained run folder.

    Parameters
    ----------
    corpus : notes to learn (see :func:`samplegen.corpus.load_corpus`)
    out_dir : run folder; must be new or empty unless ``resume``
    config : run configuration (defaults if None); ignored when resuming, where the
        saved config is used, except that ``train.epochs`` may be raised
    resume : continue from ``out_dir/train_state.safetensors``
    show_progress : draw a progress bar (epoch, loss terms, ETA) on stderr
    on_epoch : called with (epoch, history row) after each epoch's checkpoint is written; an exception
        it raises (a tuner's "prune this trial") stops training and propagates

    Returns
    -------
    TrainResult with the run folder and where training stopped.
    """
    started = time.perf_counter()
    run_dir = Path(out_dir)
    state_path = run_dir / ckpt.STATE_NAME
    if resume:
        if not (run_dir / ckpt.CONFIG_NAME).exists():
            raise TrainingError(f"{run_dir} holds no run to resume; drop --resume to start a new run")
        saved = RunConfig.from_dict(ckpt.read_json(run_dir / ckpt.CONFIG_NAME))
        if config is not None and config.train.epochs != saved.train.epochs:
            saved = replace(saved, train=replace(saved.train, epochs=config.train.epochs))
        config = saved
        # Killed before the first epoch ended: nothing to continue, so start that same run over.
        resume = state_path.exists()
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise TrainingError(f"{run_dir} is not empty; pass --resume to continue that run or choose a new --out folder")
        config = (config or RunConfig()).resolved()
    cfg = config.resolved()
    tc = cfg.train
    if corpus.audio.shape[1] != cfg.data.n_samples:
        raise TrainingError(
            f"corpus notes are {corpus.audio.shape[1]} samples long, the config needs {cfg.data.n_samples} "
            f"(duration_s={cfg.data.duration_s}); rebuild the corpus with that duration"
        )

    # Data: split by instrument, features once, statistics from the training part only.
    val_mask = split_groups(corpus, tc.val_fraction, tc.seed, tc.split)
    feats = audio_to_log_features(corpus.audio, cfg.stft)
    train_idx = np.flatnonzero(~val_mask)
    val_idx = np.flatnonzero(val_mask)
    if len(train_idx) == 0:
        raise TrainingError("the corpus is too small to split; add notes or set train.val_fraction to 0")
    stats = FeatureStats.fit(feats[train_idx])
    feats = stats.normalise(feats)
    x_train, x_val = feats[train_idx].to(device), feats[val_idx].to(device)

    torch.manual_seed(tc.seed)
    model = SampleModel(cfg.model)
    if tc.pca_init and not resume:
        init_from_pca(model, feats[train_idx])
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=tc.learning_rate)
    steps_per_epoch = math.ceil(len(train_idx) / tc.batch_size)

    history: list[dict[str, float]] = []
    first_epoch, best_val, best_epoch, bad_epochs = 1, math.inf, 0, 0
    if resume:
        first_epoch, best_val, best_epoch, bad_epochs, history = _load_train_state(state_path, model, optimiser)
        first_epoch += 1
        # Latents are written last and mark a finished run; a resumed run is unfinished again.
        (run_dir / ckpt.LATENTS_NAME).unlink(missing_ok=True)
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot create {run_dir}: {exc.strerror}; choose a writable --out folder") from None
        ckpt.save_run_config(run_dir, cfg)
    ckpt.write_json(run_dir / ckpt.CORPUS_NAME, _corpus_index(corpus, val_mask).to_json())
    ckpt.save_tensors(run_dir / ckpt.STATS_NAME, stats.to_tensors())

    stopped_early = False
    bar = tqdm(range(first_epoch, tc.epochs + 1), initial=first_epoch - 1, total=tc.epochs,
               desc="train", unit="epoch", disable=not show_progress, dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate_at(epoch, cfg)
        model.train()
        order = torch.randperm(len(train_idx), generator=_epoch_generator(tc.seed, epoch, 0))
        noise = _epoch_generator(tc.seed, epoch, 1)
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        for b in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + b
            beta = beta_at(step, cfg, steps_per_epoch)
            batch = x_train[order[b * tc.batch_size : (b + 1) * tc.batch_size].to(device)]
            terms = model.losses(batch, generator=noise if device == "cpu" else None)
            loss = terms["recon"] + beta * terms["kl"]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch}; the last good checkpoint in {run_dir} is kept. "
                    "Lower train.learning_rate or check the corpus for broken files, then --resume"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimiser.step()
            n = len(batch)
            sums["loss"] += loss.item() * n
            sums["recon"] += terms["recon"].item() * n
            sums["kl"] += terms["kl"].item() * n
        row = {"epoch": epoch, "beta": beta, "lr": learning_rate_at(epoch, cfg)}
        row.update({f"train_{k}": v / len(train_idx) for k, v in sums.items()})
        row.update(_validate(model, x_val, cfg))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)

        improved = row["val_loss"] < best_val - 1e-9 or len(val_idx) == 0
        if improved:
            best_val, best_epoch, bad_epochs = row["val_loss"], epoch, 0
            ckpt.save_model(run_dir, model)
        elif epoch > tc.kl_warmup_epochs:
            bad_epochs += 1
        _save_train_state(state_path, model, optimiser, epoch, best_val, best_epoch, bad_epochs, history)
        _write_history_csv(run_dir / ckpt.HISTORY_CSV, history)
        if on_epoch is not None:
            on_epoch(epoch, row)
        bar.set_postfix(recon=f"{row['train_recon']:.3f}", kl=f"{row['train_kl']:.1f}",
                        val=f"{row['val_loss']:.3f}", refresh=False)
        if bad_epochs >= tc.patience:
            stopped_early = True
            break
    bar.close()

    # The best weights encode the whole corpus: these latents feed maps, the instrument and names on the CLI.
    best, _ = ckpt.load_tensors(run_dir / ckpt.MODEL_NAME)
    model.load_state_dict(best)
    model.eval()
    with torch.no_grad():
        mus, logvars = [], []
        for start in range(0, len(feats), 128):
            mu, logvar = model.encode(feats[start : start + 128].to(device))
            mus.append(mu.cpu())
            logvars.append(logvar.cpu() if logvar is not None else torch.zeros_like(mu.cpu()))
    tensors = {"mu": torch.cat(mus)}
    if model.is_variational:
        tensors["logvar"] = torch.cat(logvars)
    ckpt.save_tensors(run_dir / ckpt.LATENTS_NAME, tensors)
    _plot_history(run_dir / ckpt.HISTORY_PNG, history)
    return TrainResult(run_dir, len(history), best_epoch, best_val, stopped_early, time.perf_counter() - started)


def _validate(model: SampleModel, x_val: torch.Tensor, cfg: RunConfig) -> dict[str, float]:
    """Validation at the posterior mean with the full β, so the criterion does not move during warm-up."""
    if len(x_val) == 0:
        return {"val_loss": math.nan, "val_recon": math.nan, "val_kl": math.nan}
    model.eval()
    recon = kl = 0.0
    with torch.no_grad():
        for start in range(0, len(x_val), 128):
            x = x_val[start : start + 128]
            mu, logvar = model.encode(x)
            recon += torch.nn.functional.mse_loss(model.decode(mu), x, reduction="sum").item() / x[0].numel()
            if logvar is not None:
                kl += (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum().item()
    n = len(x_val)
    beta = cfg.train.beta if cfg.model.kind == "vae" else 0.0
    return {"val_loss": recon / n + beta * kl / n, "val_recon": recon / n, "val_kl": kl / n}


def _corpus_index(corpus: Corpus, val_mask: np.ndarray) -> ckpt.CorpusIndex:
    return ckpt.CorpusIndex(
        names=[e.name for e in corpus.entries],
        families=[e.family for e in corpus.entries],
        presets=[e.preset for e in corpus.entries],
        splits=["val" if v else "train" for v in val_mask],
        files=[e.file for e in corpus.entries],
        corpus_path=str(Path(corpus.root).resolve()),
    )


def _save_train_state(path: Path, model: SampleModel, optimiser: torch.optim.Optimizer, epoch: int,
                      best_val: float, best_epoch: int, bad_epochs: int, history: list[dict[str, float]]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimiser.state_dict()
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
    meta = {
        "format": "samplegen-train-state",
        "epoch": str(epoch),
        "best_val": repr(best_val),
        "best_epoch": str(best_epoch),
        "bad_epochs": str(bad_epochs),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "history": json.dumps(history),
    }
    ckpt.save_tensors(path, tensors, metadata=meta)


def _load_train_state(path: Path, model: SampleModel, optimiser: torch.optim.Optimizer
                      ) -> tuple[int, float, int, int, list[dict[str, float]]]:
    tensors, meta = ckpt.load_tensors(path)
    try:
        if meta.get("format") != "samplegen-train-state":
            raise ValueError("not a training state")
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(weights)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, slot = key.split(".", 2)
                state.setdefault(int(idx), {})[slot] = value
        optimiser.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        return (int(meta["epoch"]), float(meta["best_val"]), int(meta["best_epoch"]), int(meta["bad_epochs"]),
                json.loads(meta["history"]))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} cannot be resumed from ({exc}); start a new run") from None


def _write_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_FIELDS})
    text = buf.getvalue()
    ckpt.atomic_write(path, lambda fh: fh.write(text), mode="w")


def _plot_history(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(epochs, [r["train_recon"] for r in history], label="train recon")
    axes[0].plot(epochs, [r["val_recon"] for r in history], label="val recon")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("reconstruction (MSE, normalised log magnitude)")
    axes[0].legend()
    axes[1].plot(epochs, [r["train_kl"] for r in history], label="train KL")
    axes[1].plot(epochs, [r["val_kl"] for r in history], label="val KL")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("KL to N(0, I) (nats)")
    axes[1].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    ckpt.atomic_write(path, lambda fh: fh.write(buf.getvalue()))
