"""Shared helpers of the benchmarks: result rows, noise-robust timing, peak memory, machine info.

A benchmark module ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> list[dict]``; each
dict is a result row made by :func:`row` (see ``benchmarks/README.md`` for the protocol). These
machines are shared and noisy, so a benchmark reports *ratios* of quantities measured side by side
in the same run (``ratio_to`` names the reference row) rather than absolute times alone, and
:func:`interleaved_best` times its variants in alternating rounds, keeping each one's best time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

ROW_KEYS: tuple[str, ...] = ("name", "value", "unit", "ratio_to", "note")


def row(
    name: str, value: float | None, unit: str, ratio_to: str | None = None, note: str = ""
) -> dict[str, Any]:
    """One result row.

    Args:
        name: unique within its benchmark; other rows refer to it by this name.
        value: the measurement, or None when it could not be measured (``note`` says why).
        unit: e.g. ``patches/s``, ``FLOP/s``, ``s``, ``MiB``.
        ratio_to: name of a row of the same benchmark whose value is the reference: the harness
            reports ``value / reference`` (a speed-up, or a fraction of a limit such as the GEMM
            FLOP/s measured in the same run).
        note: free text (settings, checks, caveats).
    """
    if value is not None:
        value = float(value)
    return {"name": name, "value": value, "unit": unit, "ratio_to": ratio_to, "note": note}


def validate_rows(rows: object, source: str = "benchmark") -> list[dict[str, Any]]:
    """Check the protocol: a list of dicts with exactly the keys of :data:`ROW_KEYS`.

    Names must be unique and every ``ratio_to`` must name a row of the same list.
    Returns the rows (values as float or None). Raises ValueError naming the problem.
    """
    if not isinstance(rows, list):
        raise ValueError(f"{source}: run() must return a list of rows, got {type(rows).__name__}")
    names: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or set(r) != set(ROW_KEYS):
            got = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise ValueError(
                f"{source}: row {i} must be a dict with keys {list(ROW_KEYS)}, got {got}; "
                "build rows with _common.row()"
            )
        if not isinstance(r["name"], str) or not r["name"]:
            raise ValueError(f"{source}: row {i} has no name")
        if r["name"] in names:
            raise ValueError(f"{source}: duplicate row name {r['name']!r}")
        names.add(r["name"])
        value = r["value"]
        if value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"{source}: row {r['name']!r} value {value!r} is not a number")
        if value is not None and not math.isfinite(float(value)):
            value = None  # NaN/inf are not JSON; the note should say why
        if not isinstance(r["unit"], str) or not isinstance(r["note"], str):
            raise ValueError(f"{source}: row {r['name']!r}: unit and note must be strings")
        out.append({**r, "value": None if value is None else float(value)})
    for r in out:
        if r["ratio_to"] is not None and r["ratio_to"] not in names:
            raise ValueError(
                f"{source}: row {r['name']!r} has ratio_to={r['ratio_to']!r}, "
                "which is not a row of the same benchmark"
            )
    return out


def add_ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a ``ratio`` key: value / value of the ``ratio_to`` row (None if not computable)."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for r in rows:
        ratio = None
        ref = by_name.get(r["ratio_to"]) if r["ratio_to"] else None
        if ref is not None and r["value"] is not None and ref["value"]:
            ratio = r["value"] / ref["value"]
        out.append({**r, "ratio": ratio})
    return out


def interleaved_best(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None] | None = None,
    warmup: int = 1,
) -> dict[str, float]:
    """Best wall time (s) of one call of each variant, timed in alternating rounds.

    Every variant is called ``warmup`` times first (untimed), then each round calls every variant
    once, so slow phases of a shared machine hit all variants alike. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before the clock is read.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    sync = sync or (lambda: None)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
        sync()
    best = {name: math.inf for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``resource.getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024**2 if sys.platform == "darwin" else 1024)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _cpu_flags() -> str:
    """The widest x86 SIMD extension the CPU reports (what GEMM speed depends on most)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    for name in ("amx_tile", "avx512f", "avx2", "avx", "sse4_2"):
                        if name in flags:
                            return name
                    break
    except OSError:
        pass
    return ""


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, RAM, threads, library versions, GPU, load."""
    import numpy as np
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "simd": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _ram_gib(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def emit(rows: list[dict[str, Any]]) -> None:
    """A standalone run's output: one line per row, the rows as JSON on the last line, and the
    JSON file named by ``LANDSLIDE_BENCH_JSON`` when set (what the harness reads)."""
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:12.2f}"
        print(f"{r['name']:{width}s} {value} {r['unit']:9s} {r['note']}")
    print(json.dumps(rows))
    if os.environ.get("LANDSLIDE_BENCH_JSON"):
        with open(os.environ["LANDSLIDE_BENCH_JSON"], "w") as f:
            json.dump(rows, f)


def random_reader(directory: Any, shape: tuple[int, int], k: int, periods: int) -> tuple[Any, Any]:
    """A random cube (``landslide_hazard.testing.make_cube``, 4-cell patches) of ``shape``
    cells of ``k`` px and ``periods`` periods in ``directory``: its reader and the
    normalisation of its labelled cells, as the predict and input benchmarks use them."""
    from pathlib import Path

    from landslide_hazard.sampling.dataset import CubeReader
    from landslide_hazard.sampling.normalisation import compute_normalisation
    from landslide_hazard.testing import make_cube

    cube = make_cube(Path(directory) / "cube.zarr", shape_cells=shape, k=k, n=4, n_periods=periods)
    reader = CubeReader(cube)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, k
    )
    return reader, norm
