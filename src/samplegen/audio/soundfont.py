"""SoundFont 2, both ways: read a SoundFont's presets and render a note of one (the corpus), write one (exports).

Reading: midirenderer renders MIDI through a SoundFont from a self-contained wheel
(no system FluidSynth); pretty_midi writes the MIDI and ships the General
MIDI SoundFont TimGM6mb.sf2 we use as the default corpus.

Writing: no maintained Python library writes SF2 (the ones on PyPI read it), so
`sf2_bytes` writes the RIFF structure of the SoundFont 2.01 specification
directly: INFO, 16-bit sample data, and the nine "hydra" tables of the preset data.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samplegen.audio.audio_io import riff_chunks
from samplegen.errors import CorpusError, ParameterError

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
    end = min(len(sf2), 8 + struct.unpack("<I", sf2[4:8])[0])
    for cid, at, size in riff_chunks(sf2, 12, end):
        if cid == b"LIST":  # its body: a 4-byte list type, then sub-chunks
            for sid, sub_at, sub_size in riff_chunks(sf2, at + 4, min(end, at + size)):
                found.setdefault(sid, sf2[sub_at : sub_at + sub_size])
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


# Writing: one preset per sound, each sound a full-keyboard instrument.
# Generator operators (SoundFont 2.01, section 8.1.2).
GEN_ATTACK_VOL_ENV = 34
GEN_RELEASE_VOL_ENV = 38
GEN_INSTRUMENT = 41
GEN_KEY_RANGE = 43
GEN_SAMPLE_ID = 53
GEN_SAMPLE_MODES = 54
GEN_OVERRIDING_ROOT_KEY = 58
#: The specification asks for 46 zero sample points after every sample (interpolators read past the end).
SAMPLE_PADDING = 46


@dataclass(frozen=True)
class Sf2Sound:
    """One sound: mono float audio in [-1, 1], its loop (start, end exclusive) or None, its root key, and the
    pitch correction in cents a player applies (the sample header's chPitchCorrection; +4 raises 4 cents)."""

    name: str
    audio: np.ndarray
    sample_rate: int = 44100
    loop: tuple[int, int] | None = None
    root_key: int = 60
    pitch_correction: int = 0


def _name20(name: str) -> bytes:
    return name.encode("ascii", "replace")[:19].ljust(20, b"\0")


def _unique_names20(names: list[str]) -> list[bytes]:
    """Each name as a 20-byte SF2 name field (19 ASCII characters and a zero), none the same as another's.

    A sampler lists presets by these names, so two sounds whose names share their first 19 characters must not
    both become that prefix: the second (the third...) is shortened and numbered ("averyveryverylong~2"). A name
    that fits whole keeps it, even against an earlier name cut to the same characters; then the first of those cut
    keeps its prefix.
    """
    encoded = [n.encode("ascii", "replace") for n in names]
    chosen: list[bytes | None] = [None] * len(names)
    taken: set[bytes] = set()
    for whole in (True, False):  # names that fit whole first, then the prefixes of longer ones
        for i, e in enumerate(encoded):
            if (len(e) <= 19) == whole and e[:19] not in taken:
                chosen[i] = e[:19]
                taken.add(e[:19])
    for i, e in enumerate(encoded):
        k = 2
        while chosen[i] is None:
            suffix = b"~%d" % k
            candidate = e[: 19 - len(suffix)] + suffix
            if candidate not in taken:
                chosen[i] = candidate
                taken.add(candidate)
            k += 1
    return [c.ljust(20, b"\0") for c in chosen if c is not None]


def _chunk(cid: bytes, body: bytes) -> bytes:
    """A RIFF chunk whose size is even: SoundFont 2.01 (section 5.1) pads odd strings with a zero byte *inside*
    the chunk. FluidSynth misreads a file whose bank name is an odd-sized chunk followed by a RIFF pad byte:
    it then played a decoded note 2.5 cents sharp at half its level."""
    body = body + b"\0" * (len(body) % 2)
    return cid + struct.pack("<I", len(body)) + body


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _timecents(seconds: float) -> int:
    return int(round(1200 * math.log2(max(seconds, 0.001))))


def sf2_bytes(sounds: list[Sf2Sound], bank_name: str = "SampleGen", attack_s: float = 0.003,
              release_s: float = 0.3) -> bytes:
    """The whole .sf2 file: preset i (bank 0, program i) plays sound i from its root key across the keyboard."""
    if not sounds:
        raise ParameterError("an SF2 needs at least one sound")
    if len(sounds) > 128:
        raise ParameterError(f"{len(sounds)} sounds do not fit one bank of 128 presets; export fewer")
    names = _unique_names20([s.name for s in sounds])
    pcm: list[bytes] = []
    shdr: list[bytes] = []
    offset = 0
    for s, name in zip(sounds, names):
        y = np.clip(np.asarray(s.audio, dtype=np.float64), -1.0, 1.0)
        if y.ndim != 1 or len(y) < 2 or not np.isfinite(y).all():
            raise ParameterError(f"sound {s.name!r} must be finite mono audio")
        data = np.round(y * 32767).astype("<i2")
        start, end = offset, offset + len(data)
        loop = s.loop or (0, len(data))
        if not 0 <= loop[0] < loop[1] <= len(data):
            raise ParameterError(f"sound {s.name!r}: loop {loop} outside its {len(data)} samples")
        if not (0 <= s.root_key <= 127 and -99 <= s.pitch_correction <= 99):
            raise ParameterError(f"sound {s.name!r}: root key {s.root_key} must be 0-127 and pitch correction "
                                 f"{s.pitch_correction} within ±99 cents")
        shdr.append(name + struct.pack("<5IBbHH", start, end, start + loop[0], start + loop[1],
                                                  s.sample_rate, s.root_key, s.pitch_correction, 0, 1))
        pcm.append(data.tobytes() + b"\0\0" * SAMPLE_PADDING)
        offset = end + SAMPLE_PADDING
    shdr.append(_name20("EOS") + b"\0" * 26)

    phdr: list[bytes] = []
    pbag: list[bytes] = []
    pgen: list[bytes] = []
    inst: list[bytes] = []
    ibag: list[bytes] = []
    igen: list[bytes] = []
    for i, (s, name) in enumerate(zip(sounds, names)):
        phdr.append(name + struct.pack("<HHHIII", i, 0, len(pbag), 0, 0, 0))
        pbag.append(struct.pack("<HH", len(pgen), 0))
        pgen.append(struct.pack("<HH", GEN_INSTRUMENT, i))
        inst.append(name + struct.pack("<H", len(ibag)))
        ibag.append(struct.pack("<HH", len(igen), 0))
        igen.append(struct.pack("<HBB", GEN_KEY_RANGE, 0, 127))  # keyRange must come first
        igen.append(struct.pack("<Hh", GEN_ATTACK_VOL_ENV, _timecents(attack_s)))
        igen.append(struct.pack("<Hh", GEN_RELEASE_VOL_ENV, _timecents(release_s)))
        igen.append(struct.pack("<HH", GEN_OVERRIDING_ROOT_KEY, s.root_key))
        igen.append(struct.pack("<HH", GEN_SAMPLE_MODES, 1 if s.loop else 0))
        igen.append(struct.pack("<HH", GEN_SAMPLE_ID, i))  # sampleID must come last
    phdr.append(_name20("EOP") + struct.pack("<HHHIII", 0, 0, len(pbag), 0, 0, 0))
    pbag.append(struct.pack("<HH", len(pgen), 0))
    pgen.append(b"\0" * 4)
    inst.append(_name20("EOI") + struct.pack("<H", len(ibag)))
    ibag.append(struct.pack("<HH", len(igen), 0))
    igen.append(b"\0" * 4)

    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", b"EMU8000\0"),
                 _chunk(b"INAM", bank_name.encode("ascii", "replace")[:255] + b"\0"),
                 _chunk(b"ISFT", b"SampleGen\0"))
    sdta = _list(b"sdta", _chunk(b"smpl", b"".join(pcm)))
    pdta = _list(b"pdta", _chunk(b"phdr", b"".join(phdr)), _chunk(b"pbag", b"".join(pbag)),
                 _chunk(b"pmod", b"\0" * 10), _chunk(b"pgen", b"".join(pgen)), _chunk(b"inst", b"".join(inst)),
                 _chunk(b"ibag", b"".join(ibag)), _chunk(b"imod", b"\0" * 10), _chunk(b"igen", b"".join(igen)),
                 _chunk(b"shdr", b"".join(shdr)))
    body = b"sfbk" + info + sdta + pdta
    return b"RIFF" + struct.pack("<I", len(body)) + body
