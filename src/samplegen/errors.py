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


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    """The end of an error message about an unknown ``name``: the closest of ``choices``, else ``otherwise``.

    >>> "no note 'piano_1'" + did_you_mean("piano_1", ["piano_01", "organ_01"])
    "no note 'piano_1'; did you mean piano_01?"
    >>> did_you_mean("zz", ["piano_01"], otherwise="; `samplegen info RUN` lists them")
    '; `samplegen info RUN` lists them'
    """
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f"; did you mean {', '.join(close)}?" if close else otherwise
