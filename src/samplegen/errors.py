"""The package's own exceptions, so callers (and the CLI) can tell a user's mistake from a bug."""


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
