import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samplegen.app.cli import main
from samplegen.evaluation.evaluate import METRICS_KEYS
from synth import harmonic_note


def _referenced_files(report):
    return re.findall(r"(?:src)='([^']+)'", report.read_text())


def test_evaluate_writes_every_key_and_a_complete_report(tiny_run, tiny_samples_dir, tmp_path, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    for i, tilt in enumerate((0.9, 1.9)):
        sf.write(extra / f"x{i}.wav", harmonic_note(0.5, tilt=tilt), 44100)
    out = tmp_path / "ev"
    assert main(["evaluate", str(tiny_run), "--data", str(extra), "--out", str(out), "--draws", "20",
                 "--paths", "4", "--steps", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(metrics)
    # "auto" on a machine without a GPU: the CPU and its phase retrieval (PGHI + 10 fast Griffin-Lim iterations)
    assert metrics["device"] == "cpu" and metrics["phase_retrieval"] == "pghi + 10 iterations"
    assert set(metrics["quality"]) == {"train", "heldout", "data"}
    for split in metrics["quality"].values():
        for system in ("model", "pca", "oracle"):
            assert set(split[system]) == {"sc_db", "lsd_db", "mrstft"}
    h = metrics["health"]
    assert h["n_draws"] == 20 and h["n_paths"] == 4 and 0 <= h["silent_fraction"] <= 1
    # decoded notes fade in: none starts on a click (issue 19)
    assert h["onset_click_fraction"] == 0.0
    assert metrics["artefacts"]["onset_clicks"]["model"] == 0.0 == metrics["artefacts"]["onset_clicks"]["oracle"]
    assert "start on a click" in (out / "report.html").read_text()
    assert metrics["latent"]["latent_dim"] == 3 and len(metrics["latent"]["kl_per_dim"]) == 3
    # generated notes judged beside real ones (issue 14): every set, its pitch, NDB, novelty; paths
    g = metrics["generated"]
    assert set(g["sets"]) == {"heldout", "heldout_resynthesised", "draws", "pca_draws"}
    assert g["sets"]["draws"]["pitch"]["n"] == 20 == g["sets"]["pca_draws"]["pitch"]["n"]
    assert g["pitch"]["path_steps"]["n"] == 4 * 5 and g["paths"]["n_paths"] == 4
    assert set(g["pitch"]) >= {"corpus", "train_reconstructions", "heldout_reconstructions", "data_reconstructions"}
    # the tiny corpus is harmonic C4 notes: in tune, and so are the tiny model's re-creations of them
    assert g["pitch"]["corpus"]["within_10"] == 1.0 and g["pitch"]["heldout_reconstructions"]["within_25"] == 1.0
    for row in g["sets"].values():
        assert 0.0 <= row["diversity"]["ndb_k"] <= 1.0 and row["novelty"]["nearest_train_db_median"] >= 0
        assert row["realism"] is None  # one family ("unknown"): no classifier to train
    assert g["classifier"] is None and metrics["headline"]["draws_frechet"] is None
    assert 0.0 <= metrics["headline"]["draws_within_25_cents"] <= 1.0
    assert "judged as the field does" in (out / "report.html").read_text()
    # the oracle keeps the true magnitude: it must be closer than the tiny model
    q = metrics["quality"]["train"]
    assert q["oracle"]["lsd_db"]["mean"] < q["model"]["lsd_db"]["mean"]
    # `samplegen tune` scores trials with the very figure the report shows (fixed analysis STFT)
    from samplegen.audio.corpus import load_corpus
    from samplegen.app.tune import heldout_lsd_db

    corpus = load_corpus(tiny_samples_dir, duration_s=0.5)
    assert heldout_lsd_db(tiny_run, corpus) == pytest.approx(metrics["quality"]["heldout"]["model"]["lsd_db"]["mean"],
                                                             abs=0.01)
    # ... and judges generation health by the thresholds the report states, from the training notes alone
    from samplegen.checkpoint import load_run
    from samplegen.evaluation.evaluate import health_thresholds

    run = load_run(tiny_run)
    th = health_thresholds(run, corpus.audio)
    assert (th.silent_rms_db, th.noise_flatness) == (h["thresholds"]["silent_rms_db"], h["thresholds"]["noise_flatness"])
    held_out = np.array(run.corpus.splits) == "val"
    noisy = corpus.audio.copy()
    noisy[held_out] = np.random.default_rng(0).standard_normal(noisy[held_out].shape).astype(noisy.dtype)
    assert held_out.any() and health_thresholds(run, noisy) == th
    files = _referenced_files(out / "report.html")
    assert any(f.endswith(".png") for f in files) and any(f.endswith(".wav") for f in files)
    for f in files:
        assert (out / f).is_file(), f
    assert "http" not in (out / "report.html").read_text()
    assert "report.html" in capsys.readouterr().out


def test_compare_puts_two_runs_in_one_report(tiny_run, tiny_samples_dir, tiny_config_file, tmp_path):
    from samplegen.app import api

    ae = tmp_path / "ae"
    api.train_run(tiny_samples_dir, ae, config=tiny_config_file, model="ae", show_progress=False)
    out = tmp_path / "cmp"
    assert main(["evaluate", "--compare", str(tiny_run), str(ae), "--out", str(out), "--draws", "8",
                 "--paths", "2", "--steps", "4"]) == 0
    data = json.loads((out / "metrics.json").read_text())["compare"]
    assert [Path(d["run"]).name for d in data] == ["tiny", "ae"]
    # Each run measured as itself: only the VAE has a posterior variance, so only it has a KL.
    assert data[0]["latent"]["kl_per_dim"] is not None and data[1]["latent"]["kl_per_dim"] is None
    assert data[0]["quality"] != data[1]["quality"]
    # ... on the same real notes: the reference set is the same for both
    assert data[0]["generated"]["sets"]["heldout"] == data[1]["generated"]["sets"]["heldout"]
    html = (out / "report.html").read_text()
    assert "Side by side" in html and "tiny" in html and ">ae" in html.replace(" ", "")
    for f in _referenced_files(out / "report.html"):
        assert (out / f).is_file(), f


def test_roundtrip_writes_both_and_reports_distance(tmp_path, capsys):
    src = tmp_path / "tone.flac"
    sf.write(src, harmonic_note(1.0, onset_s=0.05), 48000)
    assert main(["roundtrip", str(src), "--out", str(tmp_path / "rt"), "--iters", "8"]) == 0
    a, sr = sf.read(tmp_path / "rt" / "tone_original.wav")
    b, _ = sf.read(tmp_path / "rt" / "tone_roundtrip.wav")
    assert sr == 44100 and len(a) == len(b)
    line = capsys.readouterr().out
    sc = float(re.search(r"SC (-?[\d.]+) dB", line).group(1))
    assert sc < -10


def test_evaluate_needs_a_run(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "x")]) == 2
    assert "RUN" in capsys.readouterr().err


def test_mixtures_train_but_are_never_measured(tiny_run):
    """A corpus's mixtures (corpus build --mix) are not samples anyone brought: the measured splits and the
    interpolation paths use the corpus's own notes only, and the PCA baseline learns from them alone."""
    from dataclasses import replace

    from samplegen.checkpoint import load_run
    from samplegen.errors import ParameterError
    from samplegen.evaluation.evaluate import (_run_corpus, generation_health, health_thresholds, measured_splits,
                                               split_quality)

    run = load_run(tiny_run)
    corpus = _run_corpus(run)
    split = np.array(run.corpus.splits)
    train_rows, val_rows = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    as_mix = {int(train_rows[0]), int(val_rows[0])}  # pretend one note of each split is a mixture
    entries = [replace(e, parents=("a", "b")) if i in as_mix else e for i, e in enumerate(corpus.entries)]
    mixed = replace(corpus, entries=entries)
    own_train, own_val = measured_splits(run, mixed)
    assert set(own_train) == set(train_rows) - as_mix and set(own_val) == set(val_rows) - as_mix
    sets, _, pca_rows = split_quality(run, mixed, train_sample=len(train_rows))
    mix_names = {run.corpus.names[i] for i in as_mix}
    assert not mix_names & set(sets["train"].names) and not mix_names & set(sets["heldout"].names)
    assert len(sets["train"].names) == len(train_rows) - 1 and set(pca_rows) == set(own_train)
    # tune scores a trial on the same held-out notes.
    from samplegen.app.tune import heldout_lsd_db
    from samplegen.evaluation import metrics
    from samplegen.generation.generate import decode
    own_lsd = metrics.log_spectral_distance_db(corpus.audio[own_val], np.atleast_2d(decode(run, run.latent_mu[own_val])))
    assert heldout_lsd_db(tiny_run, mixed) == pytest.approx(float(np.mean(own_lsd)), rel=1e-6)
    # Paths between two chosen notes only: every path starts and ends at one of the same two sounds.
    ends = np.array([int(own_train[0]), int(own_train[1])])
    health = generation_health(run, health_thresholds(run, corpus.audio), n_draws=2, n_paths=6, steps=3,
                               keep_notes=True, notes=ends)
    path_mels = health["_paths_measured"][0]
    distinct = {tuple(np.round(m.ravel()[:50], 3)) for m in np.concatenate([path_mels[:, 0], path_mels[:, -1]])}
    assert len(distinct) == 2
    with pytest.raises(ParameterError, match="two notes"):
        generation_health(run, health_thresholds(run, corpus.audio), n_draws=2, n_paths=2, notes=ends[:1])
