import numpy as np
import pytest
import torch

from samplegen.errors import ParameterError
from samplegen.spectral import stft as stft_module
from samplegen.spectral.stft import (DEFAULT_ITERS, DEFAULT_METHOD, DEVICE_ITERS, DEVICE_METHOD, FADE_IN, PGHI_TOL,
                                     PHASE_METHODS, RTPGHI_ONSET_RATIO, StftConfig, default_phase, istft, magnitude,
                                     pghi_gradients, pghi_phase, retrieve_phase, rtpghi_phase, spsi_phase, stft)
from synth import SR, harmonic_note

CFG = StftConfig()


def _sc_db(x: torch.Tensor, y: torch.Tensor) -> float:
    X, Y = magnitude(x, CFG), magnitude(y, CFG)
    return float(20 * torch.log10(torch.linalg.norm(Y - X) / torch.linalg.norm(X)))


@pytest.fixture(scope="module")
def tone() -> torch.Tensor:
    """C4 with 8 decaying harmonics, 1 s."""
    return torch.from_numpy(harmonic_note(1.0, decay=2.0))


@pytest.fixture(scope="module")
def tone_sc(tone: torch.Tensor) -> dict[tuple[str, int], float]:
    mag = magnitude(tone, CFG)
    runs = [(m, i) for m in ("gl", "fgla") for i in (0, 8, 32)] + [("pghi", i) for i in (0, 4, 16)] + \
        [("spsi", i) for i in (0, 4, 16)] + [("fgla", i) for i in (4, 16)] + [("rtpghi", i) for i in (0, 16, 30)]
    return {(m, i): _sc_db(tone, retrieve_phase(mag, CFG, len(tone), m, i)) for m, i in runs}


def test_stft_matches_a_slow_obvious_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000)
    n_fft, hop = 256, 64
    cfg = StftConfig(n_fft, hop)
    padded = np.pad(x, n_fft // 2, mode="reflect")  # torch's center=True padding
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = [padded[i * hop : i * hop + n_fft] * window for i in range(cfg.n_frames(len(x)))]
    ref = np.stack([np.fft.rfft(f) for f in frames], axis=1)
    ours = stft(torch.tensor(x), cfg).numpy()
    assert ours.shape == ref.shape == (cfg.n_bins, cfg.n_frames(len(x)))
    assert np.allclose(ours, ref, atol=1e-8)
    ours32 = stft(torch.tensor(x, dtype=torch.float32)[None], cfg)[0].numpy()
    assert np.abs(ours32 - ref).max() < 1e-4


@pytest.mark.parametrize("length", [4096, 22050, 22051, 30000])
def test_istft_of_stft_is_identity_with_exact_length(length):
    x = torch.randn(2, length, dtype=torch.float64)
    y = istft(stft(x, CFG), CFG, length)
    assert y.shape == (2, length)
    assert torch.allclose(x, y, atol=1e-9)
    assert istft(stft(x[0], CFG), CFG, length - 100).shape == (length - 100,)


@pytest.mark.parametrize("length", [4097, 22050, 30001])
def test_retrieve_phase_returns_exactly_the_requested_length(length):
    x = torch.from_numpy(harmonic_note(length / SR))
    for method in PHASE_METHODS:
        y = retrieve_phase(magnitude(x, CFG), CFG, length, method, 1)
        assert y.shape == (length,) and y.dtype == torch.float32


# Thresholds: measured on this tone (gl 32: −16.2; fgla 16/32: −19.8/−23.3; spsi 0/16: −16.5/−21.3;
# pghi 0/4/16: −21.0/−24.1/−30.5; rtpghi 0/16/30: −20.6/−29.2/−30.4 dB), with about 2 dB of margin.
@pytest.mark.parametrize("method, iters, limit_db", [
    ("gl", 32, -14.0), ("fgla", 16, -17.5), ("fgla", 32, -21.0), ("spsi", 0, -14.5), ("spsi", 16, -19.0),
    ("pghi", 0, -19.0), ("pghi", 4, -22.0), ("pghi", 16, -28.0),
    ("rtpghi", 0, -18.5), ("rtpghi", 16, -27.0), ("rtpghi", 30, -28.3),
])
def test_phase_retrieval_reaches_a_stated_spectral_convergence(tone_sc, method, iters, limit_db):
    assert tone_sc[(method, iters)] < limit_db


def test_random_start_alone_is_far_off(tone_sc):
    assert tone_sc[("fgla", 0)] > -8.0


def test_fgla_beats_plain_gl_at_the_same_iteration_count(tone_sc):
    assert tone_sc[("fgla", 32)] < tone_sc[("fgla", 8)] < tone_sc[("fgla", 0)]
    for iters in (8, 32):
        assert tone_sc[("fgla", iters)] < tone_sc[("gl", iters)] - 2.0  # measured 3.4 and 7.1 dB


@pytest.mark.parametrize("iters", [0, 4, 16])
def test_pghi_start_beats_random_start_at_the_same_iteration_count(tone_sc, iters):
    assert tone_sc[("pghi", iters)] < tone_sc[("fgla", iters)] - 5.0  # measured 17, 13, 11 dB


def test_pghi_beats_spsi_alone(tone_sc):
    assert tone_sc[("pghi", 0)] < tone_sc[("spsi", 0)] - 2.0  # measured 4.5 dB


def test_pghi_on_a_plucked_note_starting_at_sample_zero():
    # The corpus's notes begin at their onset: the hardest case for PGHI (the
    # first frames see the reflect padding's mirror image of the attack).
    x = torch.from_numpy(harmonic_note(1.0, decay=8.0, attack_s=0.001, n_harmonics=12))
    mag = magnitude(x, CFG)
    pghi = _sc_db(x, retrieve_phase(mag, CFG, len(x), "pghi", 0))
    rand = _sc_db(x, retrieve_phase(mag, CFG, len(x), "fgla", 0))
    assert pghi < -11.0 and pghi < rand - 6.0  # measured −14.0 vs −4.4 dB


def test_batched_equals_one_by_one():
    notes = torch.from_numpy(np.stack([harmonic_note(0.5, tilt=t) for t in (0.7, 1.5, 2.5)]))
    mags = magnitude(notes, CFG)
    for method in PHASE_METHODS:
        batched = retrieve_phase(mags, CFG, notes.shape[1], method, n_iter=4, seed=1)
        singles = torch.stack([retrieve_phase(mags[i], CFG, notes.shape[1], method, n_iter=4, seed=1)
                               for i in range(3)])
        assert batched.shape == (3, notes.shape[1])
        assert torch.allclose(batched, singles, atol=1e-4), method
        assert torch.equal(batched, retrieve_phase(mags, CFG, notes.shape[1], method, n_iter=4, seed=1))


def test_pghi_on_several_threads_equals_one_thread(monkeypatch):
    import samplegen.spectral.stft as spectral

    notes = torch.from_numpy(np.stack([harmonic_note(0.5, tilt=t, onset_s=0.01 * t) for t in (0.7, 1.5, 2.5, 1.1)]))
    mags = magnitude(notes, CFG)
    fill = torch.rand(mags.shape[1:], generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(spectral, "_pghi_workers", lambda n: 1)
    one = pghi_phase(mags, CFG, fill=fill)
    monkeypatch.setattr(spectral, "_pghi_workers", lambda n: min(n, 3))
    assert torch.equal(pghi_phase(mags, CFG, fill=fill), one)


def test_pghi_gradients_of_a_batch_are_each_notes_own():
    # Each note's floor is its own peak's, so a quiet note beside a loud one keeps its gradients.
    notes = torch.from_numpy(np.stack([harmonic_note(0.5, tilt=1.5), 1e-3 * harmonic_note(0.5, tilt=0.7)]))
    mags = magnitude(notes, CFG)
    batched = pghi_gradients(mags, CFG)
    for i in range(2):
        for got, want in zip(batched, pghi_gradients(mags[i], CFG)):
            assert torch.allclose(got[i], want, rtol=0, atol=1e-9)


def test_seed_changes_random_start():
    x = torch.from_numpy(harmonic_note(0.5))
    mag = magnitude(x, CFG)
    a = retrieve_phase(mag, CFG, len(x), "fgla", 4, seed=1)
    b = retrieve_phase(mag, CFG, len(x), "fgla", 4, seed=2)
    assert not torch.allclose(a, b, atol=1e-3)


def test_pghi_gradient_of_a_steady_sinusoid_is_its_frequency():
    f0 = 1000.0
    x = torch.sin(2 * torch.pi * f0 * torch.arange(SR // 2, dtype=torch.float64) / SR)
    spec = stft(x, CFG)
    per_frame, per_bin = (g.numpy() for g in pghi_gradients(spec.abs(), CFG))
    k = int(round(f0 * CFG.n_fft / SR))
    for kk in (k, k + 1):  # both bins next to 1000 Hz (46.4 bins) turn at its rate; Hann ≠ Gaussian further out
        true_step = torch.angle(spec[kk, 11] / spec[kk, 10]).item()
        est = (per_frame[kk, 10] + per_frame[kk, 11]) / 2
        assert np.angle(np.exp(1j * (est - true_step))) == pytest.approx(0.0, abs=0.05)
    est_phase = pghi_phase(spec.abs()[None].float(), CFG)[0]
    true_bin_step = torch.angle(spec[k + 1, 10] / spec[k, 10]).item()
    assert np.angle(np.exp(1j * (est_phase[k + 1, 10] - est_phase[k, 10] - true_bin_step).item())) == \
        pytest.approx(0.0, abs=0.1)


def test_spsi_phase_of_a_steady_sinusoid_advances_by_its_frequency():
    f0 = 1000.0
    x = torch.sin(2 * torch.pi * f0 * torch.arange(SR // 2, dtype=torch.float64) / SR)
    spec = stft(x, CFG)
    est = spsi_phase(spec.abs()[None], CFG)[0]
    k = int(round(f0 * CFG.n_fft / SR))
    true_step = torch.angle(spec[k, 11] / spec[k, 10]).item()
    est_step = torch.remainder(est[k, 11] - est[k, 10] + torch.pi, 2 * torch.pi).item() - torch.pi
    assert est_step == pytest.approx(true_step, abs=0.05)


def test_silence_gives_silence():
    mag = torch.zeros(2, CFG.n_bins, CFG.n_frames(8192))
    for method in PHASE_METHODS:
        assert torch.equal(retrieve_phase(mag, CFG, 8192, method, 2), torch.zeros(2, 8192))


@pytest.mark.parametrize("kwargs, word", [
    ({"n_fft": 0}, "n_fft=0 must be a positive integer"), ({"hop_length": 0}, "hop_length=0 must be a positive integer"),
    ({"n_fft": 1023}, "n_fft=1023 must be even"), ({"n_fft": 256, "hop_length": 512}, "hop_length=512"),
    ({"n_fft": 2048.0}, "n_fft"), ({"hop_length": True}, "hop_length"),
])
def test_config_validation_names_the_parameter(kwargs, word):
    with pytest.raises(ParameterError, match=word):
        StftConfig(**kwargs)


def test_config_properties_and_round_trip():
    cfg = StftConfig(1024, 256)
    assert cfg.n_bins == 513 and cfg.n_frames(1000) == 4
    assert StftConfig.from_dict(cfg.to_dict()) == cfg
    assert StftConfig.from_dict({}) == StftConfig()
    with pytest.raises(ParameterError, match="window"):
        StftConfig.from_dict({"n_fft": 1024, "window": "hamming"})
    with pytest.raises(ParameterError, match="n_fft"):
        StftConfig.from_dict({"n_fft": "1024"})


def test_bad_arguments_are_refused():
    mag = torch.ones(CFG.n_bins, CFG.n_frames(4096))
    with pytest.raises(ParameterError, match="method"):
        retrieve_phase(mag, CFG, 4096, method="magic")
    with pytest.raises(ParameterError, match="n_iter"):
        retrieve_phase(mag, CFG, 4096, n_iter=-1)
    with pytest.raises(ParameterError, match="momentum"):
        retrieve_phase(mag, CFG, 4096, momentum=2.5)
    with pytest.raises(ParameterError, match="length"):
        retrieve_phase(mag, CFG, 0)
    with pytest.raises(ParameterError, match="frames"):
        retrieve_phase(mag, CFG, 40000)
    with pytest.raises(ParameterError, match="shape"):
        retrieve_phase(torch.ones(3, 10), CFG, 4096)
    with pytest.raises(ParameterError, match="non-negative"):
        retrieve_phase(-mag, CFG, 4096)
    with pytest.raises(ParameterError, match="audio"):
        stft(torch.ones(2, 3, 5000), CFG)


@pytest.mark.parametrize("n_fft, hop, length", [(2048, 512, 22050), (1024, 256, 9000), (512, 128, 4411),
                                                (2048, 1024, 8192), (1000, 300, 7000)])
def test_istft_equals_torch_istft(n_fft, hop, length):
    """The reshape overlap-add (hop dividing n_fft) and the fallback both give torch.istft's output."""
    cfg = StftConfig(n_fft=n_fft, hop_length=hop)
    g = torch.Generator().manual_seed(n_fft + hop)
    x = torch.randn(3, length, generator=g, dtype=torch.float64)
    spec = stft(x, cfg) * torch.exp(1j * torch.rand(cfg.n_bins, cfg.n_frames(length), generator=g, dtype=torch.float64))
    want = torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                       length=length)
    torch.testing.assert_close(istft(spec, cfg, length), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(istft(spec[1], cfg, length), want[1], rtol=1e-10, atol=1e-12)
    # a shorter output is the same signal cut
    torch.testing.assert_close(istft(spec, cfg, length - 7), want[:, : length - 7], rtol=1e-10, atol=1e-12)


def test_default_phase_retrieval_starts_without_a_click():
    from samplegen.evaluation.metrics import has_onset_click, onset_click

    # a bright note with a hard attack 5 ms into the file, as notes are onset-aligned
    note = harmonic_note(1.0, onset_s=0.005, attack_s=1e-4, tilt=0.3, n_harmonics=40)
    mag = magnitude(torch.from_numpy(note), CFG)
    assert not has_onset_click(note)
    assert has_onset_click(retrieve_phase(mag, CFG, len(note), fade_in=0).numpy())  # what the fade fixes
    for method in PHASE_METHODS:
        wav = retrieve_phase(mag, CFG, len(note), method, 4).numpy()
        jump, hf_db = onset_click(wav)
        assert jump == 0.0 and hf_db < -15.0 and not has_onset_click(wav), method
    with pytest.raises(ParameterError, match="fade_in"):
        retrieve_phase(mag, CFG, len(note), fade_in=-1)


def test_rtpghi_start_beats_random_start_and_its_iterations_reach_pghis_class(tone_sc):
    assert tone_sc[("rtpghi", 0)] < tone_sc[("fgla", 0)] - 5.0
    assert tone_sc[("rtpghi", 16)] < tone_sc[("fgla", 16)] - 5.0
    assert tone_sc[("rtpghi", DEVICE_ITERS)] < tone_sc[("pghi", 16)] + 1.0  # measured 0.2 dB behind


def _rtpghi_reference(mag: np.ndarray, per_frame: np.ndarray, per_bin: np.ndarray, fill: np.ndarray,
                      fresh_frames: int) -> np.ndarray:
    """rtpghi_phase's recursion for one note, bin by bin in plain Python (its docstring, step by step)."""
    n_bins, n_frames = mag.shape
    floor = PGHI_TOL * mag.max()
    across = np.zeros_like(mag)
    for k in range(1, n_bins):
        across[k] = across[k - 1] + 0.5 * (per_bin[k - 1] + per_bin[k])
    phase = np.zeros_like(mag)
    phase[:, 0] = across[:, 0]
    for t in range(1, n_frames):
        m = mag[:, t]
        peaks = [k for k in range(1, n_bins - 1) if m[k] > m[k - 1] and m[k] >= m[k + 1] and m[k] > 0]
        continued = phase[:, t - 1] + 0.5 * (per_frame[:, t - 1] + per_frame[:, t])
        keeps = (mag[:, t - 1] >= RTPGHI_ONSET_RATIO * m) & (mag[:, t - 1] >= floor) & (t > fresh_frames)
        w = np.where(keeps, m * m, 0.0)
        turn = np.arctan2(np.sum(w * np.sin(continued - across[:, t])), np.sum(w * np.cos(continued - across[:, t])))
        for k in range(n_bins):
            p = min(peaks, key=lambda q: (abs(q - k), q)) if peaks else k
            start = continued[p] if keeps[p] else across[p, t] + turn
            phase[k, t] = start + across[k, t] - across[p, t]
    phase = np.where(mag >= floor, phase, fill)
    turn_k = np.pi * np.arange(n_bins)
    phase[:, 0] = np.where(np.cos(phase[:, 0] - turn_k) >= 0, 0.0, np.pi) + turn_k
    return phase


@pytest.mark.parametrize("fresh_frames", [0, 2])
def test_rtpghi_matches_a_slow_obvious_reference(fresh_frames):
    cfg = StftConfig(256, 64)  # small, so the reference's loops stay quick
    x = torch.from_numpy(np.stack([harmonic_note(0.2, tilt=1.2, onset_s=0.03), harmonic_note(0.2, decay=9.0)]))
    mags = magnitude(x, cfg).double()
    fill = torch.rand(mags.shape[1:], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = rtpghi_phase(mags, cfg, fill=fill, fresh_frames=fresh_frames).double()
    per_frame, per_bin = pghi_gradients(mags, cfg)
    for i in range(len(mags)):
        ref = torch.from_numpy(_rtpghi_reference(mags[i].numpy(), per_frame[i].numpy(), per_bin[i].numpy(),
                                                 fill.numpy(), fresh_frames))
        wrapped = torch.remainder(ours[i] - ref + np.pi, 2 * np.pi) - np.pi  # equal up to whole turns
        assert wrapped.abs().max() < 1e-4  # float32 output: about 1e-6 of a phase of up to 2π


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_griffin_lim_of_the_device_matches_the_cpu_one(compiled):
    """The frame-major FGLA a CUDA device runs, on CPU tensors (eager, and through torch.compile as there)."""
    cfg = StftConfig(256, 64)
    x = torch.from_numpy(np.stack([harmonic_note(0.2, tilt=1.2, onset_s=0.03), harmonic_note(0.2, decay=9.0)]))
    mag = magnitude(x, cfg)
    start = torch.polar(mag, torch.rand(mag.shape, generator=torch.Generator().manual_seed(5)) * 2 * np.pi)
    assert stft_module._frames_layout_applies(cfg, mag.shape[-1], x.shape[1])
    for n_iter, alpha in ((0, 0.99), (6, 0.99), (6, 0.0)):
        ref = stft_module._griffin_lim(start, mag, cfg, x.shape[1], n_iter, alpha, FADE_IN)
        ours = stft_module._griffin_lim_frames(start, mag, cfg, x.shape[1], n_iter, alpha, FADE_IN, compiled)
        assert (ours - ref).abs().max() < 1e-5 * ref.abs().max()
    # where the layout does not apply (a hop that does not divide n_fft), the CPU path is the only one
    assert not stft_module._frames_layout_applies(StftConfig(256, 96), mag.shape[-1], x.shape[1])


def test_default_phase_is_pghi_on_a_cpu_and_the_device_method_elsewhere():
    assert default_phase("cpu") == (DEFAULT_METHOD, DEFAULT_ITERS) == ("pghi", 10)
    assert default_phase("cuda") == (DEVICE_METHOD, DEVICE_ITERS) == ("rtpghi", 30)
    x = torch.from_numpy(harmonic_note(0.3))
    mag = magnitude(x, CFG)
    assert torch.equal(retrieve_phase(mag, CFG, len(x)), retrieve_phase(mag, CFG, len(x), "pghi", 10))
    assert torch.equal(retrieve_phase(mag, CFG, len(x), "rtpghi"), retrieve_phase(mag, CFG, len(x), "rtpghi", 10))
