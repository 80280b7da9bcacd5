"""Grid geometry and the cube contract."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.bands import DYNAMIC_NAMES, INPUT_NAMES, N_INPUT_CHANNELS, STATIC_NAMES
from landslide_hazard.cube import CubeMeta, PeriodInfo, create_cube, open_cube
from landslide_hazard.grid import StudyGrid


def test_gorkha_grid_geometry():
    g = StudyGrid("EPSG:32645", 248635.08, 3175441.11, 31.25, 32, 196, 220, 4)
    assert g.cell_size_m == 1000.0
    assert g.fine_shape == (6272, 7040)
    assert g.bounds == pytest.approx((248635.08, 2979441.11, 468635.08, 3175441.11))
    # fine pixel (32, 32) is the upper-left corner of cell (1, 1)
    assert g.fine_transform @ (32, 32) == pytest.approx(g.cell_transform @ (1, 1))
    assert g.lattice_offsets_cells == (0, 2)
    assert StudyGrid.from_dict(g.to_dict()) == g


def test_grid_rejects_nonsense():
    with pytest.raises(ValueError, match="pixel_size_m"):
        StudyGrid("EPSG:32645", 0, 0, 0.0, 32, 2, 2)
    with pytest.raises(ValueError, match="at least one row"):
        StudyGrid("EPSG:32645", 0, 0, 30.0, 32, 0, 2)


def test_thirteen_input_channels_in_paper_order():
    assert N_INPUT_CHANNELS == 13
    assert INPUT_NAMES[:8] == STATIC_NAMES and INPUT_NAMES[8:12] == DYNAMIC_NAMES
    assert INPUT_NAMES[-1] == "monsoons_since_eq"


def test_cube_create_and_reopen(tmp_path):
    g = StudyGrid("EPSG:32645", 0.0, 1000.0, 10.0, 4, 3, 5, 2)
    periods = [
        PeriodInfo("a", "2015-01-01", "2015-06-01"),
        PeriodInfo("b", "2015-06-01", "2015-11-01"),
    ]
    cube = create_cube(
        tmp_path / "c.zarr", CubeMeta(g, periods, provenance={"seed": 1}), chunk_px=8
    )
    assert cube.static.shape == (8, 12, 20)
    assert cube.dynamic.shape == (2, 4, 3, 5)
    assert cube.target_density.shape == (2, 3, 5)
    assert np.isnan(cube.static[0, 0, 0])
    cube.target_density[1] = np.ones((3, 5), dtype="float32")
    again = open_cube(tmp_path / "c.zarr")
    assert again.meta.period_names == ["a", "b"]
    assert again.grid == g
    assert again.meta.provenance == {"seed": 1}
    assert again.group.attrs["units"]["pga_max"] == "m/s2"
    np.testing.assert_array_equal(again.target_density[1], 1.0)
    with pytest.raises(FileNotFoundError, match="run `landslide-hazard prepare"):
        open_cube(tmp_path / "missing.zarr")
