import numpy as np
import pytest
import torch

from samplegen.errors import ParameterError
from samplegen.spectral import StftConfig, istft, magnitude, retrieve_phase, stft
from synth import harmonic_note

CFG = StftConfig()


def _sc_db(x: torch.Tensor, y: torch.Tensor) -> float:
    X, Y = magnitude(x, CFG), magnitude(y, CFG)
    return float(20 * torch.log10(torch.linalg.norm(Y - X) / torch.linalg.norm(X)))


def test_stft_matches_a_slow_obvious_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000)
    n_fft, hop = 256, 64
    cfg = StftConfig(n_fft, hop)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = [padded[i * hop : i * hop + n_fft] * window for i in range(cfg.n_frames(len(x)))]
    ref = np.stack([np.fft.rfft(f) for f in frames], axis=1)
    ours = stft(torch.tensor(x), cfg).numpy()
    assert ours.shape == ref.shape == (cfg.n_bins, cfg.n_frames(len(x)))
    assert np.allclose(ours, ref, atol=1e-8)


@pytest.mark.parametrize("length", [4096, 22050, 22051, 30000])
def test_istft_of_stft_is_identity_with_exact_length(length):
    x = torch.randn(2, length, dtype=torch.float64)
    y = istft(stft(x, CFG), CFG, length)
    assert y.shape == (2, length)
    assert torch.allclose(x, y, atol=1e-9)


@pytest.mark.parametrize("method, iters, limit_db", [
    ("fgla", 32, -18.0), ("fgla", 16, -15.0), ("gl", 32, -13.0), ("spsi", 0, -15.0), ("spsi", 12, -25.0),
])
def test_phase_retrieval_reaches_a_stated_spectral_convergence(method, iters, limit_db):
    x = torch.from_numpy(harmonic_note(1.0, decay=2.0))
    y = retrieve_phase(magnitude(x, CFG), CFG, len(x), method=method, n_iter=iters)
    assert y.shape == x.shape
    assert _sc_db(x, y) < limit_db


def test_more_iterations_and_momentum_help():
    x = torch.from_numpy(harmonic_note(1.0, decay=2.0))
    mag = magnitude(x, CFG)
    sc = {(m, i): _sc_db(x, retrieve_phase(mag, CFG, len(x), m, i)) for m in ("gl", "fgla") for i in (0, 8, 32)}
    assert sc[("fgla", 32)] < sc[("fgla", 8)] < sc[("fgla", 0)]
    assert sc[("fgla", 32)] < sc[("gl", 32)] - 2.0


def test_batched_equals_one_by_one():
    notes = torch.from_numpy(np.stack([harmonic_note(0.5, tilt=t) for t in (0.7, 1.5, 2.5)]))
    mags = magnitude(notes, CFG)
    batched = retrieve_phase(mags, CFG, notes.shape[1], n_iter=8, seed=1)
    singles = torch.stack([retrieve_phase(mags[i], CFG, notes.shape[1], n_iter=8, seed=1) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-4)
    assert torch.equal(batched, retrieve_phase(mags, CFG, notes.shape[1], n_iter=8, seed=1))
    assert not torch.allclose(batched, retrieve_phase(mags, CFG, notes.shape[1], n_iter=8, seed=2), atol=1e-3)


@pytest.mark.parametrize("kwargs, word", [
    ({"n_fft": 0}, "n_fft"), ({"hop_length": 0}, "hop_length"), ({"n_fft": 1023}, "even"),
    ({"n_fft": 256, "hop_length": 512}, "hop_length"),
])
def test_config_validation_names_the_parameter(kwargs, word):
    with pytest.raises(ParameterError, match=word):
        StftConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    cfg = StftConfig(1024, 256)
    assert StftConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ParameterError, match="window"):
        StftConfig.from_dict({"n_fft": 1024, "window": "hamming"})


def test_bad_arguments_are_refused():
    mag = torch.ones(CFG.n_bins, 10)
    with pytest.raises(ParameterError, match="method"):
        retrieve_phase(mag, CFG, 4096, method="magic")
    with pytest.raises(ParameterError, match="n_iter"):
        retrieve_phase(mag, CFG, 4096, n_iter=-1)
    with pytest.raises(ParameterError, match="shape"):
        retrieve_phase(torch.ones(3, 10), CFG, 4096)


def test_spsi_start_beats_random_start_at_the_same_iteration_count():
    x = torch.from_numpy(harmonic_note(1.0, decay=2.0, n_harmonics=10))
    mag = magnitude(x, CFG)
    for iters in (0, 4, 16):
        spsi = _sc_db(x, retrieve_phase(mag, CFG, len(x), "spsi", iters))
        rand = _sc_db(x, retrieve_phase(mag, CFG, len(x), "fgla", iters))
        assert spsi < rand - 3.0, (iters, spsi, rand)


def test_spsi_phase_of_a_steady_sinusoid_advances_by_its_frequency():
    from samplegen.spectral import spsi_phase

    sr, f0 = 44100, 1000.0
    x = torch.sin(2 * torch.pi * f0 * torch.arange(sr // 2, dtype=torch.float64) / sr)
    spec = stft(x, CFG)
    est = spsi_phase(spec.abs()[None], CFG)[0]
    k = int(round(f0 * CFG.n_fft / sr))
    true_step = torch.angle(spec[k, 11] / spec[k, 10]).item()
    est_step = torch.remainder(est[k, 11] - est[k, 10] + torch.pi, 2 * torch.pi).item() - torch.pi
    assert est_step == pytest.approx(true_step, abs=0.05)
