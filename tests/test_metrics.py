import numpy as np
import pytest

from samplegen.errors import ParameterError
from samplegen.evaluation.metrics import (log_spectral_distance_db, multi_resolution_stft_distance, quality_measures,
                                          spectral_convergence_db, spectral_flatness)
from synth import harmonic_note


def _slow_mag(x, n_fft=2048, hop=512):
    padded = np.pad(x, n_fft // 2, mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.stack([np.abs(np.fft.rfft(padded[i : i + n_fft] * w)) for i in range(0, len(x) + 1, hop)
                     if i // hop < 1 + len(x) // hop], axis=1)


def test_identical_signals():
    x = harmonic_note(0.5)
    assert spectral_convergence_db(x, x) == -np.inf
    assert log_spectral_distance_db(x, x) == 0.0
    assert multi_resolution_stft_distance(x, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("a", [0.5, 0.1, 2.0])
def test_scaled_copy_has_closed_form_values(a):
    x = harmonic_note(0.5).astype(np.float64)
    assert spectral_convergence_db(x, a * x) == pytest.approx(20 * np.log10(abs(1 - a)), abs=1e-6)
    # white noise keeps every bin far above the LSD floor, so each differs by exactly |20·log10 a| dB
    noise = np.random.default_rng(0).standard_normal(22050)
    assert log_spectral_distance_db(noise, a * noise) == pytest.approx(abs(20 * np.log10(a)), abs=1e-3)
    # a harmonic note has bins under the floor, which differ less
    assert log_spectral_distance_db(x, a * x) < abs(20 * np.log10(a))


def test_against_a_slow_reference():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(9000), rng.standard_normal(9000)
    X, Y = _slow_mag(x), _slow_mag(y)
    sc = 20 * np.log10(np.linalg.norm(Y - X) / np.linalg.norm(X))
    f = 1e-4 * X.max()
    d = 20 * np.log10(np.maximum(X, f)) - 20 * np.log10(np.maximum(Y, f))
    lsd = np.mean(np.sqrt(np.mean(d**2, axis=0)))
    assert spectral_convergence_db(x, y) == pytest.approx(sc, abs=1e-6)
    assert log_spectral_distance_db(x, y) == pytest.approx(lsd, abs=1e-6)
    mr = 0.0
    for n in (512, 1024, 2048):
        X, Y = _slow_mag(x, n, n // 4), _slow_mag(y, n, n // 4)
        mr += np.linalg.norm(Y - X) / np.linalg.norm(X) + np.mean(np.abs(np.log(Y + 1e-7) - np.log(X + 1e-7)))
    assert multi_resolution_stft_distance(x, y) == pytest.approx(mr / 3, rel=1e-6)


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, 6000)), rng.standard_normal((3, 6000))
    for fn in (spectral_convergence_db, log_spectral_distance_db, multi_resolution_stft_distance):
        batch = fn(x, y)
        assert batch.shape == (3,)
        assert np.allclose(batch, [fn(x[i], y[i]) for i in range(3)])


def test_mismatched_or_broken_input_is_refused():
    with pytest.raises(ParameterError, match=r"\(100,\) and \(90,\)"):
        spectral_convergence_db(np.zeros(100), np.zeros(90))
    bad = np.ones(3000)
    bad[5] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        log_spectral_distance_db(np.ones(3000), bad)


def test_health_measures_on_known_cases():
    from samplegen.evaluation.metrics import (is_noise_like, is_silent, path_dips, rms_db, spectral_flatness,
                                              thresholds_from)

    rng = np.random.default_rng(2)
    tones = np.stack([harmonic_note(0.5, tilt=t, decay=d) for t, d in [(0.8, 1), (1.5, 3), (2.0, 0.5), (1.0, 5)]])
    th = thresholds_from(rms_db(tones), spectral_flatness(tones))
    noise = 0.1 * rng.standard_normal(tones.shape[1])
    assert spectral_flatness(tones[0]) < 0.01
    assert spectral_flatness(noise) == pytest.approx(np.exp(-np.euler_gamma), abs=0.03)
    assert is_noise_like(noise, th) and not is_noise_like(tones[1], th)
    assert rms_db(0.5 * np.ones(1000)) == pytest.approx(20 * np.log10(0.5))
    assert is_silent(np.zeros(5000), th)
    assert is_silent(tones[0] * 10 ** (-80 / 20), th) and not is_silent(tones[0], th)
    assert list(is_silent(np.stack([tones[0], 0 * tones[0]]), th)) == [False, True]
    steady = np.stack([tones[0]] * 5)
    dipping = steady.copy()
    dipping[2] *= 0.1
    assert path_dips(dipping) and not path_dips(steady)


def test_onset_measures():
    from samplegen.evaluation.metrics import onset_envelope_error_db, onset_index, pre_echo_db

    x = harmonic_note(1.0, onset_s=0.5, attack_s=0.002)
    assert abs(onset_index(x) - 0.5 * 44100) <= 64
    assert onset_envelope_error_db(x, x) == 0.0
    smeared = harmonic_note(1.0, onset_s=0.5, attack_s=0.04)
    assert onset_envelope_error_db(x, smeared) > 3.0
    echo = x.copy()
    echo[: 22050] += 0.01 * np.random.default_rng(0).standard_normal(22050)
    assert pre_echo_db(x, echo) > pre_echo_db(x, x) + 20
    assert pre_echo_db(x, x) < -60


def test_quality_measures_equal_the_measures_one_by_one():
    rng = np.random.default_rng(3)
    ref = np.stack([harmonic_note(0.3, tilt=t) for t in (0.8, 1.3, 1.9, 2.4, 3.0)])
    cands = {"scaled": 0.7 * ref, "noisy": ref + 0.01 * rng.standard_normal(ref.shape)}
    got = quality_measures(ref, cands, batch_size=2)  # batches that do not divide the notes
    for name, y in cands.items():
        np.testing.assert_allclose(got[name]["sc_db"], spectral_convergence_db(ref, y), rtol=1e-12)
        np.testing.assert_allclose(got[name]["lsd_db"], log_spectral_distance_db(ref, y), rtol=1e-12)
        np.testing.assert_allclose(got[name]["mrstft"], multi_resolution_stft_distance(ref, y), rtol=1e-12)


def test_flatness_in_batches_equals_note_by_note():
    rng = np.random.default_rng(4)
    notes = np.concatenate([np.stack([harmonic_note(0.3, tilt=t) for t in np.linspace(0.5, 3, 20)]),
                            rng.standard_normal((3, 13230))])
    batched = spectral_flatness(notes)
    assert batched.shape == (23,)
    np.testing.assert_allclose(batched, [spectral_flatness(n) for n in notes], rtol=1e-12)


def test_onset_click_flags_hard_starts_and_not_onset_aligned_notes():
    from samplegen.evaluation.metrics import CLICK_JUMP, has_onset_click, onset_click

    aligned = harmonic_note(0.5, onset_s=0.005, attack_s=0.002)
    mid_cycle = harmonic_note(0.5, attack_s=1e-4)[100:]  # starts at 20 % of its peak
    burst = harmonic_note(0.5, onset_s=0.005, attack_s=0.002)
    burst[1:60] += 0.3 * np.random.default_rng(0).standard_normal(59).astype(np.float32)  # 1.3 ms of hiss
    assert onset_click(aligned) == (0.0, pytest.approx(-200.0))
    jump, _ = onset_click(mid_cycle)
    assert jump > CLICK_JUMP
    assert burst[0] == 0.0 and onset_click(burst)[1] > 0.0
    assert has_onset_click(aligned) is False and has_onset_click(mid_cycle) is True and has_onset_click(burst) is True
    assert list(has_onset_click(np.stack([aligned, aligned, burst]))) == [False, False, True]


def test_notes_decoded_from_a_tiny_run_do_not_click(tiny_run):
    import torch

    from samplegen.checkpoint import load_run
    from samplegen.generation.generate import decode
    from samplegen.evaluation.metrics import has_onset_click, onset_click

    run = load_run(tiny_run)
    draws = torch.randn(8, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    wavs = decode(run, torch.cat([run.latent_mu, draws]))
    jumps, _ = onset_click(wavs)
    assert not has_onset_click(wavs).any() and np.all(jumps == 0.0)
