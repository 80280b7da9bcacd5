"""Contract with the pipeline: prepare's targets on a synthetic scenario are the truth's new density."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.config import load_config
from landslide_hazard.cube import open_cube
from landslide_hazard.io import read_raster
from landslide_hazard.synthetic import generate_scenario

prepare_module = pytest.importorskip("landslide_hazard.prepare")


@pytest.mark.slow
def test_prepare_recovers_the_new_density(tmp_path):
    out = tmp_path / "tiny"
    generate_scenario("tiny", 2, out, progress=False)
    cfg = load_config(out / "config.yaml")
    cube = open_cube(prepare_module.prepare(cfg, progress=False))
    target = np.asarray(cube.target_density[:])
    truth, _ = read_raster(out / "truth" / "new_density.tif")
    # exact polygon area per cell, positive part of consecutive differences: the same numbers
    assert np.allclose(target, truth, rtol=1e-5, atol=1e-6)
    assert np.array_equal(target > 0, truth > 0)
    assert list(cube.monsoons_since_eq) == [0, 1, 1, 2]
