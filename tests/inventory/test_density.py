"""Exact polygon density per cell/pixel and new-failure differencing."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from landslide_hazard.inventory.density import (
    SparseFractions,
    dense_fractions_to_cell_density,
    dissolve,
    fractions_to_cell_density,
    new_failed_density,
    new_failed_fractions,
    polygon_area_per_box,
    polygon_cell_density,
    polygon_pixel_fractions,
)

# 3 x 4 cells of 100 m, origin (1000, 5000)
CELL_T = Affine(100.0, 0.0, 1000.0, 0.0, -100.0, 5000.0)
SHAPE = (3, 4)


def _cell_box(r, c):
    return shapely.box(1000 + c * 100, 5000 - (r + 1) * 100, 1000 + (c + 1) * 100, 5000 - r * 100)


def test_square_straddling_four_cells():
    # 40 x 40 m square centred on the corner (1100, 4900) shared by cells (0,0), (0,1), (1,0)
    # and (1,1): 20 x 20 m in each of them
    sq = shapely.box(1080, 4880, 1120, 4920)
    d = polygon_cell_density(np.array([sq]), CELL_T, SHAPE)
    expected = np.zeros(SHAPE)
    expected[0, 0] = 20 * 20 / 1e4 * 100
    expected[0, 1] = 20 * 20 / 1e4 * 100
    expected[1, 0] = 20 * 20 / 1e4 * 100
    expected[1, 1] = 20 * 20 / 1e4 * 100
    np.testing.assert_allclose(d, expected, atol=1e-12)


def test_triangle_matches_shapely_by_hand():
    tri = shapely.Polygon([(1050, 4990), (1290, 4990), (1050, 4760)])
    d = polygon_cell_density(np.array([tri]), CELL_T, SHAPE)
    for r in range(3):
        for c in range(4):
            want = shapely.intersection(tri, _cell_box(r, c)).area / 1e4 * 100
            assert d[r, c] == pytest.approx(want, abs=1e-12)
    assert d.sum() / 100 * 1e4 == pytest.approx(tri.area)


def test_sub_pixel_polygon_and_outside_parts():
    tiny = shapely.box(1010, 4990, 1012, 4993)  # 6 m2, far below one pixel
    half_out = shapely.box(950, 4750, 1050, 4850)  # half west of the grid
    d = polygon_cell_density(np.array([tiny, half_out]), CELL_T, SHAPE)
    assert d[0, 0] == pytest.approx(6 / 1e4 * 100)
    assert d[1, 0] == pytest.approx(50 * 50 / 1e4 * 100)
    assert d[2, 0] == pytest.approx(50 * 50 / 1e4 * 100)


def test_overlapping_polygons_are_not_counted_twice():
    a = shapely.box(1000, 4900, 1060, 5000)
    b = shapely.box(1040, 4900, 1100, 5000)  # overlaps a on 20 m
    d = polygon_cell_density(np.array([a, b]), CELL_T, SHAPE)
    assert d[0, 0] == pytest.approx(100.0)


def test_pixel_fractions_exact_and_consistent_with_cells():
    rng = np.random.default_rng(3)
    centres = shapely.points(rng.uniform(1000, 1400, 15), rng.uniform(4700, 5000, 15))
    polys = shapely.buffer(centres, rng.uniform(3, 40, 15))
    fine_t = Affine(12.5, 0.0, 1000.0, 0.0, -12.5, 5000.0)  # k = 8
    fr = polygon_pixel_fractions(polys, fine_t, (24, 32))
    dense = fr.to_dense()
    assert dense.max() <= 1.0 and dense.min() >= 0.0
    union = shapely.union_all(polys)
    r, c = 5, 7
    px = shapely.box(1000 + c * 12.5, 5000 - (r + 1) * 12.5, 1000 + (c + 1) * 12.5, 5000 - r * 12.5)
    assert dense[r, c] == pytest.approx(shapely.intersection(union, px).area / 12.5**2, abs=1e-12)
    cells = polygon_cell_density(polys, CELL_T, SHAPE)
    np.testing.assert_allclose(fractions_to_cell_density(fr, 8), cells, atol=1e-9)
    np.testing.assert_allclose(dense_fractions_to_cell_density(dense, 8), cells, atol=1e-9)
    grid_area = shapely.intersection(union, shapely.box(1000, 4700, 1400, 5000)).area
    assert polygon_area_per_box(polys, fine_t, (24, 32)).sum() == pytest.approx(grid_area)


def test_pixel_versus_cell_differencing_hand_case():
    # 2 x 2 pixels per cell of 20 m, one cell. Before: pixel (0,0) fully failed.
    # After: pixel (0,0) re-vegetated to 0 and pixel (1,1) fully failed.
    fine_t = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 20.0)
    cell_t = Affine(20.0, 0.0, 0.0, 0.0, -20.0, 20.0)
    before = np.array([shapely.box(0, 10, 10, 20)])
    after = np.array([shapely.box(10, 0, 20, 10)])
    # per cell: 25 % then 25 % -> no new failure
    cum = [polygon_cell_density(p, cell_t, (1, 1)) for p in (before, after)]
    assert new_failed_density(cum[1][None], cum[0])[0, 0, 0] == 0.0
    # per pixel: pixel (1,1) is new -> 25 %
    fb = polygon_pixel_fractions(before, fine_t, (2, 2))
    fa = polygon_pixel_fractions(after, fine_t, (2, 2))
    new = fractions_to_cell_density(new_failed_fractions(fa, fb), 2)
    assert new[0, 0] == pytest.approx(25.0)


def test_new_failed_density_hand_values_and_nan():
    baseline = np.array([[1.0, 0.0, np.nan]])
    cum = np.array([[[3.0, 0.5, 2.0]], [[2.0, 4.0, 3.0]], [[2.5, np.nan, 5.0]]])
    new = new_failed_density(cum, baseline)
    expected = np.array([[[2.0, 0.5, np.nan]], [[0.0, 3.5, 1.0]], [[0.5, np.nan, 2.0]]])
    np.testing.assert_array_equal(new, expected)
    with pytest.raises(ValueError, match="baseline"):
        new_failed_density(cum, baseline[0])


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (4, 3, 3), elements=st.floats(0, 100) | st.just(np.nan)),
    arrays(np.float64, (3, 3), elements=st.floats(0, 100)),
)
def test_differencing_never_negative(cum, baseline):
    new = new_failed_density(cum, baseline)
    finite = np.isfinite(new)
    assert (new[finite] >= 0).all()
    prev = np.concatenate([baseline[None], cum[:-1]])
    np.testing.assert_array_equal(finite, np.isfinite(cum) & np.isfinite(prev))
    np.testing.assert_allclose(new[finite], np.maximum(cum - prev, 0)[finite])


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (4, 6), elements=st.floats(0, 1)),
    arrays(np.float64, (4, 6), elements=st.floats(0, 1)),
)
def test_pixel_differencing_never_negative(now, before):
    a, b = SparseFractions.from_dense(now), SparseFractions.from_dense(before)
    new = new_failed_fractions(a, b)
    assert (new.fraction > 0).all()
    np.testing.assert_allclose(new.to_dense(), np.maximum(now - before, 0))
    assert (fractions_to_cell_density(new, 2) >= 0).all()


def test_sparse_concatenate_and_empty():
    e = SparseFractions.empty((4, 4))
    assert e.total == 0 and not e.to_dense().any()
    top = SparseFractions.from_dense(np.array([[0.5, 0, 0, 0], [0, 0, 0, 1.0]]), 0, (4, 4))
    bottom = SparseFractions.from_dense(np.array([[0.25, 0, 0, 0], [0, 0, 0, 0]]), 2, (4, 4))
    joined = SparseFractions.concatenate([bottom, top], (4, 4))
    assert list(joined.index) == [0, 7, 8]
    assert joined.total == pytest.approx(1.75)
    with pytest.raises(ValueError, match="multiple of k"):
        fractions_to_cell_density(joined, 3)


def test_dissolve_merges_only_overlapping_groups():
    chain = [shapely.box(0, 0, 10, 10), shapely.box(5, 0, 15, 10), shapely.box(12, 0, 20, 10)]
    inner = [shapely.box(30, 0, 40, 10), shapely.box(32, 2, 34, 4)]  # containment
    touching = [shapely.box(50, 0, 60, 10), shapely.box(60, 0, 70, 10)]  # share an edge only
    alone = [shapely.MultiPolygon([shapely.box(80, 0, 81, 1), shapely.box(90, 0, 91, 1)])]
    polys = np.array(chain + inner + touching + alone, dtype=object)
    parts = dissolve(polys)
    assert len(parts) == 1 + 1 + 2 + 2
    assert shapely.area(parts).sum() == pytest.approx(shapely.union_all(polys).area)
    assert sorted(shapely.area(parts)) == [1.0, 1.0, 100.0, 100.0, 100.0, 200.0]
    assert len(dissolve(np.array([], dtype=object))) == 0


def test_pixel_fraction_cache_across_cumulative_inventories():
    rng = np.random.default_rng(7)
    centres = shapely.points(rng.uniform(1000, 1400, 40), rng.uniform(4700, 5000, 40))
    polys = shapely.buffer(centres, rng.uniform(2, 30, 40))
    fine_t = Affine(12.5, 0.0, 1000.0, 0.0, -12.5, 5000.0)
    cache: dict = {}
    for n in (10, 25, 25, 40, 5):  # growing, unchanged, growing, then a smaller set
        cached = polygon_pixel_fractions(polys[:n], fine_t, (24, 32), cache=cache)
        fresh = polygon_pixel_fractions(polys[:n], fine_t, (24, 32))
        np.testing.assert_array_equal(cached.index, fresh.index)
        np.testing.assert_allclose(cached.fraction, fresh.fraction, rtol=1e-12)
        # the cache keeps exactly the (dissolved) parts of the latest inventory
        assert set(cache) == set(shapely.to_wkb(dissolve(polys[:n])).tolist())


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (4, 6), elements=st.floats(0, 1)),
    arrays(np.float64, (4, 6), elements=st.floats(0, 1)),
)
def test_pixel_differencing_bounds_cell_differencing_from_above(now, before):
    # sum of positive parts >= positive part of the sum: per-pixel differencing never finds
    # less new area than per-cell differencing, and both agree when nothing re-vegetates
    a, b = SparseFractions.from_dense(now), SparseFractions.from_dense(before)
    pixel = fractions_to_cell_density(new_failed_fractions(a, b), 2)
    cell = new_failed_density(
        fractions_to_cell_density(a, 2)[None], fractions_to_cell_density(b, 2)
    )[0]
    assert (pixel >= cell - 1e-9).all()
    grown = SparseFractions.from_dense(np.maximum(now, before))
    np.testing.assert_allclose(
        fractions_to_cell_density(new_failed_fractions(grown, b), 2),
        new_failed_density(
            fractions_to_cell_density(grown, 2)[None], fractions_to_cell_density(b, 2)
        )[0],
        atol=1e-9,
    )
