"""Suite-wide settings: one thread per test process when pytest-xdist runs workers in parallel.

CI has 2 cores and runs 2 xdist workers (pyproject addopts); letting each worker's torch,
OpenMP and BLAS pools also take 2 threads oversubscribes the machine and slows small-tensor
tests several-fold.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["NUMBA_NUM_THREADS"] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


@pytest.fixture
def tiny_cube(tmp_path):
    """A small random cube (``landslide_hazard.testing.make_cube``)."""
    from landslide_hazard.testing import make_cube

    return make_cube(tmp_path / "cube.zarr")


@pytest.fixture(scope="session")
def tiny_scenario(tmp_path_factory):
    """``synth --size tiny --seed 0``, generated once per test process. Read-only: a test that
    changes files works on a copy."""
    from landslide_hazard.synthetic import generate_scenario

    root = tmp_path_factory.mktemp("tiny_scenario")
    generate_scenario("tiny", 0, root, progress=False)
    return root


@pytest.fixture
def minimal_config():
    """``make(protocol, preset, **predictors)``: the smallest config dict that validates (no file
    is read), for tests of how a config resolves."""

    def make(protocol: str = "temporal", preset: str = "tiny", **predictors) -> dict:
        return {
            "grid": {
                "crs": "EPSG:32645",
                "origin": [0, 0],
                "pixel_size_m": 30,
                "cell_pixels": 4,
                "shape_cells": [8, 8],
                "patch_cells": 4,
            },
            "baseline": {"name": "b", "date": "2015-01-01", "inventory": "b.gpkg"},
            "periods": [{"name": "p", "date": "2015-06-01", "inventory": "p.gpkg"}],
            "inputs": {"dem": "d.tif", "rain": "r.tif"},
            "model": {"preset": preset},
            "evaluation": {"protocol": protocol},
            "predictors": predictors,
        }

    return make
