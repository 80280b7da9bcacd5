"""``synth --dem FILE``: a scenario on a real DEM (a crop of Langtang, its collar included).

Also pins the procedural sizes: the tiny scenario's content must not change with the DEM path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.windows import Window
from typer.testing import CliRunner

from landslide_hazard.cli import app
from landslide_hazard.config import load_config
from landslide_hazard.cube import open_cube
from landslide_hazard.io import read_raster
from landslide_hazard.predictors.static import DemError, find_nodata_collar
from landslide_hazard.realdata import default_gorkha_dir
from landslide_hazard.synthetic import generate_scenario
from landslide_hazard.synthetic.dem import cell_pixels_for

LANGTANG = default_gorkha_dir().parent / "langtang" / "aw3d30_dsm_langtang_utm45.tif"
needs_langtang = pytest.mark.skipif(
    not LANGTANG.is_file(), reason="../shared/data/langtang not present"
)
TRUTH_FILES = (
    "p_occurrence",
    "density_given_occurrence",
    "expected_density",
    "new_density",
    "rate",
    "area_scale_m2",
    "p_occurrence_observable",
    "density_given_occurrence_observable",
    "expected_density_observable",
)
# The top-left corner of Langtang: 160 x 160 px (5 x 5 cells of 32 px), column 0 in the collar.
CROP = Window(0, 0, 160, 160)


def _write_dem(path: Path, data: np.ndarray, crs: str, transform, nodata=None) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(data, 1)
    return path


@pytest.fixture(scope="module")
def langtang_crop(tmp_path_factory) -> tuple[Path, np.ndarray]:
    with rasterio.open(LANGTANG) as src:
        data = src.read(1, window=CROP)
        transform = src.window_transform(CROP)
        crs = src.crs
    path = tmp_path_factory.mktemp("dem") / "langtang_crop.tif"
    return _write_dem(path, data, crs, transform), data


@pytest.fixture(scope="module")
def dem_scenario(langtang_crop) -> tuple[Path, dict]:
    path, _ = langtang_crop
    out = path.parent / "scenario"
    return out, generate_scenario("dem", 0, out, progress=False, dem=path)


def test_cell_pixels_nearest_power_of_two_to_one_km():
    assert cell_pixels_for(28.56) == 32
    assert cell_pixels_for(30.0) == 32
    assert cell_pixels_for(12.5) == 64
    assert cell_pixels_for(125.0) == 8
    assert cell_pixels_for(2000.0) == 1


@needs_langtang
def test_collar_is_nodata_and_the_grid_is_the_dems(langtang_crop, dem_scenario):
    _, source = langtang_crop
    out, summary = dem_scenario
    collar = find_nodata_collar(source.astype(float))
    assert collar[:, 0].sum() > 100  # the crop holds the undeclared 0 collar
    with rasterio.open(out / "inputs" / "dem.tif") as ds:
        dem = ds.read(1)
        assert ds.crs.to_epsg() == 32645
        assert ds.shape == (160, 160)
        with rasterio.open(LANGTANG) as src:
            assert ds.transform.almost_equals(src.transform)
    assert np.array_equal(np.isnan(dem), collar)
    assert np.array_equal(dem[~collar], source[~collar].astype(np.float32))
    assert summary["spec"]["cell_pixels"] == 32
    assert summary["dem"]["nodata_source"] == "detected"
    assert summary["dem"]["collar_pixels"] == int(collar.sum())


@needs_langtang
def test_truth_on_the_cell_grid_nan_outside_valid_cells(dem_scenario):
    out, summary = dem_scenario
    cfg = load_config(out / "config.yaml")
    grid = cfg.study_grid()
    assert grid.cell_shape == (5, 5)
    with rasterio.open(out / "inputs" / "dem.tif") as ds:
        dem = ds.read(1)
    valid = np.isfinite(dem).reshape(5, 32, 5, 32).all(axis=(1, 3))
    assert 0 < valid.sum() < 25 and not valid[:, 0].any()
    assert summary["n_valid_cells"] == int(valid.sum())
    for name in TRUTH_FILES:
        data, info = read_raster(out / "truth" / f"{name}.tif")
        assert data.shape == (8, 5, 5), name
        assert info.transform.almost_equals(grid.cell_transform), name
        assert np.isnan(data[:, ~valid]).all(), name
    p, _ = read_raster(out / "truth" / "p_occurrence.tif")
    assert np.isfinite(p[:, valid]).all()


@needs_langtang
def test_landslides_only_in_valid_cells(dem_scenario):
    out, _ = dem_scenario
    cfg = load_config(out / "config.yaml")
    grid = cfg.study_grid()
    with rasterio.open(out / "inputs" / "dem.tif") as ds:
        valid = np.isfinite(ds.read(1)).reshape(5, 32, 5, 32).all(axis=(1, 3))
    _, _, geom, _ = pyogrio.raw.read(out / "inputs" / "inventories" / "post-monsoon_2018.gpkg")
    polygons = shapely.from_wkb(geom)
    assert len(polygons) > 0
    x0, y1 = grid.cell_transform.c, grid.cell_transform.f
    size = grid.cell_size_m
    for poly in polygons:
        xmin, ymin, xmax, ymax = poly.bounds
        col, row = int((xmin - x0) // size), int((y1 - ymax) // size)
        assert valid[row, col]
        # wholly inside that cell
        assert xmax <= x0 + (col + 1) * size + 1e-6 and ymin >= y1 - (row + 1) * size - 1e-6


@needs_langtang
def test_prepare_runs_and_uses_the_same_valid_cells(dem_scenario):
    from landslide_hazard.prepare import prepare

    out, _ = dem_scenario
    cfg = load_config(out / "config.yaml")
    cube = open_cube(prepare(cfg, progress=False))
    truth, _ = read_raster(out / "truth" / "new_density.tif")
    assert np.array_equal(cube.valid_cells, np.isfinite(truth[0]))
    target = np.asarray(cube.target_density[:])
    assert np.allclose(target, truth, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_geographic_dem_is_refused_with_the_fix(tmp_path):
    data = np.full((200, 200), 1000, dtype=np.int16)
    path = _write_dem(
        tmp_path / "geo.tif",
        data,
        "EPSG:4326",
        rasterio.Affine(0.0003, 0, 85.5, 0, -0.0003, 28.4),
    )
    with pytest.raises(DemError, match=r"geo\.tif.*not projected in metres.*gdalwarp"):
        generate_scenario("dem", 0, tmp_path / "out", progress=False, dem=path)
    assert not (tmp_path / "out").exists()


def test_dem_smaller_than_a_patch_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    data = (1000 + 50 * rng.standard_normal((100, 100))).astype(np.float32)
    path = _write_dem(
        tmp_path / "small.tif",
        data,
        "EPSG:32645",
        rasterio.Affine(30.0, 0, 350000.0, 0, -30.0, 3140000.0),
    )
    with pytest.raises(DemError, match=r"small\.tif.*3 x 3 cells.*at least 4 x 4.*larger DEM"):
        generate_scenario("dem", 0, tmp_path / "out", progress=False, dem=path)


def test_cli_refuses_size_with_dem(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path / "out"), "--size", "tiny", "--dem", "x.tif"]
    )
    assert result.exit_code == 2
    assert "exclude each other" in result.output


# Content digests of `synth --size tiny --seed 0` made on branch `skill` (7e0f10f) before the --dem
# change (decoded rasters + transform/CRS/band names, GeoPackage geometries and fields): the
# procedural sizes' data must not change. The GeoPackage digests were re-derived on 2026-12-07 with
# normalised, mm-rounded geometries, when GEOS 3.14.1 (shapely 2.2.0) wrote one inventory's raw
# geometry bytes differently while every raster, the truth rasterised from those polygons included,
# kept its digest. config.yaml is left out: it lists every config default,
# which other changes move (tests/synthetic/test_scenario_config.py checks its content).
TINY_SEED0_DIGESTS = {
    "inputs/dem.tif": "b05333282df27424",
    "inputs/inventories/co-seismic_2015.gpkg": "5eb7204c19280a03",
    "inputs/inventories/post-monsoon_2015.gpkg": "4a7bd7df6fd70917",
    "inputs/inventories/post-monsoon_2016.gpkg": "1758ef9374d7cf4e",
    "inputs/inventories/pre-event_2014.gpkg": "dc8672c86b05c584",
    "inputs/inventories/pre-monsoon_2016.gpkg": "87b3205d846c7837",
    "inputs/pga_aftershock.tif": "ac76110a1cf057be",
    "inputs/pga_mainshock.tif": "078317302a21f108",
    "inputs/rain.tif": "3cd6e406d464e297",
    "inputs/rivers.gpkg": "2fc87319dfb202f7",
    "inputs/sigma_aftershock.tif": "d615c58c6b302dfa",
    "inputs/sigma_mainshock.tif": "d615c58c6b302dfa",
    "truth/area_scale_m2.tif": "c2dc2a591ca84831",
    "truth/density_given_occurrence.tif": "93b4e328e91ce976",
    "truth/density_given_occurrence_observable.tif": "a75c7fedf665d468",
    "truth/expected_density.tif": "0681db696539240e",
    "truth/expected_density_observable.tif": "11d3407dfd1e9c5b",
    "truth/new_density.tif": "4c6170a75ed13074",
    "truth/p_occurrence.tif": "48eb6a6b3adb44d9",
    "truth/p_occurrence_observable.tif": "e299c14ca12ec895",
    "truth/rate.tif": "95fd68625545e9ea",
}


def content_digests(root: Path) -> dict[str, str]:
    """16-hex sha256 per scenario file of its content (not its bytes: zlib/GDAL versions may
    encode the same data differently)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        h = hashlib.sha256()
        if path.suffix == ".tif":
            with rasterio.open(path) as ds:
                h.update(ds.read().tobytes())
                h.update(repr((tuple(ds.transform), ds.crs.to_epsg(), ds.descriptions)).encode())
        elif path.suffix == ".gpkg":
            _, _, geom, fields = pyogrio.raw.read(path)
            # normalised (ring start and orientation) and rounded to 1 mm: GEOS versions may
            # start a clipped polygon's ring at another vertex or move it by a last bit
            rounded = shapely.transform(shapely.from_wkb(geom), lambda xy: np.round(xy, 3))
            for g in shapely.normalize(rounded):
                h.update(shapely.to_wkb(g))
            for f in fields:
                values = np.asarray(f)
                if values.dtype.kind == "f":
                    values = np.round(values, 3)
                h.update(values.astype(str).tobytes())
        else:
            continue
        out[path.relative_to(root).as_posix()] = h.hexdigest()[:16]
    return out


def test_tiny_scenario_unchanged(tiny_scenario):
    assert content_digests(tiny_scenario) == TINY_SEED0_DIGESTS
