"""Benchmark: our ``prepare`` against the paper's patch-by-patch data preparation.

Three timings on the same synthetic scenario, each in its own fresh process (so each peak RSS,
from ``resource.getrusage``, is that phase's own):

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

Usage (default: the demo scenario, about a minute)::

    python benchmarks/bench_prepare.py [--size tiny|demo|gorkha] [--seed 0] [--subset 24]
        [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _in_fresh_process(fn, *args):
    """Run fn(*args) in a spawned process; returns its result (which includes its peak RSS)."""
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


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
    covariate_dir: str, target_path: str, grid_dict: dict, n_periods: int, subset: int
) -> tuple[float, float, int, int]:
    """The paper's loop on the first ``subset`` patch-periods; (s, MB, done, total)."""
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
    return time.perf_counter() - start, _peak_rss_mb(), min(subset, total), total


def _rowcol(transform, bounds) -> tuple[int, int]:
    col, row = ~transform @ (bounds[0], bounds[3])
    return int(round(row)), int(round(col))


# --------------------------------------------------------------------------------------------
# Setup (not timed)


def export_covariates(cube_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the paper's inputs: one fine-grid GeoTIFF per covariate (dynamic: one band per
    period, upsampled to the fine grid) and the target density on the cell grid."""
    from landslide_hazard.cube import open_cube
    from landslide_hazard.io.rasters import write_raster

    cube = open_cube(cube_path)
    g = cube.grid
    k = g.cell_pixels
    out_dir.mkdir(parents=True, exist_ok=True)
    static = cube.static[:]
    for i, name in enumerate(cube.meta.static_bands):
        write_raster(out_dir / f"{name}.tif", static[i], g.fine_transform, g.crs, cog=False)
    dynamic = cube.dynamic[:]
    for b, name in enumerate(cube.meta.dynamic_bands):
        fine = np.repeat(np.repeat(dynamic[:, b], k, axis=1), k, axis=2)
        write_raster(out_dir / f"{name}.tif", fine, g.fine_transform, g.crs, cog=False)
    monsoons = np.broadcast_to(
        cube.monsoons_since_eq[:, None, None], (len(cube.meta.periods), *g.fine_shape)
    )
    write_raster(out_dir / "monsoons_since_eq.tif", monsoons, g.fine_transform, g.crs, cog=False)
    target = out_dir / "target_density.tif"
    write_raster(target, cube.target_density[:], g.cell_transform, g.crs, cog=False)
    return out_dir, target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="demo", choices=["tiny", "demo", "gorkha"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=24, help="patch-periods the baseline runs")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    from landslide_hazard.config import load_config
    from landslide_hazard.synthetic import generate_scenario

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        scenario = work / f"{args.size}-{args.seed}"
        t0 = time.perf_counter()
        if not (scenario / "config.yaml").exists():
            generate_scenario(args.size, args.seed, scenario, progress=False)
        t_gen = time.perf_counter() - t0
        config = scenario / "config.yaml"
        cfg = load_config(config)
        grid = cfg.study_grid()
        cube = work / "cube.zarr"

        t_read, rss_read, nbytes = _in_fresh_process(phase_read_once, str(config))
        t_ours, rss_ours = _in_fresh_process(phase_ours, str(config), str(cube))
        cov_dir, target = export_covariates(cube, work / "covariates")
        t_sub, rss_paper, done, total = _in_fresh_process(
            phase_paper, str(cov_dir), str(target), grid.to_dict(), len(cfg.periods), args.subset
        )
        t_paper = t_sub / done * total
        x_bytes = total * grid.patch_pixels**2 * 13 * 4
        fine = grid.fine_shape
        print(
            f"scenario {args.size} seed {args.seed}: {grid.cell_shape[0]} x {grid.cell_shape[1]}"
            f" cells, {fine[0]} x {fine[1]} px, {len(cfg.periods)} periods "
            f"(generated in {t_gen:.1f} s, not timed)"
        )
        print(f"{'phase':<44}{'seconds':>12}{'peak RSS MB':>14}")
        print(
            f"{'read every raw input once':<44}{t_read:>12.2f}{rss_read:>14.0f}"
            f"   ({nbytes / 2**20:.0f} MiB of rasters)"
        )
        print(f"{'ours: prepare (raw inputs -> cube)':<44}{t_ours:>12.2f}{rss_ours:>14.0f}")
        print(f"{f'paper: {done} of {total} patch-periods':<44}{t_sub:>12.2f}{rss_paper:>14.0f}")
        print(
            f"{'paper: all, extrapolated linearly (>=)':<44}{t_paper:>12.1f}"
            f"{'':>14}   (X would be {x_bytes / 2**30:.2f} GiB)"
        )
        print(
            f"ratios: paper / ours = {t_paper / t_ours:.1f}x (lower bound), "
            f"ours / read-once = {t_ours / max(t_read, 1e-9):.1f}x"
        )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
