"""Helpers for tests and examples: a small random cube that needs no input files.

The cube follows the contract of :mod:`landslide_hazard.cube` (static, dynamic, monsoons,
targets, valid cells) with random values, so sampling, training and prediction can be exercised
without running ``prepare``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cube import Cube, CubeMeta, PeriodInfo, create_cube, open_cube
from .grid import StudyGrid
from .prepare.legacy import legacy_bands


def make_cube(
    path: str | Path,
    shape_cells: tuple[int, int] = (10, 12),
    k: int = 4,
    n: int = 4,
    n_periods: int = 4,
    seed: int = 0,
    hole: bool = True,
) -> Cube:
    """A random cube at ``path``: ``shape_cells`` cells of ``k`` px, patches of ``n`` cells,
    ``n_periods`` periods; ``hole`` leaves a corner outside the study mask and one cell unmapped."""
    rng = np.random.default_rng(seed)
    rows, cols = shape_cells
    grid = StudyGrid("EPSG:32645", 300000.0, 3100000.0, 250.0, k, rows, cols, patch_cells=n)
    periods = [
        PeriodInfo(f"P{i}", f"2015-0{i + 1}-01", f"2015-0{i + 2}-01") for i in range(n_periods)
    ]
    cube = create_cube(path, CubeMeta(grid, periods), chunk_px=16)
    fy, fx = grid.fine_shape
    static = rng.normal(size=(8, fy, fx)).astype("float32") * np.arange(1, 9)[:, None, None]
    static += np.arange(8)[:, None, None] * 10
    cy, cx = shape_cells
    valid = np.ones(shape_cells, dtype=bool)
    if hole:
        valid[:2, :3] = False  # a corner outside the study mask
    static[:, ~np.repeat(np.repeat(valid, k, 0), k, 1)] = np.nan
    triggers = rng.gamma(2.0, 3.0, size=(n_periods, 4, cy, cx)).astype("float32")
    occ = rng.random((n_periods, cy, cx)) < 0.3
    target = np.where(occ, rng.exponential(1.0, (n_periods, cy, cx)), 0.0).astype("float32")
    target[:, ~valid] = np.nan
    target[0, 5, 5] = np.nan  # an unmapped cell in one period
    legacy = legacy_bands(target, periods, valid)
    cube.static[:] = static
    cube.dynamic[:] = np.concatenate([triggers, legacy], axis=1)
    cube.array("monsoons_since_eq")[:] = np.arange(n_periods, dtype="float32")
    cube.target_density[:] = target
    cube.array("valid_cells")[:] = valid.astype("uint8")
    return open_cube(path)


def grid_config(grid: StudyGrid) -> dict:
    """The config's ``grid`` section that describes ``grid`` (e.g. a :func:`make_cube` cube's),
    so that a test config and its cube agree by construction."""
    return {
        "crs": grid.crs,
        "origin": [grid.x_min, grid.y_max],
        "pixel_size_m": grid.pixel_size_m,
        "cell_pixels": grid.cell_pixels,
        "shape_cells": list(grid.cell_shape),
        "patch_cells": grid.patch_cells,
    }


def one_epoch_config(
    cube: Cube,
    *,
    inventories: str = "",
    inputs: str = "",
    batch_size: int = 8,
    block_km: float = 2.0,
) -> dict:
    """A config (as a dict) that trains one epoch per stage on a :func:`make_cube` cube, on the
    CPU, under the temporal protocol with the last period held out; ``output.dir`` is ``out``.

    ``inventories`` / ``inputs`` prefix the (never read) inventory and input file names, e.g.
    ``"inv/"``. Tests add or change sections (``model``, ``output``, ...) as they need.
    """
    return {
        "grid": grid_config(cube.grid),
        "baseline": {"name": "base", "date": "2015-01-01", "inventory": f"{inventories}b.gpkg"},
        "periods": [
            {"name": p.name, "date": p.end, "inventory": f"{inventories}p.gpkg"}
            for p in cube.meta.periods
        ],
        "inputs": {"dem": f"{inputs}dem.tif", "rain": f"{inputs}rain.tif"},
        "training": {
            "batch_size": batch_size,
            "max_epochs_susceptibility": 1,
            "max_epochs_density_log": 1,
            "max_epochs_density": 1,
            "max_epochs_finetune": 1,
            "device": "cpu",
        },
        "evaluation": {"protocol": "temporal", "temporal_test_periods": 1, "block_km": block_km},
        "output": {"dir": "out"},
    }
