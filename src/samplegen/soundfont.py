"""Read a SoundFont's preset list and render one note of a preset with midirenderer.

midirenderer renders MIDI through a SoundFont from a self-contained wheel
(no system FluidSynth); pretty_midi writes the MIDI and ships the General
MIDI SoundFont TimGM6mb.sf2 we use as the default corpus.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samplegen.errors import CorpusError

GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)
DRUM_BANK = 128
#: A preset's program and bank must fit MIDI's program change (7 bits) and bank select (14 bits) to be rendered.
MAX_PROGRAM, MAX_BANK = 127, 16383


@dataclass(frozen=True)
class Preset:
    name: str
    program: int
    bank: int


def default_soundfont() -> Path:
    """The General MIDI SoundFont inside the pretty_midi package."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def _chunks(sf2: bytes) -> dict[bytes, bytes]:
    """The sub-chunks of a SoundFont's LIST chunks (``smpl``, ``phdr``, ``shdr``…), by id."""
    if len(sf2) < 12 or sf2[:4] != b"RIFF" or sf2[8:12] != b"sfbk":
        raise CorpusError("not a SoundFont 2 file (no RIFF 'sfbk' header)")
    found: dict[bytes, bytes] = {}
    pos, end = 12, min(len(sf2), 8 + struct.unpack("<I", sf2[4:8])[0])
    while pos + 8 <= end:
        cid, size = sf2[pos : pos + 4], struct.unpack("<I", sf2[pos + 4 : pos + 8])[0]
        if cid == b"LIST":
            sub, sub_end = pos + 12, min(end, pos + 8 + size)
            while sub + 8 <= sub_end:
                sid, ssize = sf2[sub : sub + 4], struct.unpack("<I", sf2[sub + 4 : sub + 8])[0]
                found.setdefault(sid, sf2[sub + 8 : sub + 8 + ssize])
                sub += 8 + ssize + (ssize & 1)
        pos += 8 + size + (size & 1)
    return found


def read_presets(sf2: bytes) -> list[Preset]:
    """Presets listed in a SoundFont 2 file's PHDR chunk (the terminal EOP record dropped)."""
    data = _chunks(sf2).get(b"phdr")
    if data is None:
        raise CorpusError("SoundFont has no preset list (PHDR chunk); the file may be damaged")
    presets = []
    for off in range(0, len(data) - 38 + 1, 38):
        name_raw, program, bank = struct.unpack("<20sHH", data[off : off + 24])
        name = name_raw.split(b"\0", 1)[0].decode("latin-1").strip()
        presets.append(Preset(name or f"preset {program}", program, bank))
    return presets[:-1]


def check_samples(sf2: bytes) -> None:
    """Refuse a SoundFont whose sample headers point outside its sample data or have no sample rate.

    The renderer trusts them: an end past the data makes it panic (a Rust index error), not fail.
    """
    chunks = _chunks(sf2)
    n_points = len(chunks.get(b"smpl", b"")) // 2
    shdr = chunks.get(b"shdr", b"")
    for off in range(0, len(shdr) - 46 + 1, 46):
        name_raw, start, end, loop_start, loop_end, rate = struct.unpack("<20s5I", shdr[off : off + 40])
        name = name_raw.split(b"\0", 1)[0].decode("latin-1").strip()
        if name == "EOS" and off + 46 >= len(shdr):
            break
        if not (start <= end <= n_points and loop_start <= loop_end <= n_points and rate > 0):
            raise CorpusError(f"SoundFont sample header '{name}' is damaged (start {start}, end {end}, loop "
                              f"{loop_start}-{loop_end}, rate {rate}; the file holds {n_points} sample points)")


def render_note(sf2: bytes, preset: Preset, velocity: int, pitch: int = 60, hold_s: float = 1.5,
                tail_s: float = 1.0) -> tuple[np.ndarray, int]:
    """Render one note: held ``hold_s`` seconds, with ``tail_s`` of release after it.

    Returns (float64 stereo-or-mono samples (n, channels), sample rate).
    """
    import midirenderer
    import pretty_midi
    import soundfile as sf

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=preset.program)
    if preset.bank:
        inst.control_changes.append(pretty_midi.ControlChange(0, preset.bank >> 7, 0.0))
        inst.control_changes.append(pretty_midi.ControlChange(32, preset.bank & 127, 0.0))
    inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=0.0, end=hold_s))
    # midirenderer stops at the last event: a harmless later event keeps the release tail.
    inst.control_changes.append(pretty_midi.ControlChange(110, 0, hold_s + tail_s))
    pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    try:
        wav = midirenderer.render_wave_from(sf2, buf.getvalue())
    except (ValueError, RuntimeError) as exc:
        raise CorpusError(f"cannot render preset '{preset.name}': {exc}") from None
    except BaseException as exc:  # a Rust panic arrives as pyo3's PanicException, a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise CorpusError(f"cannot render preset '{preset.name}': the renderer failed ({exc})") from None
    data, sr = sf.read(io.BytesIO(bytes(wav)), dtype="float64", always_2d=True)
    return data, sr
