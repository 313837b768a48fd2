import json

import pytest

from samplegen.config import RunConfig, TrainConfig, load_config_file
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
