"""Process-level settings for the `samplegen` command (not applied on import of the library).

glibc returns every large buffer (a batch of spectrograms is tens of MB) to the
operating system when it is freed and maps fresh, zeroed pages for the next
one. Generation allocates such buffers in a loop, so the kernel spent more time
zeroing pages than the CPU spent computing: `samplegen evaluate` on the default
run measured 3m52s of system time against 3m09s of user time. Raising the
mmap and trim thresholds keeps those buffers in the heap for reuse. The
threshold stays at 128 MB, above a batch's buffers (tens of MB) and below a
corpus's feature array (hundreds of MB): with 1 GB, a tuning study that
allocates differently shaped arrays in every trial grew past 13 GB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Freed blocks up to this size stay in the process for reuse.
KEEP_BYTES = 128 << 20


def keep_large_buffers() -> bool:
    """Ask glibc to reuse large freed buffers instead of unmapping them; True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
