"""A small folder of one's own: training with the defaults never ends worse than the PCA it starts from."""

from __future__ import annotations

import json
import socket

import pytest
import soundfile as sf

from samplegen.app import api

from samplegen.app import cli
from samplegen.audio.corpus import load_corpus
from samplegen.checkpoint import load_run
from samplegen.config import SMALL_CORPUS_STEPS_PER_EPOCH, TrainConfig
from samplegen.evaluation.evaluate import split_quality
from samplegen.training.train import PcaCheck
from synth import SR, harmonic_note, note_family


@pytest.mark.parametrize("model", [{}, {"model": {"log_head": False}}], ids=["default", "no_head"])
def test_a_25_note_corpus_trained_with_the_defaults_ends_no_worse_than_pca(tmp_path, model):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, note in enumerate(note_family(25, seconds=0.6, seed=2)):
        sf.write(folder / f"n{i:02d}.wav", note, SR)
    config = tmp_path / "short_notes.json"
    config.write_text(json.dumps({"data": {"duration_s": 0.5}, **model}))  # every training setting at its default
    result = api.train_run(folder, tmp_path / "run", config=config, show_progress=False)
    assert result.pca_check is not None and not result.pca_check.worse
    assert result.pca_check.notes == "held-out"
    run = load_run(tmp_path / "run")
    assert run.config.train.batch_size == 20 // SMALL_CORPUS_STEPS_PER_EPOCH  # 20 training notes: 10 steps an epoch
    # As `samplegen evaluate` measures it: held-out notes, the model against PCA of as many components.
    sets, _, _ = split_quality(run, load_corpus(folder, duration_s=0.5))
    held = sets["heldout"].values
    for measure in ("lsd_db", "sc_db"):
        assert held["model"][measure].mean() <= held["pca"][measure].mean(), measure


def test_only_a_small_corpus_at_the_default_batch_size_is_adapted():
    default = TrainConfig()
    assert default.for_corpus(20).batch_size == 2 and default.for_corpus(5).batch_size == 1
    assert default.for_corpus(800) == default  # the default corpus: 25 steps an epoch already
    assert TrainConfig(batch_size=8).for_corpus(20).batch_size == 8  # a batch size one chose is kept


def test_a_model_worse_than_its_pca_start_is_said_in_plain_words():
    check = PcaCheck(model=0.5, pca=0.2, notes="held-out")
    assert check.worse and not PcaCheck(0.2, 0.2, "training").worse
    assert "WORSE than the PCA it started from" in check.message() and "0.5 against 0.2" in check.message()


def test_play_reports_a_busy_port_before_loading_the_run(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # No run at all: had it been loaded first, the error would be about the run.
        assert cli.main(["play", str(tmp_path / "no-run"), "--port", str(port), "--no-browser"]) == 2
    captured = capsys.readouterr()
    assert "cannot listen" in captured.err and "loading" not in captured.out


def test_evaluate_data_shows_progress_and_names_off_pitch_files_in_plain_lines(tiny_run, tmp_path, capsys):
    extra = tmp_path / "mine"
    extra.mkdir()
    sf.write(extra / "c4.wav", harmonic_note(0.5), SR)
    sf.write(extra / "a4.wav", harmonic_note(0.5, f0=440.0), SR)
    assert cli.main(["evaluate", str(tiny_run), "--data", str(extra), "--out", str(tmp_path / "ev"), "--draws", "8",
                     "--paths", "2", "--steps", "3"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 file(s) of" in captured.out and "a4.wav (+900 cents)" in captured.out
    assert "UserWarning" not in captured.err and "Warning:" not in captured.err
    assert "notes: 100%" in captured.err and "read: 100%" in captured.err  # the bars ran to the end
