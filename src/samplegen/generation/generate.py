"""Reconstruct, interpolate, sample and perturb: latent points in, waveforms out.

Every verb returns :class:`Sound` objects (a name, a latent point, a
waveform); :func:`write_sounds` puts them on disk as 44.1 kHz WAVs with a
``.latent.json`` beside each, so a point heard here can be exported or
reopened later.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from samplegen.audio import audio_io
from samplegen.checkpoint import Run
from samplegen.errors import AudioError, CheckpointError, ParameterError, check_seed
from samplegen.files import inside_folder, parse_json, read_regular_file, unique_stems, write_json
from samplegen.formats import LATENT_POINT, check_version
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import audio_to_features, features_to_waveform, split_features

INTERPOLATION_MODES = ("linear", "slerp")
#: Most sounds one call makes: they are decoded as one batch (a 2-second note's spectrogram is 0.7 MB, its
#: phase retrieval several times that), so 20,000 would need tens of GB. Run again with another seed for more.
MAX_SOUNDS = 256
#: Largest ``.latent.json`` read (a point of 1,024 numbers is about 25 KB).
MAX_LATENT_FILE_BYTES = 1024**2
#: Largest |z_i| decoded: the prior's draws stay within ±8, the generation commands' widest reach (temperature
#: or nudges of 10 prior deviations) within about ±60; further out the decoder only extrapolates into noise,
#: and at 10^30 its output overflows.
MAX_ABS_LATENT = 1000.0


@dataclass
class Sound:
    """One generated note: ``audio`` float32 (n,) at 44.1 kHz, raw decoder level; ``z`` (L,)."""

    name: str
    z: np.ndarray
    audio: np.ndarray
    source: str = ""


def decode(run: Run, z: torch.Tensor | np.ndarray, method: str | None = None, n_iter: int | None = None,
           seed: int = 0) -> np.ndarray:
    """Latent points → waveforms, phase retrieval included.

    Parameters
    ----------
    z : (B, L) or (L,) latent points
    method, n_iter : phase retrieval (defaults: the run's own — :func:`samplegen.spectral.stft.default_phase`
        for the model's device for a magnitude-only run, IF integration and ``phase.n_iter`` iterations for a
        run that learned instantaneous frequency; see :func:`samplegen.spectral.features.features_to_waveform`).
        Phase retrieval runs where the model does: on a GPU the decoded magnitudes never visit the host.

    Returns
    -------
    float32 array (B, n_samples) or (n_samples,), the decoder's raw level (not normalised).
    """
    zt = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z, dtype=torch.float32)
    single = zt.ndim == 1
    on_gpu = run.device.type == "cuda"
    with spectral.DEVICE_LOCK if on_gpu else contextlib.nullcontext():
        feats = _decoded_on_device(run, zt[None] if single else zt)
        with torch.no_grad():
            wav = features_to_waveform(feats, run.config.stft, run.config.phase, run.config.data.n_samples,
                                       method=method, n_iter=n_iter, seed=seed)
        out = _to_host(wav).numpy().astype(np.float32, copy=False)  # no second 90 MB copy at batch 256
    return out[0] if single else out


def _to_host(wav: torch.Tensor) -> torch.Tensor:
    """``wav`` on the CPU; from a GPU through pinned memory (a copy to pageable memory took a third of
    decode's time at batch 256 on an H200: BENCHMARKS.md, "GPU speed")."""
    if wav.device.type != "cuda":
        return wav.cpu()
    host = torch.empty(wav.shape, dtype=wav.dtype, pin_memory=True)
    return host.copy_(wav)


def decode_features(run: Run, z: torch.Tensor) -> torch.Tensor:
    """Latent points Tensor[B x L] → the run's decoded features Tensor[B x T x C·F] (linear magnitude, and
    instantaneous frequency for a phase-aware run), on the CPU."""
    return _decoded_on_device(run, z).cpu()


def _decoded_on_device(run: Run, z: torch.Tensor) -> torch.Tensor:
    """:func:`decode_features`, left on the model's device."""
    if not torch.isfinite(z).all():
        raise ParameterError("latent points must be finite numbers")
    if z.numel() and float(z.abs().max()) > MAX_ABS_LATENT:
        raise ParameterError(f"latent points must lie within ±{MAX_ABS_LATENT:g} (the prior's draws lie within ±8)")
    device = run.device
    with torch.no_grad():
        return run.stats.denormalise(run.model.decode(z.to(device=device, dtype=torch.float32)))


def decode_magnitude(run: Run, z: torch.Tensor) -> torch.Tensor:
    """Latent points Tensor[B x L] → linear STFT magnitudes Tensor[B x F x T] (no phase retrieval).

    Cheap (one pass of the decoder), so callers that only need the spectrum — the instrument's
    spectrogram, its knob labels — skip the costly way back to a waveform.
    """
    return magnitude_from_features(run, decode_features(run, z))


def magnitude_from_features(run: Run, feats: torch.Tensor) -> torch.Tensor:
    """Decoded features Tensor[B x T x C·F] (see :func:`decode_features`) → linear magnitudes Tensor[B x F x T]."""
    return split_features(feats, run.config.stft.n_bins)[0].transpose(1, 2)


def encode_audio(run: Run, audio: np.ndarray) -> torch.Tensor:
    """Prepared notes (B, n_samples) → posterior means (B, L)."""
    feats = run.stats.normalise(audio_to_features(audio, run.config.stft, run.config.phase))
    device = run.device
    with torch.no_grad():
        mu, _ = run.model.encode(feats.to(device))
    return mu.cpu()


def resolve(run: Run, item: str) -> tuple[str, torch.Tensor, np.ndarray | None]:
    """A SOUND argument → (name, latent mean, prepared original audio or None).

    ``item`` is an audio file (any format the corpus accepts), a ``.latent.json`` saved
    by a generation command, or the name of a note in the run's corpus.
    """
    if not item.strip():  # Path("") is the current folder
        raise ParameterError("a sound's name is empty; give an audio file, a .latent.json or a note of the run's "
                             "corpus (`samplegen info RUN` lists them)")
    path = Path(item)
    if path.suffix.lower() == ".json" and path.is_file():
        return path.name[: -len(".latent.json")] if path.name.endswith(".latent.json") else path.stem, \
            load_latent(path, run.config.model.latent_dim, run.path.name), None
    if path.is_dir():
        raise ParameterError(f"{item} is a folder; give an audio file, a .latent.json or a note of the run's corpus")
    if path.is_file():
        try:
            note = audio_io.prepare_note(audio_io.read_audio(path), duration_s=run.config.data.duration_s)
        except AudioError as exc:  # the reason alone ("silent") would not say which of several inputs
            raise AudioError(f"{item}: {exc}") from None
        return path.stem, encode_audio(run, note[None])[0], note
    if path.suffix.lower() in audio_io.SUPPORTED_EXTENSIONS:
        raise AudioError(f"{item}: no such file")
    idx = run.index(item)
    original = None
    if run.corpus.corpus_path and run.corpus.files[idx]:
        candidate = inside_folder(run.corpus.corpus_path, run.corpus.files[idx], run.path / "corpus.json",
                                  CheckpointError)
        if candidate.is_file():
            original = audio_io.prepare_note(audio_io.read_audio(candidate), duration_s=run.config.data.duration_s)
    return item, run.latent_mu[idx].clone(), original


def latent_point(z: Sequence[float] | np.ndarray, source: str, run: str) -> dict[str, Any]:
    """A ``.latent.json``'s content (:data:`samplegen.formats.LATENT_POINT`): the point, rounded to 6 decimals,
    where it came from and the run it belongs to; :func:`load_latent` reads it back."""
    return {"format_version": LATENT_POINT.current, "z": [round(float(v), 6) for v in z], "source": source,
            "run": run}


def load_latent(path: str | Path, latent_dim: int, run_name: str | None = None) -> torch.Tensor:
    """Read a ``.latent.json`` point; its size must match the run's latent size. A point another run wrote
    (by its folder's name, when ``run_name`` is given) is read with a warning: there it is another sound."""
    try:
        data = parse_json(read_regular_file(path, MAX_LATENT_FILE_BYTES, ParameterError), path, ParameterError)
    except OSError as exc:
        raise ParameterError(f"{path} is not a latent point file ({exc})") from None
    if isinstance(data, dict):
        check_version(LATENT_POINT, data.get("format_version"), path, ParameterError)
    try:
        values = data["z"]
        if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise TypeError('"z" must be a list of numbers')
        z = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # 10^400 written as an integer overflows
        raise ParameterError(f"{path} is not a latent point file ({exc})") from None
    if z.shape != (latent_dim,):
        raise ParameterError(f"{path} holds a point of size {tuple(z.shape)}; this run needs {latent_dim} numbers")
    if not torch.isfinite(z).all() or float(z.abs().max()) > MAX_ABS_LATENT:
        raise ParameterError(f"{path} holds values that are not finite numbers within ±{MAX_ABS_LATENT:g}; "
                             "write it again with a generation command, or fix its \"z\"")
    made_by = data.get("run")
    if run_name and isinstance(made_by, str) and made_by and Path(made_by).name != run_name:
        warnings.warn(f"{path} was made with run {Path(made_by).name!r}; in {run_name!r} the same point is "
                      "another sound", stacklevel=2)
    return z


def reconstruct(run: Run, items: Sequence[str]) -> list[Sound]:
    """Each input through the model: encode to its posterior mean, decode, retrieve phase."""
    if not items:
        raise ParameterError("give at least one audio file or corpus note to reconstruct")
    resolved = [resolve(run, item) for item in items]
    z = torch.stack([r[1] for r in resolved])
    wavs = decode(run, z)
    return [Sound(f"{name}_recon", zi.numpy(), w, source=name) for (name, zi, _), w in zip(resolved, wavs)]


def originals(run: Run, items: Sequence[str]) -> list[Sound]:
    """The prepared inputs themselves (where available), for listening side by side."""
    out = []
    for item in items:
        name, z, audio = resolve(run, item)
        if audio is not None:
            out.append(Sound(f"{name}_original", z.numpy(), audio, source=name))
        elif not Path(item).is_file() and run.corpus.corpus_path:  # a corpus note whose file has gone
            warnings.warn(f"{item}: no original written, its file is no longer in {run.corpus.corpus_path}",
                          stacklevel=2)
    return out


def interpolation_path(za: torch.Tensor, zb: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """``steps`` points from ``za`` to ``zb`` inclusive, Tensor[steps x L].

    ``slerp`` follows the great circle (with the norm interpolated linearly),
    which keeps intermediate points at the typical radius of a Gaussian prior
    instead of cutting through its low-density centre.
    """
    if mode not in INTERPOLATION_MODES:
        raise ParameterError(f"mode={mode!r} must be one of {INTERPOLATION_MODES}")
    if not isinstance(steps, int) or steps < 2:
        raise ParameterError(f"steps={steps!r} must be an integer >= 2")
    t = torch.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        return (1 - t) * za + t * zb
    na, nb = za.norm(), zb.norm()
    ua, ub = za / na.clamp_min(1e-8), zb / nb.clamp_min(1e-8)
    omega = torch.arccos(torch.clamp((ua * ub).sum(), -1.0, 1.0))
    if omega.abs() < 1e-4:
        return (1 - t) * za + t * zb
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def interpolate(run: Run, a: str, b: str, steps: int = 8, mode: str = "linear") -> list[Sound]:
    """A series of ``steps`` sounds from A to B (both ends included)."""
    _check_count("steps", steps, minimum=2, more="")  # a path has no seed
    name_a, za, _ = resolve(run, a)
    name_b, zb, _ = resolve(run, b)
    path = interpolation_path(za, zb, steps, mode)
    wavs = decode(run, path)
    return [
        Sound(f"interp_{i:02d}_of_{steps:02d}", path[i].numpy(), wavs[i], source=f"{name_a} -> {name_b} ({mode}, t={i / (steps - 1):.3f})")
        for i in range(steps)
    ]


def _check_count(name: str, value: object, minimum: int = 1, more: str = "; run again with another --seed for more") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_SOUNDS:
        raise ParameterError(f"{name}={value!r} must be an integer from {minimum} to {MAX_SOUNDS} (sounds per call{more})")


def sample(run: Run, n: int = 8, temperature: float = 1.0, seed: int = 0) -> list[Sound]:
    """``n`` random draws from the prior N(0, T²·I)."""
    _check_count("n", n)
    if not (math.isfinite(temperature) and 0 < temperature <= 10):
        raise ParameterError(f"temperature={temperature} must be in (0, 10]")
    g = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(n, run.config.model.latent_dim, generator=g) * temperature
    wavs = decode(run, z)
    return [Sound(f"sample_{i:03d}", z[i].numpy(), wavs[i], source=f"prior draw, T={temperature}, seed={seed}") for i in range(n)]


def perturb(run: Run, item: str, amount: float = 0.5, n: int = 4, seed: int = 0) -> list[Sound]:
    """``n`` variations of a sound: its latent point plus Gaussian noise of standard deviation ``amount``.

    ``amount`` is in units of the prior's standard deviation: 0.1 is a subtle
    variation, 1 a different sound of the same neighbourhood.
    """
    if not (math.isfinite(amount) and 0 <= amount <= 10):
        raise ParameterError(f"amount={amount} must be in [0, 10]")
    _check_count("n", n)
    name, z0, _ = resolve(run, item)
    g = torch.Generator().manual_seed(check_seed(seed))
    z = z0[None] + amount * torch.randn(n, z0.shape[0], generator=g)
    wavs = decode(run, z)
    return [Sound(f"{name}_vary_{i:02d}", z[i].numpy(), wavs[i], source=f"{name} + {amount}·N(0, I), seed={seed}") for i in range(n)]


def write_sounds(sounds: Sequence[Sound], out_dir: str | Path, run: Run | None = None) -> list[Path]:
    """Write each sound as ``NAME.wav`` (24-bit, 44.1 kHz) and ``NAME.latent.json``.

    NAME is the sound's name made safe (:func:`samplegen.files.unique_stems`): names come from
    corpus.json, file stems and the command line, and must not leave ``out_dir``. A name already used by a
    sound in ``out_dir`` gets ``_2``, ``_3``…: a second batch (another seed, another pair) into the same
    folder keeps the sounds of the first, where it used to replace them. The waveform is
    scaled down only if it would clip, so a quiet output stays quiet (the health measures rely on
    the raw level).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create output folder {out}: {exc.strerror}") from None
    taken = {p.name[: -len(suffix)] for suffix in (".wav", ".latent.json") for p in out.glob(f"*{suffix}")}
    paths = []
    for s, stem in zip(sounds, unique_stems((s.name for s in sounds), taken)):
        paths.append(audio_io.write_wav(out / f"{stem}.wav", audio_io.limited_peak(s.audio)))
        write_json(out / f"{stem}.latent.json",
                   latent_point(s.z, s.source, str(run.path.resolve()) if run is not None else ""))
    return paths
