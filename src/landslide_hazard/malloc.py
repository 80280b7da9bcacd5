"""Keep the C heap from handing big blocks back to the kernel after every batch (glibc only).

A forward pass allocates and frees activations of tens of MB per batch. With glibc's defaults
(blocks above a dynamic threshold are ``mmap``-ed, and the top of the heap is trimmed once 128
kB are free) each batch maps fresh pages and the kernel zero-fills them: on the Gorkha-size
prediction a quarter of the CPU time was system time (41 million minor page faults). Raising
both thresholds lets freed blocks be reused. Peak memory is not raised by more than the trim
threshold. ``LANDSLIDE_HAZARD_NO_MALLOC_TUNING=1`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_BYTES = 128 * 1024**2
TRIM_THRESHOLD_BYTES = 256 * 1024**2
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_done = False


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where that is not possible
    (not Linux/glibc, or turned off by the environment variable)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("LANDSLIDE_HAZARD_NO_MALLOC_TUNING"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    _done = ok
    return ok
