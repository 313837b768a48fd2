"""The field's measures of generated notes (evaluation/generation_measures.py) on sets whose answer is known."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from samplegen.audio.audio_io import C4_HZ
from samplegen.evaluation import generation_measures as G
from synth import SR, harmonic_note


def _notes(count: int, seed: int, tilt: tuple[float, float] = (0.5, 2.5), n_harmonics: tuple[int, int] = (3, 12),
           seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([harmonic_note(seconds, tilt=float(rng.uniform(*tilt)), decay=float(rng.uniform(0.5, 6.0)),
                                   attack_s=float(rng.uniform(0.002, 0.05)),
                                   n_harmonics=int(rng.integers(*n_harmonics))) for _ in range(count)])


def test_mel_filterbank_is_librosas_htk_filterbank():
    ours = G.mel_filterbank().numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=G.MEL_N_FFT, n_mels=G.MEL_BANDS, fmin=G.MEL_FMIN_HZ, fmax=G.MEL_FMAX_HZ,
                              htk=True, norm=None)
    assert np.allclose(ours, ref, atol=1e-6)


def test_log_mel_ignores_level_and_mel_distance_is_the_per_frame_rms_of_db_differences():
    a = _notes(3, seed=0)
    mels = G.log_mel(a)
    assert mels.shape[:2] == (3, G.MEL_BANDS) and mels.max() == 0.0 and mels.min() >= -G.MEL_RANGE_DB
    assert np.allclose(G.log_mel(0.1 * a), mels, atol=1e-3)  # level is not judged
    d = G.mel_distances_db(mels, mels)
    assert np.allclose(np.diag(d), 0.0, atol=1e-2)
    direct = np.sqrt(((mels[0] - mels[1]) ** 2).mean(axis=0)).mean()
    assert d[0, 1] == pytest.approx(direct, rel=1e-4) and d[1, 0] == pytest.approx(direct, rel=1e-4)


def test_cents_summary_on_known_pitches():
    hz = C4_HZ * 2 ** (np.array([0.0, 5.0, -20.0, 40.0, 1200.0, np.nan]) / 1200)
    s = G.cents_summary(hz)
    assert s["n"] == 6 and s["unpitched_fraction"] == pytest.approx(1 / 6)
    assert s["within_10"] == pytest.approx(2 / 6) and s["within_25"] == pytest.approx(3 / 6)
    assert s["within_25_folded"] == pytest.approx(4 / 6)  # the octave above C4 is in tune on a keyboard
    assert s["median_cents"] == pytest.approx(5.0)


def test_ndb_of_a_set_against_itself_is_zero_and_against_a_shifted_set_clearly_above():
    train = G.log_mel(_notes(120, seed=1))
    bins = G.NdbBins.fit(train, k=10, seed=0)
    assert G.ndb(bins, train)["ndb_k"] == 0.0
    same_kind = G.ndb(bins, G.log_mel(_notes(120, seed=2)))["ndb_k"]
    # only the darkest, sparsest notes: the draws of a model that lost most of the space
    shifted = G.ndb(bins, G.log_mel(_notes(120, seed=3, tilt=(2.2, 2.5), n_harmonics=(3, 5))))["ndb_k"]
    assert same_kind <= 0.3 and shifted >= 0.5 and shifted > same_kind + 0.3, (same_kind, shifted)


def test_classifier_learns_two_families_and_its_embedding_tells_them_apart():
    bright = G.log_mel(_notes(60, seed=4, tilt=(0.4, 0.8), n_harmonics=(10, 14)))
    dark = G.log_mel(_notes(60, seed=5, tilt=(2.2, 2.8), n_harmonics=(2, 4)))
    train = np.concatenate([bright[:40], dark[:40]])
    clf = G.FamilyClassifier(train, ["bright"] * 40 + ["dark"] * 40, seed=0)
    held = np.concatenate([bright[40:], dark[40:]])
    assert clf.accuracy(held, ["bright"] * 20 + ["dark"] * 20) >= 0.9
    train_emb = clf.embed(train)
    near = G.frechet_distance(clf.embed(held), train_emb)
    far = G.frechet_distance(clf.embed(dark[40:]), clf.embed(bright[:40]))
    assert near < far
    one_family = G.family_scores(clf.probabilities(bright[40:]), clf.families)
    both = G.family_scores(clf.probabilities(held), clf.families)
    assert one_family["family_entropy_bits"] < 0.5 < 0.9 < both["family_entropy_bits"] <= 1.0 + 1e-9
    assert both["inception_score"] > one_family["inception_score"]


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert G.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert G.frechet_distance(a, b) == pytest.approx(4.0, abs=0.3)


def test_copies_of_training_notes_are_flagged_by_novelty():
    notes = G.log_mel(_notes(40, seed=6))
    real = G.RealNotes.fit(notes[:30], ["a"] * 15 + ["b"] * 15)
    hz = np.full(10, C4_HZ)
    copies = G.judge(real, notes[:10], hz)["novelty"]["nearest_over_typical"]
    new = G.judge(real, notes[30:], hz)["novelty"]["nearest_over_typical"]
    assert copies < 0.01 < new


def test_a_path_that_switches_in_one_step_jumps_and_an_even_blend_does_not():
    a, b = G.log_mel(_notes(2, seed=7))
    t = np.linspace(0, 1, 8)[:, None, None]
    blend = (1 - t) * a + t * b
    switch = np.stack([a] * 4 + [b] * 4)
    result = G.path_smoothness(np.stack([blend, switch]))
    assert result["n_paths"] == 2 and result["jumping_path_fraction"] == 0.5
    assert result["max_over_mean_step_max"] == pytest.approx(7.0, rel=0.01)  # all of it in one of 7 steps
