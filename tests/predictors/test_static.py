"""Tests of the collar, the static band stack and chunking (predictors/static.py), and the CLI."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from typer.testing import CliRunner

from landslide_hazard.bands import STATIC_NAMES, TERRAIN_BANDS
from landslide_hazard.cli import app
from landslide_hazard.io import PLAIN_GTIFF, write_raster
from landslide_hazard.predictors.static import (
    STATIC_STEPS,
    DemError,
    compute_local_bands_chunked,
    compute_static_bands,
    compute_terrain_bands,
    detect_fill_value,
    find_nodata_collar,
    local_bands_dask,
    prepare_dem,
)
from landslide_hazard.predictors.terrain import LOCAL_BAND_NAMES, zevenbergen_thorne

LANGTANG = Path("/work/shared/data/langtang/aw3d30_dsm_langtang_utm45.tif")
needs_langtang = pytest.mark.skipif(not LANGTANG.exists(), reason="Langtang DEM not available")
L = 30.0


def terrain(shape=(40, 50), seed=0) -> np.ndarray:
    """Smooth relief 1,000-3,000 m with valleys (so rivers exist) and a little noise."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return (
        1800.0
        + 15.0 * r
        + 300.0 * np.sin(c / 6.0) * np.cos(r / 9.0)
        + 200.0 * np.abs(np.sin(c / 11.0))
        + rng.normal(0.0, 2.0, shape)
    )


def with_skewed_collar(dem: np.ndarray, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Put a 0-4 px wide, row-dependent fill collar on the west and north edges."""
    out = dem.copy()
    collar = np.zeros(dem.shape, bool)
    for row in range(dem.shape[0]):
        collar[row, : row % 5] = True  # width 0..4, 0 in every 5th row
    collar[0, :7] = True
    out[collar] = fill
    return out, collar


# --------------------------------------------------------------------------------------------
# The nodata collar


@pytest.mark.parametrize("fill", [0.0, -9999.0, -32768.0])
def test_undeclared_collar_is_found_exactly(fill):
    dem, collar = with_skewed_collar(terrain(), fill)
    assert detect_fill_value(dem) == fill
    np.testing.assert_array_equal(find_nodata_collar(dem), collar)


def test_nan_collar_is_found_and_a_terrain_without_collar_has_none():
    dem, collar = with_skewed_collar(terrain(), np.nan)
    np.testing.assert_array_equal(find_nodata_collar(dem), collar)
    assert detect_fill_value(terrain()) is None
    assert not find_nodata_collar(terrain()).any()


def test_a_repeated_border_value_inside_the_terrain_range_is_not_a_collar():
    dem = terrain()
    dem[:, :3] = 2000.0  # a lake / flat valley floor along the west edge
    assert detect_fill_value(dem) is None
    dem[:, :3] = dem.min() - 5.0  # just below the range, not a usual fill value: still terrain
    assert detect_fill_value(dem) is None
    dem[:, :3] = dem.min() - 5000.0  # far below the range
    assert detect_fill_value(dem) == dem[0, 0]
    clamped = terrain() - terrain().min() - 3.0  # relief clamped at sea level 0
    clamped[clamped < 1.0] = 0.0
    clamped[:, :3] = 0.0
    assert detect_fill_value(clamped) is None


def test_holes_inside_the_dem_are_an_error_naming_the_place():
    dem, _ = with_skewed_collar(terrain(), 0.0)
    dem[20, 30] = np.nan
    with pytest.raises(DemError, match=r"1 nodata .*row 20, col 30.*fill them"):
        prepare_dem(dem)
    dem[20, 30] = 0.0  # an interior pixel with the fill value is a hole too
    with pytest.raises(DemError, match="fill value 0"):
        prepare_dem(dem)


def test_prepare_dem_honours_a_given_fill_value_and_no_detection():
    dem, collar = with_skewed_collar(terrain(), -1.0)
    z, got = prepare_dem(dem, fill_value=-1.0)
    np.testing.assert_array_equal(got, collar)
    assert np.isnan(z[collar]).all() and not np.isnan(z[~collar]).any()
    z, got = prepare_dem(dem, detect_collar=False)
    assert not got.any() and not np.isnan(z).any()


# --------------------------------------------------------------------------------------------
# The static bands


def test_static_bands_are_the_contract_bands_with_nan_outside():
    dem, collar = with_skewed_collar(terrain())
    bands = compute_static_bands(dem, L, accumulation_km2=0.05)
    assert tuple(bands) == STATIC_NAMES
    for name, band in bands.items():
        assert band.dtype == np.float32 and band.shape == dem.shape, name
        np.testing.assert_array_equal(np.isnan(band), collar, err_msg=name)
    np.testing.assert_array_equal(bands["elevation"][~collar], dem[~collar].astype(np.float32))
    local = zevenbergen_thorne(np.where(collar, np.nan, dem), L)
    for name in ("slope", "northness", "eastness", "profile_curvature", "plan_curvature"):
        np.testing.assert_array_equal(bands[name], local[name], err_msg=name)
    assert (bands["dist_to_river"][~collar] >= 0).all()
    assert (bands["dist_to_river"] == 0).sum() > 10


def test_given_river_mask_sets_the_distance():
    dem = terrain((20, 24))
    rivers = np.zeros(dem.shape, bool)
    rivers[:, 5] = True
    bands = compute_static_bands(dem, L, river_mask=rivers)
    want = np.abs(np.arange(24) - 5) * L
    np.testing.assert_array_equal(bands["dist_to_river"], np.broadcast_to(want, dem.shape))
    with pytest.raises(ValueError, match="rasterize the rivers"):
        compute_static_bands(dem, L, river_mask=rivers[:, :10])
    with pytest.raises(ValueError, match=r"largest catchment in this DEM is 0\.\d+ km2"):
        compute_static_bands(dem, L, accumulation_km2=1.0)


@pytest.mark.parametrize(
    ("chunk", "method"),
    [
        (1, "zevenbergen_thorne"),
        (7, "zevenbergen_thorne"),
        ((5, 13), "zevenbergen_thorne"),
        (64, "zevenbergen_thorne"),
        ((6, 4), "heerdegen_beran"),
    ],
)
def test_chunked_local_bands_equal_the_whole_array_bit_for_bit(chunk, method):
    dem, collar = with_skewed_collar(terrain((37, 45), seed=3))
    dem[collar] = np.nan
    whole = zevenbergen_thorne(dem, L, curvature_method=method)
    chunked = compute_local_bands_chunked(dem, L, chunk, curvature_method=method)
    for name in LOCAL_BAND_NAMES:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)
    with pytest.raises(ValueError, match="unknown local band"):
        compute_local_bands_chunked(dem, L, chunk, names=("slope", "twi"))


def test_chunked_static_bands_equal_whole_and_dask_too():
    dem, _ = with_skewed_collar(terrain((37, 45), seed=4))
    whole = compute_static_bands(dem, L, accumulation_km2=0.05)
    chunked = compute_static_bands(dem, L, accumulation_km2=0.05, chunk=(8, 11))
    for name in STATIC_NAMES:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)
    z, _ = prepare_dem(dem)
    lazy = local_bands_dask(da.from_array(z, chunks=(10, 9)), L)
    assert lazy.shape == (len(LOCAL_BAND_NAMES), *dem.shape)
    got = lazy.compute(scheduler="synchronous")
    reference = zevenbergen_thorne(z, L)
    for i, name in enumerate(LOCAL_BAND_NAMES):
        np.testing.assert_array_equal(got[i], reference[name], err_msg=name)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), offset=st.integers(-1500, 4000))
def test_adding_a_constant_changes_only_elevation(seed, offset):
    rng = np.random.default_rng(seed)
    dem = np.round(terrain((16, 18), seed=seed) + rng.integers(-20, 20, (16, 18)))
    base = compute_static_bands(dem, L, accumulation_km2=0.01)
    shifted = compute_static_bands(dem + offset, L, accumulation_km2=0.01)
    np.testing.assert_array_equal(shifted["elevation"], (dem + offset).astype(np.float32))
    for name in STATIC_NAMES[1:]:
        np.testing.assert_allclose(shifted[name], base[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_terrain_bands_follow_the_terrain_band_order():
    dem, collar = with_skewed_collar(terrain())
    bands, got_collar = compute_terrain_bands(dem, L)
    assert tuple(bands) == TERRAIN_BANDS
    np.testing.assert_array_equal(got_collar, collar)
    static = compute_static_bands(dem, L, accumulation_km2=0.05)
    for name in set(TERRAIN_BANDS) & set(STATIC_NAMES):
        np.testing.assert_array_equal(bands[name], static[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# The real Langtang DSM


@pytest.fixture(scope="module")
def langtang() -> np.ndarray:
    with rasterio.open(LANGTANG) as ds:
        return ds.read(1).astype(np.float64)


@needs_langtang
def test_langtang_collar_is_found(langtang):
    collar = find_nodata_collar(langtang)
    assert detect_fill_value(langtang) == 0.0
    assert collar.sum() == 21_585  # the README's count: every 0 pixel, all border-connected
    assert (langtang[collar] == 0).all() and (langtang[~collar] >= 3282).all()


@needs_langtang
def test_langtang_has_no_cliffs_at_the_collar_edge(langtang):
    crop = langtang[:300, :300]  # the north-west corner, where the collar is widest
    bands = compute_static_bands(crop, 28.5613701279561)
    collar = find_nodata_collar(crop)
    assert collar.sum() > 1000
    rim = ndimage.binary_dilation(collar, np.ones((3, 3), bool)) & ~collar
    assert np.nanmax(bands["slope"][rim]) < 80.0
    # the rim looks like the rest of the terrain, not like a wall
    assert np.nanmedian(bands["slope"][rim]) < np.nanpercentile(bands["slope"], 90)
    for name in STATIC_NAMES:
        np.testing.assert_array_equal(np.isnan(bands[name]), collar, err_msg=name)


# --------------------------------------------------------------------------------------------
# The `terrain` command


@needs_langtang
@pytest.mark.slow
def test_terrain_cli_on_langtang(tmp_path):
    out = tmp_path / "terrain.tif"
    result = CliRunner().invoke(app, ["terrain", str(LANGTANG), str(out)])
    assert result.exit_code == 0, result.output
    assert "21,585" in result.output
    with rasterio.open(out) as ds:
        assert ds.descriptions == TERRAIN_BANDS
        assert ds.crs.to_epsg() == 32645 and ds.shape == (915, 1081)
        data = ds.read()
    for i, name in enumerate(TERRAIN_BANDS):
        if name != "aspect":  # aspect is also NaN on flats
            assert np.isnan(data[i]).sum() == 21_585, name
    assert np.nanmax(data[0]) < 90.0


def test_terrain_cli_with_declared_and_given_nodata(tmp_path):
    dem, collar = with_skewed_collar(terrain((30, 34)), -9999.0)
    transform = Affine(30.0, 0.0, 400000.0, 0.0, -30.0, 3100000.0)
    src = tmp_path / "dem.tif"
    with rasterio.open(
        src, "w", driver="GTiff", height=30, width=34, count=1, dtype="float32",
        crs="EPSG:32645", transform=transform, nodata=-9999.0,
    ) as ds:  # fmt: skip
        ds.write(dem.astype(np.float32), 1)
    out = tmp_path / "t.tif"
    result = CliRunner().invoke(app, ["terrain", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert f"{collar.sum():,}" in result.output and "declared" in result.output
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(np.isnan(ds.read(1)), collar)
    # an undeclared -1 collar given with --nodata
    plain = tmp_path / "plain.tif"
    write_raster(plain, np.where(collar, -1.0, dem), transform, "EPSG:32645", encoding=PLAIN_GTIFF)
    result = CliRunner().invoke(app, ["terrain", str(plain), str(out), "--nodata", "-1"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(np.isnan(ds.read(7)), collar)


def test_terrain_cli_errors_are_clean(tmp_path):
    dem = terrain((12, 12))
    dem[6, 6] = np.nan
    src = tmp_path / "holes.tif"
    write_raster(
        src, dem, Affine(30.0, 0.0, 0.0, 0.0, -30.0, 0.0), "EPSG:32645", encoding=PLAIN_GTIFF
    )
    result = CliRunner().invoke(app, ["terrain", str(src), str(tmp_path / "o.tif")])
    assert result.exit_code == 2
    assert "holes.tif" in result.output and "row 6, col 6" in result.output
    geographic = tmp_path / "geo.tif"
    write_raster(geographic, terrain((12, 12)), Affine(0.001, 0, 85, 0, -0.001, 28), "EPSG:4326")
    result = CliRunner().invoke(app, ["terrain", str(geographic), str(tmp_path / "o.tif")])
    assert result.exit_code == 2 and "reproject" in result.output
    assert not (tmp_path / "o.tif").exists()


def test_progress_reports_every_step_in_order():
    seen: list[str] = []
    compute_static_bands(terrain(), L, accumulation_km2=0.05, progress=seen.append)
    assert tuple(seen) == STATIC_STEPS
