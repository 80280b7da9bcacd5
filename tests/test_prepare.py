"""prepare: the cube from the tiny synthetic scenario, input validation, atomicity and resume."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 (registers the .rio accessor)
import shapely
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from landslide_hazard import prepare as prepare_mod
from landslide_hazard.bands import CUBE_DYNAMIC_NAMES, STATIC_NAMES, UNITS
from landslide_hazard.config import load_config
from landslide_hazard.cube import open_cube, open_dataset
from landslide_hazard.io.rasters import read_rain_stack, read_raster, write_rain_stack, write_raster
from landslide_hazard.io.vectors import read_vectors, write_vectors
from landslide_hazard.prepare import PrepareError, prepare, validate_inputs

G = 9.80665


@pytest.fixture(scope="module")
def scenario(tiny_scenario) -> Path:
    return tiny_scenario


@pytest.fixture(scope="module")
def cube_path(scenario, tmp_path_factory) -> Path:
    cfg = load_config(scenario / "config.yaml")
    cfg.output.dir = tmp_path_factory.mktemp("out")
    return prepare(cfg, progress=False)


@pytest.fixture
def copy(scenario, tmp_path) -> Path:
    """A private copy of the scenario that a test may break."""
    dst = tmp_path / "scn"
    shutil.copytree(scenario, dst, ignore=shutil.ignore_patterns("out"))
    return dst


def _cfg(root: Path):
    cfg = load_config(root / "config.yaml")
    cfg.output.dir = root / "out"
    return cfg


@pytest.mark.slow
def test_targets_equal_the_synthetic_truth(scenario, cube_path):
    cube = open_cube(cube_path)
    with rasterio.open(scenario / "truth" / "new_density.tif") as ds:
        truth = ds.read()
        names = list(ds.descriptions)
    assert names == cube.meta.period_names
    target = cube.target_density[:]
    np.testing.assert_array_equal(np.isnan(target), np.isnan(truth))
    np.testing.assert_allclose(target, truth, rtol=2e-7, atol=1e-6)
    assert (target[np.isfinite(target)] >= 0).all()
    assert (target > 0).any()


@pytest.mark.slow
def test_cube_layout_matches_the_design(scenario, cube_path):
    cfg = load_config(scenario / "config.yaml")
    grid = cfg.study_grid()
    cube = open_cube(cube_path)
    n_p = len(cfg.periods)
    expected = {
        "static": ((len(STATIC_NAMES), *grid.fine_shape), ("band_static", "y", "x")),
        "dynamic": (
            (n_p, len(CUBE_DYNAMIC_NAMES), *grid.cell_shape),
            ("period", "band_dynamic", "y_cell", "x_cell"),
        ),
        "target_density": ((n_p, *grid.cell_shape), ("period", "y_cell", "x_cell")),
        "monsoons_since_eq": ((n_p,), ("period",)),
        "valid_cells": (grid.cell_shape, ("y_cell", "x_cell")),
    }
    ds = open_dataset(cube_path)  # the same store through xarray
    for name, (shape, dims) in expected.items():
        arr = cube.group[name]
        assert arr.shape == shape and ds[name].dims == dims, name
        assert arr.dtype == (np.uint8 if name == "valid_cells" else np.float32)
    assert [str(d)[:10] for d in ds["period_end"].values] == [
        p.date.isoformat() for p in cfg.periods
    ]
    assert ds.rio.crs == CRS.from_user_input(grid.crs)
    np.testing.assert_array_equal(ds["dynamic"].values, cube.dynamic[:])
    attrs = dict(cube.group.attrs)
    assert attrs["static_bands"] == list(STATIC_NAMES)
    assert attrs["dynamic_bands"] == list(CUBE_DYNAMIC_NAMES)
    assert attrs["units"]["pga_max"] == UNITS["pga_max"] == "m/s2"
    assert attrs["fine_transform"] == list(grid.fine_transform)[:6]
    assert attrs["cell_transform"] == list(grid.cell_transform)[:6]
    assert (
        CRS.from_wkt(attrs["crs_wkt"]) == CRS.from_user_input(grid.crs)
        and attrs["grid"]["cell_pixels"] == grid.cell_pixels
    )
    assert [p["end"] for p in attrs["periods"]] == [p.date.isoformat() for p in cfg.periods]
    assert attrs["periods"][0]["start"] == cfg.baseline.date.isoformat()
    prov = attrs["provenance"]
    assert prov["package_version"] and prov["config"]["grid"]["shape_cells"] == [16, 16]
    dem_entry = prov["inputs"]["dem"]
    assert dem_entry["path"] == str(cfg.inputs.dem) and len(dem_entry["sha256"]) == 64
    assert any("rain" in line and "resampled" in line for line in prov["log"])
    assert not (cube_path / prepare_mod.PROGRESS_FILE).exists()
    assert not list(cube_path.parent.glob(".*partial"))
    np.testing.assert_array_equal(cube.monsoons_since_eq, [0, 1, 1, 2])
    assert cube.valid_cells.all()  # the tiny DEM has no collar and no study mask


@pytest.mark.slow
def test_static_bands_equal_the_whole_array_reference(scenario, cube_path):
    from landslide_hazard.predictors.hydrology import rasterize_rivers
    from landslide_hazard.predictors.static import compute_static_bands

    cfg = load_config(scenario / "config.yaml")
    dem, info = read_raster(cfg.inputs.dem, bands=1)
    rivers = rasterize_rivers(
        read_vectors(cfg.inputs.rivers.path).geometries, info.transform, dem.shape
    )
    ref = compute_static_bands(dem.astype(np.float64), cfg.grid.pixel_size_m, river_mask=rivers)
    static = open_cube(cube_path).static[:]
    for i, name in enumerate(STATIC_NAMES):
        np.testing.assert_array_equal(static[i], ref[name], err_msg=name)


@pytest.mark.slow
def test_dynamic_bands_against_an_independent_computation(scenario, cube_path):
    cfg = load_config(scenario / "config.yaml")
    grid = cfg.study_grid()
    cube = open_cube(cube_path)
    dynamic = cube.dynamic[:]
    with rasterio.open(cfg.inputs.rain) as ds:
        raw = ds.read().astype(np.float64)
        days = [dt.date.fromisoformat(d) for d in ds.descriptions]
        rain_t, rain_crs = ds.transform, ds.crs

    def to_cells(a, transform, crs):
        out = np.full(grid.cell_shape, np.nan, dtype=np.float32)
        reproject(
            a.astype(np.float32),
            out,
            src_transform=transform,
            src_crs=crs,
            dst_transform=grid.cell_transform,
            dst_crs=grid.crs,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
        return out

    pga = []
    for eq in cfg.inputs.earthquakes:
        with rasterio.open(eq.pga) as ds:
            pga.append(to_cells(ds.read(1) * G, ds.transform, ds.crs))
    start = cfg.baseline.date
    for i, period in enumerate(cfg.periods):
        sel = np.array([start < d <= period.date for d in days])
        block = raw[sel]
        np.testing.assert_allclose(
            dynamic[i, 0], to_cells(block.max(0), rain_t, rain_crs), rtol=1e-5
        )
        ci = np.percentile(block, 97.5, axis=0) - np.percentile(block, 2.5, axis=0)
        np.testing.assert_allclose(
            dynamic[i, 1], to_cells(ci, rain_t, rain_crs), rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(dynamic[i, 2], np.maximum(*pga), rtol=1e-5)
        start = period.date
    assert np.isfinite(dynamic).all()


def test_static_tiles_match_the_whole_array(scenario, tmp_path):
    cfg = _cfg(scenario)
    one = prepare(cfg, out=tmp_path / "a.zarr", progress=False, tile_px=1024)
    tiled = prepare(cfg, out=tmp_path / "b.zarr", progress=False, tile_px=48, chunk_px=16)
    np.testing.assert_array_equal(open_cube(one).static[:], open_cube(tiled).static[:])


def _no_long_work(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("long work started before the inputs were validated")

    monkeypatch.setattr(prepare_mod.stage, "_write_static", boom)
    monkeypatch.setattr(prepare_mod.stage, "create_cube", boom)


def test_missing_rain_day_fails_before_long_work(copy, monkeypatch):
    _no_long_work(monkeypatch)
    rain = read_rain_stack(copy / "inputs" / "rain.tif")
    drop = rain.dates.index(dt.date(2015, 8, 1))
    keep = [i for i in range(len(rain.dates)) if i != drop]
    write_rain_stack(
        copy / "inputs" / "rain.tif",
        rain.data[keep],
        [rain.dates[i] for i in keep],
        rain.transform,
        rain.crs,
    )
    with pytest.raises(ValueError, match=r"rain.tif: 1 day\(s\) of the period .*2015-08-01"):
        prepare(_cfg(copy), progress=False)
    assert not (copy / "out").exists()


def test_inventory_crs_mismatch_fails_before_long_work(copy, monkeypatch):
    _no_long_work(monkeypatch)
    path = copy / "inputs" / "inventories" / "post-monsoon_2015.gpkg"
    write_vectors(path, read_vectors(path).geometries, "EPSG:32644")
    with pytest.raises(
        ValueError,
        match=r"post-monsoon_2015.gpkg: .*CRS EPSG:32644 differs .*"
        r"EPSG:32645; reproject",
    ):
        prepare(_cfg(copy), progress=False)


def test_pga_unit_mismatch_and_implausible_values(copy, monkeypatch):
    _no_long_work(monkeypatch)
    path = copy / "inputs" / "pga_mainshock.tif"
    data, info = read_raster(path, bands=1)
    write_raster(path, data * G, info.transform, info.crs, units="m/s2")
    with pytest.raises(
        PrepareError, match="declares PGA in 'm/s2' but the config says pga_unit: 'g'"
    ):
        prepare(_cfg(copy), progress=False)
    write_raster(path, data * 100, info.transform, info.crs)  # %g, no unit declared
    with pytest.raises(PrepareError, match=r"pga_mainshock.tif: PGA up to .* implausible"):
        prepare(_cfg(copy), progress=False)


def test_nan_hole_in_the_dem_is_an_error_inside_the_mask_only(copy, monkeypatch):
    path = copy / "inputs" / "dem.tif"
    dem, info = read_raster(path, bands=1)
    dem[60:62, 70:73] = np.nan
    write_raster(path, dem, info.transform, info.crs)
    with monkeypatch.context() as m:
        _no_long_work(m)
        with pytest.raises(
            PrepareError,
            match=r"dem.tif: 6 nodata pixel\(s\) inside the study "
            r"area.*row 60, col 70.*gdal_fillnodata",
        ):
            prepare(_cfg(copy), progress=False)
    # a study mask that leaves the hole out: fine, the cells around it are invalid / NaN
    cfg = _cfg(copy)
    grid = cfg.study_grid()
    x0, y0 = grid.x_min, grid.y_max
    p = grid.pixel_size_m
    mask = shapely.difference(
        shapely.box(*grid.bounds), shapely.box(x0 + 64 * p, y0 - 64 * p, x0 + 80 * p, y0 - 56 * p)
    )
    write_vectors(copy / "inputs" / "mask.gpkg", [mask], grid.crs)
    cfg.inputs.study_mask = copy / "inputs" / "mask.gpkg"
    cube = open_cube(prepare(cfg, progress=False))
    valid = cube.valid_cells
    assert not valid[7, 8] and not valid[7, 9] and valid.sum() == 256 - 2
    assert np.isnan(cube.target_density[:, 7, 8]).all()
    assert np.isnan(cube.dynamic[:, :, 7, 9]).all()
    assert np.isfinite(cube.dynamic[:, :, 6, 8]).all()
    static = cube.static[:]
    assert np.isnan(static[:, 60, 70]).all() and np.isnan(static[:, 57, 79]).all()
    assert np.isfinite(static[:, 55, 70]).all()
    assert any("filled with the nearest elevation" in s for s in cube.meta.provenance["log"])


def test_missing_files_are_listed_together(copy, monkeypatch):
    _no_long_work(monkeypatch)
    (copy / "inputs" / "sigma_aftershock.tif").unlink()
    (copy / "inputs" / "inventories" / "pre-monsoon_2016.gpkg").unlink()
    with pytest.raises(
        PrepareError,
        match=r"2 input file\(s\) not found:\n  - sigma_ln_pga:"
        r"aftershock: .*\n  - inventory:Pre-monsoon 2016",
    ):
        prepare(_cfg(copy), progress=False)


def test_existing_cube_needs_overwrite(copy):
    cfg = _cfg(copy)
    path = prepare(cfg, progress=False)
    with pytest.raises(PrepareError, match="cube.zarr: a cube already exists; pass --overwrite"):
        prepare(cfg, progress=False)
    before = open_cube(path).target_density[:]
    again = prepare(cfg, progress=False, overwrite=True)
    np.testing.assert_array_equal(open_cube(again).target_density[:], before)


def test_interrupted_run_resumes_without_recomputing(copy, monkeypatch):
    cfg = _cfg(copy)
    reference = open_cube(prepare(cfg, out=copy / "ref.zarr", progress=False, tile_px=48))
    calls = []
    interrupted = []
    real_tile = prepare_mod.static_tile

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4 and not interrupted:
            interrupted.append(1)
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the 4th tile
        return real_tile(*args, **kwargs)

    monkeypatch.setattr(prepare_mod.static, "static_tile", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, progress=False, tile_px=48)
    out = copy / "out" / "cube.zarr"
    partial = copy / "out" / ".cube.zarr.partial"
    assert not out.exists() and partial.exists()
    state = prepare_mod.stage._read_progress(partial)
    assert state["parts"] == ["valid_cells", "targets", "dynamic"] and state["tiles"] == [0, 1, 2]

    def no_targets(*args, **kwargs):
        raise AssertionError("targets recomputed on resume")

    monkeypatch.setattr("landslide_hazard.prepare.targets.new_failure_targets", no_targets)
    calls.clear()
    cube = open_cube(prepare(cfg, progress=False, tile_px=48))
    assert len(calls) == 9 - 3  # 128 px / 48 -> 3 x 3 tiles, 3 done before the interruption
    assert not partial.exists()
    prov_log = cube.meta.provenance["log"]
    assert any("resuming (done: ['valid_cells', 'targets', 'dynamic'], 3" in s for s in prov_log)
    assert sum("rain statistics computed on the native grid" in s for s in prov_log) == 1
    np.testing.assert_array_equal(cube.static[:], reference.static[:])
    np.testing.assert_array_equal(cube.target_density[:], reference.target_density[:])
    np.testing.assert_array_equal(cube.dynamic[:], reference.dynamic[:])


def test_leftover_partial_from_other_inputs_is_discarded(copy):
    cfg = _cfg(copy)
    partial = copy / "out" / ".cube.zarr.partial"
    partial.mkdir(parents=True)
    (partial / prepare_mod.PROGRESS_FILE).write_text('{"fingerprint": "stale", "parts": []}')
    cube = open_cube(prepare(cfg, progress=False))
    assert any("starting afresh" in line for line in cube.meta.provenance["log"])
    assert np.isfinite(cube.static[0]).all()


def test_cli_prepare_with_progress_bar(copy):
    from typer.testing import CliRunner

    from landslide_hazard.cli import app

    runner = CliRunner()
    out = copy / "cli.zarr"
    result = runner.invoke(
        app, ["prepare", str(copy / "config.yaml"), "--out", str(out), "--tile-px", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists()
    assert np.isfinite(open_cube(out).static[:]).all()
    again = runner.invoke(app, ["prepare", str(copy / "config.yaml"), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_rain_that_does_not_cover_the_grid(copy, monkeypatch):
    _no_long_work(monkeypatch)
    rain = read_rain_stack(copy / "inputs" / "rain.tif")
    write_rain_stack(
        copy / "inputs" / "rain.tif",
        rain.data[:, 2:, :],
        rain.dates,
        rain.transform @ rain.transform.translation(0, 2),
        rain.crs,
    )
    with pytest.raises(
        PrepareError,
        match=r"rain.tif: the rain raster covers .* but the study "
        r"grid spans",
    ):
        prepare(_cfg(copy), progress=False)


def test_undeclared_fill_collar_makes_cells_invalid_not_an_error(copy):
    path = copy / "inputs" / "dem.tif"
    dem, info = read_raster(path, bands=1)
    dem[:, :10] = -9999.0  # an undeclared fill along the west edge, as GIS tools leave it
    write_raster(path, dem, info.transform, info.crs)
    cube = open_cube(prepare(_cfg(copy), progress=False))
    valid = cube.valid_cells
    assert not valid[:, :2].any() and valid[:, 2:].all()
    static = cube.static[:]
    assert np.isnan(static[:, :, :10]).all() and np.isfinite(static[:, :, 10:]).all()
    assert np.isnan(cube.target_density[:, :, :2]).all()
    assert any("undeclared fill value -9999" in s for s in cube.meta.provenance["log"])


def test_river_raster_and_derived_rivers(copy, cube_path):
    from landslide_hazard.predictors.hydrology import rasterize_rivers
    from landslide_hazard.predictors.static import compute_static_bands

    cfg = _cfg(copy)
    grid = cfg.study_grid()
    lines = read_vectors(cfg.inputs.rivers.path).geometries
    mask = rasterize_rivers(lines, grid.fine_transform, grid.fine_shape).astype(np.float32)
    write_raster(copy / "inputs" / "rivers.tif", mask, grid.fine_transform, grid.crs)
    cfg.inputs.rivers.path = copy / "inputs" / "rivers.tif"
    from_raster = open_cube(prepare(cfg, out=copy / "r.zarr", progress=False)).static[:]
    np.testing.assert_array_equal(from_raster, open_cube(cube_path).static[:])

    cfg.inputs.rivers.path = None
    cfg.inputs.rivers.accumulation_km2 = 2.0
    derived = open_cube(prepare(cfg, out=copy / "d.zarr", progress=False))
    dem, _ = read_raster(cfg.inputs.dem, bands=1)
    ref = compute_static_bands(dem.astype(np.float64), grid.pixel_size_m, accumulation_km2=2.0)
    np.testing.assert_array_equal(
        derived.static[STATIC_NAMES.index("dist_to_river")], ref["dist_to_river"]
    )
    assert any("contributing area >= 2.0 km2" in s for s in derived.meta.provenance["log"])


def _scale_rain(copy, factor):
    rain = read_rain_stack(copy / "inputs" / "rain.tif")
    write_rain_stack(
        copy / "inputs" / "rain.tif",
        rain.data * factor,
        list(rain.dates),
        rain.transform,
        rain.crs,
    )


@pytest.mark.parametrize(
    ("factor", "match"),
    [
        (0.001, r"rain.tif: the wettest of its \d+ days holds .* m/day needs x 1000"),
        (100.0, r"above the world's 24-hour record"),
    ],
)
def test_rain_in_another_unit_fails_before_long_work(copy, monkeypatch, factor, match):
    """Rain in m/day (x 0.001) or in hundredths of mm (x 100) is refused, naming the fix."""
    _no_long_work(monkeypatch)
    _scale_rain(copy, factor)
    with pytest.raises(ValueError, match=match):
        prepare(_cfg(copy), progress=False)


def test_dem_in_feet_fails_before_long_work(copy, monkeypatch):
    _no_long_work(monkeypatch)
    dem, info = read_raster(copy / "inputs" / "dem.tif")
    top = float(np.nanmax(dem))
    write_raster(copy / "inputs" / "dem.tif", dem * (9500.0 / top), info.transform, info.crs)
    with pytest.raises(ValueError, match=r"dem.tif: highest point 9,500 m, above Everest"):
        prepare(_cfg(copy), progress=False)


def test_weak_mainshock_warns_with_both_causes(copy):
    """A ShakeMap in g (no unit tag) declared as m/s2: the mainshock's largest PGA reads as
    ~0.03 g, and a warning names both likely causes (the unit, or a raster that misses the
    epicentral area)."""
    cfg = _cfg(copy)
    path = cfg.inputs.earthquakes[0].pga
    pga, info = read_raster(path)
    write_raster(path, pga * 0.5, info.transform, info.crs)  # max ~0.29 (g), no unit tag
    eqs = list(cfg.inputs.earthquakes)
    eqs[0] = eqs[0].model_copy(update={"pga_unit": "m/s2"})  # the mainshock only
    cfg = cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={"earthquakes": eqs})})
    assert float(np.nanmax(pga)) * 0.5 / 9.80665 < 0.05
    with pytest.warns(UserWarning, match=r"mainshock's largest PGA is 0.0\d+ g .*or the raster"):
        validate_inputs(cfg, [])
