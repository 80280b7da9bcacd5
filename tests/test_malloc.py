"""malloc tuning: glibc serves batch-sized blocks from the heap and keeps them after free."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from landslide_hazard import malloc

_PROBE = r"""
import ctypes, json, sys
if sys.argv[1] == "tuned":
    from landslide_hazard.malloc import tune_malloc
    assert tune_malloc()
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(32 * 1024**2)  # one batch's activation
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"mmapped_during": during.hblkhd, "heap_free_after": after.fordblks}))
"""


def _probe(mode: str) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LANDSLIDE_HAZARD_NO_MALLOC_TUNING", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_heap_keeps_a_freed_batch_block_for_reuse():
    """A 32 MB block: by default glibc mmaps it and unmaps it on free (the next batch faults in
    fresh zero-filled pages); tuned it comes from the heap and stays there, free, for reuse."""
    mb32 = 32 * 1024**2
    default, tuned = _probe("default"), _probe("tuned")
    assert default["mmapped_during"] >= mb32 and default["heap_free_after"] < mb32
    assert tuned["mmapped_during"] < mb32 and tuned["heap_free_after"] >= mb32


def test_tuning_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(malloc, "_done", False)
    monkeypatch.setenv("LANDSLIDE_HAZARD_NO_MALLOC_TUNING", "1")
    assert malloc.tune_malloc() is False
    monkeypatch.delenv("LANDSLIDE_HAZARD_NO_MALLOC_TUNING")
    assert malloc.tune_malloc() is sys.platform.startswith("linux")
    assert malloc.tune_malloc() is sys.platform.startswith("linux")  # once per process
