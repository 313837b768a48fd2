"""File-system details shared by every writer: atomic writes (JSON, safetensors), file modes, names from data
made safe, leftovers of killed writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Iterator

import torch
from safetensors.torch import save as st_save_bytes

from samplegen.errors import CheckpointError, ParameterError, SampleGenError

#: Longest stem :func:`safe_file_stem` returns (bytes), leaving room for suffixes such as
#: ``_original.wav`` or ``.latent.json`` under the 255-byte limit of common file systems.
MAX_STEM_BYTES = 96
#: What makes a spreadsheet take a cell for a formula (OWASP, "CSV Injection"): see :func:`spreadsheet_safe`.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def regular_file_mode() -> int:
    """The mode ``open()`` gives a new file (0666 less the umask).

    Atomic writers create a temporary file with ``mkstemp``, whose mode is 0600; without this, every
    run folder, corpus and exported WAV would be readable by its owner alone, unlike any file the
    user writes themselves.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _reason(exc: OSError) -> str:
    """The system's words for a failed write (``strerror``), else the exception's first line."""
    if exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb", *, newline: str | None = None,
                 error: type[SampleGenError] = CheckpointError) -> Path:
    """Write through ``write(fileobj)`` to a temp file beside ``path``, fsync, then rename.

    A crash, a kill or a full disk leaves either the old file or the new one at ``path``, never half of one;
    the temp file (``.NAME.*.tmp``) is removed on failure. ``error`` is what a failing file system raises.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write to {path.parent}: {_reason(exc)}; choose a writable output folder") from None
    try:
        os.fchmod(fd, regular_file_mode())
        with os.fdopen(fd, mode, newline=newline) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _silent_unlink(tmp)
        raise error(f"cannot write {path}: {_reason(exc)}; check free space and permissions") from None
    except BaseException:
        _silent_unlink(tmp)
        raise
    return path


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous and moved to the CPU)."""
    data = st_save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write(path, lambda fh: fh.write(data))


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_file_stem(name: str) -> str:
    """``name`` (from a manifest, a run's corpus.json, a file's stem…) as one file name, without extension.

    Names from data are untrusted: ``../../x`` must not leave the output folder. The result holds only
    ASCII letters, digits, ``_``, ``-`` and single inner dots (accents are dropped, anything else becomes
    ``_``), never starts with a dot or dash, is not a reserved Windows device name, is at most
    :data:`MAX_STEM_BYTES` long and never empty. Safe names come back unchanged; a name cut short or
    left with nothing gets a short hash of the original, so distinct names stay distinct.
    """
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_text)
    stem = re.sub(r"\.{2,}", "_", stem).strip("._-")
    if not stem:
        return f"sound-{_digest(str(name))}" if name else "sound"
    if len(stem) > MAX_STEM_BYTES:
        stem = f"{stem[: MAX_STEM_BYTES - 9].rstrip('._-')}-{_digest(str(name))}"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    return stem


def refuse_a_folder_of_other_files(out: Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Refuse an ``out`` folder that holds files (hidden ones aside) but is not ``what`` (``is_ours`` false): a
    verb that writes many files there would bury the user's folder, or a run folder, in them."""
    try:
        visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    except OSError:  # not a folder yet (or not one: the verb's own mkdir says so)
        return
    if visible and not is_ours(out):
        raise ParameterError(f"--out {out} already holds files that are not {what} ({visible[0]}"
                             f"{', ...' if len(visible) > 1 else ''}); choose a new or empty folder")


def unique_stems(names: Iterable[str], taken: Iterable[str] = ()) -> list[str]:
    """:func:`safe_file_stem` of each name, with ``_2``, ``_3``… added where two would share a file, or where a
    stem is already ``taken`` (a file of that name in the folder written to).

    Compared case-insensitively, since macOS and Windows folders are.
    """
    used: set[str] = {t.casefold() for t in taken}
    out = []
    for name in names:
        base = stem = safe_file_stem(name)
        k = 1
        while stem.casefold() in used:
            k += 1
            stem = f"{base}_{k}"
        used.add(stem.casefold())
        out.append(stem)
    return out


def inside_folder(root: str | Path, relative: str, listed_in: str | Path, error: type[SampleGenError]) -> Path:
    """``root / relative`` for a path that data lists (a manifest's ``file``, a run's corpus.json), if it stays in ``root``.

    Such paths are untrusted: an absolute path or ``../`` would make a load read an audio file anywhere on the
    machine (which ``evaluate`` then copies into its report). An empty, absolute or drive path, a ``..`` part
    (``/`` or ``\\`` separated) and a path that leaves ``root`` through a symbolic link raise one line of ``error``.
    """
    rel = str(relative)
    if not rel or rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive:
        why = "an absolute path" if rel else "an empty path"
    elif ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        why = "it climbs out with '..'"
    else:
        try:
            if (Path(root) / rel).resolve().is_relative_to(Path(root).resolve()):
                return Path(root) / rel
            why = "a symbolic link leads out of it"
        except (OSError, RuntimeError):  # a loop of symbolic links (RuntimeError before Python 3.13)
            why = "its symbolic links loop"
    raise error(f"{listed_in} lists '{rel}', which is not a file inside {root} ({why}); refusing to read it")


@contextlib.contextmanager
def one_unit(written: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """Files that are only of use together (an export's graph and its recipe): when the block fails, the ones
    it put in ``written`` are removed, so a full disk or a failed check leaves no half of an export behind."""
    try:
        yield written
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise


def remove_temp_files(folder: Path, patterns: Iterable[str]) -> None:
    """Delete the temporary files (glob ``patterns``) a killed writer left in ``folder``.

    Every writer here writes to a dot-file ending ``.tmp`` and renames it into place; a kill between
    the two leaves the temporary file behind, so the next run into the same folder removes it.
    """
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.is_file() or p.is_symlink():
                p.unlink(missing_ok=True)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, max_bytes: int, error: type[SampleGenError]) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file of at most ``max_bytes``: (descriptor, size).

    Files that arrive from others are untrusted: a symlink to ``/dev/zero`` would be read until memory
    runs out and a FIFO would block forever. The file is opened without blocking and checked with
    ``fstat`` on the open descriptor (no window between check and read); anything else raises ``error``
    with one line. FileNotFoundError and other OSErrors reach the caller unchanged.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path} is {_kind(st.st_mode)}, not a regular file; refusing to read it")
        if st.st_size > max_bytes:
            raise error(f"{path} is {st.st_size:,} bytes, over the limit of {max_bytes:,} for this file; "
                        "it is not one SampleGen wrote")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_regular_file(path: str | Path, max_bytes: int, error: type[SampleGenError]) -> bytes:
    """The bytes of ``path``, checked as in :func:`open_regular` (a file that grows past the limit too)."""
    fd, _ = open_regular(path, max_bytes, error)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path} grew past the limit of {max_bytes:,} bytes while being read")
    return data


def parse_json(data: bytes | str, where: str | Path, error: type[SampleGenError]) -> Any:
    """JSON from an untrusted file; malformed or absurdly nested text (a RecursionError) is one line of ``error``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise error(f"{where} nests its JSON too deeply to be a file SampleGen wrote") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of more than 4,300 digits
        raise error(f"{where} is not readable JSON ({exc})") from None


def terminal_safe(text: object) -> str:
    """``text`` with control characters escaped (``\\x1b``), so a crafted file or note name cannot drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def spreadsheet_safe(text: str) -> str:
    """``text`` for a CSV cell: a leading ``'`` where it would start a formula (OWASP's advice on CSV injection).

    Names from data reach CSV files a user opens in a spreadsheet; ``=HYPERLINK(...)`` there would run.
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (export bundles and cache shards are checked by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
