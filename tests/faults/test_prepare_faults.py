"""Input faults met by ``prepare`` on a copy of the tiny scenario: each is refused before the
long work (one ``error:`` line naming the file, the problem and the fix) or repaired with a
warning that says what was done. One case per check."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from landslide_hazard.io.vectors import read_vectors, write_vectors

G = 9.80665
CASES: list = []
#: The same check met through another file or call site: run, not counted as distinct.
VARIANTS: list = []


def case(check: str, outcome: str, *needles: str, variant_of: str | None = None):
    """Register ``fn(env) -> CLI args`` as the case of ``check`` (or a variant of another)."""

    def register(fn):
        param = pytest.param(fn, outcome, list(needles), id=check)
        (CASES if variant_of is None else VARIANTS).append(param)
        return fn

    return register


def prepare_args(env) -> list:
    return ["prepare", env.config, "--no-progress"]


def _inv(env, name: str) -> Path:
    return env.inputs / "inventories" / name


# ---- files -----------------------------------------------------------------------------------
@case(
    "files:missing", "error", "2 input file(s) not found", "dem.tif", "rivers.gpkg", "fix the paths"
)
def _(env):
    (env.inputs / "dem.tif").unlink()
    (env.inputs / "rivers.gpkg").unlink()
    return prepare_args(env)


@case("cube:exists", "error", "cube.zarr", "a cube already exists", "--overwrite")
def _(env):
    (env.root / "out" / "cube.zarr").mkdir(parents=True)
    return prepare_args(env)


@case("output:unwritable", "error", "output folder", "out", "permission denied", "output.dir")
def _(env):
    out = str(env.root / "out")
    env.os_error_on(
        "tempfile.mkstemp", errno.EACCES, lambda *a, **k: str(k.get("dir", "")).startswith(out)
    )
    return prepare_args(env)


@case("output:disk-full", "error", "cube.zarr", "no space left on the disk", "free some space")
def _(env):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(env.root / "out" / "cube.zarr"))

    env.monkeypatch.setattr("landslide_hazard.prepare.stage.compute_targets", full)
    return prepare_args(env)


# ---- rain ------------------------------------------------------------------------------------
def _rain(env) -> Path:
    return env.inputs / "rain.tif"


@case("rain:m-per-day-untagged", "error", "rain.tif", "wettest", "m/day needs x 1000")
def _(env):
    env.rewrite_raster(_rain(env), env.read(_rain(env)) / 1000, units=None)
    return prepare_args(env)


@case(
    "rain:tag-converted", "warn", "rain.tif", "declared in 'm/day'", "converted to mm/day (x 1000)"
)
def _(env):
    env.rewrite_raster(_rain(env), env.read(_rain(env)) / 1000, units="m/day")
    return prepare_args(env)


@case(
    "rain:tag-unknown",
    "error",
    "rain.tif",
    "declared in 'inch/fortnight'",
    "convert the file to mm/day",
)
def _(env):
    env.rewrite_raster(_rain(env), units="inch/fortnight")
    return prepare_args(env)


@case("rain:tags-differ", "error", "rain.tif", "different units", "mm/day")
def _(env):
    n = env.read(_rain(env)).shape[0]
    env.rewrite_raster(_rain(env), units=["mm/day"] * (n - 1) + ["m/day"])
    return prepare_args(env)


@case(
    "rain:above-record", "error", "rain.tif", "above the world's 24-hour record", "convert the file"
)
def _(env):
    env.rewrite_raster(_rain(env), env.read(_rain(env)) * 20)
    return prepare_args(env)


@case("rain:grey-zone", "warn", "rain.tif", "daily rain up to", "check that the file is in mm/day")
def _(env):
    env.rewrite_raster(_rain(env), env.read(_rain(env)) * 8)
    return prepare_args(env)


@case("rain:negative", "error", "rain.tif", "negative rain", ">= 0")
def _(env):
    data = env.read(_rain(env))
    data[3, 2, 2] = -5
    env.rewrite_raster(_rain(env), data)
    return prepare_args(env)


@case(
    "rain:day-missing",
    "error",
    "rain.tif",
    "1 day(s) of the period",
    "2015-08-01",
    "0 mm is a valid value",
)
def _(env):
    with rasterio.open(_rain(env)) as ds:
        dates = list(ds.descriptions)
    drop = dates.index("2015-08-01")
    keep = [i for i in range(len(dates)) if i != drop]
    env.rewrite_raster(
        _rain(env), env.read(_rain(env))[keep], descriptions=[dates[i] for i in keep]
    )
    return prepare_args(env)


@case("rain:stack-ends-early", "error", "rain.tif", "the rain stack covers", "extend the stack")
def _(env):
    with rasterio.open(_rain(env)) as ds:
        dates = list(ds.descriptions)
    env.rewrite_raster(_rain(env), env.read(_rain(env))[:-60], descriptions=dates[:-60])
    return prepare_args(env)


@case("rain:band-not-a-date", "error", "rain.tif", "band 5 description 'tuesday'", "yyyy-mm-dd")
def _(env):
    with rasterio.open(_rain(env)) as ds:
        dates = list(ds.descriptions)
    dates[4] = "tuesday"
    env.rewrite_raster(_rain(env), descriptions=dates)
    return prepare_args(env)


@case("rain:no-dates", "error", "rain.tif", "carries a date", "one band per day")
def _(env):
    env.rewrite_raster(_rain(env), descriptions=[None] * env.read(_rain(env)).shape[0])
    return prepare_args(env)


@case("rain:truncated", "error", "rain.tif", "truncated or damaged", "copy or export it again")
def _(env):
    data = _rain(env).read_bytes()
    _rain(env).write_bytes(data[: len(data) // 2])
    return prepare_args(env)


@case("rain:no-crs", "error", "rain.tif", "declares no crs", "gdal_edit.py -a_srs")
def _(env):
    env.rewrite_raster(_rain(env), crs=None)
    return prepare_args(env)


@case(
    "rain:does-not-cover", "error", "rain.tif", "covers", "give a raster that covers the whole grid"
)
def _(env):
    env.rewrite_raster(_rain(env), env.read(_rain(env))[:, :3, :3], width=3, height=3)
    return prepare_args(env)


@case("rain:netcdf-units", "warn", "rain.nc", "declared in 'm'", "converted to mm/day (x 1000)")
def _(env):
    import pandas as pd
    import rioxarray  # noqa: F401 (registers the .rio accessor)
    import xarray as xr

    with rasterio.open(_rain(env)) as ds:
        data, t, dates, crs = ds.read() / 1000, ds.transform, list(ds.descriptions), ds.crs
    h, w = data.shape[1:]
    x = t.c + t.a * (np.arange(w) + 0.5)
    y = t.f + t.e * (np.arange(h) + 0.5)
    da = xr.DataArray(
        data.astype("float32"),
        dims=("time", "y", "x"),
        coords={"time": pd.to_datetime(dates), "x": x, "y": y},
        name="precip",
        attrs={"units": "m"},
    )
    ds = da.to_dataset()
    ds = ds.rio.write_crs(crs.to_string())
    ds.to_netcdf(env.inputs / "rain.nc")

    def change(cfg):
        cfg["inputs"]["rain"] = "inputs/rain.nc"

    env.edit_config(change)
    return prepare_args(env)


# ---- DEM -------------------------------------------------------------------------------------
def _dem(env) -> Path:
    return env.inputs / "dem.tif"


@case("dem:not-a-raster", "error", "dem.tif", "cannot be read as a raster", "geotiff")
def _(env):
    _dem(env).write_bytes(b"this is not a GeoTIFF\n" * 50)
    return prepare_args(env)


@case("dem:read-fails", "error", "dem.tif", "damaged or truncated", "copy or export it again")
def _(env):
    with rasterio.open(_dem(env)) as ds:
        prof = ds.profile
        data = ds.read()
    prof.update(driver="GTiff", compress="deflate", tiled=True, blockxsize=32, blockysize=32)
    _dem(env).unlink()
    with rasterio.open(_dem(env), "w", **prof) as ds:
        ds.write(data)
        ds.set_band_unit(1, "m")
    with rasterio.open(_dem(env)) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(_dem(env).read_bytes())
    raw[offset : offset + size] = b"\xff" * size  # a damaged block inside the file
    _dem(env).write_bytes(bytes(raw))
    return prepare_args(env)


@case(
    "dem:two-bands",
    "error",
    "dem.tif",
    "holds 2 bands",
    "gdal_translate -b 1",
    variant_of="pga:extra-band",
)
def _(env):
    z = env.read(_dem(env))[0]
    env.rewrite_raster(_dem(env), np.stack([z, z]))
    return prepare_args(env)


@case(
    "dem:no-crs",
    "error",
    "dem.tif",
    "dem raster declares no crs",
    "gdal_edit.py -a_srs",
    variant_of="rain:no-crs",
)
def _(env):
    env.rewrite_raster(_dem(env), crs=None)
    return prepare_args(env)


@case(
    "dem:fill-block",
    "error",
    "dem.tif",
    "block(s) of a constant value",
    "400 pixels of -9999",
    "fine rows 40-59",
    "inputs.dem_nodata: -9999",
    "gdal_fillnodata",
)
def _(env):
    z = env.read(_dem(env))
    z[0, 40:60, 70:90] = -9999
    env.rewrite_raster(_dem(env), z)
    return prepare_args(env)


@case(
    "dem:declared-hole",
    "error",
    "dem.tif",
    "nodata pixel(s) inside the study area",
    "gdal_fillnodata",
)
def _(env):
    z = env.read(_dem(env))
    z[0, 40:60, 70:90] = 0
    env.rewrite_raster(_dem(env), z)

    def change(cfg):
        cfg["inputs"]["dem_nodata"] = 0

    env.edit_config(change)
    return prepare_args(env)


@case("dem:infinite", "error", "dem.tif", "+-inf", "declare its nodata value")
def _(env):
    z = env.read(_dem(env))
    z[0, 10, 10] = np.inf
    env.rewrite_raster(_dem(env), z)
    return prepare_args(env)


@case("dem:feet-untagged", "error", "dem.tif", "above everest", "in feet", "x 0.3048")
def _(env):
    env.rewrite_raster(_dem(env), env.read(_dem(env)) / 0.3048, units=None)
    return prepare_args(env)


@case("dem:feet-tagged", "warn", "dem.tif", "declared in 'ft'", "converted to metres (x 0.3048)")
def _(env):
    env.rewrite_raster(_dem(env), env.read(_dem(env)) / 0.3048, units="ft")
    return prepare_args(env)


@case("dem:unit-unknown", "error", "dem.tif", "declared in 'furlong'", "convert it to metres")
def _(env):
    env.rewrite_raster(_dem(env), units="furlong")
    return prepare_args(env)


# ---- shaking ---------------------------------------------------------------------------------
def _pga(env, which: str = "mainshock") -> Path:
    return env.inputs / f"pga_{which}.tif"


@case(
    "pga:unit-conflict",
    "error",
    "pga_mainshock.tif",
    "declares pga in 'g'",
    "pga_unit: 'm/s2'",
    "set earthquakes[mainshock].pga_unit",
)
def _(env):
    def change(cfg):
        cfg["inputs"]["earthquakes"][0]["pga_unit"] = "m/s2"

    env.edit_config(change)
    return prepare_args(env)


@case("pga:implausible", "error", "pga_mainshock.tif", "implausible (> 5 g)", "is the unit right")
def _(env):
    env.rewrite_raster(_pga(env), env.read(_pga(env)) * G, units=None)  # m/s2 values, pga_unit g
    return prepare_args(env)


@case("pga:grey-zone", "warn", "pga_mainshock.tif", "largest ever recorded", "pga_unit: m/s2")
def _(env):
    z = env.read(_pga(env))
    env.rewrite_raster(_pga(env), z * (4.5 / z.max()), units=None)
    return prepare_args(env)


@case(
    "pga:weak-mainshock",
    "warn",
    "pga_mainshock.tif",
    "too weak",
    "pga_unit: g",
    "does not cover the epicentral area",
)
def _(env):
    for which in ("mainshock", "aftershock"):
        env.rewrite_raster(_pga(env, which), env.read(_pga(env, which)) * 0.5, units=None)

    def change(cfg):  # values in g, declared m/s2
        for eq in cfg["inputs"]["earthquakes"]:
            eq["pga_unit"] = "m/s2"

    env.edit_config(change)
    return prepare_args(env)


@case("pga:negative", "error", "pga_mainshock.tif", "negative pga", "pga is >= 0")
def _(env):
    z = env.read(_pga(env))
    z[0, 1, 1] = -0.2
    env.rewrite_raster(_pga(env), z)
    return prepare_args(env)


@case("pga:no-value", "error", "pga_mainshock.tif", "holds no valid value")
def _(env):
    env.rewrite_raster(_pga(env), np.full_like(env.read(_pga(env)), np.nan))
    return prepare_args(env)


@case(
    "pga:extra-band",
    "error",
    "pga_mainshock.tif",
    "holds 2 bands",
    "silently dropped",
    "one file per event",
)
def _(env):
    z = env.read(_pga(env))[0]
    env.rewrite_raster(_pga(env), np.stack([z, z * 2]))
    return prepare_args(env)


@case("sigma:implausible", "error", "sigma_mainshock.tif", "sigma of ln pga spans", "not a pga")
def _(env):
    sigma = env.inputs / "sigma_mainshock.tif"
    env.rewrite_raster(sigma, env.read(sigma) * 30)
    return prepare_args(env)


@case(
    "sigma:extra-band",
    "error",
    "sigma_mainshock.tif",
    "holds 3 bands",
    "one-band file",
    variant_of="pga:extra-band",
)
def _(env):
    sigma = env.inputs / "sigma_mainshock.tif"
    z = env.read(sigma)[0]
    env.rewrite_raster(sigma, np.stack([z, z, z]))
    return prepare_args(env)


# ---- inventories and rivers ------------------------------------------------------------------
LAST = "post-monsoon_2016.gpkg"
BEFORE_LAST = "pre-monsoon_2016.gpkg"


@case("inventory:crs", "error", "post-monsoon_2016.gpkg", "crs", "reproject")
def _(env):
    vec = read_vectors(_inv(env, LAST))
    write_vectors(_inv(env, LAST), vec.geometries, "EPSG:32644")
    return prepare_args(env)


@case(
    "inventory:cumulative-empty",
    "error",
    "post-monsoon_2016.gpkg",
    "holds no landslide area although an earlier one does",
    "per_period",
)
def _(env):
    vec = read_vectors(_inv(env, LAST))
    far = shapely.box(0, 0, 10, 10)  # one polygon far outside the grid: no area on it
    write_vectors(_inv(env, LAST), [far], vec.crs)
    return prepare_args(env)


def _densest_cell_polygons(env, name):
    from landslide_hazard.config import load_config
    from landslide_hazard.inventory.load import read_cell_density

    cfg = load_config(env.config)
    grid = cfg.study_grid()
    density = read_cell_density(_inv(env, name), grid, []).density
    r, c = np.unravel_index(np.nanargmax(density), density.shape)
    x0, y0 = grid.cell_transform @ (c, r)
    x1, y1 = grid.cell_transform @ (c + 1, r + 1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@case(
    "inventory:decrease-refused",
    "error",
    "post-monsoon_2016.gpkg",
    "falls from 'pre-monsoon 2016' to 'post-monsoon 2016'",
    "cell(s) (row, col",
    "not re-vegetation",
)
def _(env):
    vec = read_vectors(_inv(env, LAST))
    cell = _densest_cell_polygons(env, LAST)
    keep = [g for g in vec.geometries if not g.intersects(cell)]
    write_vectors(_inv(env, LAST), keep, vec.crs)
    return prepare_args(env)


@case(
    "inventory:decrease-clipped",
    "warn",
    "post-monsoon_2016.gpkg",
    "decreases from 'pre-monsoon 2016' to 'post-monsoon 2016' on",
    "cell(s)",
    "clipped to 0",
)
def _(env):
    from landslide_hazard.config import load_config
    from landslide_hazard.inventory.load import read_cell_density

    grid = load_config(env.config).study_grid()
    before = read_cell_density(_inv(env, BEFORE_LAST), grid, []).density
    last = read_cell_density(_inv(env, LAST), grid, []).density
    # a cell that did not change in the last period, with a little landslide area
    quiet = np.where((before == last) & (last > 0) & (last < 1), last, np.inf)
    r, c = np.unravel_index(np.argmin(quiet), quiet.shape)
    assert np.isfinite(quiet[r, c])
    x0, y0 = grid.cell_transform @ (c, r)
    x1, y1 = grid.cell_transform @ (c + 1, r + 1)
    cell = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    vec = read_vectors(_inv(env, LAST))
    keep = [g for g in vec.geometries if not g.intersects(cell)]
    write_vectors(_inv(env, LAST), keep, vec.crs)
    return prepare_args(env)


@case(
    "inventory:per-period-as-cumulative",
    "error",
    "post-monsoon_2016.gpkg",
    "look like per-period inventories",
    "set inventory.kind: per_period",
)
def _(env):
    shutil.copy(_inv(env, "pre-event_2014.gpkg"), _inv(env, LAST))
    return prepare_args(env)


@case("inventory:density-range", "error", "inv.tif", "inventory 'post-monsoon 2016'", "%")
def _(env):
    from landslide_hazard.config import load_config
    from landslide_hazard.io import write_raster

    grid = load_config(env.config).study_grid()
    write_raster(
        env.inputs / "inv.tif",
        np.full(grid.cell_shape, 150.0, dtype="float32"),
        grid.cell_transform,
        grid.crs,
    )

    def change(cfg):
        cfg["periods"][-1]["inventory"] = "inputs/inv.tif"

    env.edit_config(change)
    return prepare_args(env)


@case("rivers:empty", "error", "rivers.gpkg", "holds no feature", "non-empty")
def _(env):
    vec = read_vectors(env.inputs / "rivers.gpkg")
    write_vectors(env.inputs / "rivers.gpkg", [], vec.crs)
    return prepare_args(env)


@pytest.mark.parametrize(("setup", "outcome", "needles"), CASES + VARIANTS)
def test_prepare_fault(env, check, setup, outcome, needles):
    if outcome == "error":
        env.block_long_work()
    args = setup(env)
    check(args, outcome, needles)
    if outcome == "warn":  # repaired: the cube is there
        assert (env.root / "out" / "cube.zarr" / "static").is_dir()


def test_checks_are_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) == 42
    assert not {v.id for v in VARIANTS} & set(ids)
