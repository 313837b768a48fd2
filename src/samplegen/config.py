"""The full configuration of a run: data, STFT, feature, model, training and phase settings.

A run's config.json is this, resolved (every value explicit), so the model
can be rebuilt from it alone; `samplegen train --config FILE` reads the same
layout with any subset of keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from samplegen import dataclass_io
from samplegen.errors import ParameterError, check_seed
from samplegen.formats import RUN_CONFIG, check_version
from samplegen.model.network import ModelConfig
from samplegen.spectral.features import LEGACY_MAGNITUDE_POWER, FeatureConfig
from samplegen.spectral.phase_features import PhaseConfig
from samplegen.spectral.stft import StftConfig

#: Keys a run saved before format 3 lacks, with the values it was trained with (not today's defaults).
BEFORE_FORMAT_3: dict[str, dict[str, Any]] = {"model": {"frame_hidden": 0}, "train": {"log_weight": 0.0, "adam_beta2": 0.999, "lr_warmup_epochs": 0}}
#: ... and keys a run saved before format 4 lacks.
BEFORE_FORMAT_4: dict[str, dict[str, Any]] = {"model": {"log_head": False}}
#: ... and before format 5 (a format-4 log head wrote the quiet bins' level itself).
BEFORE_FORMAT_5: dict[str, dict[str, Any]] = {"model": {"log_head_residual": False}}
#: ... and before format 6 (log σ² was clamped at 20, not kept below 0).
BEFORE_FORMAT_6: dict[str, dict[str, Any]] = {"model": {"logvar_ceiling": False}}
#: ... and before format 7 (every layer learned at the same rate).
BEFORE_FORMAT_7: dict[str, dict[str, Any]] = {"train": {"pca_lr_scale": 1.0}}
#: ... and before format 8 (the log head was a linear frame layer alone).
BEFORE_FORMAT_8: dict[str, dict[str, Any]] = {"model": {"log_head_hidden": 0}}
#: ... and before format 9 (no training note went through an equaliser).
BEFORE_FORMAT_9: dict[str, dict[str, Any]] = {"train": {"eq_augment_db": 0.0}}
#: train.log_weight measured for each decoder: without the log head the log loss reaches every bin, and 0.3
#: already made 4-5 % of blends dip; with it, it reaches only the quiet bins (BENCHMARKS.md, Fidelity).
NO_HEAD_LOG_WEIGHT = 0.1
HEAD_LOG_WEIGHT = 0.5
SPLITS = ("note", "instrument")
#: Fewest optimisation steps an epoch of a small corpus takes with the default batch size (see
#: :meth:`TrainConfig.for_corpus`).
SMALL_CORPUS_STEPS_PER_EPOCH = 8
PRECISIONS = ("auto", "fp32", "bf16")
#: Beyond this the equaliser's bells (two standard deviations of it) would no longer leave a note that note.
MAX_EQ_AUGMENT_DB = 12.0
#: Learning rate of the PCA-started layers as a share of the rest's (BENCHMARKS.md, "A slower PCA start";
#: 0.1 until the twelfth session, "A wider log head").
PCA_LR_SCALE = 0.03
SAMPLE_RATE = 44100


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    beta : weight of the KL term (per-element MSE + beta · KL summed over latent dims)
    adam_beta2 : Adam's second-moment decay (runs before format 3: 0.999)
    lr_warmup_epochs : the learning rate ramps linearly from 0 over this many epochs, step by step
        (runs before format 3: 0); keeps Adam's first, largest steps from throwing the model off its
        PCA start, which showed as loss spikes of 100-1000x in the first epochs of wider models
    log_weight : weight of the log-magnitude L1 term beside the feature MSE (0: none, as in runs
        before format 3); it weighs quiet bins as the log-spectral distance does. With ``model.log_head``
        it trains the quiet bins alone (the loud ones learn from the MSE)
    learning_rate : Adam's step size at the start; it follows a cosine down to a tenth of
        that by the last epoch (a pure function of the epoch, like everything else)
    kl_warmup_epochs : beta ramps linearly from 0 over this many epochs (a pure function
        of the step, so a resumed run sees exactly the same schedule)
    patience : early stopping after this many epochs without a better validation loss
    val_fraction : share of the corpus held out for validation and early stopping
    split : "note" holds out random notes; "instrument" holds out whole presets (every
        velocity layer of a held-out instrument is unseen: the harder test)
    pca_init : start from the PCA baseline (see samplegen.model.network.init_from_pca)
    precision : "bf16" for bfloat16 autocast of the forward and backward passes (validation, checkpoints
        and generation stay float32), "fp32", or "auto": bf16 on a CPU with native bf16 instructions
        (AVX512-BF16, AMX), where a compiled step takes 0.56 of fp32's time, and fp32 everywhere else (on a
        GPU bf16 was slower at the default batch size, docs/scaling.md). A run's config.json records the
        precision it trained with, never "auto"
    compile : run each step's forward pass and losses through ``torch.compile``, which fuses the
        elementwise passes of the losses (a step about 1.5x faster on the 2-core CPU, BENCHMARKS.md); the
        same model and numbers up to float rounding; on a GPU the compiled step replays as CUDA graphs
        (1.6x the samples/s at batch 32 on an H100, docs/scaling.md). Where it cannot compile (no C++
        compiler) training goes on eagerly after a one-line warning; false skips the attempt and its one-time compile
    pca_lr_scale : the learning rate of the layers the PCA start sets (the frame layers and the linear paths),
        as a share of ``learning_rate`` (runs before format 7: 1). Adam moves every weight by about the learning
        rate whatever its gradient, and the linear path (5,536 wide then, 11,072 with the frame code of 64) turned that into jumps of μ that threw the
        model off its PCA start in the first epochs (training error up by 70 %, BENCHMARKS.md); at 0.03 (a tenth
        until the twelfth session), the nonlinear layers learn what PCA misses while the PCA parts move slowly
    """

    # 150 until the tenth session, 120 until the twelfth, 110 in it, 140 in the thirteenth, 120 until the sixteenth:
    # what fits 10 minutes here (93 epochs of the default corpus with its mixtures take as long as 120 without)
    epochs: int = 93
    batch_size: int = 32
    learning_rate: float = 3e-3  # 1e-3 until the seventh session, 2e-3 until the eighth: BENCHMARKS.md, "Learning rate 3e-3"
    beta: float = 1e-4
    # A config file that leaves it out gets the weight measured for its decoder: HEAD_LOG_WEIGHT with the log
    # head, NO_HEAD_LOG_WEIGHT without (0.3 without the head: better LSD, but 4-5 % of blends dip; BENCHMARKS.md)
    log_weight: float = HEAD_LOG_WEIGHT
    adam_beta2: float = 0.99
    lr_warmup_epochs: int = 5
    kl_warmup_epochs: int = 2  # found by `samplegen tune` (BENCHMARKS.md, Tuning)
    patience: int = 40
    val_fraction: float = 0.2
    grad_clip: float = 5.0
    split: str = "note"
    pca_init: bool = True
    seed: int = 0
    precision: str = "auto"
    compile: bool = True
    pca_lr_scale: float = PCA_LR_SCALE
    eq_augment_db: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name}={value!r} must be a positive integer")
        if not isinstance(self.lr_warmup_epochs, int) or self.lr_warmup_epochs < 0:
            raise ParameterError(f"lr_warmup_epochs={self.lr_warmup_epochs!r} must be an integer >= 0")
        if self.kl_warmup_epochs < 0:
            raise ParameterError(f"kl_warmup_epochs={self.kl_warmup_epochs} must be >= 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ParameterError(f"learning_rate={self.learning_rate} must be a positive number")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ParameterError(f"beta={self.beta} must be a non-negative number")
        if not (isinstance(self.adam_beta2, (int, float)) and 0.0 < self.adam_beta2 < 1.0):
            raise ParameterError(f"adam_beta2={self.adam_beta2} must be in (0, 1)")
        if not (math.isfinite(self.log_weight) and self.log_weight >= 0):
            raise ParameterError(f"log_weight={self.log_weight} must be a non-negative number")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ParameterError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.split not in SPLITS:
            raise ParameterError(f"split={self.split!r} must be one of {SPLITS}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if not (math.isfinite(self.pca_lr_scale) and 0 < self.pca_lr_scale <= 1):
            raise ParameterError(f"pca_lr_scale={self.pca_lr_scale} must be in (0, 1]")
        if not (math.isfinite(self.eq_augment_db) and 0 <= self.eq_augment_db <= MAX_EQ_AUGMENT_DB):
            raise ParameterError(f"eq_augment_db={self.eq_augment_db} must be from 0 to {MAX_EQ_AUGMENT_DB:g} (dB)")
        check_seed(self.seed)
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ParameterError(f"grad_clip={self.grad_clip} must be a positive number")

    def for_corpus(self, n_train: int) -> "TrainConfig":
        """These settings adapted to ``n_train`` training notes: the default batch size shrinks so that an epoch
        is at least ``SMALL_CORPUS_STEPS_PER_EPOCH`` optimisation steps.

        The schedules count epochs, and at 32 notes a batch a 25-note corpus takes one step an epoch: 93 steps
        in all, the learning rate warmed up over 5 of them and the KL term switched fully on after 2, which threw
        the model off its PCA start. With the epoch as 8 steps, the warm-ups keep their share of the steps
        (3 % and 1 %) over 8 times as many. A batch size set to anything but the default is kept.
        """
        default = TrainConfig.__dataclass_fields__["batch_size"].default
        if self.batch_size != default or math.ceil(n_train / self.batch_size) >= SMALL_CORPUS_STEPS_PER_EPOCH:
            return self
        return replace(self, batch_size=max(1, n_train // SMALL_CORPUS_STEPS_PER_EPOCH))


@dataclass(frozen=True)
class DataConfig:
    """How notes are prepared: duration in seconds at 44.1 kHz mono."""

    duration_s: float = 2.0
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration_s) and 0.1 <= self.duration_s <= 30.0):
            raise ParameterError(f"duration_s={self.duration_s} must be between 0.1 and 30 seconds")
        if self.sample_rate != SAMPLE_RATE:
            raise ParameterError(f"sample_rate={self.sample_rate} must be {SAMPLE_RATE}")

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild and use a model."""

    data: DataConfig = field(default_factory=DataConfig)
    stft: StftConfig = field(default_factory=StftConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)

    def __post_init__(self) -> None:
        if self.phase.mode == "if" and self.features.magnitude_power != LEGACY_MAGNITUDE_POWER:
            raise ParameterError(f'phase.mode="if" learns IF beside the log magnitude; set features.magnitude_power '
                                 f'to {LEGACY_MAGNITUDE_POWER:g} (it is {self.features.magnitude_power:g})')
        if self.uses_log_head and self.train.log_weight <= 0:
            raise ParameterError("model.log_head learns from the log-magnitude loss: set train.log_weight above 0 "
                                 "or model.log_head to false")

    @property
    def uses_log_head(self) -> bool:
        """``model.log_head``, which only a compressed-magnitude run without IF has (log features need none)."""
        return self.model.log_head and self.features.magnitude_power > 0 and self.phase.mode == "none"

    def resolved(self) -> "RunConfig":
        """The same config with the model's frame size derived from data, STFT and phase settings.

        ``model.n_bins`` is the number of values per frame the model reads: the STFT's bins, twice
        that when the model also learns instantaneous frequency (``phase.mode = "if"``).
        """
        model = replace(self.model, n_bins=self.stft.n_bins * self.phase.channels,
                        n_frames=self.stft.n_frames(self.data.n_samples), log_head=self.uses_log_head)
        return replace(self, model=model)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": RUN_CONFIG.current,
            "data": dataclass_io.to_dict(self.data),
            "stft": self.stft.to_dict(),
            "features": dataclass_io.to_dict(self.features),
            "model": dataclass_io.to_dict(self.model),
            "train": dataclass_io.to_dict(self.train),
            "phase": dataclass_io.to_dict(self.phase),
        }

    @classmethod
    def from_dict(cls, data: Any, require_version: bool = True) -> "RunConfig":
        """Validate and build; unknown sections or keys and wrong types are errors.

        The format version is checked against :data:`samplegen.formats.RUN_CONFIG` (a user's file
        may leave it out when ``require_version`` is false). A run saved in format 1 has no "features"
        section: it was trained on the log magnitude; one saved before format 3 lacks the keys in
        :data:`BEFORE_FORMAT_3`. A file without ``train.log_weight`` gets the weight measured for its
        decoder (:data:`HEAD_LOG_WEIGHT` with the log head, :data:`NO_HEAD_LOG_WEIGHT` without).
        """
        if not isinstance(data, dict):
            raise ParameterError("config must be a JSON object")
        allowed = {"format_version", "data", "stft", "features", "model", "train", "phase"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ParameterError(f"config has unknown section(s) {unknown}; allowed: {sorted(allowed)}")
        found = data.get("format_version")
        version = None
        if require_version or found is not None:
            version = check_version(RUN_CONFIG, found, "config", ParameterError)
        features = data.get("features", {"magnitude_power": LEGACY_MAGNITUDE_POWER} if version == 1 else {})
        model, train = data.get("model", {}), data.get("train", {})
        if version in (1, 2) and isinstance(model, dict) and isinstance(train, dict):
            model = {**BEFORE_FORMAT_3["model"], **model}
            train = {**BEFORE_FORMAT_3["train"], **train}
        if version in (1, 2, 3) and isinstance(model, dict):
            model = {**BEFORE_FORMAT_4["model"], **model}
        if version in (1, 2, 3, 4) and isinstance(model, dict):
            model = {**BEFORE_FORMAT_5["model"], **model}
        if version in (1, 2, 3, 4, 5) and isinstance(model, dict):
            model = {**BEFORE_FORMAT_6["model"], **model}
        if version in (1, 2, 3, 4, 5, 6) and isinstance(train, dict):
            train = {**BEFORE_FORMAT_7["train"], **train}
        if version in (1, 2, 3, 4, 5, 6, 7) and isinstance(model, dict):
            model = {**BEFORE_FORMAT_8["model"], **model}
        if version in (1, 2, 3, 4, 5, 6, 7, 8) and isinstance(train, dict):
            train = {**BEFORE_FORMAT_9["train"], **train}
        if version is not None and isinstance(train, dict) and "precision" not in train:
            train = {**train, "precision": "fp32"}  # a run saved before the option trained in fp32
        cfg = cls(
            data=dataclass_io.from_dict(DataConfig, data.get("data", {}), "data"),
            stft=StftConfig.from_dict(data.get("stft", {})),
            features=dataclass_io.from_dict(FeatureConfig, features, "features"),
            model=dataclass_io.from_dict(ModelConfig, model, "model"),
            train=dataclass_io.from_dict(TrainConfig, train, "train"),
            # Runs written before the option existed have no "phase" section: magnitude only.
            phase=dataclass_io.from_dict(PhaseConfig, data.get("phase", {}), "phase"),
        )
        if isinstance(train, dict) and "log_weight" not in train:  # the weight measured for this decoder
            weight = HEAD_LOG_WEIGHT if cfg.uses_log_head else NO_HEAD_LOG_WEIGHT
            cfg = replace(cfg, train=replace(cfg.train, log_weight=weight))
        return cfg


def load_config_file(path: str | Path) -> RunConfig:
    """Read a user's config file (any subset of sections and keys; defaults fill the rest).

    Example file::

        {"model": {"latent_dim": 16, "hidden": [512, 256, 128, 64]}, "train": {"beta": 0.0001},
         "features": {"magnitude_power": 0.5}}
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParameterError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"config file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return RunConfig.from_dict(data, require_version=False)
