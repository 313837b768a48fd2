"""Exports: sampler instruments (SFZ, SF2) of generated sounds, and the decoder for a C++ plug-in (ONNX).

A SOUND is what every generation command takes: a corpus note's name, an audio file, or a
``.latent.json`` point. What is exported is the *model's* sound of it (decoded and phase-retrieved),
peak-normalised to -1 dBFS, with a crossfaded sustain loop where the note holds its level
(:mod:`samplegen.audio.sustain_loop`) and a release envelope, so held notes keep sounding and released
notes stop without a click. Each note is tuned from its measured f0 (:func:`sampler_tuning`): a decoded
note is seldom exactly C4, and played across the keyboard its error would follow it to every key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from samplegen.audio import audio_io
from samplegen.audio.corpus import cents_from_c
from samplegen.audio.soundfont import Sf2Sound, sf2_bytes
from samplegen.audio.sustain_loop import Loop, crossfaded, find_loop
from samplegen.checkpoint import Run
from samplegen.errors import ParameterError
from samplegen.files import atomic_write, one_unit, remove_temp_files, sha256_file, unique_stems, write_json
from samplegen.formats import DECODER_RECIPE, check_version
from samplegen.generation.generate import decode, resolve
from samplegen.spectral import stft as spectral
from samplegen.spectral.features import LOG_FLOOR

ROOT_KEY = 60
ATTACK_S = 0.003
RELEASE_S = 0.3
PEAK_DBFS = -1.0
RECIPE_NAME = "decoder.json"


@dataclass(frozen=True)
class SamplerSound:
    """A sound ready for a sampler: ``name`` a safe, unique file stem; ``audio`` float32 (n,) at 44.1 kHz; its loop or None."""

    name: str
    audio: np.ndarray
    loop: Loop | None
    root_key: int = ROOT_KEY
    tune_cents: int = 0


def sampler_tuning(y: np.ndarray) -> tuple[int, int]:
    """(root key, tune in cents) that make a note play in equal temperament across the keyboard.

    The root key is the key nearest the note's measured pitch (:func:`samplegen.audio.audio_io.estimate_pitch_hz`)
    within a tritone of C4 (octaves folded, :func:`samplegen.audio.corpus.cents_from_c`: a tracker can read a
    note's periodicity an octave off the pitch heard, so tuning never moves a note by octaves), the tune the
    cents that bring it onto that key (SFZ ``tune``, SF2 pitch correction; positive raises). An
    unpitched note keeps C4 and no tune.
    """
    hz = audio_io.estimate_pitch_hz(y)
    if hz is None:
        return ROOT_KEY, 0
    offset = cents_from_c(hz)
    semitones = int(round(offset / 100))
    return ROOT_KEY + semitones, int(round(100 * semitones - offset))


def sampler_sounds(run: Run, items: Sequence[str], taken: Iterable[str] = ()) -> list[SamplerSound]:
    """Decode each SOUND through the model, tune it (:func:`sampler_tuning`) and find its loop (its crossfade
    written into the audio); names in ``taken`` (already in the folder written to) get ``_2``, ``_3``…"""
    if not items:
        raise ParameterError("name at least one SOUND (a corpus note, an audio file or a .latent.json)")
    resolved = [resolve(run, item) for item in items]
    wavs = decode(run, torch.stack([z for _, z, _ in resolved]))
    out = []
    for (name, _, _), stem, y in zip(resolved, unique_stems((name for name, _, _ in resolved), taken), wavs):
        peak = float(np.max(np.abs(y)))
        if peak <= 0:
            raise ParameterError(f"{name} decodes to silence; choose another sound")
        y = (y * (10 ** (PEAK_DBFS / 20) / peak)).astype(np.float32)
        loop = find_loop(y)
        out.append(SamplerSound(stem, y if loop is None else crossfaded(y, loop), loop, *sampler_tuning(y)))
    return out


def sfz_text(sound: SamplerSound, sample_path: str) -> str:
    """An SFZ instrument playing one sample from its measured root across the whole keyboard."""
    lines = [
        f"// {sound.name}: made by SampleGen; tuned from its measured pitch, played across the keyboard",
        "<global>",
        f"ampeg_attack={ATTACK_S} ampeg_release={RELEASE_S}",
        "<region>",
        f"sample={sample_path}",
        f"lokey=0 hikey=127 pitch_keycenter={sound.root_key} tune={sound.tune_cents}",
    ]
    if sound.loop is not None:
        # SFZ loop_end is the last sample of the loop (inclusive).
        lines.append(f"loop_mode=loop_continuous loop_start={sound.loop.start} loop_end={sound.loop.end - 1}")
    else:
        lines.append("loop_mode=no_loop")
    return "\n".join(lines) + "\n"


def export_sfz(run: Run, items: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Write ``samples/NAME.wav`` (loop in its 'smpl' chunk) and ``NAME.sfz`` per SOUND; returns the .sfz paths.

    A NAME an earlier export left in ``out_dir`` (the same note from another run) is kept: the new one is
    ``NAME_2``."""
    out = Path(out_dir)
    taken = {p.stem for p in [*out.glob("*.sfz"), *(out / "samples").glob("*.wav")]}
    paths = []
    for s in sampler_sounds(run, items, taken):
        loop = (s.loop.start, s.loop.end) if s.loop else None
        audio_io.write_wav(out / "samples" / f"{s.name}.wav", s.audio, loop=loop, root_key=s.root_key)
        text = sfz_text(s, f"samples/{s.name}.wav")
        paths.append(_write_text(out / f"{s.name}.sfz", text))
    return paths


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def sf2_sound(sound: SamplerSound) -> Sf2Sound:
    """A sampler sound as an SF2 sample: its loop, root key and tune (as the sample's pitch correction)."""
    return Sf2Sound(sound.name, sound.audio, audio_io.SAMPLE_RATE,
                    (sound.loop.start, sound.loop.end) if sound.loop else None, sound.root_key, sound.tune_cents)


def export_sf2(run: Run, items: Sequence[str], out_file: str | Path) -> Path:
    """Write one SoundFont: preset i (bank 0) plays SOUND i across the keyboard."""
    path = Path(out_file)
    if path.name.lower() == ".sf2":
        raise ParameterError(f"--out {path} has no name before .sf2; e.g. --out {path.with_name('sounds.sf2')}")
    if path.suffix.lower() != ".sf2":
        raise ParameterError(f"--out {path} must end in .sf2")
    sounds = [sf2_sound(s) for s in sampler_sounds(run, items)]
    data = sf2_bytes(sounds, bank_name=f"SampleGen {run.path.name}", attack_s=ATTACK_S, release_s=RELEASE_S)
    return atomic_write(path, lambda fh: fh.write(data))


class _Decoder(torch.nn.Module):
    """The decoder alone, latent → the run's normalised features (compressed magnitude), as a host runs it."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.decoder = run.model.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def decoder_recipe(run: Run) -> dict[str, Any]:
    """Everything a host needs around the exported decoder: shapes, de-normalisation, STFT, phase retrieval."""
    cfg = run.config
    return {
        "format": "samplegen-decoder",
        "format_version": DECODER_RECIPE.current,
        "input": {"name": "z", "shape": ["batch", cfg.model.latent_dim], "dtype": "float32",
                  "prior": "standard normal: draw z ~ N(0, I) for a new sound"},
        "output": {"name": "features", "shape": ["batch", cfg.model.n_frames, cfg.model.n_bins], "dtype": "float32",
                   "layout": "frame-major (time, frequency): transpose to (frequency, time) for an STFT library"},
        "denormalise": _denormalise_recipe(run),
        "stft": {"sample_rate": cfg.data.sample_rate, "n_fft": cfg.stft.n_fft, "hop_length": cfg.stft.hop_length,
                 "window": "hann (periodic)", "center": True, "length_samples": cfg.data.n_samples},
        "phase_retrieval": {"method": spectral.DEFAULT_METHOD, "iterations": spectral.DEFAULT_ITERS,
                            "momentum": spectral.DEFAULT_MOMENTUM, "fade_in_samples": spectral.FADE_IN,
                            "steps": [
                                "S = mag * exp(i * phase0), phase0 from phase-gradient heap integration (PGHI)",
                                "fade(x): x[n] *= 0.5 - 0.5 * cos(pi * n / fade_in_samples) for n < fade_in_samples "
                                "(without it every note starts on a click)",
                                "prev = 0; repeat iterations times: C = stft(fade(istft(S))); A = (1 + momentum) * C "
                                "- momentum * prev; prev = C; S = mag * A / |A| (0 where A = 0)",
                                "waveform = fade(istft(S)), cut or padded to length_samples"],
                            "reference": "samplegen.spectral.stft.retrieve_phase; docs/plugin.md"},
    }


def _denormalise_recipe(run: Run) -> dict[str, Any]:
    """Decoder output → linear magnitude, for the run's compression (``stats.magnitude_power``)."""
    p = run.stats.magnitude_power
    stats = {"mean": [float(v) for v in run.stats.mean], "std": [float(v) for v in run.stats.std]}
    if p == 0.0:
        return {"formula": "magnitude = exp(features * std[bin] + mean[bin])", "magnitude_power": 0.0,
                "log": "natural", "log_floor": LOG_FLOOR, **stats}
    return {"formula": "magnitude = max(features * std[bin] + mean[bin], floor) ** (1 / magnitude_power)",
            "magnitude_power": p, "floor": LOG_FLOOR**p, **stats}


def onnxruntime_without_telemetry() -> Any:
    """The onnxruntime module, imported with its telemetry off.

    Since 1.29 it writes a device id and an event database under ``~/.cache/Microsoft`` on Linux and macOS
    as soon as it is imported, and may upload events. Only ``ORT_DISABLE_TELEMETRY=1`` set before that
    stops all of it; ``disable_telemetry_events()`` covers the later events (and Windows' ETW).
    A user who sets the variable to something else keeps their choice.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


def export_onnx(run: Run, out_dir: str | Path, opset: int = 18) -> dict[str, Path]:
    """Write ``decoder.onnx``, ``decoder.torchscript.pt`` and ``decoder.json``; returns their paths.

    The ONNX graph has a dynamic batch axis. The exported file is checked against PyTorch with
    onnxruntime before it is kept. The three files are one unit: ``decoder.json`` is removed first and
    written last, with the size and SHA-256 of the other two, so an export killed half-way leaves no
    recipe rather than one run's graph beside another's recipe (:func:`check_decoder_bundle`); one that fails
    (a full disk, the parity check) removes the files it wrote.
    """
    if run.config.phase.mode != "none":
        # The recipe (decoder.json, docs/plugin.md) describes magnitude + PGHI only.
        raise ParameterError(f"export onnx supports magnitude-only runs; {run.path} also learned phase "
                             f"(phase.mode={run.config.phase.mode!r}): export SFZ or SF2 instead")
    ort = onnxruntime_without_telemetry()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out, [".decoder.*.tmp"])  # left by an export that was killed
    (out / RECIPE_NAME).unlink(missing_ok=True)
    module = _Decoder(run).eval()
    z = torch.randn(2, run.config.model.latent_dim, generator=torch.Generator().manual_seed(0))
    with one_unit({}) as paths:
        tmp_onnx = out / ".decoder.onnx.tmp"
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(module, (z,), None, input_names=["z"], output_names=["features"],
                                        dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False)
            if program is None:
                raise ParameterError("torch.onnx.export returned nothing; update torch and onnxscript")
            program.save(str(tmp_onnx))
            check = torch.randn(5, run.config.model.latent_dim, generator=torch.Generator().manual_seed(1))
            session = ort.InferenceSession(str(tmp_onnx), providers=["CPUExecutionProvider"])
            got = session.run(None, {"z": check.numpy()})[0]
            with torch.no_grad():
                want = module(check).numpy()
            diff = float(np.max(np.abs(got - want)))
            if diff > 1e-4:
                raise ParameterError(f"the ONNX export differs from PyTorch by {diff:.2e}; please report this")
            paths["onnx"] = atomic_write(out / "decoder.onnx", lambda fh: fh.write(tmp_onnx.read_bytes()))
        finally:
            tmp_onnx.unlink(missing_ok=True)
        with torch.no_grad():
            traced = torch.jit.trace(module, z)
        tmp_ts = out / ".decoder.torchscript.tmp"
        try:
            traced.save(str(tmp_ts))
            paths["torchscript"] = atomic_write(out / "decoder.torchscript.pt", lambda fh: fh.write(tmp_ts.read_bytes()))
        finally:
            tmp_ts.unlink(missing_ok=True)
        recipe = decoder_recipe(run)
        recipe["parity"] = {"onnxruntime_max_abs_diff": diff, "checked_batch": 5}
        recipe["files"] = {key: {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for key, p in paths.items()}
        paths["recipe"] = write_json(out / RECIPE_NAME, recipe)
    return paths


def check_decoder_bundle(folder: str | Path) -> dict[str, Any]:
    """The recipe of an exported decoder folder, once its files are checked to be the ones it lists.

    A folder without ``decoder.json``, or whose graph files differ from what it records (an export
    killed half-way, files copied from two exports), is a ParameterError.
    """
    folder = Path(folder)
    redo = f"export it again with `samplegen export onnx RUN --out {folder}`"

    def incomplete(exc: Exception) -> ParameterError:
        return ParameterError(f"{folder} holds no complete decoder export ({type(exc).__name__}: {exc}); {redo}")

    try:
        recipe = json.loads((folder / RECIPE_NAME).read_text())
        version = recipe.get("format_version")
    except (OSError, ValueError, AttributeError) as exc:
        raise incomplete(exc) from None
    check_version(DECODER_RECIPE, version, folder / RECIPE_NAME, ParameterError)
    try:
        listed = [recipe["files"][key] for key in ("onnx", "torchscript")]
        same = all(Path(f["name"]).name == f["name"] and (folder / f["name"]).stat().st_size == f["bytes"]
                   and sha256_file(folder / f["name"]) == f["sha256"] for f in listed)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise incomplete(exc) from None
    if not same:
        raise ParameterError(f"the graph files in {folder} are not the ones its {RECIPE_NAME} was written for; {redo}")
    return recipe

