"""Out-of-core and distributed prepare: the lean passes equal the in-memory ones exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landslide_hazard.config import load_config
from landslide_hazard.cube import open_cube
from landslide_hazard.predictors import hydrology as hyd
from landslide_hazard.prepare import prepare


def _dem(seed: int, shape=(90, 110)) -> np.ndarray:
    """Rough random terrain with pits, flats and a NaN collar corner."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=shape).cumsum(0).cumsum(1) * 0.5
    z += rng.integers(0, 3, size=shape) * 2.0  # many small pits and exact ties
    z[:5, :12] = np.nan
    z[-3:, -20:] = np.nan
    return z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lean_fill_and_accumulation_equal_the_in_memory_passes(seed):
    z = _dem(seed)
    filled = hyd.fill_pits(z)
    inplace = z.copy()
    assert hyd.fill_pits(inplace, in_place=True) is inplace
    np.testing.assert_array_equal(inplace, filled)
    codes = hyd.d8_flow_directions(filled)
    reference = hyd.accumulate_d8(codes)
    counts = hyd.accumulate_d8_counts(codes)
    assert counts.dtype == np.uint32
    np.testing.assert_array_equal(counts, np.nan_to_num(reference, nan=0.0).astype(np.uint32))
    for threshold in (0.01, 0.05):
        np.testing.assert_array_equal(
            hyd.river_mask_from_counts(counts, 31.25, threshold, block_rows=7),
            hyd.river_mask_from_accumulation(z, 31.25, threshold, accumulation=reference),
        )
    lean = hyd.counts_to_float32(counts, codes)
    assert lean.dtype == np.float32
    np.testing.assert_array_equal(lean, reference.astype(np.float32))


def test_lean_accumulation_by_hand_and_cycles():
    # A 1 x 4 strip draining east (code 2) into the grid's edge: counts 1, 2, 3, 4.
    codes = np.array([[2, 2, 2, -1]], dtype=np.int8)
    np.testing.assert_array_equal(hyd.accumulate_d8_counts(codes), [[1, 2, 3, 4]])
    # A nodata pixel (-2) stops the flow: the donors' water leaves the grid there.
    codes = np.array([[2, -2, 6, 6]], dtype=np.int8)
    np.testing.assert_array_equal(hyd.accumulate_d8_counts(codes), [[1, 0, 2, 1]])
    with pytest.raises(ValueError, match="cycle"):
        hyd.accumulate_d8_counts(np.array([[2, 6]], dtype=np.int8))


def _tiled_distance(mask: np.ndarray, tile: int, margin: int) -> np.ndarray:
    out = np.full(mask.shape, np.nan, dtype=np.float32)
    for r0 in range(0, mask.shape[0], tile):
        for c0 in range(0, mask.shape[1], tile):
            rows = slice(r0, min(r0 + tile, mask.shape[0]))
            cols = slice(c0, min(c0 + tile, mask.shape[1]))
            out[rows, cols] = hyd.distance_to_river_tile(mask, rows, cols, 31.25, margin=margin)
    return out


@pytest.mark.parametrize("density", [0.3, 0.01, 0.0005])
@pytest.mark.parametrize(("tile", "margin"), [(16, 1), (37, 4), (64, 64)])
def test_tiled_distance_is_exact(density, tile, margin):
    rng = np.random.default_rng(int(density * 1e4) + tile)
    mask = rng.random((120, 150)) < density
    mask[60, 75] = True  # at least one river pixel
    reference = hyd.distance_to_river(mask, 31.25).astype(np.float32)
    np.testing.assert_array_equal(_tiled_distance(mask, tile, margin), reference)


def test_tiled_distance_by_hand():
    # One river pixel in a corner: tiles far from it must widen their window to the whole grid.
    mask = np.zeros((40, 50), dtype=bool)
    mask[0, 0] = True
    out = _tiled_distance(mask, 10, 1)
    rows, cols = np.indices(mask.shape)
    np.testing.assert_allclose(out, np.hypot(rows, cols) * 31.25, rtol=1e-7)
    assert out[39, 49] == np.float32(np.hypot(39, 49) * 31.25)
    with pytest.raises(ValueError, match="no river pixel"):
        hyd.distance_to_river_tile(np.zeros((5, 5), dtype=bool), slice(0, 2), slice(0, 2), 30.0)


def test_tiled_distance_only_where_needed():
    rng = np.random.default_rng(5)
    mask = rng.random((60, 70)) < 0.002
    mask[59, 69] = True
    reference = hyd.distance_to_river(mask, 31.25).astype(np.float32)
    rows, cols = slice(10, 40), slice(5, 50)
    where = rng.random((30, 45)) < 0.5
    out = hyd.distance_to_river_tile(mask, rows, cols, 31.25, margin=2, where=where)
    np.testing.assert_array_equal(out[where], reference[rows, cols][where])
    assert np.isnan(out[~where]).all()
    # nothing needed: no EDT at all, even without any river in the grid
    none = np.zeros((3, 4), dtype=bool)
    empty = np.zeros((10, 10), dtype=bool)
    assert np.isnan(
        hyd.distance_to_river_tile(empty, slice(0, 3), slice(0, 4), 30.0, where=none)
    ).all()


@pytest.fixture(scope="module")
def scenario(tiny_scenario) -> Path:
    return tiny_scenario


@pytest.fixture(scope="module")
def serial_cube(scenario, tmp_path_factory):
    cfg = load_config(scenario / "config.yaml")
    out = tmp_path_factory.mktemp("serial") / "cube.zarr"
    return open_cube(prepare(cfg, out=out, progress=False, tile_px=32, chunk_px=16))


def test_chunked_prepare_equals_the_whole_array_computation(scenario, serial_cube):
    """The cube's static bands equal compute_static_bands on the whole grid in memory."""
    from landslide_hazard.io.rasters import read_raster
    from landslide_hazard.predictors.static import compute_static_bands

    cfg = load_config(scenario / "config.yaml")
    dem, _ = read_raster(cfg.inputs.dem, bands=1)
    reference = compute_static_bands(
        dem.astype(np.float64),
        cfg.grid.pixel_size_m,
        accumulation_km2=cfg.inputs.rivers.accumulation_km2,
        river_mask=None if cfg.inputs.rivers.path is None else _rivers(cfg),
    )
    static = serial_cube.static[:]
    assert static.shape[1:] == dem.shape
    for b, name in enumerate(reference):
        np.testing.assert_array_equal(static[b], reference[name], err_msg=name)
    # no scratch left behind
    assert not list(serial_cube.path.parent.glob(".*scratch"))


def _rivers(cfg) -> np.ndarray:
    from landslide_hazard.io.rasters import read_on_grid
    from landslide_hazard.io.vectors import is_vector_path, read_vectors

    grid = cfg.study_grid()
    if is_vector_path(cfg.inputs.rivers.path):
        lines = read_vectors(cfg.inputs.rivers.path).geometries
        return hyd.rasterize_rivers(lines, grid.fine_transform, grid.fine_shape)
    data = read_on_grid(cfg.inputs.rivers.path, grid, level="fine", kind="classes", bands=1)
    return np.isfinite(data) & (data > 0.5)


def test_distributed_prepare_equals_the_serial_cube(scenario, serial_cube, tmp_path, monkeypatch):
    """Tiles on a dask.distributed LocalCluster (2 single-threaded workers): the same cube."""
    from distributed import LocalCluster

    cfg = load_config(scenario / "config.yaml")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        monkeypatch.setenv("LANDSLIDE_HAZARD_SCHEDULER", cluster.scheduler_address)
        cube = open_cube(
            prepare(cfg, out=tmp_path / "d.zarr", progress=False, tile_px=32, chunk_px=16)
        )
    np.testing.assert_array_equal(cube.static[:], serial_cube.static[:])
    np.testing.assert_array_equal(cube.dynamic[:], serial_cube.dynamic[:])
    np.testing.assert_array_equal(cube.target_density[:], serial_cube.target_density[:])
    np.testing.assert_array_equal(cube.valid_cells[:], serial_cube.valid_cells[:])
    log = cube.meta.provenance["log"]
    assert any("dask.distributed (2 worker(s), 2 thread(s)" in line for line in log)


def test_distributed_tiles_must_align_with_chunks(scenario, tmp_path):
    from landslide_hazard.prepare import PrepareError

    cfg = load_config(scenario / "config.yaml")
    with pytest.raises(PrepareError, match="multiple of the cube's chunk"):
        prepare(
            cfg,
            out=tmp_path / "x.zarr",
            progress=False,
            tile_px=24,
            chunk_px=16,
            scheduler="local:1",
        )


def test_bad_local_scheduler_is_a_clear_error():
    from landslide_hazard.distributed import client_for

    with pytest.raises(ValueError, match="local:N"):
        with client_for("local:zero"):
            pass
