"""A folder of samples or a SoundFont → a corpus of prepared notes with a manifest.

A corpus folder holds 44.1 kHz mono 24-bit WAVs (prepared by
:func:`samplegen.audio.audio_io.prepare_note`), ``manifest.csv`` (file, GM program,
preset name, family, velocity, mixture parents, the pitch measured on the
prepared note and the shift that retuned it) and ``corpus_report.txt``
(skipped files with their reason, retuned notes, off-pitch warnings).

Every note is learnt as a C: a build measures each note's pitch and, with
``retune`` (the default), resamples a note within ``RETUNE_MAX_CENTS`` of a C
to that C, keeping the note as it was in ``originals/``. A file of the user's
further from any C (a D4 sample) is refused, with the reason, unless
``keep_off_pitch``: it would become a C4 instrument two semitones out. A
SoundFont's render is C4 by construction (the SoundFont maps key 60), so its
notes further from a C (an inharmonic bell the pitch tracker misreads) are
kept and listed, as are notes an octave or more from C4 (an organ's 16' stop).
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

from samplegen.audio import audio_io
from samplegen.audio.soundfont import (DRUM_BANK, GM_FAMILIES, MAX_BANK, MAX_PROGRAM, check_samples,
                                       default_soundfont, read_presets, render_note)
from samplegen.errors import AudioError, CorpusError, ParameterError, did_you_mean
from samplegen.files import (atomic_write, inside_folder, refuse_a_folder_of_other_files, remove_temp_files,
                             safe_file_stem, spreadsheet_safe)

MANIFEST_NAME = "manifest.csv"
REPORT_NAME = "corpus_report.txt"
#: Present while a build is writing a corpus folder (removed once the manifest is written): a build
#: killed half-way must not pass for a smaller corpus of raw samples.
BUILDING_NAME = ".samplegen-building"
#: 128 GM programs x 8 velocities = 1,024 notes, about the seed's 980.
DEFAULT_VELOCITIES: tuple[int, ...] = (16, 32, 48, 64, 80, 96, 112, 127)
MANIFEST_FIELDS = ["name", "file", "program", "preset", "family", "velocity", "parent_a", "parent_b", "pitch_hz",
                   "retuned_cents"]
OFF_PITCH_CENTS = 50.0
#: A note measured within this many cents of a C (in any octave) is retuned to that C: a semitone, and a margin
#: for a C tuned a little more than that off (the default SoundFont's celesta is 113 cents flat); a D is 200
#: cents off and a different note.
RETUNE_MAX_CENTS = 150.0
#: Smaller shifts are left alone: about the smallest difference in pitch a listener hears.
RETUNE_MIN_CENTS = 5.0
#: Where a build keeps each retuned note as it was before the retune (same file name).
ORIGINALS_DIR = "originals"
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
    pitch_hz: float | None = None  # measured on the prepared note before any retune
    retuned_cents: float = 0.0  # the shift a build applied to bring it to a C (0: none)


@dataclass
class Corpus:
    """Prepared notes in memory: ``audio`` float32 (N, n_samples), rows in the order of ``entries``."""

    root: Path
    entries: list[CorpusEntry]
    audio: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    off_pitch: list[tuple[str, float]] = field(default_factory=list)  # (name, cents from C4 as stored)
    removed: int = 0  # files an earlier build wrote into the folder that this one does not list, removed by the build

    def index(self, name: str) -> int:
        for i, e in enumerate(self.entries):
            if e.name == name:
                return i
        raise CorpusError(f"no note '{name}' in {self.root}" + did_you_mean(name, (e.name for e in self.entries)))

    @property
    def families(self) -> list[str]:
        return [e.family for e in self.entries]

    @property
    def retuned(self) -> list[CorpusEntry]:
        """The notes a build retuned to a C."""
        return [e for e in self.entries if e.retuned_cents]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "note"


def family_from_path(relative: str) -> str:
    """A user's note's family: the name of the top sub-folder it lies in ("strings/violin.wav" → "strings")."""
    parts = Path(relative).parts
    return _slug(parts[0]) if len(parts) > 1 else "unknown"


def cents_from_c(hz: float) -> float:
    """Distance in cents from ``hz`` to the nearest C in any octave (positive = sharp), in [-600, 600)."""
    return (audio_io.cents_between(hz) + 600.0) % 1200.0 - 600.0


@dataclass(frozen=True)
class TunedNote:
    """A prepared note after tuning: ``audio`` as stored; ``original`` the note before a retune (None if none)."""

    audio: np.ndarray
    pitch_hz: float | None
    retuned_cents: float
    original: np.ndarray | None

    @property
    def stored_cents(self) -> float | None:
        """Cents from C4 of the note as stored, or None when it has no pitch."""
        return None if self.pitch_hz is None else audio_io.cents_between(self.pitch_hz) + self.retuned_cents

    @property
    def is_a_c(self) -> bool:
        """Unpitched, or within RETUNE_MAX_CENTS of a C (before any retune)."""
        return self.pitch_hz is None or abs(cents_from_c(self.pitch_hz)) <= RETUNE_MAX_CENTS


def tune_note(raw: np.ndarray, note: np.ndarray, duration_s: float, retune: bool) -> TunedNote:
    """Measure a prepared ``note``'s pitch and, with ``retune``, bring it to the nearest C when that is within
    RETUNE_MAX_CENTS: ``raw`` (the audio ``note`` was prepared from, at 44.1 kHz) is resampled and prepared again.
    """
    hz = audio_io.estimate_pitch_hz(note)
    if hz is None or not retune:
        return TunedNote(note, hz, 0.0, None)
    shift = round(-cents_from_c(hz), 1)  # as the manifest records it
    if not RETUNE_MIN_CENTS <= abs(shift) <= RETUNE_MAX_CENTS:
        return TunedNote(note, hz, 0.0, None)
    return TunedNote(audio_io.prepare_note(audio_io.retune(raw, shift), duration_s=duration_s), hz, shift, note)


def _not_a_c(tuned: TunedNote) -> str:
    """Why a user's note is refused (see the module's docstring)."""
    assert tuned.pitch_hz is not None
    return (f"measured {audio_io.pitch_name(tuned.pitch_hz)} ({audio_io.cents_between(tuned.pitch_hz):+.0f} cents "
            f"from C4), further than {RETUNE_MAX_CENTS:.0f} cents from any C: SampleGen learns notes at C4, so it "
            "would play out of tune on every key; transpose or record it at C4, or build with --keep-off-pitch "
            "to keep it as it is")


def _off_pitch(name: str, tuned: TunedNote) -> tuple[str, float] | None:
    cents = tuned.stored_cents
    return (name, cents) if cents is not None and abs(cents) > OFF_PITCH_CENTS else None


def render_soundfont_corpus(out_dir: str | Path, soundfont: str | Path | None = None,
                            velocities: Sequence[int] = DEFAULT_VELOCITIES,
                            duration_s: float = audio_io.DEFAULT_DURATION_S, mix: int | None = 0, seed: int = 0,
                            programs: Sequence[int] | None = None, progress: Progress | None = None,
                            retune: bool = True) -> Corpus:
    """Render note C4 (MIDI 60) of every melodic preset of a SoundFont at several velocities.

    Parameters
    ----------
    out_dir : corpus folder to write
    soundfont : .sf2 file; default the General MIDI TimGM6mb.sf2 shipped in pretty_midi
    velocities : MIDI velocities to render each preset at
    duration_s : note length after preparation
    mix : number of two-note mixtures to add (0 = none; None = :func:`default_mix_count`)
    programs : render only these program numbers (all by default)
    retune : bring notes within RETUNE_MAX_CENTS of a C to it (see the module's docstring)

    Returns
    -------
    Corpus (also written to ``out_dir``: WAVs, manifest.csv, corpus_report.txt)

    Example (renders ~1,000 notes, so not run as a doctest)::

        corpus = render_soundfont_corpus("corpus")
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
    if mix is not None:  # before anything is written, on as many notes as could render (mix_entries checks again)
        check_mix_count(mix, len(presets) * len(velocities))
    out = Path(out_dir)
    _check_out_holds_no_other_files(out)
    previous = _start_build(out)
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
                raw = soxr.resample(data.mean(axis=1), sr, audio_io.SAMPLE_RATE, quality="HQ")
                tuned = tune_note(raw, audio_io.prepare_note(raw, duration_s=duration_s), duration_s, retune)
            except (AudioError, CorpusError) as exc:
                skipped.append((name, str(exc)))
                continue
            warn = _off_pitch(name, tuned)
            if warn:
                off.append(warn)
            file = f"{safe_file_stem(name)}.wav"
            _write_note(out, file, tuned)
            entries.append(CorpusEntry(name, file, preset.program, preset.name, family, int(vel), None, tuned.pitch_hz,
                                       tuned.retuned_cents))
            notes.append(tuned.audio)
            if progress:
                progress(i * len(velocities) + j + 1, total)
    if not entries:
        raise CorpusError(f"no preset of {path} rendered to sound; check the SoundFont")
    corpus = Corpus(out, entries, np.stack(notes), skipped, off)
    if mix != 0:
        corpus = mix_entries(corpus, mix, seed, out_dir=out)
    _finish_build(corpus, previous)
    return corpus


def _audio_files(folder: Path) -> list[Path]:
    """Every non-hidden entry but folders: special files and links to folders too, so the report lists them as skipped.

    rglob does not descend into a linked folder (:data:`LINKED_FOLDER` says why).
    """
    return sorted(p for p in folder.rglob("*") if (p.is_symlink() or not p.is_dir()) and not p.name.startswith("."))


def _write_note(out: Path, file: str, tuned: TunedNote) -> None:
    audio_io.write_wav(out / file, tuned.audio)
    if tuned.original is not None:
        audio_io.write_wav(out / ORIGINALS_DIR / file, tuned.original)


def _prepare_folder(src: Path, duration_s: float, progress: Progress | None, retune: bool = False,
                    keep_off_pitch: bool = True
                    ) -> tuple[list[CorpusEntry], list[TunedNote], list[tuple[str, str]], list[tuple[str, float]]]:
    """Read and prepare every file; with ``retune`` bring notes to their C; unless ``keep_off_pitch`` refuse notes
    that are no C (:func:`_not_a_c`). Families are the files' sub-folders (:func:`family_from_path`)."""
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
            raw = audio_io.read_audio(p)
            tuned = tune_note(raw, audio_io.prepare_note(raw, duration_s=duration_s), duration_s, retune)
        except AudioError as exc:
            skipped.append((rel, str(exc)))
            continue
        except MemoryError:  # one file must not abort the build
            skipped.append((rel, "needs more memory than is available"))
            continue
        if not keep_off_pitch and not tuned.is_a_c:
            skipped.append((rel, _not_a_c(tuned)))
            continue
        name = _slug(p.stem)
        while name in used:
            name = f"{name}_{len(used)}"
        used.add(name)
        warn = _off_pitch(rel, tuned)
        if warn:
            off.append(warn)
        entries.append(CorpusEntry(name, rel, preset=p.stem, family=family_from_path(rel), pitch_hz=tuned.pitch_hz,
                                   retuned_cents=tuned.retuned_cents))
        notes.append(tuned)
        if progress:
            progress(k + 1, len(files))
    if not entries:
        reasons = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        raise CorpusError(f"none of the {len(files)} files in {src} is usable audio ({reasons})")
    if off:
        named = ", ".join(f"{f} ({c:+.0f} cents)" for f, c in off[:3]) + (", ..." if len(off) > 3 else "")
        warnings.warn(f"{len(off)} file(s) of {src} are not C4 within ±{OFF_PITCH_CENTS:.0f} cents: {named}", stacklevel=3)
    return entries, notes, skipped, off


def build_folder_corpus(src_dir: str | Path, out_dir: str | Path, duration_s: float = audio_io.DEFAULT_DURATION_S,
                        mix: int | None = 0, seed: int = 0, progress: Progress | None = None, retune: bool = True,
                        keep_off_pitch: bool = False) -> Corpus:
    """Prepare a folder of the user's own samples (searched recursively) into a corpus folder.

    Unreadable files, and notes that are no C unless ``keep_off_pitch``, are skipped and listed with their
    reason in ``corpus.skipped`` and ``corpus_report.txt``; an empty or all-bad folder is a
    CorpusError. With ``retune`` notes within RETUNE_MAX_CENTS of a C are brought to it (the module's
    docstring). Each file's family is the sub-folder it lies in. ``out_dir`` must lie apart from ``src_dir`` (ParameterError otherwise): the
    prepared copies would replace the user's originals or be taken for new samples next time.
    """
    audio_io.check_note_duration(duration_s)
    src, out = Path(src_dir), Path(out_dir)
    _check_apart(src, out)
    _check_out_holds_no_other_files(out)
    check_finished(src)
    if _listed_files(src):  # its mixtures and originals/ would come back as notes of their own
        raise ParameterError(f"--from {src} is a built corpus already; train on it (`samplegen train --data {src}`) "
                             "or build from the samples it was made from")
    entries, notes, skipped, off = _prepare_folder(src, duration_s, progress, retune, keep_off_pitch)
    if mix is not None:
        check_mix_count(mix, len(entries))  # before anything is written
    previous = _start_build(out)
    written = []
    for e, tuned in zip(entries, notes):
        file = f"{safe_file_stem(e.name)}.wav"
        _write_note(out, file, tuned)
        written.append(CorpusEntry(e.name, file, e.program, e.preset, e.family, e.velocity, None, e.pitch_hz,
                                   e.retuned_cents))
    corpus = Corpus(out, written, np.stack([t.audio for t in notes]), skipped, off)
    if mix != 0:
        corpus = mix_entries(corpus, mix, seed, out_dir=out)
    _finish_build(corpus, previous)
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


def _check_out_holds_no_other_files(out: Path) -> None:
    """Refuse an ``out`` that holds files but no corpus build, finished or interrupted (another tool's manifest
    and takes, a run folder): the build's thousand notes and manifest would land among them."""
    refuse_a_folder_of_other_files(out, lambda o: (o / BUILDING_NAME).exists() or bool(_listed_files(o)),
                                   "a corpus")


def _start_build(out: Path) -> set[str]:
    """Mark ``out`` as being built and remove the temporary files a killed build left in it.

    Returns the note files the folder's last finished build listed, for :func:`_finish_build`.
    """
    previous = _listed_files(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # .NAME.wav.*.tmp from files.atomic_write; .NAME.*.wav.tmp from earlier versions
        remove_temp_files(out, (".*.wav*.tmp", f".{MANIFEST_NAME}.*.tmp", f".{REPORT_NAME}.*.tmp"))
        if (out / ORIGINALS_DIR).is_dir():
            remove_temp_files(out / ORIGINALS_DIR, (".*.wav*.tmp",))
        (out / BUILDING_NAME).write_text("a corpus build is writing this folder, or was interrupted: build it again\n")
    except OSError as exc:
        raise CorpusError(f"cannot write to {out}: {exc.strerror}; choose a writable output folder") from None
    return previous


def _listed_files(out: Path) -> set[str]:
    """The WAV files a built corpus's manifest lists by a plain name (as builds write them); none for anything else,
    nor for a manifest.csv some other tool wrote (without the columns a build writes)."""
    try:
        with open(out / MANIFEST_NAME, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"name", "file", "preset", "family", "parent_a", "parent_b"} <= set(reader.fieldnames or ()):
                return set()
            files = {row.get("file") or "" for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
    return {f for f in files if f.endswith(".wav") and f == safe_file_stem(f[:-4]) + ".wav"}


def _finish_build(corpus: Corpus, previous: set[str]) -> None:
    """Write the manifest and report (the folder is a finished corpus from here), then remove what the build
    before wrote and this one does not list (:func:`_remove_stale`; counted in ``corpus.removed``)."""
    _write_manifest(corpus)
    corpus.removed = _remove_stale(Path(corpus.root), previous, corpus)


def _remove_stale(out: Path, previous: set[str], corpus: Corpus) -> int:
    """Remove the notes (and originals) an earlier build of ``out`` wrote that this one does not list.

    A rebuild with another seed, ``--mix`` or source would otherwise leave hundreds of WAVs beside the new
    corpus, which a sampler or a later ``--from`` would take for notes. Only files the old manifest named by
    a plain name are touched; the corpus is complete (its manifest written) before any is removed. Returns how
    many were removed.
    """
    notes = {e.file for e in corpus.entries}
    retuned = {e.file for e in corpus.entries if e.retuned_cents}
    left, removed = [], 0
    for file in sorted(previous):
        for path, kept in ((out / file, notes), (out / ORIGINALS_DIR / file, retuned)):
            if file not in kept and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    left.append(path)
    if left:
        warnings.warn(f"{len(left)} file(s) of an earlier build could not be removed from {out} (first: {left[0]}); "
                      "manifest.csv lists the corpus's notes", stacklevel=3)
    return removed


def check_finished(root: Path) -> None:
    """Refuse a corpus folder whose build was interrupted (its notes are only part of the corpus)."""
    if (root / BUILDING_NAME).exists():
        raise CorpusError(f"{root} holds an interrupted corpus build; run `samplegen corpus build` into it again")


def load_corpus(path: str | Path, duration_s: float = audio_io.DEFAULT_DURATION_S,
                progress: Progress | None = None) -> Corpus:
    """A built corpus (with manifest.csv) or any folder of samples, prepared in memory.

    Notes of a built corpus whose length differs from ``duration_s`` are
    prepared again to that length. ``progress(done, total)`` is called after each file.
    """
    root = Path(path)
    check_finished(root)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        entries, tuned, skipped, off = _prepare_folder(root, duration_s, progress)
        return Corpus(root, entries, np.stack([t.audio for t in tuned]), skipped, off)
    entries, notes, skipped = [], [], []
    n = int(round(duration_s * audio_io.SAMPLE_RATE))
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for done, row in enumerate(rows, 1):
        if progress:
            progress(done, len(rows))
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
    shift = float(row["retuned_cents"]) if row.get("retuned_cents") else 0.0
    return CorpusEntry(row["name"], row["file"], opt_int(row["program"]), row["preset"], row["family"] or "unknown",
                       opt_int(row["velocity"]), parents, pitch, shift)


#: Two-note mixtures a corpus gets unless told otherwise (``mix=None``): this many, at most
#: :data:`MIX_SHARE` of the notes. Measured on the default corpus (BENCHMARKS.md, "Mixtures smooth the blends"):
#: 300 mixtures cut dipping blends without costing fit.
DEFAULT_MIXTURES = 300
MIX_SHARE = 0.3


def default_mix_count(n_notes: int) -> int:
    """How many mixtures ``mix=None`` adds to a corpus of ``n_notes`` notes: few notes get few mixtures, never more
    than the :func:`distinct_pairs` there are (each mixture is a different pair)."""
    return min(DEFAULT_MIXTURES, round(MIX_SHARE * n_notes), distinct_pairs(n_notes))


def distinct_pairs(n_notes: int) -> int:
    """How many different two-note mixtures ``n_notes`` notes make (a+b and b+a are one)."""
    return max(n_notes, 0) * max(n_notes - 1, 0) // 2


def check_mix_value(n: object) -> int:
    """``n`` (a number of mixtures) when it is a whole number >= 0, else a ParameterError: checked before the notes
    are known."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ParameterError(f"mix={n!r} must be a non-negative integer")
    return n


def check_mix_count(n: object, n_notes: int) -> None:
    """Refuse ``n`` mixtures of ``n_notes`` notes: ParameterError unless ``n`` is an integer from 0 to the
    :func:`distinct_pairs` there are; CorpusError for mixtures of fewer than two notes.

    A build calls it before it writes anything, :func:`mix_entries` again on the notes it mixes.
    """
    n = check_mix_value(n)
    if n and n_notes < 2:
        raise CorpusError("mixing needs at least two notes in the corpus")
    pairs = distinct_pairs(n_notes)
    if n > pairs:
        raise ParameterError(f"--mix {n} asks for more mixtures than the {pairs} distinct pairs of {n_notes} notes; "
                             f"pass --mix {pairs} or fewer")


def mix_entries(corpus: Corpus, n: int | None, seed: int, out_dir: str | Path | None = None) -> Corpus:
    """Augment with ``n`` mixtures of two distinct random notes (the seed's suggestion), each a different pair.

    Each mixture is the equal-weight sum of two prepared notes, prepared again
    (so it is loudness-normalised like every other note); its parents are
    recorded. Written to ``out_dir`` when given. ``n=None``: :func:`default_mix_count`; more than the
    :func:`distinct_pairs` of the corpus's notes is refused (:func:`check_mix_count`) before any is written.
    """
    originals = [i for i, e in enumerate(corpus.entries) if e.parents is None]
    n = default_mix_count(len(originals)) if n is None else n
    check_mix_count(n, len(originals))
    rng = np.random.default_rng(seed)
    entries, notes = list(corpus.entries), [corpus.audio]
    used: set[tuple[int, int]] = set()
    for k in range(n):
        # The same draws as before pairs were kept distinct: only a pair already mixed (in either order) is drawn again.
        a, b = rng.choice(originals, size=2, replace=False)
        while (int(min(a, b)), int(max(a, b))) in used:
            a, b = rng.choice(originals, size=2, replace=False)
        used.add((int(min(a, b)), int(max(a, b))))
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
            "retuned_cents": f"{e.retuned_cents:+.1f}" if e.retuned_cents else "",
        })
    text = buf.getvalue()
    atomic_write(Path(corpus.root) / MANIFEST_NAME, lambda fh: fh.write(text), mode="w")
    retuned = corpus.retuned
    lines = [f"# corpus report: {len(corpus.entries)} notes, {len(corpus.skipped)} skipped, {len(retuned)} retuned "
             f"to C (originals in {ORIGINALS_DIR}/), {len(corpus.off_pitch)} not C4 within ±{OFF_PITCH_CENTS:.0f} cents"]
    lines += [f"skipped\t{f}\t{r}" for f, r in corpus.skipped]
    lines += [f"retuned\t{e.name}\tmeasured {audio_io.pitch_name(e.pitch_hz)}, shifted {e.retuned_cents:+.0f} cents"
              for e in retuned if e.pitch_hz is not None]
    lines += [f"off-pitch\t{f}\t{c:+.0f} cents from C4" for f, c in corpus.off_pitch]
    report = "\n".join(lines) + "\n"
    atomic_write(Path(corpus.root) / REPORT_NAME, lambda fh: fh.write(report), mode="w")
    (Path(corpus.root) / BUILDING_NAME).unlink(missing_ok=True)
