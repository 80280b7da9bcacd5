"""Benchmark: our ``prepare`` against the paper's patch-by-patch data preparation.

Three timings on the same synthetic scenario, each in its own fresh Python process (so each
peak RSS, from ``resource.getrusage``, is that phase's own):

1. **read once**: read every raw input file of the scenario once (DEM, daily rain, PGA and
   sigma rasters, rivers, inventories) - a floor for any preparation;
2. **ours**: ``landslide_hazard.prepare.prepare`` from the raw inputs to the finished cube
   (validation, targets, trigger bands, static bands, everything);
3. **paper baseline**: the published code's approach, reimplemented: for every patch polygon
   (both lattices) and period, and for every covariate raster (the 8 static bands and the 4
   trigger bands of the period on the fine grid, plus the target density raster), open the
   raster, read the WHOLE raster, slice the patch out, and grow the output arrays X
   (patch, 128, 128, 13) and Y (patch, 4, 4) with ``np.concatenate``. The covariate rasters are
   exported from our cube beforehand and not timed: the paper derived them in Google Earth
   Engine, so the baseline is not charged for deriving any predictor (this favours it).

The baseline runs on a fixed subset (the first ``--subset`` patch-periods in lattice order)
and is extrapolated linearly: t_all = t_subset / subset x (patches x periods). Linear
extrapolation is a lower bound: each ``np.concatenate`` copies the whole array built so far, so
the true cost grows quadratically with the number of patches; the projected size of X is
printed too (the paper's approach must hold it in memory, twice during a concatenate).

Checks while measuring: the cube's targets against the scenario's truth, and the baseline's
patches (static channels, targets) against the cube.

Usage (default: the demo scenario, about a minute; ``--quick``: the tiny one)::

    python benchmarks/bench_prepare.py [--size tiny|demo|gorkha] [--quick] [--seed 0]
        [--subset 24] [--workdir DIR] [--keep]

or through the harness: ``python benchmarks/run.py --only prepare [--quick]`` (``run(quick)``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _in_fresh_process(fn, *args):
    """Run fn(*args) in a new Python process (this file with ``--phase``); return its result.

    A subprocess rather than a multiprocessing pool: the harness imports this file under
    another module name, which a spawned pool worker could not import back.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", fn.__name__, json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"phase {fn.__name__} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Phases (run in child processes)


def phase_read_once(config_path: str) -> tuple[float, float, int]:
    """Read every raw input once; returns (seconds, peak RSS MB, bytes read into memory)."""
    import rasterio

    from landslide_hazard.config import load_config
    from landslide_hazard.io.vectors import is_vector_path, read_vectors
    from landslide_hazard.prepare import input_paths

    cfg = load_config(config_path)
    start = time.perf_counter()
    total = 0
    for path in input_paths(cfg).values():
        if is_vector_path(path):
            total += len(read_vectors(path).geometries)
        else:
            with rasterio.open(path) as ds:
                total += ds.read().nbytes
    return time.perf_counter() - start, _peak_rss_mb(), total


def phase_ours(config_path: str, cube_path: str) -> tuple[float, float]:
    from landslide_hazard.config import load_config
    from landslide_hazard.prepare import prepare

    cfg = load_config(config_path)
    start = time.perf_counter()
    prepare(cfg, out=Path(cube_path), progress=False, overwrite=True)
    return time.perf_counter() - start, _peak_rss_mb()


def _patch_windows(grid) -> list[tuple[float, float, float, float]]:
    """Patch polygons' bounds (x_min, y_min, x_max, y_max) of both lattices, row-major.

    Lattice 1 is shifted n/2 cells east and south; edge patches that run past the grid are
    kept (padded), as our sampler keeps them.
    """
    n = grid.patch_cells
    size = grid.cell_size_m * n
    rows, cols = grid.cell_shape
    out = []
    for offset in grid.lattice_offsets_cells:
        for r in range(offset, rows, n):
            for c in range(offset, cols, n):
                x0 = grid.x_min + c * grid.cell_size_m
                y1 = grid.y_max - r * grid.cell_size_m
                out.append((x0, y1 - size, x0 + size, y1))
    return out


def phase_paper(
    covariate_dir: str,
    target_path: str,
    grid_dict: dict,
    n_periods: int,
    subset: int,
    cube_path: str,
) -> tuple[float, float, int, int, float]:
    """The paper's loop on the first ``subset`` patch-periods.

    Returns (seconds, peak RSS MB, patch-periods done, total, max |X - cube| over the static
    channels and |Y - cube targets| of the done patches; checked after the timing).
    """
    import rasterio

    from landslide_hazard.bands import DYNAMIC_NAMES, STATIC_NAMES
    from landslide_hazard.grid import StudyGrid

    grid = StudyGrid.from_dict(grid_dict)
    cov = Path(covariate_dir)
    patches = _patch_windows(grid)
    jobs = [(p, t) for p in patches for t in range(n_periods)]
    total = len(jobs)
    px = grid.patch_pixels
    n = grid.patch_cells

    def cut(path: Path, band: int, bounds, size: int) -> np.ndarray:
        with rasterio.open(path) as ds:
            whole = ds.read(band)  # the WHOLE raster, every time
            row0, col0 = _rowcol(ds.transform, bounds)
        piece = whole[row0 : row0 + size, col0 : col0 + size]
        if piece.shape != (size, size):  # an edge patch: pad with NaN
            piece = np.pad(
                piece.astype(np.float32),
                ((0, size - piece.shape[0]), (0, size - piece.shape[1])),
                constant_values=np.nan,
            )
        return piece

    start = time.perf_counter()
    x = np.empty((0, px, px, len(STATIC_NAMES) + len(DYNAMIC_NAMES) + 1), dtype=np.float32)
    y = np.empty((0, n, n), dtype=np.float32)
    for bounds, t in jobs[:subset]:
        channels = [cut(cov / f"{name}.tif", 1, bounds, px) for name in STATIC_NAMES]
        channels += [cut(cov / f"{name}.tif", t + 1, bounds, px) for name in DYNAMIC_NAMES]
        channels.append(cut(cov / "monsoons_since_eq.tif", t + 1, bounds, px))
        x = np.concatenate([x, np.stack(channels, axis=-1)[None]], axis=0)
        y = np.concatenate([y, cut(Path(target_path), t + 1, bounds, n)[None]], axis=0)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()

    from landslide_hazard.cube import open_cube

    cube = open_cube(cube_path)
    static = cube.static[:]
    target = cube.target_density[:]
    worst = 0.0
    for i, (bounds, t) in enumerate(jobs[:subset]):
        r0, c0 = _rowcol(grid.fine_transform, bounds)
        want = static[:, r0 : r0 + px, c0 : c0 + px]
        got = np.moveaxis(x[i, : want.shape[1], : want.shape[2], : len(STATIC_NAMES)], -1, 0)
        cr, cc = r0 // grid.cell_pixels, c0 // grid.cell_pixels
        want_y = target[t, cr : cr + n, cc : cc + n]
        got_y = y[i, : want_y.shape[0], : want_y.shape[1]]
        for a, b in ((got, want), (got_y, want_y)):
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                return seconds, peak, min(subset, total), total, float("inf")
            if np.isfinite(a).any():
                worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return seconds, peak, min(subset, total), total, worst


def _rowcol(transform, bounds) -> tuple[int, int]:
    col, row = ~transform @ (bounds[0], bounds[3])
    return int(round(row)), int(round(col))


# --------------------------------------------------------------------------------------------
# Setup (not timed)


def export_covariates(cube_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the paper's inputs: one fine-grid GeoTIFF per covariate (dynamic: one band per
    period, upsampled to the fine grid) and the target density on the cell grid."""
    from landslide_hazard.cube import open_cube
    from landslide_hazard.io.rasters import PLAIN_GTIFF, write_raster

    cube = open_cube(cube_path)
    g = cube.grid
    k = g.cell_pixels
    out_dir.mkdir(parents=True, exist_ok=True)
    static = cube.static[:]
    for i, name in enumerate(cube.meta.static_bands):
        write_raster(
            out_dir / f"{name}.tif", static[i], g.fine_transform, g.crs, encoding=PLAIN_GTIFF
        )
    dynamic = cube.dynamic[:]
    for b, name in enumerate(cube.meta.dynamic_bands):
        fine = np.repeat(np.repeat(dynamic[:, b], k, axis=1), k, axis=2)
        write_raster(out_dir / f"{name}.tif", fine, g.fine_transform, g.crs, encoding=PLAIN_GTIFF)
    monsoons = np.broadcast_to(
        cube.monsoons_since_eq[:, None, None], (len(cube.meta.periods), *g.fine_shape)
    )
    write_raster(
        out_dir / "monsoons_since_eq.tif", monsoons, g.fine_transform, g.crs, encoding=PLAIN_GTIFF
    )
    target = out_dir / "target_density.tif"
    write_raster(target, cube.target_density[:], g.cell_transform, g.crs, encoding=PLAIN_GTIFF)
    return out_dir, target


def measure(size: str, seed: int, subset: int, work: Path) -> dict:
    """Generate (or reuse) the scenario in ``work`` and time the three phases."""
    from landslide_hazard.config import load_config
    from landslide_hazard.synthetic import generate_scenario

    scenario = work / f"{size}-{seed}"
    t0 = time.perf_counter()
    if not (scenario / "config.yaml").exists():
        generate_scenario(size, seed, scenario, progress=False)
    t_gen = time.perf_counter() - t0
    config = scenario / "config.yaml"
    cfg = load_config(config)
    grid = cfg.study_grid()
    cube = work / "cube.zarr"

    t_read, rss_read, nbytes = _in_fresh_process(phase_read_once, str(config))
    t_ours, rss_ours = _in_fresh_process(phase_ours, str(config), str(cube))
    cov_dir, target = export_covariates(cube, work / "covariates")
    t_sub, rss_paper, done, total, worst = _in_fresh_process(
        phase_paper,
        str(cov_dir),
        str(target),
        grid.to_dict(),
        len(cfg.periods),
        subset,
        str(cube),
    )
    import rasterio

    from landslide_hazard.cube import open_cube

    with rasterio.open(scenario / "truth" / "new_density.tif") as ds:
        truth = ds.read()
    ours_target = open_cube(cube).target_density[:]
    truth_err = float(np.nanmax(np.abs(ours_target - truth))) if np.isfinite(truth).any() else 0.0
    return {
        "size": size,
        "seed": seed,
        "cells": grid.cell_shape,
        "pixels": grid.fine_shape,
        "periods": len(cfg.periods),
        "t_gen": t_gen,
        "t_read": t_read,
        "rss_read": rss_read,
        "read_mib": nbytes / 2**20,
        "t_ours": t_ours,
        "rss_ours": rss_ours,
        "t_sub": t_sub,
        "rss_paper": rss_paper,
        "done": done,
        "total": total,
        "t_paper": t_sub / done * total,
        "x_gib": total * grid.patch_pixels**2 * 13 * 4 / 2**30,
        "patch_px": grid.patch_pixels,
        "paper_vs_cube": worst,
        "truth_err": truth_err,
    }


def to_rows(m: dict) -> list[dict]:
    """Result rows of the benchmark protocol (benchmarks/README.md)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import row

    where = (
        f"{m['size']} seed {m['seed']}: {m['cells'][0]} x {m['cells'][1]} cells, "
        f"{m['pixels'][0]} x {m['pixels'][1]} px, {m['periods']} periods"
    )
    return [
        row("read inputs once", m["t_read"], "s", note=f"{where}; {m['read_mib']:.0f} MiB rasters"),
        row(
            "ours prepare",
            m["t_ours"],
            "s",
            ratio_to="read inputs once",
            note=f"raw inputs -> cube; target_density vs truth max |diff| {m['truth_err']:.2e} %",
        ),
        row(
            f"paper {m['done']} of {m['total']} patch-periods",
            m["t_sub"],
            "s",
            note=f"patches vs cube max |diff| {m['paper_vs_cube']:.2e}",
        ),
        row(
            "paper all (linear extrapolation)",
            m["t_paper"],
            "s",
            ratio_to="ours prepare",
            note="lower bound: np.concatenate copies grow quadratically; ratio = paper / ours",
        ),
        row(
            "paper X array (projected)",
            m["x_gib"] * 1024,
            "MiB",
            note=f"(patch-periods, {m['patch_px']}, {m['patch_px']}, 13) float32, held in memory "
            "by the paper's approach",
        ),
        row("peak RSS read once", m["rss_read"], "MiB"),
        row("peak RSS ours", m["rss_ours"], "MiB", ratio_to="peak RSS read once"),
        row("peak RSS paper subset", m["rss_paper"], "MiB"),
    ]


def run(quick: bool) -> list[dict]:
    """Benchmark protocol entry: tiny scenario with ``quick``, else the demo scenario."""
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        m = measure("tiny" if quick else "demo", 0, 8 if quick else 24, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return to_rows(m)


_PHASES = ("phase_read_once", "phase_ours", "phase_paper")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--phase"] and argv[1] in _PHASES:  # a child process of _in_fresh_process
        print(json.dumps(globals()[argv[1]](*json.loads(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="demo", choices=["tiny", "demo", "gorkha"])
    parser.add_argument("--quick", action="store_true", help="the tiny scenario, 8 patch-periods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=24, help="patch-periods the baseline runs")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    size, subset = ("tiny", min(args.subset, 8)) if args.quick else (args.size, args.subset)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        m = measure(size, args.seed, subset, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"scenario {m['size']} seed {m['seed']}: {m['cells'][0]} x {m['cells'][1]} cells, "
        f"{m['pixels'][0]} x {m['pixels'][1]} px, {m['periods']} periods "
        f"(generated in {m['t_gen']:.1f} s, not timed)"
    )
    print(f"{'phase':<44}{'seconds':>12}{'peak RSS MB':>14}")
    print(
        f"{'read every raw input once':<44}{m['t_read']:>12.2f}{m['rss_read']:>14.0f}"
        f"   ({m['read_mib']:.0f} MiB of rasters)"
    )
    print(f"{'ours: prepare (raw inputs -> cube)':<44}{m['t_ours']:>12.2f}{m['rss_ours']:>14.0f}")
    label = f"paper: {m['done']} of {m['total']} patch-periods"
    print(f"{label:<44}{m['t_sub']:>12.2f}{m['rss_paper']:>14.0f}")
    print(
        f"{'paper: all, extrapolated linearly (>=)':<44}{m['t_paper']:>12.1f}"
        f"{'':>14}   (X would be {m['x_gib']:.2f} GiB)"
    )
    print(
        f"ratios: paper / ours = {m['t_paper'] / m['t_ours']:.1f}x (lower bound), "
        f"ours / read-once = {m['t_ours'] / max(m['t_read'], 1e-9):.1f}x"
    )
    print(
        f"checks: cube targets vs truth max |diff| {m['truth_err']:.2e} %, paper patches vs "
        f"cube max |diff| {m['paper_vs_cube']:.2e}"
    )
    rows = to_rows(m)
    if os.environ.get("LANDSLIDE_BENCH_JSON"):
        with open(os.environ["LANDSLIDE_BENCH_JSON"], "w") as fh:
            json.dump(rows, fh)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
