"""A folder of samples or a SoundFont → a corpus of prepared notes with a manifest.

A corpus folder holds 44.1 kHz mono 24-bit WAVs (prepared by
:func:`samplegen.audio.prepare_note`), ``manifest.csv`` (file, GM program,
preset name, GM family, velocity, mixture parents, detected pitch) and
``corpus_report.txt`` (skipped files with their reason, off-pitch warnings).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soxr

from samplegen import audio as audio_io
from samplegen.checkpoint import atomic_write
from samplegen.errors import AudioError, CorpusError, ParameterError
from samplegen.files import inside_folder, remove_temp_files, safe_file_stem, spreadsheet_safe
from samplegen.soundfont import (DRUM_BANK, GM_FAMILIES, MAX_BANK, MAX_PROGRAM, Preset, check_samples,
                                 default_soundfont, read_presets, render_note)

MANIFEST_NAME = "manifest.csv"
REPORT_NAME = "corpus_report.txt"
#: Present while a build is writing a corpus folder (removed once the manifest is written): a build
#: killed half-way must not pass for a smaller corpus of raw samples.
BUILDING_NAME = ".samplegen-building"
#: 128 GM programs x 8 velocities = 1,024 notes, about the seed's 980.
DEFAULT_VELOCITIES: tuple[int, ...] = (16, 32, 48, 64, 80, 96, 112, 127)
MANIFEST_FIELDS = ["name", "file", "program", "preset", "family", "velocity", "parent_a", "parent_b", "pitch_hz"]
OFF_PITCH_CENTS = 50.0
#: Why a symbolic link to a folder inside a sample folder is not read: a link can lead anywhere on the machine,
#: or back into the sample folder (a loop).
LINKED_FOLDER = "a link to a folder: not followed (it may lead outside this folder or back into it); copy the folder in"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CorpusEntry:
    """One note. ``name`` is the stable id used on the command line; ``file`` is relative to the corpus root."""

    name: str
    file: str
    program: int | None = None
    preset: str = ""
    family: str = "unknown"
    velocity: int | None = None
    parents: tuple[str, str] | None = None
    pitch_hz: float | None = None


@dataclass
class Corpus:
    """Prepared notes in memory: ``audio`` float32 (N, n_samples), rows in the order of ``entries``."""

    root: Path
    entries: list[CorpusEntry]
    audio: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    off_pitch: list[tuple[str, float]] = field(default_factory=list)

    def index(self, name: str) -> int:
        for i, e in enumerate(self.entries):
            if e.name == name:
                return i
        import difflib

        close = difflib.get_close_matches(name, [e.name for e in self.entries], n=3)
        raise CorpusError(f"no note '{name}' in {self.root}" + (f"; did you mean {', '.join(close)}?" if close else ""))

    @property
    def families(self) -> list[str]:
        return [e.family for e in self.entries]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "note"


def _check_pitch(name: str, y: np.ndarray) -> tuple[float | None, tuple[str, float] | None]:
    hz = audio_io.estimate_pitch_hz(y)
    if hz is None:
        return None, None
    cents = audio_io.cents_between(hz)
    return hz, ((name, cents) if abs(cents) > OFF_PITCH_CENTS else None)


def render_soundfont_corpus(out_dir: str | Path, soundfont: str | Path | None = None,
                            velocities: Sequence[int] = DEFAULT_VELOCITIES,
                            duration_s: float = audio_io.DEFAULT_DURATION_S, mix: int = 0, seed: int = 0,
                            programs: Sequence[int] | None = None, progress: Progress | None = None) -> Corpus:
    """Render note C4 (MIDI 60) of every melodic preset of a SoundFont at several velocities.

    Parameters
    ----------
    out_dir : corpus folder to write
    soundfont : .sf2 file; default the General MIDI TimGM6mb.sf2 shipped in pretty_midi
    velocities : MIDI velocities to render each preset at
    duration_s : note length after preparation
    mix : number of two-note mixtures to add (0 = none)
    programs : render only these program numbers (all by default)

    Returns
    -------
    Corpus (also written to ``out_dir``: WAVs, manifest.csv, corpus_report.txt)

    Example
    -------
    >>> corpus = render_soundfont_corpus("corpus")        # doctest: +SKIP
    """
    audio_io.check_note_duration(duration_s)
    path = Path(soundfont) if soundfont is not None else default_soundfont()
    try:
        sf2 = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read SoundFont {path}: {exc.strerror}") from None
    if not velocities or any(not 1 <= int(v) <= 127 for v in velocities):
        raise ParameterError(f"velocities={list(velocities)} must be MIDI velocities 1..127")
    check_samples(sf2)
    presets = sorted((p for p in read_presets(sf2) if p.bank != DRUM_BANK), key=lambda p: (p.bank, p.program))
    if programs is not None:
        presets = [p for p in presets if p.program in set(programs)]
    skipped: list[tuple[str, str]] = [
        (p.name, f"program {p.program}, bank {p.bank} is outside MIDI's range (program 0-{MAX_PROGRAM}, "
                 f"bank 0-{MAX_BANK})") for p in presets if p.program > MAX_PROGRAM or p.bank > MAX_BANK]
    presets = [p for p in presets if p.program <= MAX_PROGRAM and p.bank <= MAX_BANK]
    # MIDI selects a preset by bank and program alone, and the renderer plays the last one listed: an earlier
    # preset sharing both would come out as a second copy of that one, under its own name (or over its file).
    played = {(p.bank, p.program): p for p in presets}
    skipped += [(p.name, f"bank {p.bank}, program {p.program} is also preset '{played[p.bank, p.program].name}', "
                         "listed later, which is the one MIDI plays") for p in presets if played[p.bank, p.program] is not p]
    presets = [p for p in presets if played[p.bank, p.program] is p]
    if not presets:
        reason = f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise CorpusError(f"{path} has no melodic presets to render{reason}")
    out = Path(out_dir)
    _start_build(out)
    entries, notes, off = [], [], []
    total = len(presets) * len(velocities)
    for i, preset in enumerate(presets):
        family = GM_FAMILIES[preset.program // 8] if preset.bank == 0 and preset.program < 128 else "unknown"
        for j, vel in enumerate(velocities):
            bank = f"b{preset.bank:03d}_" if preset.bank else ""
            name = f"{bank}p{preset.program:03d}_{_slug(preset.name)}_v{int(vel):03d}"
            try:
                data, sr = render_note(sf2, preset, int(vel), hold_s=min(1.5, duration_s * 0.75),
                                       tail_s=max(1.0, duration_s * 0.5))
                y = soxr.resample(data.mean(axis=1), sr, audio_io.SAMPLE_RATE, quality="HQ")
                y = audio_io.prepare_note(y, duration_s=duration_s)
            except (AudioError, CorpusError) as exc:
                skipped.append((name, str(exc)))
                continue
            hz, warn = _check_pitch(name, y)
            if warn:
                off.append(warn)
            file = f"{safe_file_stem(name)}.wav"
            audio_io.write_wav(out / file, y)
            entries.append(CorpusEntry(name, file, preset.program, preset.name, family, int(vel), None, hz))
            notes.append(y)
            if progress:
                progress(i * len(velocities) + j + 1, total)
    if not entries:
        raise CorpusError(f"no preset of {path} rendered to sound; check the SoundFont")
    corpus = Corpus(out, entries, np.stack(notes), skipped, off)
    if mix:
        corpus = mix_entries(corpus, mix, seed, out_dir=out)
    _write_manifest(corpus)
    return corpus


def _audio_files(folder: Path) -> list[Path]:
    """Every non-hidden entry but folders: special files and links to folders too, so the report lists them as skipped.

    rglob does not descend into a linked folder (:data:`LINKED_FOLDER` says why).
    """
    return sorted(p for p in folder.rglob("*") if (p.is_symlink() or not p.is_dir()) and not p.name.startswith("."))


def _prepare_folder(src: Path, duration_s: float, progress: Progress | None
                    ) -> tuple[list[CorpusEntry], list[np.ndarray], list[tuple[str, str]], list[tuple[str, float]]]:
    if not src.is_dir():
        raise CorpusError(f"{src} is not a folder; pass a folder of WAV, FLAC, AIFF or OGG samples")
    files = [p for p in _audio_files(src) if p.name not in (MANIFEST_NAME, REPORT_NAME)]
    if not files:
        raise CorpusError(f"{src} holds no files; put WAV, FLAC, AIFF or OGG samples in it")
    entries, notes, skipped, off = [], [], [], []
    used: set[str] = set()
    for k, p in enumerate(files):
        rel = str(p.relative_to(src))
        if p.is_dir():  # only a link to a folder comes this far
            skipped.append((rel, LINKED_FOLDER))
            continue
        try:
            y = audio_io.prepare_note(audio_io.read_audio(p), duration_s=duration_s)
        except AudioError as exc:
            skipped.append((rel, str(exc)))
            continue
        except MemoryError:  # one file must not abort the build
            skipped.append((rel, "needs more memory than is available"))
            continue
        name = _slug(p.stem)
        while name in used:
            name = f"{name}_{len(used)}"
        used.add(name)
        hz, warn = _check_pitch(rel, y)
        if warn:
            off.append(warn)
        entries.append(CorpusEntry(name, rel, pitch_hz=hz, preset=p.stem))
        notes.append(y)
        if progress:
            progress(k + 1, len(files))
    if not entries:
        reasons = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        raise CorpusError(f"none of the {len(files)} files in {src} is usable audio ({reasons})")
    if off:
        warnings.warn(f"{len(off)} file(s) are not C4 within ±{OFF_PITCH_CENTS:.0f} cents", stacklevel=3)
    return entries, notes, skipped, off


def build_folder_corpus(src_dir: str | Path, out_dir: str | Path, duration_s: float = audio_io.DEFAULT_DURATION_S,
                        mix: int = 0, seed: int = 0, progress: Progress | None = None) -> Corpus:
    """Prepare a folder of the user's own samples (searched recursively) into a corpus folder.

    Unreadable files are skipped and listed with their reason in
    ``corpus.skipped`` and ``corpus_report.txt``; an empty or all-bad folder is a
    CorpusError. ``out_dir`` must lie apart from ``src_dir`` (ParameterError otherwise): the
    prepared copies would replace the user's originals or be taken for new samples next time.
    """
    audio_io.check_note_duration(duration_s)
    src, out = Path(src_dir), Path(out_dir)
    _check_apart(src, out)
    check_finished(src)
    entries, notes, skipped, off = _prepare_folder(src, duration_s, progress)
    _start_build(out)
    written = []
    for e, y in zip(entries, notes):
        file = f"{safe_file_stem(e.name)}.wav"
        audio_io.write_wav(out / file, y)
        written.append(CorpusEntry(e.name, file, e.program, e.preset, e.family, e.velocity, None, e.pitch_hz))
    corpus = Corpus(out, written, np.stack(notes), skipped, off)
    if mix:
        corpus = mix_entries(corpus, mix, seed, out_dir=out)
    _write_manifest(corpus)
    return corpus


def _check_apart(src: Path, out: Path) -> None:
    """Refuse an ``out`` that is, holds or lies inside ``src`` (symlinks resolved)."""
    s, o = src.resolve(), out.resolve()
    if s == o:
        where = "is the source folder"
    elif s in o.parents:
        where = "lies inside the source folder"
    elif o in s.parents:
        where = "contains the source folder"
    else:
        return
    raise ParameterError(f"--out {out} {where} {src}; choose an output folder outside it "
                         "(the originals are never modified)")


def _start_build(out: Path) -> None:
    """Mark ``out`` as being built and remove the temporary files a killed build left in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out, (".*.wav.tmp", f".{MANIFEST_NAME}.*.tmp", f".{REPORT_NAME}.*.tmp"))
        (out / BUILDING_NAME).write_text("a corpus build is writing this folder, or was interrupted: build it again\n")
    except OSError as exc:
        raise CorpusError(f"cannot write to {out}: {exc.strerror}; choose a writable output folder") from None


def check_finished(root: Path) -> None:
    """Refuse a corpus folder whose build was interrupted (its notes are only part of the corpus)."""
    if (root / BUILDING_NAME).exists():
        raise CorpusError(f"{root} holds an interrupted corpus build; run `samplegen corpus build` into it again")


def load_corpus(path: str | Path, duration_s: float = audio_io.DEFAULT_DURATION_S) -> Corpus:
    """A built corpus (with manifest.csv) or any folder of samples, prepared in memory.

    Notes of a built corpus whose length differs from ``duration_s`` are
    prepared again to that length.
    """
    root = Path(path)
    check_finished(root)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        entries, notes, skipped, off = _prepare_folder(root, duration_s, None)
        return Corpus(root, entries, np.stack(notes), skipped, off)
    entries, notes, skipped = [], [], []
    n = int(round(duration_s * audio_io.SAMPLE_RATE))
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                entry = _entry_from_row(row)
                y = audio_io.read_audio(inside_folder(root, entry.file, manifest, AudioError))
            except AudioError as exc:
                skipped.append((row.get("file", "?"), str(exc)))
                continue
            except MemoryError:
                skipped.append((row.get("file", "?"), "needs more memory than is available"))
                continue
            except (KeyError, ValueError, TypeError) as exc:
                raise CorpusError(f"{manifest} is malformed ({exc}); rebuild the corpus") from None
            if len(y) != n:
                y = audio_io.prepare_note(y, duration_s=duration_s)
            entries.append(entry)
            notes.append(y)
    if not entries:
        raise CorpusError(f"{manifest} lists no readable notes; rebuild the corpus")
    return Corpus(root, entries, np.stack(notes), skipped, [])


def _entry_from_row(row: dict[str, str]) -> CorpusEntry:
    def opt_int(v: str) -> int | None:
        return int(v) if v not in ("", None) else None

    parents = (row["parent_a"], row["parent_b"]) if row.get("parent_a") else None
    pitch = float(row["pitch_hz"]) if row.get("pitch_hz") else None
    return CorpusEntry(row["name"], row["file"], opt_int(row["program"]), row["preset"], row["family"] or "unknown",
                       opt_int(row["velocity"]), parents, pitch)


def mix_entries(corpus: Corpus, n: int, seed: int, out_dir: str | Path | None = None) -> Corpus:
    """Augment with ``n`` mixtures of two distinct random notes (the seed's suggestion).

    Each mixture is the equal-weight sum of two prepared notes, prepared again
    (so it is loudness-normalised like every other note); its parents are
    recorded. Written to ``out_dir`` when given.
    """
    if not isinstance(n, int) or n < 0:
        raise ParameterError(f"mix={n!r} must be a non-negative integer")
    originals = [i for i, e in enumerate(corpus.entries) if e.parents is None]
    if n and len(originals) < 2:
        raise CorpusError("mixing needs at least two notes in the corpus")
    rng = np.random.default_rng(seed)
    entries, notes = list(corpus.entries), [corpus.audio]
    for k in range(n):
        a, b = rng.choice(originals, size=2, replace=False)
        ea, eb = corpus.entries[a], corpus.entries[b]
        y = audio_io.prepare_note(corpus.audio[a] + corpus.audio[b], duration_s=corpus.audio.shape[1] / audio_io.SAMPLE_RATE)
        name = f"mix{k:04d}_{ea.name[:24]}__{eb.name[:24]}"
        file = f"{safe_file_stem(name)}.wav"
        if out_dir is not None:
            audio_io.write_wav(Path(out_dir) / file, y)
        family = ea.family if ea.family == eb.family else "mixture"
        entries.append(CorpusEntry(name, file, None, f"{ea.preset} + {eb.preset}", family, None, (ea.name, eb.name), None))
        notes.append(y[None])
    return Corpus(corpus.root, entries, np.concatenate(notes), corpus.skipped, corpus.off_pitch)


def _write_manifest(corpus: Corpus) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for e in corpus.entries:
        writer.writerow({
            # Only the preset holds raw text (a SoundFont's or a file's own name) that a spreadsheet could run.
            "name": e.name, "file": e.file, "program": "" if e.program is None else e.program,
            "preset": spreadsheet_safe(e.preset),
            "family": e.family, "velocity": "" if e.velocity is None else e.velocity,
            "parent_a": e.parents[0] if e.parents else "", "parent_b": e.parents[1] if e.parents else "",
            "pitch_hz": "" if e.pitch_hz is None else f"{e.pitch_hz:.2f}",
        })
    text = buf.getvalue()
    atomic_write(Path(corpus.root) / MANIFEST_NAME, lambda fh: fh.write(text), mode="w")
    lines = [f"# corpus report: {len(corpus.entries)} notes, {len(corpus.skipped)} skipped, "
             f"{len(corpus.off_pitch)} not C4 within ±{OFF_PITCH_CENTS:.0f} cents"]
    lines += [f"skipped\t{f}\t{r}" for f, r in corpus.skipped]
    lines += [f"off-pitch\t{f}\t{c:+.0f} cents from C4" for f, c in corpus.off_pitch]
    report = "\n".join(lines) + "\n"
    atomic_write(Path(corpus.root) / REPORT_NAME, lambda fh: fh.write(report), mode="w")
    (Path(corpus.root) / BUILDING_NAME).unlink(missing_ok=True)
