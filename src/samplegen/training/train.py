"""The training loop, top to bottom, and its progress display.

Everything random is a pure function of (seed, epoch): the shuffling order
and the reparameterisation noise of epoch e come from generators seeded with
(seed, e), and the KL weight is a function of the step.  So a run that is
killed and resumed from its last checkpoint ends with exactly the weights of
an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from samplegen import checkpoint as ckpt
from samplegen.audio.corpus import Corpus
from samplegen.config import RunConfig
from samplegen.errors import CheckpointError, SampleGenError
from samplegen.files import atomic_write, save_tensors, write_json
from samplegen.formats import TRAIN_STATE, check_version
from samplegen.model.network import SampleModel, StepTerms, kl_divergence
from samplegen.spectral.features import FeatureStats, adjust_stats, audio_to_features
from samplegen.training import distributed
from samplegen.training.augment import equalised, random_eq_nepers, step_generator
from samplegen.training.data_stats import fit_stats, init_model_from_pca, pca_rows
from samplegen.training.feature_cache import NoteFeatures

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
    pca_check: "PcaCheck | None" = None


@dataclass(frozen=True)
class PcaCheck:
    """The trained model's reconstruction error against the PCA start's, on the same notes and loss.

    model, pca : validation reconstruction error (feature MSE + log_weight · log-magnitude L1 at the posterior
        mean) of the best weights and of the model as
        :func:`samplegen.training.data_stats.init_model_from_pca` starts it
    notes : "held-out" (the validation notes) or "training" (when none are held out)
    """

    model: float
    pca: float
    notes: str

    @property
    def worse(self) -> bool:
        return self.model > self.pca

    def message(self) -> str:
        """Plain words for a run that ended worse than where it started."""
        return (f"the trained model reconstructs {self.notes} notes WORSE than the PCA it started from "
                f"(error {self.model:.4g} against {self.pca:.4g}): its sounds are less faithful than PCA's. "
                "Add notes to the corpus, or train longer (--epochs) and compare with `samplegen evaluate`")


def split_groups(corpus: Corpus | NoteFeatures, val_fraction: float, seed: int, by: str = "note") -> np.ndarray:
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
    sizes = Counter(keys)
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


@dataclass(frozen=True)
class BetaSchedule:
    """The KL weight β over a run: the one schedule the training steps, validation and early stopping read.

    0 throughout for the plain auto-encoder. For a VAE a linear ramp from 0 over the first
    ``train.kl_warmup_epochs`` epochs, step by step, up to ``train.beta``: a pure function of the step, so a
    resumed run sees the same schedule. Validation weighs the KL term with the full β, and epochs of the
    warm-up do not count against ``train.patience``, so the criterion does not move while β does.

    >>> from samplegen.config import TrainConfig
    >>> schedule = BetaSchedule.of(RunConfig(train=TrainConfig(beta=0.01, kl_warmup_epochs=2)), steps_per_epoch=4)
    >>> schedule.at(0), schedule.at(4), schedule.at(8), schedule.full
    (0.0, 0.005, 0.01, 0.01)
    >>> schedule.warming_up(epoch=2), schedule.warming_up(epoch=3)
    (True, False)
    """

    full: float
    warmup_epochs: int
    steps_per_epoch: int

    @classmethod
    def of(cls, cfg: RunConfig, steps_per_epoch: int) -> "BetaSchedule":
        return cls(cfg.train.beta if cfg.model.kind == "vae" else 0.0, cfg.train.kl_warmup_epochs, steps_per_epoch)

    def at(self, step: int) -> float:
        """β at optimisation step ``step`` (0 is the first step of epoch 1)."""
        warm = self.warmup_epochs * self.steps_per_epoch
        return self.full if warm == 0 else self.full * min(1.0, step / warm)

    def warming_up(self, epoch: int) -> bool:
        """True while epoch ``epoch`` (from 1) starts before the ramp has reached the full β."""
        return epoch <= self.warmup_epochs


def learning_rate_at(epoch: int, cfg: RunConfig, step_in_epoch: int | None = None, steps_per_epoch: int = 1) -> float:
    """Cosine decay from ``train.learning_rate`` to a tenth of it at the last epoch; during the first
    ``train.lr_warmup_epochs`` it is scaled by a linear ramp over the steps (given ``step_in_epoch``).

    >>> from samplegen.config import TrainConfig
    >>> cfg = RunConfig(train=TrainConfig(epochs=11, learning_rate=1e-3, lr_warmup_epochs=1))
    >>> learning_rate_at(1, cfg), learning_rate_at(6, cfg), learning_rate_at(11, cfg)
    (0.001, 0.00055, 0.0001)
    >>> [learning_rate_at(1, cfg, step, steps_per_epoch=4) for step in range(4)]  # the warm-up, step by step
    [0.00025, 0.0005, 0.00075, 0.001]
    """
    progress = (epoch - 1) / max(1, cfg.train.epochs - 1)
    lr = cfg.train.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    warm = cfg.train.lr_warmup_epochs * steps_per_epoch
    if step_in_epoch is not None and warm > 0:
        lr *= min(1.0, ((epoch - 1) * steps_per_epoch + step_in_epoch + 1) / warm)
    return lr


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 17 + stream)


def _resolve_config(run_dir: Path, config: RunConfig | None, resume: bool, check_empty: bool) -> RunConfig:
    if resume:
        saved = ckpt.saved_run_config(run_dir, None if config is None else config.train.epochs)
        if saved is None:
            raise TrainingError(f"{run_dir} holds no run to resume; drop --resume to start a new run")
        return saved.resolved()
    if check_empty:
        _check_empty(run_dir)
    return (config or RunConfig()).resolved()


def _check_empty(run_dir: Path) -> None:
    """Refuse a run folder that holds anything but a lock file a failed start left (see :func:`_run_folder_lock`)."""
    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise TrainingError(f"{run_dir} is not empty; pass --resume to continue that run or choose a new --out folder")


#: The file a training process holds locked in its run folder while it writes there.
LOCK_NAME = ".samplegen-train.lock"


@contextlib.contextmanager
def _run_folder_lock(run_dir: Path, check_empty: bool) -> Iterator[None]:
    """Hold the run folder while this process trains into it: a second `train` into the same folder (a
    ``--resume`` in another terminal) is refused instead of interleaving its checkpoints with this one's.

    The lock is the operating system's (``flock``), so a killed process never leaves it held; where there is
    no ``fcntl`` (Windows) nothing is locked."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create {run_dir}: {exc.strerror}; choose a writable --out folder") from None
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(run_dir / LOCK_NAME, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"{run_dir} is being trained by another samplegen process; let it finish (or stop "
                                "it), then run again") from None
        if check_empty:  # another process may have started and finished there since the first check
            _check_empty(run_dir)
        yield


def _features_in_memory(corpus: Corpus, cfg: RunConfig) -> NoteFeatures:
    if corpus.audio.shape[1] != cfg.data.n_samples:
        raise TrainingError(
            f"corpus notes are {corpus.audio.shape[1]} samples long, the config needs {cfg.data.n_samples} "
            f"(duration_s={cfg.data.duration_s}); rebuild the corpus with that duration"
        )
    return NoteFeatures.from_tensor(Path(corpus.root), corpus.entries, audio_to_features(corpus.audio, cfg.stft, cfg.phase))


def resolved_precision(precision: str, device: str) -> str:
    """``train.precision`` as a run records it: "auto" becomes "bf16" on a CPU with native bf16 instructions
    (AVX512-BF16 or AMX: a compiled step took 0.56 of the float32 one's time on this project's CPU,
    BENCHMARKS.md) and "fp32" elsewhere (on a GPU bf16 was slower at the default batch size, docs/scaling.md)."""
    if precision != "auto":
        return precision
    return "bf16" if device.startswith("cpu") and _cpu_has_bf16() else "fp32"


def _use_bf16(device: str, precision: str) -> bool:
    """bf16 autocast where asked; asked for on a CPU without native bf16, it is emulated (slower), hence a warning."""
    if resolved_precision(precision, device) != "bf16":
        return False
    if precision == "bf16" and not device.startswith("cuda") and not _cpu_has_bf16():  # "auto" only picks native
        warnings.warn("precision='bf16': this CPU has no native bf16 instructions, so it is emulated and slower "
                      "than fp32; set train.precision to fp32", stacklevel=3)
    return True


def _cpu_has_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, hence the fallback
    return bool(probe()) if callable(probe) else False


class _CompiledStep:
    """A module (the training step's forward pass and losses, or validation's) through ``torch.compile``, or eager
    where it cannot compile.

    Inductor compiles at the first call (and once more for an epoch's shorter last batch); a machine without a
    C++ compiler fails there, so that call falls back to the eager module, which also re-raises any error that
    is not the compiler's."""

    def __init__(self, net: torch.nn.Module, mode: str | None = None, what: str = "training step") -> None:
        self.eager, self.what = net, what
        self.compiled: Callable[..., Any] | None = torch.compile(net, dynamic=False, mode=mode)

    def __call__(self, *args: torch.Tensor | None) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - the eager call below re-raises what is not the compiler's
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                warnings.warn(f"torch.compile cannot compile the {self.what} here ({type(exc).__name__}: {first}); "
                              "running it eagerly (set train.compile false to skip the attempt)", stacklevel=2)
                self.compiled = None
        return self.eager(*args)


class _ValidationPass(torch.nn.Module):
    """The terms validation sums for a batch of log magnitudes ``raw`` (normalised here with the model's attached
    feature stats, as the step does): the training step's reconstruction losses at the posterior mean, and the KL
    summed over the batch (float32)."""

    def __init__(self, model: SampleModel, with_log_l1: bool) -> None:
        super().__init__()
        self.model, self.with_log_l1 = model, with_log_l1

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.model.feature_stats is not None
        x = self.model.feature_stats.normalise(raw)
        mu, logvar = self.model.encode(x)
        mse, log_l1 = self.model.reconstruction_losses(mu, x, raw if self.with_log_l1 else None)  # as training
        kl = kl_divergence(mu.float(), logvar.float()).sum() if logvar is not None else torch.zeros((), device=x.device)
        return mse.float(), log_l1.float(), kl


#: ``torch.compile``'s mode for the training step on a GPU: "reduce-overhead" replays the step's kernels as
#: CUDA graphs, 1.6× the samples/s of the default mode at batch 32 on an H100 (BENCHMARKS.md, "GPU speed").
CUDA_COMPILE_MODE: str | None = "reduce-overhead"


#: Where the whole optimisation step is recorded as one CUDA graph (:class:`_StepGraph`): "cuda" (one process
#: on a GPU, with ``train.compile``, whose false turns it off), "off" (``benchmarks/scale_gpu.py``'s row without
#: it), or "always" (also on a CPU, where the same buffers and tensor learning rate are used and nothing is
#: recorded: the tests check that it trains as the plain loop does).
STEP_GRAPH = "cuda"


def _step_graph(s: "_Session") -> "_StepGraph | None":
    on_gpu = s.device.startswith("cuda")
    wanted = STEP_GRAPH == "always" or (STEP_GRAPH == "cuda" and on_gpu and s.cfg.train.compile)
    if not wanted or s.ctx.distributed:  # DDP's gradient buckets are not recorded here
        return None
    return _StepGraph(s, record=on_gpu)


#: Share of an accelerator's free memory the whole feature set may take to be kept there for training.
RESIDENT_SHARE = 0.4


def _resident_features(feats: NoteFeatures, device: str) -> torch.Tensor | None:
    """Every note's features on the accelerator, when they fit in :data:`RESIDENT_SHARE` of its free memory.

    Copying each batch from the host held a GPU to a few thousand notes a second; indexing rows that
    already live on the device costs nothing.  On a CPU (and when they do not fit) batches are read as before.
    """
    if not device.startswith("cuda"):
        return None
    rows, (frames, bins) = len(feats), feats.frame_shape
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    if rows * frames * bins * 4 > RESIDENT_SHARE * free:
        return None
    return torch.cat([b.to(device) for b in feats.batches(np.arange(rows), 1024)])


class _StepBatches(torch.utils.data.Dataset):
    """One item per optimisation step: the rows this process reads for it (a torch DataLoader prefetches them)."""

    def __init__(self, feats: NoteFeatures, rows: list[np.ndarray]) -> None:
        self.feats, self.rows = feats, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.feats.read(self.rows[i])


@dataclass
class _Progress:
    """Where training stands after an epoch: what train_state.safetensors holds beside the weights."""

    epoch: int = 0  # the last finished epoch
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, row: dict[str, float], held_out: bool, warming_up: bool) -> bool:
        """Add an epoch's row; True when it validates better than every epoch before (always without held-out notes).

        Epochs of the KL warm-up do not count against patience."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        improved = row["val_loss"] < self.best_val - 1e-9 or not held_out
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = row["val_loss"], self.epoch, 0
        elif not warming_up:
            self.bad_epochs += 1
        return improved

    def snapshot(self) -> "_Progress":
        """A copy that later epochs leave alone (for the checkpoint written in the background)."""
        return replace(self, history=[dict(r) for r in self.history])


@dataclass
class _Session:
    """What every epoch reads: the settings, the data, the model and this process's place among the others."""

    cfg: RunConfig
    ctx: distributed.Context
    device: str
    feats: NoteFeatures
    stats: FeatureStats
    train_idx: np.ndarray
    val_idx: np.ndarray
    resident: torch.Tensor | None
    model: SampleModel
    net: Callable[..., StepTerms]  # the model as each step calls it (DDP-wrapped, compiled)
    optimiser: torch.optim.Optimizer
    beta: BetaSchedule
    bf16: bool
    loader_workers: int
    val_pass: Callable[..., tuple[torch.Tensor, ...]]  # the held-out notes' loss terms, compiled as the step is
    graph: "_StepGraph | None" = None  # the step recorded as a CUDA graph (one GPU); None steps from Python

    @property
    def steps_per_epoch(self) -> int:
        return self.beta.steps_per_epoch

    def precision(self) -> torch.autocast:
        """The step's autocast (bf16 when ``bf16``), which validation shares."""
        # A recorded graph must not keep autocast's cached bf16 weights: they are not refreshed at a replay.
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                              enabled=self.bf16, cache_enabled=self.graph is None)

    def validate(self) -> dict[str, float]:
        with self.precision():
            return _validate(self.model, self.feats, self.val_idx, self.cfg, self.ctx, self.resident,
                             val_pass=self.val_pass)


def train(data: Corpus | NoteFeatures, out_dir: str | Path, config: RunConfig | None = None, *, resume: bool = False,
          show_progress: bool = True, device: str | torch.device = "cpu", loader_workers: int = 0,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train a VAE (or the AE baseline) on a corpus and write a self-contained run folder.

    Parameters
    ----------
    data : notes to learn: a corpus in memory (see :func:`samplegen.audio.corpus.load_corpus`) or
        their features on disk (see :func:`samplegen.training.feature_cache.build_features`)
    out_dir : run folder; must be new or empty unless ``resume``
    config : run configuration (defaults if None); ignored when resuming, where the
        saved config is used, except that ``train.epochs`` may be raised
    resume : continue from ``out_dir/train_state.safetensors``
    show_progress : draw a progress bar (epoch, loss terms, ETA) on stderr
    device : where to train (in a distributed run, the process group's device)
    loader_workers : processes reading batches ahead (torch DataLoader); 0 reads in this process
    on_epoch : called with (epoch, history row) after each epoch's checkpoint is written; an exception
        it raises (a tuner's "prune this trial") stops training and propagates

    Inside an initialised torch.distributed process group (see
    :mod:`samplegen.training.distributed`) every process takes its share of each batch,
    DDP averages the gradients, and rank 0 alone writes the run folder.

    Returns
    -------
    TrainResult with the run folder and where training stopped.
    """
    started = time.perf_counter()
    ctx = distributed.current()
    device = ctx.device if ctx.distributed else str(device)
    run_dir = Path(out_dir)

    # Settings: the saved ones when resuming. Killed before the first epoch ended: that same run starts over.
    cfg = _agreed_config(run_dir, config, resume, ctx)
    new_folder = not resume  # must be empty (a --resume killed in its first epoch starts over where it was)
    resume = resume and (run_dir / ckpt.STATE_NAME).exists()

    # Data: held-out notes, statistics from the training part only, batches streamed or kept on the device.
    feats = _checked_features(data, cfg)
    val_mask = split_groups(feats, cfg.train.val_fraction, cfg.train.seed, cfg.train.split)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    if len(train_idx) == 0:
        raise TrainingError("the corpus is too small to split; add notes or set train.val_fraction to 0")
    if not resume:  # a resumed run keeps the settings it was started with (its config.json)
        tc = cfg.train.for_corpus(len(train_idx))
        cfg = replace(cfg, train=replace(tc, precision=resolved_precision(tc.precision, device)))
    stats = adjust_stats(fit_stats(feats, train_idx, ctx, magnitude_power=cfg.features.magnitude_power), cfg.phase)

    # Model and optimiser, from the PCA start, or from the saved state when resuming.
    model, optimiser = _model_and_optimiser(cfg, feats, train_idx, stats, device, pca_start=not resume)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.train.batch_size)
    # Validation runs in the step's precision and, like the step, compiled: eager, it took a sixth of an epoch.
    eager_pass = _ValidationPass(model, cfg.train.log_weight > 0)
    val_pass = _CompiledStep(eager_pass, what="validation pass") if cfg.train.compile else eager_pass
    s = _Session(cfg, ctx, device, feats, stats, train_idx, val_idx, _resident_features(feats, device), model,
                 model, optimiser, BetaSchedule.of(cfg, steps_per_epoch), _use_bf16(device, cfg.train.precision),
                 loader_workers, val_pass)
    progress = _starting_progress(s, run_dir / ckpt.STATE_NAME, resume)
    with contextlib.ExitStack() as held:
        if ctx.is_main:
            held.enter_context(_run_folder_lock(run_dir, check_empty=new_folder))
            _prepare_run_folder(run_dir, s, val_mask, resume, progress.history,
                                pca_is_best=math.isfinite(progress.best_val) and not resume)
        stopped_early, check = _train_and_finish(s, run_dir, progress, show_progress, on_epoch)
    return TrainResult(run_dir, len(progress.history), progress.best_epoch, progress.best_val, stopped_early,
                       time.perf_counter() - started, check)


def _train_and_finish(s: _Session, run_dir: Path, progress: _Progress, show_progress: bool,
                      on_epoch: Callable[[int, dict[str, float]], None] | None) -> tuple[bool, PcaCheck | None]:
    """The epochs, then the finished run's last files: whether training stopped early, and the check against PCA."""
    cfg, ctx, device = s.cfg, s.ctx, s.device
    s.net = distributed.wrap(s.model, ctx)  # DDP starts every process from rank 0's weights
    s.graph = _step_graph(s)
    if cfg.train.compile:  # a recorded step holds the compiled kernels itself: no CUDA graphs of their own
        s.net = _CompiledStep(s.net, CUDA_COMPILE_MODE if device.startswith("cuda") and s.graph is None else None)
    _allow_tf32(device)

    # Epochs: train, validate, checkpoint (in the background); stop early after `patience` epochs without progress.
    stopped_early = _train_epochs(s, run_dir, progress, show_progress, on_epoch)

    # Finish: the best weights encode every note, and are measured against the PCA start.
    check = _finish_run(s, run_dir, progress.history) if ctx.is_main else None
    distributed.barrier(ctx)
    return stopped_early, check


def _agreed_config(run_dir: Path, config: RunConfig | None, resume: bool, ctx: distributed.Context) -> RunConfig:
    """The run's settings; when rank 0 refuses to start (a folder in use, nothing to resume) every process stops."""
    refused: TrainingError | None = None
    cfg = RunConfig()
    try:
        cfg = _resolve_config(run_dir, config, resume, check_empty=ctx.is_main)
    except TrainingError as exc:
        refused = exc
    if not distributed.broadcast_flag(refused is None, ctx) or refused is not None:
        raise refused or TrainingError("rank 0 refused to start (see its message)")
    return cfg


def _checked_features(data: Corpus | NoteFeatures, cfg: RunConfig) -> NoteFeatures:
    feats = data if isinstance(data, NoteFeatures) else _features_in_memory(data, cfg)
    if feats.frame_shape != (cfg.model.n_frames, cfg.model.n_bins):
        raise TrainingError(
            f"features are {feats.frame_shape} (frames, bins), the config needs "
            f"{(cfg.model.n_frames, cfg.model.n_bins)}; compute them with the run's data and STFT settings"
        )
    return feats


def _model_and_optimiser(cfg: RunConfig, feats: NoteFeatures, train_idx: np.ndarray, stats: FeatureStats,
                         device: str, pca_start: bool) -> tuple[SampleModel, torch.optim.Optimizer]:
    """The model seeded with ``train.seed`` (at the PCA baseline when ``pca_start`` and ``train.pca_init``) and Adam."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = _new_model(cfg, stats, device)
    if tc.pca_init and pca_start:
        init_model_from_pca(model, feats, pca_rows(train_idx, tc.seed), stats)
    model.to(device)
    # Fused: one kernel per step for every parameter, where the loop over them took a tenth of a CPU step.
    return model, torch.optim.Adam(_parameter_groups(model, tc.pca_lr_scale), lr=tc.learning_rate,
                                   betas=(0.9, tc.adam_beta2), fused=device.split(":")[0] in ("cpu", "cuda"))


#: The layers the PCA start sets (:func:`samplegen.model.network.init_from_pca`), by parameter name.
PCA_STARTED = ("encoder.frame.", "encoder.linear.", "decoder.frame.", "decoder.linear.")


def _parameter_groups(model: SampleModel, pca_lr_scale: float) -> list[dict[str, Any]]:
    """Adam's parameter groups, each with the share of the learning rate it takes (``lr_scale``): the PCA-started
    layers at ``pca_lr_scale``, the rest at 1. One group when the two agree, as runs before format 7 saved."""
    named = list(model.named_parameters())
    if pca_lr_scale == 1.0:
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    return [{"params": [p for n, p in named if not n.startswith(PCA_STARTED)], "lr_scale": 1.0},
            {"params": [p for n, p in named if n.startswith(PCA_STARTED)], "lr_scale": pca_lr_scale}]


def _starting_progress(s: _Session, state_path: Path, resume: bool) -> _Progress:
    """The saved progress (and weights and optimiser state) when resuming; else a fresh start, where the PCA
    start is the best model until an epoch validates better, so training never ends worse than it."""
    if resume:
        return _load_train_state(state_path, s.model, s.optimiser)
    progress = _Progress()
    if s.cfg.train.pca_init and len(s.val_idx):
        progress.best_val = s.validate()["val_loss"]
    return progress


def _prepare_run_folder(run_dir: Path, s: _Session, val_mask: np.ndarray, resume: bool,
                        history: list[dict[str, float]], pca_is_best: bool) -> None:
    """Rank 0's files before the first epoch: config, the corpus index and the statistics."""
    if resume:
        # Latents are written last and mark a finished run; a resumed run is unfinished again.
        (run_dir / ckpt.LATENTS_NAME).unlink(missing_ok=True)
        # The saved state is the record: a kill between its write and history.csv's leaves the csv an epoch short.
        _write_history_csv(run_dir / ckpt.HISTORY_CSV, history)
        saved = ckpt.saved_run_config(run_dir, None)
        if saved is not None and saved.train.epochs != s.cfg.train.epochs:  # raised for this resume: say so
            ckpt.save_run_config(run_dir, s.cfg)
    else:  # the folder exists: _run_folder_lock made it
        ckpt.save_run_config(run_dir, s.cfg)
        if pca_is_best:
            ckpt.save_model(run_dir, s.model)  # the PCA start, best until an epoch validates better
    write_json(run_dir / ckpt.CORPUS_NAME, _corpus_index(s.feats, val_mask).to_json())
    save_tensors(run_dir / ckpt.STATS_NAME, s.stats.to_tensors())


def _allow_tf32(device: str) -> None:
    """TF32 tensor cores for float32 matrix products on a GPU (nanoGPT does the same); CPUs are unaffected."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _train_epochs(s: _Session, run_dir: Path, progress: _Progress, show_progress: bool,
                  on_epoch: Callable[[int, dict[str, float]], None] | None) -> bool:
    """Every epoch left to train; True when training stopped early (also when it had before it was resumed)."""
    tc = s.cfg.train
    if progress.bad_epochs >= tc.patience:  # killed after it had stopped early, while writing its latents
        return True
    writer = _CheckpointWriter()
    bar = tqdm(range(progress.epoch + 1, tc.epochs + 1), initial=progress.epoch, total=tc.epochs, desc="train",
               unit="epoch", disable=not (show_progress and s.ctx.is_main), dynamic_ncols=True)
    stopped_early = False
    for epoch in bar:
        t0 = time.perf_counter()
        totals = _train_epoch(s, epoch)
        if not all(math.isfinite(v) for v in totals):  # the same on every process: all stop before saving
            writer.wait()
            raise TrainingError(
                f"loss became {totals[0] / len(s.train_idx)} at epoch {epoch}; the last good checkpoint in {run_dir} "
                "is kept. Lower train.learning_rate or check the corpus for broken files, then --resume"
            )
        row = {"epoch": epoch, "beta": s.beta.at(epoch * s.steps_per_epoch - 1), "lr": learning_rate_at(epoch, s.cfg)}
        row.update({f"train_{k}": v / len(s.train_idx) for k, v in zip(("loss", "recon", "kl"), totals)})
        row.update(s.validate())
        row["seconds"] = time.perf_counter() - t0
        improved = progress.record(row, held_out=len(s.val_idx) > 0, warming_up=s.beta.warming_up(epoch))
        if s.ctx.is_main:
            writer.submit(_checkpoint_job(run_dir, s.model, s.optimiser, improved, progress.snapshot()))
        if on_epoch is not None:
            writer.wait()  # the callback is promised this epoch's checkpoint on disk
            on_epoch(epoch, row)
        bar.set_postfix(recon=f"{row['train_recon']:.3f}", kl=f"{row['train_kl']:.1f}",
                        val=f"{row['val_loss']:.3f}", refresh=False)
        if progress.bad_epochs >= tc.patience:
            stopped_early = True
            break
    bar.close()
    writer.wait()
    return stopped_early


def _train_epoch(s: _Session, epoch: int) -> list[float]:
    """One pass over the training notes in this epoch's order; the sums of loss, reconstruction and KL over the
    rows of every process (they stay on the device until the epoch ends: no host synchronisation per step)."""
    tc, spe = s.cfg.train, s.steps_per_epoch
    s.model.train()
    order = torch.randperm(len(s.train_idx), generator=_epoch_generator(tc.seed, epoch, 0)).numpy()
    noise = _epoch_generator(tc.seed, epoch, 1)
    shards = distributed.shard_batches(order, tc.batch_size, s.ctx)
    # The epoch's noise is drawn up front (the same numbers, in the same order, as step by step) and sent in
    # one copy: a copy per step would make the host wait for the accelerator at every step.
    step_noise: list[torch.Tensor | None] = [None] * len(shards)
    if s.model.is_variational and shards:
        draws = [sh.noise(torch.randn((sh.n_global, s.cfg.model.latent_dim), generator=noise)) for sh in shards]
        step_noise = list(_to_device(torch.cat(draws), s.device).split([len(d) for d in draws]))
    sums = torch.zeros(3, dtype=torch.float64, device=s.device)
    log_scales: dict[float, torch.Tensor] = {}  # log_l1's weight in each step's loss, a tensor made once per value
    held: StepTerms | None = None  # the last plain step's forward terms (see _optimisation_step)
    for b, (shard, raw) in enumerate(zip(shards, _step_batches(s, [s.train_idx[sh.rows] for sh in shards]))):
        lr = learning_rate_at(epoch, s.cfg, b, spe)
        eps = step_noise[b]
        raw = raw.to(s.device, non_blocking=True)
        if tc.eq_augment_db > 0:
            # drawn for the global batch, as its noise is: several processes train as one would
            curves = shard.noise(random_eq_nepers(shard.n_global, s.cfg.stft.n_bins, s.cfg.data.sample_rate,
                                                  tc.eq_augment_db, step_generator(tc.seed, epoch, b)))
            raw = equalised(raw, curves[: len(raw)], s.cfg.stft.n_bins)
        weight = shard.loss_weight
        log_scale = None
        if tc.log_weight > 0:
            value = tc.log_weight * weight
            log_scale = log_scales.get(value)
            if log_scale is None:
                log_scale = log_scales[value] = torch.tensor(value, device=s.device)
        beta = s.beta.at((epoch - 1) * spe + b)
        if s.graph is not None and s.graph.takes(raw, weight):
            terms = s.graph.step(raw, eps, lr, beta, log_scale)
        else:
            _set_learning_rate(s.optimiser, lr)
            terms, held = _optimisation_step(s, raw, eps, beta, log_scale, weight)
        sums += terms * shard.n_local
    del held
    return distributed.all_reduce_sum(sums.cpu(), s.ctx).tolist()


def _set_learning_rate(optimiser: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate for the next step: ``lr`` times the group's ``lr_scale`` (filled in place where
    it is a tensor, as a recorded step graph reads it)."""
    for group in optimiser.param_groups:
        value = lr * group.get("lr_scale", 1.0)
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def _optimisation_step(s: _Session, raw: torch.Tensor, eps: torch.Tensor | None, beta: float | torch.Tensor,
                       log_scale: torch.Tensor | None, weight: float = 1.0) -> tuple[torch.Tensor, StepTerms]:
    """One step of Adam on a batch; its loss, reconstruction and KL (float64, on the device, not synchronised),
    and the forward pass's terms.

    No host synchronisation and no value read back, so :class:`_StepGraph` records this same function. The plain
    loop holds the terms until its next step has run: on a CPU, freeing the log head's batch-sized seeds while the
    heap is nearly empty lets glibc hand those pages back and fault fresh ones in at every step, which made an
    epoch 13 % slower (BENCHMARKS.md, "The step as one function, on this CPU"), unless the process keeps large buffers
    (``runtime.keep_large_buffers``, which the command calls)."""
    tc = s.cfg.train
    with s.precision():
        terms = s.net(raw, eps, log_scale)
    recon = terms.recon + tc.log_weight * terms.log_l1
    loss = recon + beta * terms.kl
    s.optimiser.zero_grad(set_to_none=True)
    # A log head's log_l1 is a value alone here; its gradient comes as seeds (SampleModel.forward).
    torch.autograd.backward([loss if weight == 1.0 else loss * weight, *(t for t, _ in terms.seeds)],
                            [None, *(g for _, g in terms.seeds)])
    torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
    s.optimiser.step()
    return torch.stack([loss, recon, terms.kl]).detach().double(), terms


class _StepGraph:
    """The whole optimisation step of a full batch recorded once as a CUDA graph, then replayed.

    On a GPU at the default batch a step's kernels take about 1 ms and launching them from Python about 4
    (BENCHMARKS.md, "GPU speed"); a replay launches them all at once. A graph replays fixed addresses, so the
    batch and its noise are copied into buffers it reads, the learning rate and KL weight are device tensors
    filled before each replay, and Adam is capturable with a tensor learning rate. The first
    :attr:`WARMUP` full steps run eagerly on a side stream (compiling, creating Adam's moments and cuBLAS's
    workspace), as torch's CUDA-graph notes ask. An epoch's shorter last batch is launched step by step from
    Python, and so is every step after a recording that failed (with a warning). With ``record`` False (a CPU:
    the tests) the same buffers and tensors are used and nothing is recorded.
    """

    WARMUP = 3

    def __init__(self, s: _Session, record: bool) -> None:
        self.s, self.record = s, record
        device = torch.device(s.device)
        for group in s.optimiser.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
            group["capturable"] = record
        self.beta = torch.zeros((), device=device)
        self.stream = torch.cuda.Stream(device) if record else None
        self.graph: Any = None
        self.raw: torch.Tensor | None = None
        self.eps: torch.Tensor | None = None
        self.log_scale: torch.Tensor | None = None
        self.terms = torch.zeros(3, dtype=torch.float64, device=device)
        self.eager_steps = 0
        self.failed = False

    def takes(self, raw: torch.Tensor, weight: float) -> bool:
        """Whether this batch can be the recorded step: a full batch of a single process's loss."""
        return not self.failed and weight == 1.0 and len(raw) == self.s.cfg.train.batch_size

    def step(self, raw: torch.Tensor, eps: torch.Tensor | None, lr: float, beta: float,
             log_scale: torch.Tensor | None) -> torch.Tensor:
        """One optimisation step on ``raw``, the same as :func:`_optimisation_step`'s; its three loss terms."""
        _set_learning_rate(self.s.optimiser, lr)
        self.beta.fill_(beta)
        if self.raw is None:  # the buffers a recorded step reads, filled below at every step
            self.raw, self.eps = torch.empty_like(raw), None if eps is None else torch.empty_like(eps)
            self.log_scale = None if log_scale is None else torch.empty_like(log_scale)
        for buffer, value in ((self.raw, raw), (self.eps, eps), (self.log_scale, log_scale)):
            if buffer is not None and value is not None:
                buffer.copy_(value)
        if not self.record:
            return self._from_buffers()
        if self.graph is None and self.eager_steps < self.WARMUP:
            self.eager_steps += 1
            return self._on_side_stream()
        if self.graph is None:
            try:
                self._capture()
            except Exception as exc:  # noqa: BLE001 - training goes on step by step, as without a graph
                self._give_up(exc)
                return self._from_buffers()
        self.graph.replay()
        return self.terms

    def _from_buffers(self) -> torch.Tensor:
        assert self.raw is not None
        return _optimisation_step(self.s, self.raw, self.eps, self.beta, self.log_scale)[0]

    def _on_side_stream(self) -> torch.Tensor:
        assert self.stream is not None
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            terms = self._from_buffers()
        torch.cuda.current_stream().wait_stream(self.stream)
        return terms

    def _capture(self) -> None:
        """Record the step (recording runs nothing: the caller replays it for this batch)."""
        assert self.stream is not None
        torch.cuda.current_stream().wait_stream(self.stream)
        torch.cuda.synchronize()
        self.s.optimiser.zero_grad(set_to_none=True)  # the recorded backward pass allocates them in its pool
        graph = torch.cuda.CUDAGraph()
        # thread_local: the checkpoint writer's thread may copy files while this thread records
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            terms = self._from_buffers()
            self.terms.copy_(terms)
        self.graph = graph

    def _give_up(self, exc: Exception) -> None:
        self.failed, self.graph = True, None
        self.s.optimiser.zero_grad(set_to_none=True)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"the training step could not be recorded as a CUDA graph ({type(exc).__name__}: {first}); "
                      "training goes on step by step", stacklevel=3)


def _step_batches(s: _Session, rows: list[np.ndarray]) -> Iterable[torch.Tensor]:
    """The features of each step's rows: indexed on the device where they live there, else read ahead by a DataLoader."""
    if s.resident is not None and rows:
        resident = s.resident
        indices = _to_device(torch.from_numpy(np.concatenate(rows)), s.device).split([len(r) for r in rows])
        return (resident[i] for i in indices)
    return torch.utils.data.DataLoader(_StepBatches(s.feats, rows), batch_size=None, num_workers=s.loader_workers,
                                       pin_memory=s.device.startswith("cuda"))


def _to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory, so the copy does not wait for queued work."""
    if device.startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _finish_run(s: _Session, run_dir: Path, history: list[dict[str, float]]) -> "PcaCheck":
    """Rank 0's last files (latents, the loss curves) and the end-of-training check against the PCA start."""
    _write_latents(run_dir, s.model, s.feats, s.stats, s.device, s.resident)
    _plot_history(run_dir / ckpt.HISTORY_PNG, history)
    check = _check_against_pca(s.model, s.cfg, s.feats, s.stats, s.train_idx, s.val_idx, s.resident)
    if check.worse:
        warnings.warn(check.message(), stacklevel=3)
    return check


#: Training notes the end-of-training PCA check measures when no note is held out.
PCA_CHECK_NOTES = 256


def _new_model(cfg: RunConfig, stats: FeatureStats, device: str) -> SampleModel:
    """A model drawn from torch's generator, with the feature map its log_l1 term and log head read."""
    model = SampleModel(cfg.model)
    n_bins = cfg.stft.n_bins  # the magnitude's statistics; an IF run's follow them
    model.decoder.set_feature_map(stats.mean[:n_bins], stats.std[:n_bins], stats.magnitude_power)
    model.attach_feature_stats(replace(stats, mean=stats.mean.to(device), std=stats.std.to(device)))
    return model


def _check_against_pca(model: SampleModel, cfg: RunConfig, feats: NoteFeatures, stats: FeatureStats,
                       train_idx: np.ndarray, val_idx: np.ndarray, resident: torch.Tensor | None = None) -> PcaCheck:
    """The best weights (loaded in ``model`` by :func:`_write_latents`) against the PCA start, rebuilt here."""
    rows, notes = (val_idx, "held-out") if len(val_idx) else (train_idx[:PCA_CHECK_NOTES], "training")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        start = _new_model(cfg, stats, str(device))
    init_model_from_pca(start, feats, pca_rows(train_idx, cfg.train.seed), stats)
    alone = distributed.Context()
    trained = _validate(model, feats, rows, cfg, alone, resident)["val_recon"]
    return PcaCheck(trained, _validate(start.to(device), feats, rows, cfg, alone, resident)["val_recon"], notes)


def _write_latents(run_dir: Path, model: SampleModel, feats: NoteFeatures, stats: FeatureStats, device: str,
                   resident: torch.Tensor | None = None) -> None:
    """The best weights encode the whole corpus: these latents feed maps, the instrument and names on the CLI."""
    best = ckpt.load_weights(run_dir / ckpt.MODEL_NAME)
    model.load_state_dict(best)
    model.eval()
    with torch.no_grad():
        mus, logvars = [], []
        for batch in _batches(feats, resident, np.arange(len(feats)), 128, device):
            mu, logvar = model.encode(stats.normalise(batch))
            mus.append(mu.cpu())
            logvars.append(logvar.cpu() if logvar is not None else torch.zeros_like(mu.cpu()))
    tensors = {"mu": torch.cat(mus)}
    if model.is_variational:
        tensors["logvar"] = torch.cat(logvars)
    save_tensors(run_dir / ckpt.LATENTS_NAME, tensors)


def _batches(feats: NoteFeatures, resident: torch.Tensor | None, idx: np.ndarray, size: int, device: str | torch.device
             ) -> Iterator[torch.Tensor]:
    """Rows ``idx`` in batches on ``device``: indexed where they already live there, else read and copied."""
    if resident is None:
        for raw in feats.batches(idx, size):
            yield raw.to(device)
        return
    for start in range(0, len(idx), size):
        yield resident[torch.from_numpy(np.asarray(idx[start : start + size])).to(resident.device)]


def _validate(model: SampleModel, feats: NoteFeatures, val_idx: np.ndarray, cfg: RunConfig,
              ctx: distributed.Context, resident: torch.Tensor | None = None, batch: int | None = None,
              val_pass: Callable[..., tuple[torch.Tensor, ...]] | None = None) -> dict[str, float]:
    """Validation at the posterior mean with the full β, so the criterion does not move during warm-up.

    Each process measures its share of the held-out notes; the sums are added over processes. ``val_pass`` is
    the model's :class:`_ValidationPass` (compiled, in training); the eager one when None.
    """
    if len(val_idx) == 0:
        return {"val_loss": math.nan, "val_recon": math.nan, "val_kl": math.nan}
    model.eval()
    terms = val_pass or _ValidationPass(model, cfg.train.log_weight > 0)
    device = next(model.parameters()).device
    sums = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        recon_t = torch.zeros((), dtype=torch.float64, device=device)
        kl_t = torch.zeros((), dtype=torch.float64, device=device)
        size = batch or _validation_batch(device)
        for raw in _batches(feats, resident, distributed.rows_of(val_idx, ctx), size, device):
            mse, log_l1, kl = terms(raw)
            recon_t += (mse.double() + cfg.train.log_weight * log_l1.double()) * len(raw)
            kl_t += kl.double()
        sums[0], sums[1] = recon_t.item(), kl_t.item()
    distributed.all_reduce_sum(sums, ctx)
    n = len(val_idx)
    recon, kl = float(sums[0]), float(sums[1])
    beta = BetaSchedule.of(cfg, steps_per_epoch=1).full
    return {"val_loss": recon / n + beta * kl / n, "val_recon": recon / n, "val_kl": kl / n}


def _validation_batch(device: torch.device) -> int:
    """Notes per validation pass. On a CPU, 16 notes' tensors (11 MB each) stay in cache through the log head's
    dozen element-wise passes: about twice as fast as 128 notes, and the float32 sums are nearer the exact ones."""
    return 16 if device.type == "cpu" else 128


def _corpus_index(corpus: Corpus | NoteFeatures, val_mask: np.ndarray) -> ckpt.CorpusIndex:
    return ckpt.CorpusIndex(
        names=[e.name for e in corpus.entries],
        families=[e.family for e in corpus.entries],
        presets=[e.preset for e in corpus.entries],
        splits=["val" if v else "train" for v in val_mask],
        files=[e.file for e in corpus.entries],
        corpus_path=str(Path(corpus.root).resolve()),
        pitches_hz=[e.pitch_hz for e in corpus.entries],
        retuned_cents=[e.retuned_cents for e in corpus.entries],
    )


class _CheckpointWriter:
    """Writes each epoch's checkpoint on a background thread, one at a time, so that on a GPU the next
    epoch trains while the last one's files reach the disk; an error in a write is raised by the next call."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name="samplegen-checkpoint")
        self._thread.start()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the last write is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _checkpoint_job(run_dir: Path, model: SampleModel, optimiser: torch.optim.Optimizer, improved: bool,
                    progress: _Progress) -> Callable[[], None]:
    """Copies of this epoch's weights and optimiser state (training goes on changing the originals) and
    the writes that put them on disk: the best weights first, then the state that names them, then the history."""
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    opt_state = optimiser.state_dict()
    opt_state = {"state": {i: {k: torch.as_tensor(v).detach().to("cpu", copy=True) for k, v in slots.items()}
                           for i, slots in opt_state["state"].items()},
                 "param_groups": [_saved_group(g) for g in opt_state["param_groups"]]}

    def job() -> None:
        if improved:
            ckpt.save_model(run_dir, model, weights)
        _save_train_state(run_dir / ckpt.STATE_NAME, weights, opt_state, progress)
        _write_history_csv(run_dir / ckpt.HISTORY_CSV, progress.history)

    return job


def _saved_group(group: dict[str, Any]) -> dict[str, Any]:
    """An optimiser group as JSON keeps it: a step graph's tensor learning rate as a number, and not capturable
    (a resumed run decides that again for its own device)."""
    group = copy.deepcopy(group)
    group["lr"] = float(group["lr"])
    group["capturable"] = False
    return group


def _save_train_state(path: Path, weights: dict[str, torch.Tensor], opt_state: dict[str, Any],
                      progress: _Progress) -> None:
    tensors = {f"model.{k}": v for k, v in weights.items()}
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value)
    meta = {
        "format": "samplegen-train-state",
        "format_version": str(TRAIN_STATE.current),
        "epoch": str(progress.epoch),
        "best_val": repr(progress.best_val),
        "best_epoch": str(progress.best_epoch),
        "bad_epochs": str(progress.bad_epochs),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "history": json.dumps(progress.history),
    }
    save_tensors(path, tensors, metadata=meta)


def _load_train_state(path: Path, model: SampleModel, optimiser: torch.optim.Optimizer) -> _Progress:
    tensors, meta = ckpt.load_tensors(path)
    try:
        if meta.get("format") != "samplegen-train-state":
            raise ValueError("not a training state")
        check_version(TRAIN_STATE, meta.get("format_version"), path)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(weights)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, slot = key.split(".", 2)
                state.setdefault(int(idx), {})[slot] = value
        params = [p for group in optimiser.param_groups for p in group["params"]]
        for number, slots in state.items():  # Adam takes moments of another shape without complaint, then fails
            for name, value in slots.items():
                if name != "step" and value.shape != params[number].shape:
                    raise ValueError(f"optimiser state {number}.{name} has shape {tuple(value.shape)}")
        optimiser.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        history = json.loads(meta["history"])
        if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
            raise ValueError("its history is not a list of epochs")
        return _Progress(int(meta["epoch"]), float(meta["best_val"]), int(meta["best_epoch"]), int(meta["bad_epochs"]),
                         history)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, RecursionError) as exc:
        raise CheckpointError(f"{path} cannot be resumed from ({exc}); start a new run") from None


def _write_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in HISTORY_FIELDS})
    text = buf.getvalue()
    atomic_write(path, lambda fh: fh.write(text), mode="w")


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
    axes[0].set_title("reconstruction (MSE, normalised features)")
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
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))
