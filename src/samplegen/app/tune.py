"""Hyper-parameter search (the seed's fourth test area) as a resumable, shareable Optuna study.

Each trial trains a model with sampled settings for a fixed epoch budget, reports its validation loss
every epoch (so Optuna's median pruner can stop poor trials early), and is scored by the held-out
log-spectral distance of its reconstructions. Generation health is a constraint: a trial whose prior
draws come out silent or noise-like (more than ``MAX_UNHEALTHY``) is infeasible, so the search cannot win
by collapsing the latent space. The study lives in an RDB storage (SQLite in the output folder unless
another SQLAlchemy URL is given), so a killed study resumes and several workers can share one.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from samplegen import checkpoint as ckpt
from samplegen.audio.corpus import Corpus, load_corpus
from samplegen.config import HEAD_LOG_WEIGHT, NO_HEAD_LOG_WEIGHT, RunConfig
from samplegen.errors import ParameterError, check_seed
from samplegen.evaluation import metrics
from samplegen.evaluation.evaluate import generation_health, health_thresholds, measured_notes, measured_splits
from samplegen.files import atomic_write, refuse_a_folder_of_other_files, write_json
from samplegen.generation.generate import decode
from samplegen.spectral.stft import StftConfig
from samplegen.training.distributed import resolve_device
from samplegen.training.train import train

#: Largest fraction of silent plus noise-like prior draws a feasible trial may have.
MAX_UNHEALTHY = 0.01
BEST_CONFIG = "best_config.json"
N_HEALTH_DRAWS = 200
N_HEALTH_PATHS = 20
#: Most finished trials a study may be asked for: each trains a model, so more would run for months.
MAX_TRIALS = 1000


@dataclass(frozen=True)
class TuneResult:
    """Where the study stands after this call."""

    study_name: str
    storage: str
    n_finished: int
    best_value: float | None
    best_config: Path | None
    summary: Path


FIRST_WIDTHS = (128, 256, 384, 512)
N_FFTS = (1024, 2048)
LATENT_DIMS = (8, 12, 16, 24, 32)
FRAME_DIMS = (16, 32, 48, 64)
FRAME_HIDDENS = (0, 64, 128, 256)
#: With or without the log head; each with the log weight measured for it (not searched: heavier log weights
#: without the head make blends dip, which the study does not judge).
LOG_HEADS = (False, True)
BATCH_SIZES = (16, 32, 64)
#: Each dense layer's width over the one before: up to 1, the default's equal widths (sixteenth session); a study
#: that scores held-out LSD alone will favour wide layers, whose blends dip more without the corpus's mixtures.
SHRINK = (0.4, 1.0)
BETA = (1e-5, 1e-2)
LEARNING_RATE = (3e-4, 3e-3)
#: KL warm-up as a fraction of the epoch budget, so a short trial warms up as a full run would.
WARMUP_FRACTION = (0.0, 0.3)


def sample_config(trial: Any, base: RunConfig, epochs: int) -> RunConfig:
    """The search space: dense layers 3-5 and their widths (geometric from the first), latent size, frame size,
    the per-frame network's width, the log head, β, KL warm-up (as a fraction of the epochs), learning rate, batch
    size and the STFT size (hop a quarter of it). Trials train eagerly (``train.compile`` false)."""
    n_layers = trial.suggest_int("n_layers", 3, 5)
    first = trial.suggest_categorical("first_width", FIRST_WIDTHS)
    shrink = trial.suggest_float("width_shrink", *SHRINK)
    hidden = tuple(max(16, int(round(first * shrink**i))) for i in range(n_layers))
    n_fft = trial.suggest_categorical("n_fft", N_FFTS)
    log_head = trial.suggest_categorical("log_head", LOG_HEADS)
    model = replace(base.model, hidden=hidden, latent_dim=trial.suggest_categorical("latent_dim", LATENT_DIMS),
                    frame_dim=trial.suggest_categorical("frame_dim", FRAME_DIMS),
                    frame_hidden=trial.suggest_categorical("frame_hidden", FRAME_HIDDENS), log_head=log_head)
    warmup = trial.suggest_float("kl_warmup_fraction", *WARMUP_FRACTION)
    tc = replace(base.train, epochs=epochs, beta=trial.suggest_float("beta", *BETA, log=True),
                 log_weight=HEAD_LOG_WEIGHT if log_head else NO_HEAD_LOG_WEIGHT,
                 kl_warmup_epochs=int(round(warmup * epochs)),
                 learning_rate=trial.suggest_float("learning_rate", *LEARNING_RATE, log=True),
                 batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES), patience=max(5, epochs // 3),
                 compile=False)  # each trial a new shape to compile; dynamo recompiles a function 8 times at most
    return replace(base, stft=StftConfig(n_fft=n_fft, hop_length=n_fft // 4), model=model, train=tc).resolved()


def base_params(base: RunConfig) -> dict[str, Any] | None:
    """The base configuration as a point of the search space (its layer widths made geometric), or None
    where it lies outside it. A new study tries it first, so the search starts from the known-good settings
    and the study itself measures them at its epoch budget."""
    m, t = base.model, base.train
    n = len(m.hidden)
    shrink = (m.hidden[-1] / m.hidden[0]) ** (1.0 / (n - 1)) if n > 1 else 1.0
    warmup = t.kl_warmup_epochs / max(t.epochs, 1)
    inside = (3 <= n <= 5 and m.hidden[0] in FIRST_WIDTHS and SHRINK[0] <= shrink <= SHRINK[1]
              and base.stft.n_fft in N_FFTS and base.stft.hop_length == base.stft.n_fft // 4
              and m.latent_dim in LATENT_DIMS and m.frame_dim in FRAME_DIMS and t.batch_size in BATCH_SIZES
              and m.frame_hidden in FRAME_HIDDENS
              and t.log_weight == (HEAD_LOG_WEIGHT if m.log_head else NO_HEAD_LOG_WEIGHT)
              and BETA[0] <= t.beta <= BETA[1] and LEARNING_RATE[0] <= t.learning_rate <= LEARNING_RATE[1]
              and WARMUP_FRACTION[0] <= warmup <= WARMUP_FRACTION[1])
    if not inside:
        return None
    return {"n_layers": n, "first_width": m.hidden[0], "width_shrink": shrink, "n_fft": base.stft.n_fft,
            "latent_dim": m.latent_dim, "frame_dim": m.frame_dim, "frame_hidden": m.frame_hidden,
            "log_head": m.log_head, "kl_warmup_fraction": warmup, "beta": t.beta,
            "learning_rate": t.learning_rate, "batch_size": t.batch_size}


def heldout_lsd_db(run_dir: Path, corpus: Corpus, device: str = "cpu") -> float:
    """Mean log-spectral distance (dB) of the held-out notes' reconstructions, as `samplegen evaluate` measures it:
    the corpus's own notes (mixtures hold out with a held-out parent, but they are never measured).

    Waveform against waveform through the one fixed analysis STFT of docs/design.md (2048/512 Hann), after the
    project's phase retrieval: trials that model different STFT sizes are scored on the same scale, and the
    study's figure is the one a user reads in the evaluation report (a few seconds per trial).
    """

    run = ckpt.load_run(run_dir, device)
    val = measured_splits(run, corpus)[1]
    if len(val) == 0:
        raise ParameterError("the study needs a validation split; set train.val_fraction above 0")
    waves = np.concatenate([np.atleast_2d(decode(run, run.latent_mu[val[s : s + 32]])) for s in range(0, len(val), 32)])
    return float(np.mean(metrics.log_spectral_distance_db(corpus.audio[val], waves)))


def health(run_dir: Path, corpus: Corpus, device: str = "cpu") -> dict[str, float]:
    """Silent and noise-like fractions of prior draws and dipping paths, judged as `samplegen evaluate` judges them
    (thresholds from the run's training notes), on fewer draws."""

    run = ckpt.load_run(run_dir, device)
    h = generation_health(run, health_thresholds(run, corpus.audio), n_draws=N_HEALTH_DRAWS, n_paths=N_HEALTH_PATHS,
                          steps=8, notes=measured_notes(run, corpus))
    return {k: float(h[k]) for k in ("silent_fraction", "noise_like_fraction", "dipping_path_fraction")}


def _storage(url: str | None, out: Path) -> Any:
    import optuna
    import sqlalchemy.exc

    url = url or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.NoSuchModuleError,
            ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParameterError(f"cannot open study storage {url!r} ({first}); give a SQLAlchemy URL such as "
                             "sqlite:///study.db or postgresql://user:password@host/db") from None


#: What a study's folder holds (:func:`tune`): any of them marks an earlier study, which ``tune`` continues.
STUDY_FILES = ("study.db", "trials", BEST_CONFIG, "summary.html")


def tune(data: str | Path, out: str | Path, n_trials: int, *, storage: str | None = None,
         study_name: str = "samplegen", epochs: int = 40, base: RunConfig | None = None, seed: int = 0,
         pruner: Any = None, max_unhealthy: float = MAX_UNHEALTHY,
         progress: Callable[[str], None] | None = None) -> TuneResult:
    """Run the study until it holds ``n_trials`` finished trials (complete or pruned), then write the outputs.

    Parameters
    ----------
    data : corpus folder (the same as ``samplegen train --data``)
    out : output folder: study.db (by default), best_config.json, plots and summary.html; new, empty or an
        earlier study's (which is continued): a folder of other files is refused
    n_trials : finished trials the study should hold; a resumed study only runs the rest
    storage : SQLAlchemy URL of the study database (default: SQLite in ``out``)
    epochs : epoch budget of every trial
    base : settings not searched (duration, split, seed...); defaults otherwise
    pruner : an Optuna pruner (default: median of the finished trials' validation losses)
    max_unhealthy : largest fraction of silent plus noise-like prior draws of a feasible trial
    """
    import optuna

    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or not 1 <= n_trials <= MAX_TRIALS:
        raise ParameterError(f"--trials {n_trials!r} must be an integer from 1 to {MAX_TRIALS:,}")
    if not (math.isfinite(max_unhealthy) and 0.0 <= max_unhealthy <= 1.0):
        raise ParameterError(f"max_unhealthy={max_unhealthy} must be a fraction in [0, 1]")
    if not isinstance(epochs, int) or epochs < 2:
        raise ParameterError(f"epochs={epochs!r} must be an integer >= 2")
    check_seed(seed)
    out = Path(out)
    # a run folder (or a corpus) would get the study's database, trial runs and plots among its own files
    refuse_a_folder_of_other_files(out, lambda o: any((o / name).exists() for name in STUDY_FILES), "a tuning study")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create {out}: {exc.strerror}; choose a writable --out folder") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = _storage(storage, out)
    base = (base or RunConfig()).resolved()
    corpus = load_corpus(data, duration_s=base.data.duration_s)
    study = optuna.create_study(study_name=study_name, storage=store, load_if_exists=True, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5))
    say = progress or (lambda _line: None)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    start = base_params(base)
    if start is not None and not study.trials:
        study.enqueue_trial(start)

    def objective(trial: Any) -> float:
        cfg = sample_config(trial, base, epochs)
        run_dir = out / "trials" / f"trial_{trial.number:04d}"
        shutil.rmtree(run_dir, ignore_errors=True)

        def report(epoch: int, row: dict[str, float]) -> None:
            trial.report(row["val_loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {row['val_loss']:.4f} at epoch {epoch}")

        try:
            # Trials train and are scored on a GPU when there is one, as `samplegen evaluate` scores by default.
            device = resolve_device("auto")
            train(corpus, run_dir, cfg, show_progress=False, on_epoch=report, device=device)
            value = heldout_lsd_db(run_dir, corpus, device)
            h = health(run_dir, corpus, device)
            for key, v in h.items():
                trial.set_user_attr(key, v)
            excess = h["silent_fraction"] + h["noise_like_fraction"] - max_unhealthy
            trial.set_user_attr("unhealthy_excess", excess)
            trial.set_constraint("unhealthy_excess", excess)  # TPE samples away from infeasible regions
            trial.set_user_attr("config", cfg.to_dict())
            return value
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    while True:
        done = len(study.get_trials(deepcopy=False, states=finished))
        if done >= n_trials:
            break
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=())
        last = study.trials[-1]
        best = _best_feasible(study)
        shown = "pruned" if last.state == optuna.trial.TrialState.PRUNED else f"LSD {last.value:.2f} dB"
        say(f"trial {done + 1}/{n_trials}: {shown}; best {best.value:.2f} dB (trial {best.number}) "
            f"in {time.perf_counter() - t0:.0f} s" if best else f"trial {done + 1}/{n_trials}: {shown}; no feasible "
            f"trial yet ({time.perf_counter() - t0:.0f} s)")
    return _write_outputs(study, out, study_name, store.url if hasattr(store, "url") else str(storage))


def _constraints(trial: Any) -> tuple[float]:
    """Feasible (<= 0) when silent plus noise-like draws stay within the study's allowance."""
    return (float(trial.user_attrs.get("unhealthy_excess", 1.0)),)


def _best_feasible(study: Any) -> Any:
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if _constraints(t)[0] <= 0]
    return min(done, key=lambda t: t.value) if done else None


def _write_outputs(study: Any, out: Path, study_name: str, storage: str) -> TuneResult:
    import optuna

    best = _best_feasible(study)
    best_path = None
    if best is not None:
        cfg = dict(best.user_attrs["config"])
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "epochs"}  # choose the length when training
        best_path = write_json(out / BEST_CONFIG, cfg)
    plots = _plots(study, out)
    states = [t.state for t in study.trials]
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.state.name.lower()}</td><td>{'' if t.value is None else f'{t.value:.3f}'}"
        f"</td><td>{t.user_attrs.get('silent_fraction', '')}</td><td>{t.user_attrs.get('noise_like_fraction', '')}"
        f"</td><td>{t.user_attrs.get('dipping_path_fraction', '')}</td></tr>" for t in study.trials)
    html = (
        f"<!doctype html><meta charset='utf-8'><title>SampleGen study {study_name}</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}td,th{padding:.2rem .6rem}</style>"
        f"<h1>Study {study_name}</h1><p>{states.count(optuna.trial.TrialState.COMPLETE)} complete, "
        f"{states.count(optuna.trial.TrialState.PRUNED)} pruned, {states.count(optuna.trial.TrialState.FAIL)} failed. "
        + (f"Best held-out LSD <b>{best.value:.3f} dB</b> (trial {best.number}); its settings: "
           f"<a href='{BEST_CONFIG}'>{BEST_CONFIG}</a> (<code>samplegen train --config {BEST_CONFIG}</code>).</p>"
           if best else "No feasible trial yet.</p>")
        + "".join(f"<h2>{title}</h2><img src='{name}' alt='{title}' style='max-width:100%'>" for title, name in plots)
        + "<h2>Trials</h2><table><tr><th>#</th><th>state</th><th>LSD (dB)</th><th>silent</th><th>noise-like</th>"
        f"<th>dipping</th></tr>{rows}</table><p>Storage: <code>{storage}</code></p>"
    )
    summary = atomic_write(out / "summary.html", lambda fh: fh.write(html), mode="w")
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    return TuneResult(study_name, storage, len(finished), best.value if best else None, best_path, summary)


def _plots(study: Any, out: Path) -> list[tuple[str, str]]:
    """Optuna's own matplotlib plots, saved as PNGs (offline, no plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    import warnings

    made = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for title, name, fn, needs in (("Optimisation history", "history.png", ovm.plot_optimization_history, 1),
                                   ("Parameter importances", "importances.png", ovm.plot_param_importances, 2),
                                   ("Parallel coordinates", "parallel.png", ovm.plot_parallel_coordinate, 1)):
        if len(complete) < needs:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
        except (ValueError, RuntimeError):  # e.g. importances of parameters that never varied
            continue
        fig: Any = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        _save_png(out / name, fig)
        plt.close(fig)
        made.append((title, name))
    return made


def _save_png(path: Path, fig: Any) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
