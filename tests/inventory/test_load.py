"""Inventory files -> new failed density per period (polygons, fine masks, cell rasters)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from landslide_hazard.config import parse_config
from landslide_hazard.inventory import (
    InventoryError,
    check_inventory_file,
    new_failure_targets,
    read_cell_density,
    read_mapped_cells,
)
from landslide_hazard.io.rasters import PLAIN_GTIFF, write_raster
from landslide_hazard.io.vectors import VectorError, write_vectors

CRS = "EPSG:32645"
X0, Y0, P, K = 500000.0, 3000000.0, 10.0, 4  # cells of 40 m, grid 2 x 3 cells (8 x 12 px)


def _config(tmp_path, names, **inventory):
    data = {
        "grid": {
            "crs": CRS,
            "origin": [X0, Y0],
            "pixel_size_m": P,
            "cell_pixels": K,
            "shape_cells": [2, 3],
            "patch_cells": 2,
        },
        "baseline": {"name": "base", "date": "2015-01-01", "inventory": names[0]},
        "periods": [
            {"name": f"p{i}", "date": f"2015-0{i + 2}-01", "inventory": n}
            for i, n in enumerate(names[1:])
        ],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
        "inventory": inventory,
    }
    return parse_config(data, tmp_path)


def _box(c0, r0, c1, r1):
    """Box in pixel coordinates (col, row) of the fine grid."""
    return shapely.box(X0 + c0 * P, Y0 - r1 * P, X0 + c1 * P, Y0 - r0 * P)


def _grid(cfg):
    return cfg.study_grid()


def test_polygon_targets_cell_and_pixel_differencing(tmp_path):
    # base: pixel block (0,0)-(2,2) failed (4 px = 25 % of cell (0,0))
    # p0: base re-vegetated, a new 4 px block elsewhere in cell (0,0), 2 px in cell (1,2)
    # p1: p0 plus half a pixel in cell (0,1)
    write_vectors(tmp_path / "base.gpkg", [_box(0, 0, 2, 2)], CRS)
    write_vectors(tmp_path / "p0.gpkg", [_box(2, 2, 4, 4), _box(8, 6, 10, 7)], CRS)
    write_vectors(
        tmp_path / "p1.gpkg", [_box(2, 2, 4, 4), _box(8, 6, 10, 7), _box(4, 0, 4.5, 1)], CRS
    )
    names = ["base.gpkg", "p0.gpkg", "p1.gpkg"]
    cell = new_failure_targets(_config(tmp_path, names))
    expected = np.zeros((2, 2, 3), dtype=np.float32)
    expected[0, 1, 2] = 2 / 16 * 100
    expected[1, 0, 1] = 0.5 / 16 * 100
    np.testing.assert_allclose(cell, expected, atol=1e-5)
    pixel = new_failure_targets(_config(tmp_path, names, difference="pixel"))
    expected[0, 0, 0] = 25.0  # the new block is new per pixel, though the cell total is flat
    np.testing.assert_allclose(pixel, expected, atol=1e-5)
    per = new_failure_targets(_config(tmp_path, names, kind="per_period"))
    np.testing.assert_allclose(per[0, 0, 0], 25.0)
    np.testing.assert_allclose(per[1, 0, 1], 0.5 / 16 * 100, atol=1e-5)


def test_fine_mask_and_cell_raster_give_the_same_density(tmp_path):
    cfg = _config(tmp_path, ["a.gpkg", "b.gpkg"])
    g = _grid(cfg)
    mask = np.zeros(g.fine_shape, dtype=np.float32)
    mask[1:3, 5:8] = 1.0
    mask[6, 0] = 0.25
    write_raster(tmp_path / "mask.tif", mask, g.fine_transform, CRS, encoding=PLAIN_GTIFF)
    dens = mask.reshape(2, K, 3, K).mean(axis=(1, 3)) * 100
    write_raster(tmp_path / "dens.tif", dens, g.cell_transform, CRS, encoding=PLAIN_GTIFF)
    a = read_cell_density(tmp_path / "mask.tif", g).density
    b = read_cell_density(tmp_path / "dens.tif", g).density
    np.testing.assert_allclose(a, dens, atol=1e-6)
    np.testing.assert_allclose(b, dens, atol=1e-5)
    assert a[0, 1] == pytest.approx(6 / 16 * 100)


def test_mask_values_out_of_range(tmp_path):
    cfg = _config(tmp_path, ["a.gpkg", "b.gpkg"])
    g = _grid(cfg)
    write_raster(
        tmp_path / "m255.tif",
        np.full(g.fine_shape, 255.0),
        g.fine_transform,
        CRS,
        encoding=PLAIN_GTIFF,
    )
    with pytest.raises(InventoryError, match=r"m255.tif: .*\[255, 255\].*divide by 100 or 255"):
        read_cell_density(tmp_path / "m255.tif", g)


def test_unmapped_cells_are_nan(tmp_path):
    write_vectors(tmp_path / "base.gpkg", [], CRS)
    write_vectors(tmp_path / "p0.gpkg", [_box(0, 0, 4, 4), _box(4, 4, 8, 8)], CRS)
    # mapped extent of p0: cells (0,0), (0,1) and (1,1) fully, cell (1,0) only half
    extent = shapely.union_all([_box(0, 0, 8, 4), _box(4, 4, 8, 8), _box(0, 4, 2, 8)])
    write_vectors(tmp_path / "extent.gpkg", [extent], CRS)
    cfg = _config(tmp_path, ["base.gpkg", "p0.gpkg"])
    cfg.periods[0].mapped_extent = tmp_path / "extent.gpkg"
    with pytest.warns(UserWarning, match="base.gpkg: inventory 'base' holds no landslide area"):
        new = new_failure_targets(cfg)
    assert new[0, 0, 0] == 100.0 and new[0, 1, 1] == 100.0 and new[0, 0, 1] == 0.0
    assert np.isnan(new[0, 1, 0]) and np.isnan(new[0, :, 2]).all()
    mapped = read_mapped_cells(tmp_path / "extent.gpkg", _grid(cfg))
    np.testing.assert_array_equal(mapped, [[True, True, False], [False, True, False]])
    # the same extent as a fine raster and as a cell raster
    g = _grid(cfg)
    fine = np.zeros(g.fine_shape, dtype=np.float32)
    fine[0:4, 0:8] = 1
    fine[4:8, 4:8] = 1
    fine[4:8, 0:2] = 1
    write_raster(tmp_path / "extent.tif", fine, g.fine_transform, CRS, encoding=PLAIN_GTIFF)
    np.testing.assert_array_equal(read_mapped_cells(tmp_path / "extent.tif", g), mapped)
    write_raster(
        tmp_path / "extent_cells.tif",
        mapped.astype(np.float32),
        g.cell_transform,
        CRS,
        encoding=PLAIN_GTIFF,
    )
    np.testing.assert_array_equal(read_mapped_cells(tmp_path / "extent_cells.tif", g), mapped)


def test_pixel_mode_nan_mask_pixels_make_cells_unmapped(tmp_path):
    cfg = _config(tmp_path, ["base.tif", "p0.tif"], difference="pixel")
    g = _grid(cfg)
    base = np.zeros(g.fine_shape, dtype=np.float32)
    now = base.copy()
    now[0, 0] = 0.5
    now[5, 9] = np.nan
    write_raster(tmp_path / "base.tif", base, g.fine_transform, CRS, encoding=PLAIN_GTIFF)
    write_raster(tmp_path / "p0.tif", now, g.fine_transform, CRS, encoding=PLAIN_GTIFF)
    with pytest.warns(UserWarning, match="'base' holds no landslide area"):
        new = new_failure_targets(cfg)
    assert new[0, 0, 0] == pytest.approx(0.5 / 16 * 100)
    assert np.isnan(new[0, 1, 2]) and np.isfinite(new[0, 1, 1])
    write_raster(tmp_path / "p0.tif", now[::K, ::K], g.cell_transform, CRS, encoding=PLAIN_GTIFF)
    with pytest.raises(InventoryError, match="cannot be differenced per pixel"):
        new_failure_targets(cfg)


def test_empty_cumulative_inventory_after_a_full_one_is_an_error(tmp_path):
    write_vectors(tmp_path / "base.gpkg", [_box(0, 0, 1, 1)], CRS)
    write_vectors(tmp_path / "p0.gpkg", [], CRS)
    cfg = _config(tmp_path, ["base.gpkg", "p0.gpkg"])
    with pytest.raises(InventoryError, match="p0.gpkg: cumulative inventory 'p0' holds no "):
        new_failure_targets(cfg)
    per = _config(tmp_path, ["base.gpkg", "p0.gpkg"], kind="per_period")
    with pytest.warns(UserWarning, match="holds no landslide area"):
        assert not new_failure_targets(per).any()


def test_bad_inventory_files_fail_early(tmp_path):
    cfg = _config(tmp_path, ["a.gpkg", "b.gpkg"])
    g = _grid(cfg)
    with pytest.raises(InventoryError, match="missing.gpkg: inventory file not found"):
        check_inventory_file(tmp_path / "missing.gpkg", g)
    write_vectors(tmp_path / "utm44.gpkg", [_box(0, 0, 1, 1)], "EPSG:32644")
    with pytest.raises(VectorError, match="utm44.gpkg: inventory CRS EPSG:32644 differs"):
        check_inventory_file(tmp_path / "utm44.gpkg", g)
    write_vectors(tmp_path / "lines.gpkg", [shapely.LineString([(X0, Y0), (X0 + 5, Y0 - 5)])], CRS)
    with pytest.raises(InventoryError, match="lines.gpkg: inventory holds LineString"):
        check_inventory_file(tmp_path / "lines.gpkg", g)


def test_rasters_on_other_grids_are_resampled_by_area_fraction(tmp_path):
    from affine import Affine

    cfg = _config(tmp_path, ["a.gpkg", "b.gpkg"])
    g = _grid(cfg)
    # a 5 m mask (twice as fine as the 10 m grid), same origin: 2 x 2 sub-pixels per pixel
    fine5 = np.zeros((16, 24), dtype=np.float32)
    fine5[0:8, 0:8] = 1.0  # all of cell (0, 0)
    fine5[8, 9] = 1.0  # a quarter of one 10 m pixel of cell (1, 1)
    t5 = Affine(5.0, 0.0, X0, 0.0, -5.0, Y0)
    write_raster(tmp_path / "mask5.tif", fine5, t5, CRS, encoding=PLAIN_GTIFF)
    log: list[str] = []
    d = read_cell_density(tmp_path / "mask5.tif", g, log).density
    assert d[0, 0] == pytest.approx(100.0)
    assert d[1, 1] == pytest.approx(0.25 / 16 * 100)
    assert d.sum() == pytest.approx(100.0 + 0.25 / 16 * 100)
    assert any("mask5.tif: resampled (average)" in line for line in log)
    # a mapped extent on a 20 m grid: cells (0, 0) and (0, 1) mapped
    ext = np.zeros((4, 6), dtype=np.float32)
    ext[0:2, 0:4] = 1.0
    write_raster(
        tmp_path / "ext20.tif", ext, Affine(20.0, 0, X0, 0, -20.0, Y0), CRS, encoding=PLAIN_GTIFF
    )
    mapped = read_mapped_cells(tmp_path / "ext20.tif", g, log)
    np.testing.assert_array_equal(mapped, [[True, True, False], [False, False, False]])
