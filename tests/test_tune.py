"""`samplegen tune`: a tiny study completes, resumes from its SQLite file, records pruning, refuses bad storage."""

from __future__ import annotations

import json

import optuna
import pytest

from samplegen.app import api
from samplegen.app.cli import main as cli_main
from samplegen.errors import ParameterError

TINY = {"data": {"duration_s": 0.5}, "train": {"val_fraction": 0.25}}


@pytest.fixture
def tiny_base(tmp_path):
    path = tmp_path / "base.json"
    path.write_text(json.dumps(TINY))
    return path


def _states(out):
    study = optuna.load_study(study_name="samplegen", storage=f"sqlite:///{out / 'study.db'}")
    return [t.state for t in study.trials]


def test_a_three_trial_study_writes_a_config_that_train_accepts(tiny_samples_dir, tiny_base, tmp_path, capsys):
    out = tmp_path / "study"
    code = cli_main(["tune", "--data", str(tiny_samples_dir), "--trials", "3", "--out", str(out), "--epochs", "3",
                     "--config", str(tiny_base), "--max-unhealthy", "1.0"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "trial 1/3" in printed and "trial 3/3" in printed and "best" in printed
    assert _states(out) == [optuna.trial.TrialState.COMPLETE] * 3
    best = out / "best_config.json"
    assert best.is_file() and (out / "summary.html").is_file() and (out / "history.png").is_file()
    assert not any((out / "trials").iterdir())  # trial runs are not left behind
    n_layers = len(json.loads(best.read_text())["model"]["hidden"])
    assert 3 <= n_layers <= 5
    assert cli_main(["train", "--data", str(tiny_samples_dir), "--out", str(tmp_path / "run"), "--config", str(best),
                     "--epochs", "2", "--quiet"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(saved["model"]["hidden"]) == n_layers


def test_a_stopped_study_resumes_from_its_sqlite_file(tiny_samples_dir, tmp_path):
    out = tmp_path / "study"
    kwargs = dict(epochs=3, config=api.resolve_config(None).__class__.from_dict(TINY, require_version=False),
                  max_unhealthy=1.0)
    first = api.tune(tiny_samples_dir, out, 1, **kwargs)
    assert first.n_finished == 1
    numbers_before = [t.number for t in optuna.load_study(study_name="samplegen",
                                                          storage=f"sqlite:///{out / 'study.db'}").trials]
    second = api.tune(tiny_samples_dir, out, 3, **kwargs)
    assert second.n_finished == 3
    study = optuna.load_study(study_name="samplegen", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2] and numbers_before == [0]
    assert api.tune(tiny_samples_dir, out, 3, **kwargs).n_finished == 3  # nothing left to run


def test_a_pruned_trial_is_recorded_as_pruned(tiny_samples_dir, tmp_path):
    out = tmp_path / "study"
    base = api.resolve_config(None).__class__.from_dict(TINY, require_version=False)
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # any validation loss is above 0: prune at once
    result = api.tune(tiny_samples_dir, out, 2, epochs=3, config=base, pruner=always, max_unhealthy=1.0)
    assert _states(out) == [optuna.trial.TrialState.PRUNED] * 2
    assert result.best_config is None and result.n_finished == 2


@pytest.mark.parametrize("url", ["not-a-url", "nosuchdb://x/y", "sqlite:////no/such/folder/study.db"])
def test_a_bad_storage_url_is_a_clear_error(tiny_samples_dir, tmp_path, url, capsys):
    with pytest.raises(ParameterError, match="storage"):
        api.tune(tiny_samples_dir, tmp_path / "s", 1, storage=url, epochs=3)
    code = cli_main(["tune", "--data", str(tiny_samples_dir), "--trials", "1", "--out", str(tmp_path / "c"),
                     "--storage", url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "SQLAlchemy URL" in err


def test_a_study_into_a_run_folder_is_refused_and_touches_nothing(tiny_run, tiny_samples_dir, tmp_path, capsys):
    """A run folder (or any folder of other files) would get the study's database, trials and plots among its
    own files; an earlier study's folder is continued (test_a_stopped_study_resumes_from_its_sqlite_file)."""
    before = sorted(p.name for p in tiny_run.iterdir())
    code = cli_main(["tune", "--data", str(tiny_samples_dir), "--trials", "1", "--out", str(tiny_run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "already holds files that are not a tuning study" in err and "choose a new or empty folder" in err
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_a_new_study_starts_from_the_default_configuration():
    from samplegen.config import HEAD_LOG_WEIGHT, RunConfig
    from samplegen.app.tune import base_params, sample_config

    base = RunConfig().resolved()
    params = base_params(base)
    assert params is not None and params["n_layers"] == len(base.model.hidden)

    class Replay:  # a trial that answers with the enqueued values, as Optuna does
        def suggest_int(self, name, *_a, **_k):
            return params[name]

        suggest_float = suggest_categorical = suggest_int

    cfg = sample_config(Replay(), base, epochs=base.train.epochs)
    assert cfg.model.hidden[0] == base.model.hidden[0] and cfg.model.hidden[-1] == base.model.hidden[-1]
    assert (cfg.model.latent_dim, cfg.stft, cfg.train.beta, cfg.train.kl_warmup_epochs) == (
        base.model.latent_dim, base.stft, base.train.beta, base.train.kl_warmup_epochs)
    assert (cfg.model.frame_hidden, cfg.model.log_head, cfg.train.log_weight) == (
        base.model.frame_hidden, base.model.log_head, base.train.log_weight)
    params["log_head"] = True  # a trial with the head trains with the log weight measured for it
    with_head = sample_config(Replay(), base, epochs=10)
    assert with_head.uses_log_head and with_head.train.log_weight == HEAD_LOG_WEIGHT
    outside = RunConfig(model=RunConfig().model.__class__(hidden=(100, 50, 25, 12)))
    assert base_params(outside) is None
