"""Features computed once, in parallel, and kept on disk for every later run.

A corpus of 300,000 notes does not fit in memory as log magnitudes (a
2-second note is 173 × 1025 float32 values, 0.7 MB), and decoding,
resampling and transforming it again for every run wastes hours.  So the
features of each file are computed once, by a pool of processes, and written
to ``.npy`` shards that training reads back through a memory map: memory
stays bounded by the batch, not by the corpus.

Cache layout (default ``~/.cache/samplegen/features``; ``SAMPLEGEN_CACHE`` or
``--cache`` choose another)::

    <cache>/<settings digest>/index.json        file content hash → (shard, row)
    <cache>/<settings digest>/shard-<id>.npy    float32 (or float16) rows, N × T × F

A note's key is the SHA-256 of its file's bytes; the folder is named by a
digest of everything else that shapes the features (duration, sample rate,
STFT settings, how the file is prepared, storage dtype, this module's format
version).  Two files with the same content share a row, a renamed or moved
corpus reuses its rows, and a changed model (same data and STFT settings)
reuses them all.  Shards are written under a temporary name and renamed
when complete, then the index is replaced atomically: a killed build loses
at most the shard it was writing.  ``index.json`` also remembers each path's
size and modification time, so a second run does not even re-hash files.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import mmap
import os
import re
import stat
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from samplegen.audio import audio_io
from samplegen.audio.corpus import (LINKED_FOLDER, MANIFEST_NAME, REPORT_NAME, CorpusEntry, _audio_files,
                                    _entry_from_row, _slug, check_finished, family_from_path)
from samplegen.errors import AudioError, CorpusError, ParameterError
from samplegen.files import inside_folder, open_regular, parse_json, read_regular_file, sha256_file, write_json
from samplegen.formats import FEATURE_CACHE
from samplegen.spectral.features import audio_to_features
from samplegen.spectral.phase_features import PhaseConfig
from samplegen.spectral.stft import StftConfig

INDEX_NAME = "index.json"
#: Rows per shard are chosen so a shard is about this size.
SHARD_BYTES = 1 << 30
DTYPES = ("float32", "float16")
#: Fewer files than this are computed in-process: starting a pool costs seconds.
POOL_MIN_FILES = 64
#: The only shard names an index may list (anything else, such as ``../x``, marks a tampered index).
SHARD_NAME = re.compile(r"shard-[0-9a-f]{12}\.npy")
#: Largest index.json read (about a million notes).
MAX_INDEX_BYTES = 512 * 1024**2

Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``$SAMPLEGEN_CACHE``, else ``$XDG_CACHE_HOME/samplegen/features``, else ``~/.cache/samplegen/features``."""
    env = os.environ.get("SAMPLEGEN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "samplegen" / "features"


@dataclass(frozen=True)
class FeatureSettings:
    """Everything besides the audio content that shapes a note's features (hashed into the cache folder name)."""

    duration_s: float
    n_fft: int
    hop_length: int
    prepare: str  # "built": a corpus folder's prepared WAVs; "raw": any samples, prepared on reading
    dtype: str = "float32"
    sample_rate: int = 44100
    #: :meth:`samplegen.spectral.phase_features.PhaseConfig.cache_key`: "" for log magnitudes alone
    phase: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ParameterError(f"cache dtype={self.dtype!r} must be one of {DTYPES}")
        if self.prepare not in ("built", "raw"):
            raise ParameterError(f"prepare={self.prepare!r} must be 'built' or 'raw'")

        PhaseConfig.from_cache_key(self.phase)  # refuses a key it cannot compute

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(T, C·F) of one note's frame-major features (C = 2 with instantaneous frequency)."""
        return 1 + self.n_samples // self.hop_length, (self.n_fft // 2 + 1) * (2 if self.phase else 1)

    def as_dict(self) -> dict[str, Any]:
        """The settings as stored in the index; magnitude-only settings read exactly as before the phase option."""
        data = dict(self.__dict__)
        if not data["phase"]:
            del data["phase"]
        return data

    def digest(self) -> str:
        data = {"format": FEATURE_CACHE.current, **self.as_dict()}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- notes of a corpus folder


def scan_notes(root: str | Path) -> tuple[list[CorpusEntry], str]:
    """The notes of a corpus folder without reading their audio: (entries, "built" | "raw").

    A folder with ``manifest.csv`` lists its notes there; any other folder is
    every file in it (recursively).  Names of a raw folder are given later, by
    :func:`build_features`, exactly as :func:`samplegen.audio.corpus.load_corpus`
    names them (unreadable files do not take a name).
    """
    root = Path(root)
    check_finished(root)
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        try:
            with open(manifest, newline="") as fh:
                entries = [_entry_from_row(row) for row in csv.DictReader(fh)]
        except (KeyError, ValueError, TypeError) as exc:
            raise CorpusError(f"{manifest} is malformed ({exc}); rebuild the corpus") from None
        if not entries:
            raise CorpusError(f"{manifest} lists no notes; rebuild the corpus")
        return entries, "built"
    if not root.is_dir():
        raise CorpusError(f"{root} is not a folder; pass a folder of WAV, FLAC, AIFF or OGG samples")
    files = [p for p in _audio_files(root) if p.name not in (MANIFEST_NAME, REPORT_NAME)]
    if not files:
        raise CorpusError(f"{root} holds no files; put WAV, FLAC, AIFF or OGG samples in it")
    rels = [str(p.relative_to(root)) for p in files]
    return [CorpusEntry(name="", file=r, preset=Path(r).stem) for r in rels], "raw"


def _name_raw_entries(entries: Sequence[CorpusEntry]) -> list[CorpusEntry]:
    """The names and families load_corpus gives (slug of the stem, de-duplicated in file order; the sub-folder)."""
    used: set[str] = set()
    named = []
    for e in entries:
        name = _slug(Path(e.file).stem)
        while name in used:
            name = f"{name}_{len(used)}"
        used.add(name)
        named.append(CorpusEntry(name, e.file, preset=e.preset, family=family_from_path(e.file)))
    return named


# --------------------------------------------------------------------------- computing one note


def note_features(path: str | Path, settings: FeatureSettings) -> np.ndarray:
    """Decode, resample, prepare and transform one file: float32 (T, F) log magnitudes ((T, 2F) with IF).

    The same computation as the in-memory path (``load_corpus`` then
    :func:`samplegen.spectral.features.audio_to_features`), one note at a time.
    """

    y = audio_io.read_audio(path)
    if settings.prepare == "raw" or len(y) != settings.n_samples:
        y = audio_io.prepare_note(y, duration_s=settings.duration_s)
    stft = StftConfig(n_fft=settings.n_fft, hop_length=settings.hop_length)
    return audio_to_features(y[None], stft, PhaseConfig.from_cache_key(settings.phase))[0].numpy()


def _worker_init() -> None:
    # One process per core: intra-op threads would only fight each other.
    torch.set_num_threads(1)


def _compute_row(task: tuple[str, str, int, int, FeatureSettings]) -> tuple[int, str | None]:
    """Pool task: compute one note and write it straight into its shard row (no large IPC)."""
    path, shard, row, offset, settings = task
    try:
        feats = note_features(path, settings).astype(settings.dtype, copy=False)
    except AudioError as exc:
        return row, str(exc)
    data = np.ascontiguousarray(feats).tobytes()
    fd = os.open(shard, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset + row * len(data))
    finally:
        os.close(fd)
    return row, None


# --------------------------------------------------------------------------- the store


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if fortran or dtype.hasobject:
        raise CorpusError(f"{fh.name} is not a SampleGen feature shard; delete the cache folder")
    return shape, dtype, fh.tell()


class _Shard:
    """One ``.npy`` shard, memory-mapped read-only; pages are dropped after each read so RSS stays bounded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mm: mmap.mmap | None = None
        self._arr: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._arr is None:
            with open(self.path, "rb") as fh:
                shape, dtype, offset = _read_npy_header(fh)
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            count = int(np.prod(shape))
            self._arr = np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset).reshape(shape)
        return self._arr

    def release(self) -> None:
        # Clean file-backed pages: dropping them loses nothing, and keeps the resident
        # set at one batch instead of growing to the whole corpus over an epoch.
        if self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_mm": None, "_arr": None}


class NoteFeatures:
    """Frame-major log magnitudes of a corpus's notes, un-normalised, in entry order.

    Either held in memory (:meth:`from_tensor`) or read from the on-disk cache
    (:func:`build_features`); training treats both the same.

    Attributes
    ----------
    root : the corpus folder
    entries : one per note, in row order
    frame_shape : (T, F)
    """

    def __init__(self, root: Path, entries: list[CorpusEntry], frame_shape: tuple[int, int], *,
                 tensor: torch.Tensor | None = None, shards: list[_Shard] | None = None,
                 locations: np.ndarray | None = None, skipped: list[tuple[str, str]] | None = None) -> None:
        self.root = Path(root)
        self.entries = entries
        self.frame_shape = frame_shape
        self.skipped = skipped or []
        self._tensor = tensor
        self._shards = shards or []
        self._loc = locations  # (N, 2) int64: shard number, row

    @classmethod
    def from_tensor(cls, root: Path, entries: list[CorpusEntry], feats: torch.Tensor) -> "NoteFeatures":
        """Features already in memory: Tensor[N x T x F] (kept on the CPU, like the cache's)."""
        return cls(root, entries, (feats.shape[1], feats.shape[2]), tensor=feats.cpu())

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, indices: "np.ndarray | Sequence[int]") -> torch.Tensor:
        """Rows ``indices`` (in that order) as float32 Tensor[B x T x F] on the CPU."""
        idx = np.asarray(indices, dtype=np.int64)
        if self._tensor is not None:
            return self._tensor[torch.from_numpy(idx)]
        assert self._loc is not None
        out = np.empty((len(idx), *self.frame_shape), dtype=np.float32)
        loc = self._loc[idx]
        for s in np.unique(loc[:, 0]):
            pos = np.flatnonzero(loc[:, 0] == s)
            rows = loc[pos, 1]
            order = np.argsort(rows, kind="stable")  # ascending rows: sequential reads
            shard = self._shards[int(s)]
            out[pos[order]] = shard.array()[rows[order]]
            shard.release()
        return torch.from_numpy(out)

    def batches(self, indices: "np.ndarray | Sequence[int]", batch_size: int) -> Iterator[torch.Tensor]:
        """:meth:`read` in consecutive batches of ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(idx), batch_size):
            yield self.read(idx[start : start + batch_size])


# --------------------------------------------------------------------------- building


def _load_index(folder: Path, settings: FeatureSettings) -> dict[str, Any]:
    """The cache's index, or a fresh one when it is missing, of other settings, damaged or tampered with.

    A fresh index only costs recomputation, so nothing in a bad one is an error.
    """
    path = folder / INDEX_NAME
    try:
        index = parse_json(read_regular_file(path, MAX_INDEX_BYTES, CorpusError), path, CorpusError)
        # Raise FEATURE_CACHE's version when the feature computation changes: old caches are then
        # computed again (in a folder of their own: the version is hashed into its name), never misread.
        if (FEATURE_CACHE.reads(index.get("format")) and index.get("settings") == settings.as_dict()
                and _well_formed(index)):
            index.setdefault("failed", {})
            return index
    except (OSError, CorpusError, AttributeError):
        pass
    return {"format": FEATURE_CACHE.current, "settings": settings.as_dict(), "notes": {}, "files": {}, "failed": {}}


def _well_formed(index: dict[str, Any]) -> bool:
    notes, files, failed = index.get("notes"), index.get("files"), index.get("failed", {})
    if not (isinstance(notes, dict) and isinstance(files, dict) and isinstance(failed, dict)):
        return False
    return (all(isinstance(loc, list) and len(loc) == 2 and isinstance(loc[0], str) and SHARD_NAME.fullmatch(loc[0])
                and type(loc[1]) is int and loc[1] >= 0 for loc in notes.values())
            and all(isinstance(f, list) and len(f) == 3 and type(f[0]) is int and type(f[1]) is int
                    and isinstance(f[2], str) for f in files.values())
            and all(isinstance(r, str) for r in failed.values()))


def _shard_rows(path: Path, settings: FeatureSettings) -> int:
    """Rows of a shard that holds whole notes of ``settings``; -1 for a missing, damaged or foreign one."""
    try:
        fd, size = open_regular(path, 1 << 46, CorpusError)
        with os.fdopen(fd, "rb") as fh:
            shape, dtype, offset = _read_npy_header(fh)
    except (OSError, ValueError, CorpusError):
        return -1
    if len(shape) != 3 or tuple(shape[1:]) != settings.frame_shape or dtype != np.dtype(settings.dtype):
        return -1
    if size < offset + int(np.prod(shape)) * dtype.itemsize:
        return -1
    return int(shape[0])


def _drop_damaged(folder: Path, index: dict[str, Any], settings: FeatureSettings) -> None:
    """Forget cached notes whose shard is missing, truncated or of another shape: they are computed again."""
    rows = {name: _shard_rows(folder / name, settings) for name in {loc[0] for loc in index["notes"].values()}}
    index["notes"] = {k: loc for k, loc in index["notes"].items() if loc[1] < rows[loc[0]]}


def build_features(root: str | Path, settings: FeatureSettings, *, cache_dir: str | Path | None = None,
                   workers: int | None = None, progress: Progress | None = None,
                   pool_min_files: int = POOL_MIN_FILES) -> NoteFeatures:
    """Features of every note of a corpus folder, computing (in parallel) only those not cached yet.

    Parameters
    ----------
    root : a built corpus folder (with manifest.csv) or any folder of samples
    settings : duration, STFT and storage settings (``prepare`` is taken from the folder)
    cache_dir : cache root (see :func:`default_cache_dir`)
    workers : processes computing features (default: every core)
    progress : called with (done, total) as notes are computed

    Returns
    -------
    NoteFeatures reading from the memory-mapped shards; unreadable files are left
    out and listed in ``.skipped`` with their reason.

    Example
    -------
    >>> s = FeatureSettings(duration_s=2.0, n_fft=2048, hop_length=512, prepare="built")
    >>> feats = build_features("corpus", s)                 # doctest: +SKIP
    """
    root = Path(root)
    entries, kind = scan_notes(root)
    if settings.prepare != kind:
        settings = FeatureSettings(**{**settings.__dict__, "prepare": kind})
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / settings.digest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the feature cache {folder}: {exc.strerror}; pass --cache DIR") from None
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds into one cache wait for each other
        index = _load_index(folder, settings)
        _drop_damaged(folder, index, settings)
        keys, rehashed = _hash_files(root, entries, index, listed_in=root / MANIFEST_NAME if kind == "built" else None)
        missing = sorted({k for k in keys if k not in index["notes"] and k not in index["failed"]})
        paths = {k: str(root / e.file) for k, e in zip(keys, entries)}
        if missing:
            _compute_missing(folder, missing, paths, settings, index, workers, progress, pool_min_files)
        elif rehashed:
            write_json(folder / INDEX_NAME, index)  # remember the file hashes
    skipped = [(e.file, index["failed"][k]) for k, e in zip(keys, entries) if k in index["failed"]]
    kept = [(k, e) for k, e in zip(keys, entries) if k in index["notes"]]
    if not kept:
        reasons = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        raise CorpusError(f"none of the {len(entries)} files in {root} is usable audio ({reasons})")
    kept_entries = [e for _, e in kept]
    if kind == "raw":
        kept_entries = _name_raw_entries(kept_entries)
    shard_names = sorted({index["notes"][k][0] for k, _ in kept})
    shard_no = {name: i for i, name in enumerate(shard_names)}
    loc = np.array([[shard_no[index["notes"][k][0]], index["notes"][k][1]] for k, _ in kept], dtype=np.int64)
    shards = [_Shard(folder / name) for name in shard_names]
    return NoteFeatures(root, kept_entries, settings.frame_shape, shards=shards, locations=loc, skipped=skipped)


def _hash_files(root: Path, entries: Sequence[CorpusEntry], index: dict[str, Any],
                listed_in: Path | None) -> tuple[list[str], bool]:
    """Content hash of every file, reusing the remembered one when size and mtime are unchanged.

    Files that a manifest (``listed_in``) names must lie inside ``root``; the others fail with the reason.
    """
    keys = []
    rehashed = False
    for e in entries:
        path = root / e.file
        if listed_in is not None:
            try:
                inside_folder(root, e.file, listed_in, CorpusError)
            except CorpusError as exc:
                keys.append(f"outside:{e.file}")
                index["failed"][keys[-1]] = str(exc)
                rehashed = True
                continue
        try:
            st = path.stat()
        except OSError:
            keys.append(f"missing:{path}")
            index["failed"][keys[-1]] = "missing file"
            rehashed = True
            continue
        if not stat.S_ISREG(st.st_mode):  # hashing a FIFO would block forever
            keys.append(f"special:{path}")
            index["failed"][keys[-1]] = (LINKED_FOLDER if stat.S_ISDIR(st.st_mode)
                                         else "not a regular file (a FIFO, device or socket)")
            rehashed = True
            continue
        absolute = str(path.resolve())
        known = index["files"].get(absolute)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            keys.append(known[2])
            continue
        digest = sha256_file(path)
        index["files"][absolute] = [st.st_size, st.st_mtime_ns, digest]
        keys.append(digest)
        rehashed = True
    return keys, rehashed


def _compute_missing(folder: Path, missing: list[str], paths: dict[str, str], settings: FeatureSettings,
                     index: dict[str, Any], workers: int, progress: Progress | None, pool_min_files: int) -> None:
    t, f = settings.frame_shape
    row_bytes = t * f * np.dtype(settings.dtype).itemsize
    per_shard = max(1, SHARD_BYTES // row_bytes)
    use_pool = workers > 1 and len(missing) >= pool_min_files
    pool = ProcessPoolExecutor(workers, initializer=_worker_init) if use_pool else None
    done = 0
    try:
        for start in range(0, len(missing), per_shard):
            chunk = missing[start : start + per_shard]
            name = f"shard-{uuid.uuid4().hex[:12]}.npy"
            tmp = folder / f".{name}.tmp"
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=settings.dtype, shape=(len(chunk), t, f))
            offset = int(arr.offset)
            del arr
            tasks = [(paths[k], str(tmp), i, offset, settings) for i, k in enumerate(chunk)]
            results = pool.map(_compute_row, tasks, chunksize=8) if pool else map(_compute_row, tasks)
            failed: dict[int, str] = {}
            for row, err in results:
                if err is not None:
                    failed[row] = err
                done += 1
                if progress:
                    progress(done, len(missing))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            for i, k in enumerate(chunk):
                if i in failed:
                    index["failed"][k] = failed[i]
                else:
                    index["notes"][k] = [name, i]
            write_json(folder / INDEX_NAME, index)
    finally:
        if pool is not None:
            pool.shutdown()
        for leftover in folder.glob(".shard-*.tmp"):
            leftover.unlink(missing_ok=True)
