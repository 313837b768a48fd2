"""The package's own exceptions, so callers (and the CLI) can tell a user's mistake from a bug."""

from __future__ import annotations

import difflib
from typing import Iterable


class SampleGenError(Exception):
    """Base class: anything the CLI should print as a one-line error instead of a traceback."""


class ParameterError(SampleGenError, ValueError):
    """A public function got an argument outside its allowed values (librosa's convention)."""


class AudioError(SampleGenError):
    """An audio file could not be read or holds no usable sound."""


class CorpusError(SampleGenError):
    """A corpus folder is empty, unreadable or inconsistent."""


class CheckpointError(SampleGenError):
    """A run folder is missing, tampered with, truncated or from an incompatible version."""


#: The largest seed every generator here takes (torch's manual_seed reads a signed 64-bit integer).
MAX_SEED = 2**63 - 1


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` when it is a whole number every random generator here accepts, else a one-line ParameterError.

    >>> check_seed(3)
    3
    >>> check_seed(2**70)
    Traceback (most recent call last):
    ...
    samplegen.errors.ParameterError: seed=1180591620717411303424 must be a whole number from 0 to 9223372036854775807
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ParameterError(f"{name}={seed!r} must be a whole number from 0 to {MAX_SEED}")
    return seed


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    """The end of an error message about an unknown ``name``: the closest of ``choices``, else ``otherwise``.

    >>> "no note 'piano_1'" + did_you_mean("piano_1", ["piano_01", "organ_01"])
    "no note 'piano_1'; did you mean piano_01?"
    >>> did_you_mean("zz", ["piano_01"], otherwise="; `samplegen info RUN` lists them")
    '; `samplegen info RUN` lists them'
    """
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f"; did you mean {', '.join(close)}?" if close else otherwise
