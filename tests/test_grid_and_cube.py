"""Grid geometry and the cube contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

from landslide_hazard.bands import (
    CUBE_DYNAMIC_NAMES,
    DYNAMIC_NAMES,
    INPUT_NAMES,
    N_INPUT_CHANNELS,
    STATIC_NAMES,
    TARGET_UNIT,
    UNITS,
)
from landslide_hazard.cube import (
    CUBE_FORMAT_VERSION,
    CubeMeta,
    PeriodInfo,
    create_cube,
    open_cube,
    open_dataset,
)
from landslide_hazard.errors import CubeFormatError, LandslideHazardError
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
    assert cube.dynamic.shape == (2, len(CUBE_DYNAMIC_NAMES), 3, 5)
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


def _small_cube(tmp_path):
    g = StudyGrid("EPSG:32645", 300000.0, 3100000.0, 10.0, 4, 3, 5, 2)
    periods = [
        PeriodInfo("a", "2015-01-01", "2015-06-01"),
        PeriodInfo("b", "2015-06-01", "2015-11-01"),
    ]
    cube = create_cube(tmp_path / "c.zarr", CubeMeta(g, periods), chunk_px=8)
    rng = np.random.default_rng(0)
    cube.static[:] = rng.normal(size=cube.static.shape).astype("float32")
    cube.dynamic[:] = rng.normal(size=cube.dynamic.shape).astype("float32")
    valid = np.ones(g.cell_shape, dtype="uint8")
    valid[0, 0] = 0
    cube.group["valid_cells"][:] = valid
    return open_cube(tmp_path / "c.zarr")


def test_cube_opens_with_xarray_and_rioxarray(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    cube = _small_cube(tmp_path)
    g = cube.grid
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated metadata missing" fallback
        ds = xr.open_zarr(cube.path)
    assert ds.attrs["format_version"] == CUBE_FORMAT_VERSION
    assert ds["static"].dims == ("band_static", "y", "x")
    assert ds["dynamic"].dims == ("period", "band_dynamic", "y_cell", "x_cell")
    assert ds["target_density"].dims == ("period", "y_cell", "x_cell")
    assert ds["valid_cells"].dims == ("y_cell", "x_cell")
    assert ds["valid_cells"].dtype == np.uint8 and int(ds["valid_cells"].sum()) == 14
    assert list(ds["band_static"].values) == list(STATIC_NAMES)
    assert list(ds["band_dynamic"].values) == list(CUBE_DYNAMIC_NAMES)
    assert list(ds["band_dynamic_unit"].values) == [UNITS[b] for b in CUBE_DYNAMIC_NAMES]
    assert list(ds["period"].values) == ["a", "b"]
    np.testing.assert_array_equal(
        ds["period_end"].values, np.array(["2015-06-01", "2015-11-01"], dtype="datetime64[ns]")
    )
    assert str(ds["period_start"].values[0])[:10] == "2015-01-01"
    assert ds["target_density"].attrs["units"] == TARGET_UNIT
    # pixel centres on both grids
    assert ds["x"].values[0] == g.x_min + 5.0 and ds["y"].values[0] == g.y_max - 5.0
    assert (
        ds["x_cell"].values[0] == g.x_min + 20.0 and ds["y_cell"].values[-1] == g.y_max - 2.5 * 40.0
    )
    np.testing.assert_array_equal(ds["static"].sel(band_static="slope").values, cube.static[1])
    # the CRS as a CF grid mapping, read by rioxarray
    assert ds["static"].attrs["grid_mapping"] == "spatial_ref"
    assert "crs_wkt" in ds["spatial_ref"].attrs and "spatial_ref" in ds["spatial_ref"].attrs
    assert ds.rio.crs.to_epsg() == 32645
    assert ds["static"].rio.transform() == g.fine_transform
    cells = ds["dynamic"].rio.set_spatial_dims(x_dim="x_cell", y_dim="y_cell")
    assert cells.rio.transform() == g.cell_transform and cells.rio.crs.to_epsg() == 32645
    assert open_dataset(cube.path).sizes == ds.sizes


def test_cube_static_opens_with_gdal(tmp_path):
    """The GDAL inside the rasterio wheel reads the fine-grid arrays as rasters (Zarr v2)."""
    import rasterio

    cube = _small_cube(tmp_path)
    with rasterio.open(f'ZARR:"{cube.path}":/static') as ds:
        assert ds.count == len(STATIC_NAMES)
        assert ds.crs.to_epsg() == 32645
        assert ds.transform == cube.grid.fine_transform
        np.testing.assert_array_equal(ds.read(), cube.static[:])


def test_an_older_cube_names_the_fix(tmp_path):
    cube = _small_cube(tmp_path)
    group = zarr.open_group(cube.path, mode="r+")
    group.attrs["format_version"] = 1
    with pytest.raises(CubeFormatError, match=r"older.*prepare CONFIG --overwrite"):
        open_cube(cube.path)
    with pytest.raises(LandslideHazardError, match="--overwrite"):
        open_dataset(cube.path)
    group.attrs["format_version"] = CUBE_FORMAT_VERSION + 1
    with pytest.raises(CubeFormatError, match="newer"):
        open_cube(cube.path)
