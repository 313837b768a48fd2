import json

import pytest

from samplegen.config import HEAD_LOG_WEIGHT, NO_HEAD_LOG_WEIGHT, RunConfig, TrainConfig, load_config_file
from samplegen.errors import ParameterError


def test_round_trip_and_resolution():
    cfg = RunConfig().resolved()
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.model.n_bins == cfg.stft.n_bins
    assert cfg.model.n_frames == cfg.stft.n_frames(cfg.data.n_samples)


def test_partial_file_fills_defaults(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": {"latent_dim": 7}, "train": {"beta": 0.5}}))
    cfg = load_config_file(p)
    assert cfg.model.latent_dim == 7 and cfg.train.beta == 0.5
    assert cfg.train.epochs == TrainConfig().epochs


@pytest.mark.parametrize("data, word", [
    ({"model": {"latent_dims": 3}}, "latent_dims"),
    ({"modle": {}}, "modle"),
    ({"train": {"epochs": "ten"}}, "epochs"),
    ({"train": {"learning_rate": -1.0}}, "learning_rate"),
    ({"model": {"hidden": [64, "x"]}}, "hidden"),
    ({"format_version": 99}, "format_version"),
])
def test_bad_configs_are_rejected_with_the_key_named(tmp_path, data, word):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ParameterError, match=word):
        load_config_file(p)


def test_not_json_is_a_clear_error(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{nope")
    with pytest.raises(ParameterError, match="not valid JSON"):
        load_config_file(p)


@pytest.mark.parametrize("data, weight", [
    ({}, HEAD_LOG_WEIGHT),                                            # the default decoder has the log head
    ({"model": {"log_head": False}}, NO_HEAD_LOG_WEIGHT),             # without it 0.5 makes blends dip
    ({"phase": {"mode": "if"}, "features": {"magnitude_power": 0.0}}, NO_HEAD_LOG_WEIGHT),  # no head there
    ({"model": {"log_head": False}, "train": {"log_weight": 0.3}}, 0.3),  # a weight given is kept
])
def test_a_file_without_log_weight_gets_the_one_measured_for_its_decoder(tmp_path, data, weight):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    assert load_config_file(p).train.log_weight == weight


def test_runs_saved_without_a_precision_trained_in_fp32():
    saved = RunConfig().resolved().to_dict()
    del saved["train"]["precision"]
    assert RunConfig.from_dict(saved).train.precision == "fp32"
    assert RunConfig().train.precision == "auto"  # a new run's default
