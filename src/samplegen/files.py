"""File-system details shared by every atomic writer (checkpoints, JSON, WAVs)."""

from __future__ import annotations

import os


def regular_file_mode() -> int:
    """The mode ``open()`` gives a new file (0666 less the umask).

    Atomic writers create a temporary file with ``mkstemp``, whose mode is 0600; without this, every
    run folder, corpus and exported WAV would be readable by its owner alone, unlike any file the
    user writes themselves.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
