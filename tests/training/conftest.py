"""A tiny random cube for the sampling tests (the real `prepare` is not needed)."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.cube import CubeMeta, PeriodInfo, create_cube
from landslide_hazard.grid import StudyGrid


def make_cube(path, shape_cells=(10, 12), k=4, n=4, n_periods=4, seed=0, hole=True):
    rng = np.random.default_rng(seed)
    grid = StudyGrid("EPSG:32645", 300000.0, 3100000.0, 250.0, k, *shape_cells, patch_cells=n)
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
    dynamic = rng.gamma(2.0, 3.0, size=(n_periods, 4, cy, cx)).astype("float32")
    occ = rng.random((n_periods, cy, cx)) < 0.3
    target = np.where(occ, rng.exponential(1.0, (n_periods, cy, cx)), 0.0).astype("float32")
    target[:, ~valid] = np.nan
    target[0, 5, 5] = np.nan  # an unmapped cell in one period
    cube.static[:] = static
    cube.dynamic[:] = dynamic
    cube.group["monsoons_since_eq"][:] = np.arange(n_periods, dtype="float32")
    cube.target_density[:] = target
    cube.group["valid_cells"][:] = valid.astype("uint8")
    from landslide_hazard.cube import open_cube

    return open_cube(path)


@pytest.fixture
def tiny_cube(tmp_path):
    return make_cube(tmp_path / "cube.zarr")


def make_config(tmp_path, cube_kw=None, **training):
    """A RunConfig whose output dir holds a tiny random cube (inputs are never read)."""
    from landslide_hazard.config import parse_config

    cube_kw = {"shape_cells": (12, 12), "k": 4, "n": 4, "n_periods": 4, **(cube_kw or {})}
    out = tmp_path / "out"
    cube = make_cube(out / "cube.zarr", **cube_kw)
    g = cube.grid
    n_p = cube_kw["n_periods"]
    data = {
        "seed": 3,
        "grid": {
            "crs": g.crs,
            "origin": [g.x_min, g.y_max],
            "pixel_size_m": g.pixel_size_m,
            "cell_pixels": g.cell_pixels,
            "shape_cells": list(g.cell_shape),
            "patch_cells": g.patch_cells,
        },
        "baseline": {"name": "base", "date": "2015-01-01", "inventory": "b.gpkg"},
        "periods": [
            {"name": p.name, "date": f"2015-{i + 2:02d}-01", "inventory": f"p{i}.gpkg"}
            for i, p in enumerate(cube.meta.periods[:n_p])
        ],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
        "model": {"preset": "tiny"},
        "training": {
            "batch_size": 4,
            "max_epochs_susceptibility": 2,
            "max_epochs_density_log": 1,
            "max_epochs_density": 1,
            "max_epochs_finetune": 1,
            "patience": 5,
            "device": "cpu",
            **training,
        },
        "evaluation": {"protocol": "spatial", "block_km": 3.0, "n_folds": 3, "buffer_cells": 1},
        "output": {"dir": str(out)},
    }
    return parse_config(data, tmp_path)


@pytest.fixture(scope="session")
def config_factory():
    """make_config(tmp_path, cube_kw=None, **training) -> RunConfig with a tiny cube."""
    return make_config
