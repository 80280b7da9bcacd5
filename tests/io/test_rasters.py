"""Raster I/O: round trips, grid checks, resampling against hand-computed cases, rain stacks."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from landslide_hazard.grid import StudyGrid
from landslide_hazard.io import (
    PLAIN_GTIFF,
    RasterEncoding,
    RasterError,
    check_grid,
    raster_info,
    read_on_grid,
    read_rain_stack,
    read_raster,
    resample_array,
    write_rain_stack,
    write_raster,
)
from landslide_hazard.io.atomic import atomic_path

CRS = "EPSG:32645"


@pytest.fixture
def grid() -> StudyGrid:
    return StudyGrid(CRS, 300000.0, 3100000.0, 100.0, 4, 3, 5, patch_cells=2)


@pytest.mark.parametrize("cog", [True, False])
def test_write_read_round_trip(tmp_path, grid, cog):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, *grid.fine_shape)).astype("float32")
    data[0, 1, 2] = np.nan
    path = write_raster(
        tmp_path / "x.tif",
        data,
        grid.fine_transform,
        grid.crs,
        band_names=["alpha", "beta"],
        units=["m", "1"],
        encoding=RasterEncoding(cog=cog),
    )
    back, info = read_raster(path)
    np.testing.assert_array_equal(back, data)  # NaN positions equal too
    assert info.descriptions == ("alpha", "beta")
    assert info.crs.to_epsg() == 32645
    assert info.transform == grid.fine_transform
    assert np.isnan(info.nodata)
    with rasterio.open(path) as ds:
        assert ds.units == ("m", "1")
        if cog:
            assert ds.profile.get("tiled") or ds.block_shapes[0][0] < ds.height


def test_declared_and_overridden_nodata(tmp_path, grid):
    path = tmp_path / "dem.tif"
    data = np.arange(12 * 20, dtype="float32").reshape(12, 20)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=12,
        width=20,
        count=1,
        dtype="int16",
        crs=CRS,
        transform=grid.fine_transform,
        nodata=-9999,
    ) as ds:
        arr = data.astype("int16")
        arr[0, 0] = -9999
        ds.write(arr, 1)
    back, _ = read_raster(path, 1)
    assert np.isnan(back[0, 0]) and back[0, 1] == 1
    back, _ = read_raster(path, 1, nodata=1)
    assert np.isnan(back[0, 1]) and back[0, 0] == -9999


def test_check_grid_errors_name_file_and_fix(tmp_path, grid):
    path = write_raster(
        tmp_path / "a.tif", np.zeros(grid.fine_shape), grid.fine_transform, grid.crs
    )
    info = raster_info(path)
    check_grid(info, grid.crs, grid.fine_transform, grid.fine_shape)
    with pytest.raises(RasterError, match=r"a\.tif: CRS .*differs.*reproject"):
        check_grid(info, "EPSG:4326", grid.fine_transform, grid.fine_shape)
    with pytest.raises(RasterError, match=r"a\.tif: shape .*clip/resample"):
        check_grid(info, grid.crs, grid.fine_transform, (5, 5))
    shifted = grid.fine_transform @ Affine.translation(1, 0)
    with pytest.raises(RasterError, match=r"a\.tif: transform"):
        check_grid(info, grid.crs, shifted, grid.fine_shape)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(RasterError, match="nope.tif: file not found"):
        read_raster(tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(RasterError, match="junk.tif: cannot be read as a raster"):
        read_raster(junk)


def test_resample_mask_area_fraction_hand_case():
    # 4x4 fine 0/1 mask -> 2x2 coarse: each coarse pixel is the fraction of its 4 fine pixels.
    fine = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype="float32")
    src_t = Affine(10, 0, 0, 0, -10, 40)
    dst_t = Affine(20, 0, 0, 0, -20, 40)
    out = resample_array(fine, src_t, CRS, dst_t, CRS, (2, 2), kind="mask")
    np.testing.assert_allclose(out, [[0.75, 0.0], [0.0, 1.0]])


def test_resample_nearest_keeps_classes_and_bilinear_interpolates_a_plane():
    src_t = Affine(20, 0, 0, 0, -20, 80)
    classes = np.array([[1, 2, 3, 4]] * 4, dtype="float32")
    dst_t = Affine(10, 0, 0, 0, -10, 80)
    near = resample_array(classes, src_t, CRS, dst_t, CRS, (8, 8), kind="classes")
    np.testing.assert_array_equal(near[0], [1, 1, 2, 2, 3, 3, 4, 4])
    # A plane z = x (pixel-centre x) is reproduced exactly by bilinear at interior target centres.
    xs = 10 + 20 * np.arange(4, dtype="float32")
    plane = np.tile(xs, (4, 1))
    bil = resample_array(plane, src_t, CRS, dst_t, CRS, (8, 8), kind="continuous")
    centres = 5 + 10 * np.arange(8)
    interior = (centres >= 10) & (centres <= 70)
    np.testing.assert_allclose(bil[3, interior], centres[interior], atol=1e-4)


def test_read_on_grid_resamples_and_logs(tmp_path, grid):
    coarse_t = Affine(200, 0, grid.x_min, 0, -200, grid.y_max)
    data = np.full((6, 10), 7.0, dtype="float32")
    path = write_raster(tmp_path / "c.tif", data, coarse_t, grid.crs, encoding=PLAIN_GTIFF)
    log: list[str] = []
    out = read_on_grid(path, grid, level="fine", log=log)
    assert out.shape == grid.fine_shape
    np.testing.assert_allclose(out, 7.0)
    assert log and "resampled" in log[0] and "c.tif" in log[0]
    same = read_on_grid(write_raster(tmp_path / "f.tif", out, grid.fine_transform, grid.crs), grid)
    np.testing.assert_array_equal(same, out)


def test_rain_stack_round_trip_and_missing_day(tmp_path, grid):
    dates = [dt.date(2015, 1, 1) + dt.timedelta(days=i) for i in range(10)]
    rain = np.random.default_rng(1).gamma(1.0, 5.0, size=(10, 3, 5)).astype("float32")
    path = write_rain_stack(tmp_path / "rain.tif", rain, dates, grid.cell_transform, grid.crs)
    stack = read_rain_stack(path)
    assert stack.dates == tuple(dates)
    np.testing.assert_array_equal(stack.data, rain)
    idx = stack.days_in(dt.date(2015, 1, 2), dt.date(2015, 1, 5))
    np.testing.assert_array_equal(idx, [2, 3, 4])
    with pytest.raises(RasterError, match=r"rain.tif: the rain stack covers .* 2015-01-10 .*2 day"):
        stack.days_in(dt.date(2015, 1, 8), dt.date(2015, 1, 12))
    # A gap inside the stack
    gap = [d for i, d in enumerate(dates) if i != 4]
    path2 = write_rain_stack(
        tmp_path / "gap.tif", np.delete(rain, 4, 0), gap, grid.cell_transform, grid.crs
    )
    with pytest.raises(RasterError, match="gap.tif: 1 day"):
        read_rain_stack(path2).days_in(dt.date(2015, 1, 1), dt.date(2015, 1, 8))


def test_rain_stack_bad_descriptions_and_order(tmp_path, grid):
    rain = np.ones((2, 3, 5), dtype="float32")
    p = write_raster(tmp_path / "r.tif", rain, grid.cell_transform, grid.crs, band_names=["a", "b"])
    with pytest.raises(RasterError, match="r.tif: band 1 description 'a' is not an ISO date"):
        read_rain_stack(p)
    p = write_raster(
        tmp_path / "o.tif",
        rain,
        grid.cell_transform,
        grid.crs,
        band_names=["2015-01-02", "2015-01-01"],
    )
    with pytest.raises(RasterError, match="not in increasing date order"):
        read_rain_stack(p)


def test_atomic_path_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def _rain_netcdf(path, rain, days, calendar, grid, ascending_y=False):
    """A CF NetCDF rain file written by xarray: (time, y, x), a CRS grid mapping."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("rioxarray")
    t = grid.cell_transform
    cy, cx = rain.shape[1:]
    y = t.f + (np.arange(cy) + 0.5) * t.e
    x = t.c + (np.arange(cx) + 0.5) * t.a
    if ascending_y:
        y, rain = y[::-1], rain[:, ::-1]
    ds = xr.Dataset(
        {"precip": (("time", "y", "x"), rain, {"units": "mm/day"})},
        coords={"time": ("time", np.asarray(days, dtype="float64")), "y": y, "x": x},
    )
    ds["time"].attrs.update(units="days since 2015-01-01", calendar=calendar)
    ds = ds.rio.write_crs(grid.crs)
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize("ascending_y", [False, True])
def test_netcdf_rain_in_a_noleap_calendar(tmp_path, grid, ascending_y):
    rain = np.random.default_rng(2).gamma(1.0, 5.0, size=(4, 3, 5)).astype("float32")
    # noleap 2016: day 58 is Feb 28 and day 59 Mar 1 (no Feb 29), then Dec 31 is day 364
    days = [0, 58, 59, 364 + 365]
    path = _rain_netcdf(tmp_path / "rain.nc", rain, days, "noleap", grid, ascending_y)
    stack = read_rain_stack(path)
    assert stack.dates == (
        dt.date(2015, 1, 1),
        dt.date(2015, 2, 28),
        dt.date(2015, 3, 1),
        dt.date(2016, 12, 31),  # a standard-calendar decoding would say 2016-12-30
    )
    assert stack.crs == rasterio.crs.CRS.from_user_input(grid.crs)
    assert stack.transform == grid.cell_transform
    # north-up whatever the file's y order; the grid from the x/y coordinates (GDAL's netCDF
    # driver, the reader before xarray, saw an identity transform on this file)
    np.testing.assert_array_equal(stack.data, rain)


def test_netcdf_rain_refuses_a_360_day_date(tmp_path, grid):
    rain = np.ones((2, 3, 5), dtype="float32")
    path = _rain_netcdf(tmp_path / "r360.nc", rain, [0, 59], "360_day", grid)  # 2015-02-30
    with pytest.raises(RasterError, match=r"r360.nc: day 2015-02-30 of the 360_day calendar"):
        read_rain_stack(path)
