"""Tests of pit filling, D8, accumulation, TWI, rivers and distance (predictors/hydrology.py)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from scipy.sparse.linalg import spsolve
from shapely.geometry import LineString, MultiLineString, box

from landslide_hazard.predictors.hydrology import (
    D8_NODATA,
    D8_OUTLET,
    accumulate_d8,
    d8_flow_accumulation,
    d8_flow_directions,
    distance_to_river,
    fill_pits,
    rasterize_rivers,
    river_mask_from_accumulation,
    twi,
    twi_from,
)

L = 25.0
# Written out independently of the module: code -> (row offset, col offset), clockwise from N.
OFFSETS = {
    0: (-1, 0),
    1: (-1, 1),
    2: (0, 1),
    3: (1, 1),
    4: (1, 0),
    5: (1, -1),
    6: (0, -1),
    7: (-1, -1),
}


def random_dem(seed: int, shape=(24, 30), nan_collar: bool = False) -> np.ndarray:
    """Rough terrain with pits and integer flats (the hard cases)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    dem = np.round(20 * rng.random(shape) + 0.8 * r + 0.3 * c)
    dem[5:9, 6:12] = dem[5:9, 6:12].min()  # a flat
    if nan_collar:
        dem[: 1 + seed % 3, :4] = np.nan
        dem[:, -1] = np.nan
    return dem


def outside_mask(dem: np.ndarray) -> np.ndarray:
    """Valid pixels on the array border or 8-adjacent to NaN."""
    valid = ~np.isnan(dem)
    pad = np.pad(valid, 1, constant_values=False)
    rows, cols = dem.shape
    all_nb = np.ones_like(valid)
    for dr, dc in OFFSETS.values():
        all_nb &= pad[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
    return valid & ~all_nb


def reference_fill(dem: np.ndarray) -> np.ndarray:
    """Depression fill by fixed-point iteration: w = max(dem, min of the 8 neighbours of w)."""
    valid = ~np.isnan(dem)
    boundary = outside_mask(dem)
    w = np.where(boundary, dem, np.inf)
    rows, cols = dem.shape
    for _ in range(dem.size):
        pad = np.pad(np.where(valid, w, np.inf), 1, constant_values=np.inf)
        nb = np.min(
            [pad[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols] for dr, dc in OFFSETS.values()],
            axis=0,
        )
        new = np.where(boundary, dem, np.maximum(dem, nb))
        if np.array_equal(new[valid], w[valid]):
            break
        w = new
    return np.where(valid, w, np.nan)


def reference_accumulation(directions: np.ndarray) -> np.ndarray:
    """Solve (I - A) acc = 1 with A[receiver, donor] = 1: upslope counts by linear algebra."""
    rows, cols = directions.shape
    n = rows * cols
    donors, receivers = [], []
    for r in range(rows):
        for c in range(cols):
            code = directions[r, c]
            if code >= 0:
                dr, dc = OFFSETS[int(code)]
                donors.append(r * cols + c)
                receivers.append((r + dr) * cols + c + dc)
    a = sparse.csc_matrix((np.ones(len(donors)), (receivers, donors)), shape=(n, n))
    acc = spsolve(sparse.identity(n, format="csc") - a, np.ones(n)).reshape(rows, cols)
    return np.where(directions == D8_NODATA, np.nan, acc)


# --------------------------------------------------------------------------------------------
# Pit filling


@pytest.mark.parametrize("seed", range(4))
def test_plain_fill_equals_the_fixed_point_reference(seed):
    dem = random_dem(seed, nan_collar=seed % 2 == 1)
    filled = fill_pits(dem, drain_flats=False)
    want = reference_fill(dem)
    np.testing.assert_array_equal(np.isnan(filled), np.isnan(dem))
    np.testing.assert_array_equal(filled[~np.isnan(dem)], want[~np.isnan(dem)])
    assert (filled[~np.isnan(dem)] > dem[~np.isnan(dem)]).any()  # there were pits to fill


@pytest.mark.parametrize("seed", range(4))
def test_epsilon_fill_drains_every_pixel_and_stays_within_rounding(seed):
    dem = random_dem(seed, nan_collar=seed % 2 == 0)
    filled = fill_pits(dem)
    valid = ~np.isnan(dem)
    assert filled.dtype == np.float64
    assert (filled[valid] >= dem[valid]).all()
    np.testing.assert_allclose(filled[valid], reference_fill(dem)[valid], atol=1e-9)
    directions = d8_flow_directions(filled)
    # with the epsilon fill only the outside has no lower neighbour
    np.testing.assert_array_equal(directions == D8_OUTLET, outside_mask(dem) & (directions < 0))
    assert (directions[valid & ~outside_mask(dem)] >= 0).all()
    np.testing.assert_array_equal(directions == D8_NODATA, ~valid)


def test_unfilled_pit_and_flat_have_no_direction():
    dem = np.full((5, 5), 10.0)
    dem[2, 2] = 5.0  # a pit
    directions = d8_flow_directions(dem)
    assert directions[2, 2] == D8_OUTLET
    # after filling, the pit and the flat drain off the grid
    acc = d8_flow_accumulation(fill_pits(dem))
    assert np.nansum(acc[outside_mask(dem) & (d8_flow_directions(fill_pits(dem)) < 0)]) == 25


# --------------------------------------------------------------------------------------------
# D8 directions and accumulation


@pytest.mark.parametrize(
    ("window", "want"),
    [
        ([[7, 7, 9], [9, 10, 9], [9, 9, 9]], 0),  # N drop 3 beats NW drop 3 / sqrt 2
        ([[7, 9, 9], [9, 10, 9], [9, 9, 9]], 7),  # NW drop 3 / sqrt 2 beats N drop 1
        ([[9, 7, 9], [9, 10, 9], [9, 9, 5]], 3),  # SE drop 5 / sqrt 2 = 3.54 beats N drop 3
        ([[9, 9, 9], [6, 10, 9], [9, 9, 9]], 6),  # W
        ([[9, 9, 9], [9, 10, 9], [9, 7, 7]], 4),  # tie on drop: S (cardinal) wins
        ([[11, 11, 11], [11, 10, 11], [11, 11, 11]], D8_OUTLET),  # a pit
    ],
)
def test_d8_picks_the_steepest_neighbour(window, want):
    dem = np.full((5, 5), 20.0)
    dem[1:4, 1:4] = window
    assert d8_flow_directions(dem)[2, 2] == want


@pytest.mark.parametrize("seed", range(5))
def test_accumulation_equals_the_linear_algebra_reference(seed):
    dem = random_dem(seed, shape=(20, 26), nan_collar=seed % 2 == 1)
    directions = d8_flow_directions(fill_pits(dem))
    acc = d8_flow_accumulation(fill_pits(dem))
    want = reference_accumulation(directions)
    np.testing.assert_array_equal(np.isnan(acc), np.isnan(dem))
    np.testing.assert_allclose(acc, want, rtol=1e-12)
    # every valid pixel ends at exactly one outlet
    assert np.nansum(acc[directions == D8_OUTLET]) == np.sum(~np.isnan(dem))


def test_accumulate_rejects_a_cycle():
    codes = np.array([[2, 6]], dtype=np.int8)  # east <-> west
    with pytest.raises(ValueError, match="cycle"):
        accumulate_d8(codes)


# --------------------------------------------------------------------------------------------
# TWI and rivers on a tilted plane (closed form)


def south_plane(rows=12, cols=7, gradient=0.2):
    r = np.mgrid[0:rows, 0:cols][0].astype(np.float64)
    return 1000.0 - gradient * L * r  # falls to the south (row index grows southwards)


def test_plane_accumulation_counts_the_flow_line():
    dem = south_plane()
    acc = d8_flow_accumulation(fill_pits(dem))
    np.testing.assert_array_equal(acc, np.mgrid[0:12, 0:7][0] + 1.0)


@pytest.mark.parametrize("gradient", [0.05, 0.2, 1.5])
def test_twi_on_a_tilted_plane_equals_its_closed_form(gradient):
    dem = south_plane(gradient=gradient)
    rows = np.mgrid[0:12, 0:7][0]
    want = np.log((rows + 1) * L / gradient)  # a = (r + 1) p^2 / p, tan(slope) = gradient
    np.testing.assert_allclose(twi(dem, L), want, rtol=1e-10)
    east = np.rot90(dem, -1)  # the same plane falling to the west: counts along rows
    np.testing.assert_allclose(twi(east, L), np.rot90(want, -1), rtol=1e-10)


def test_twi_clamps_the_slope_at_a_tenth_of_a_degree():
    acc = np.array([[1.0, 10.0]])
    got = twi_from(acc, np.array([[0.0, 0.05]]), L)
    np.testing.assert_allclose(got, np.log(acc * L / np.tan(np.radians(0.1))))


def test_river_mask_is_the_accumulation_threshold():
    dem = south_plane(rows=40, cols=3)
    # contributing area of row r: (r + 1) * 625 m2; 0.01 km2 = 10,000 m2 -> r + 1 >= 16
    mask = river_mask_from_accumulation(dem, L, threshold_km2=0.01)
    np.testing.assert_array_equal(mask, (np.mgrid[0:40, 0:3][0] + 1) >= 16)
    with pytest.raises(ValueError, match="threshold_km2"):
        river_mask_from_accumulation(dem, L, threshold_km2=0)


# --------------------------------------------------------------------------------------------
# Distance to river


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    density=st.floats(0.005, 0.3),
    pixel=st.sampled_from([1.0, 28.56, 30.0]),
)
def test_distance_equals_brute_force_euclidean_distance(seed, density, pixel):
    rng = np.random.default_rng(seed)
    mask = rng.random((17, 23)) < density
    mask[rng.integers(17), rng.integers(23)] = True
    got = distance_to_river(mask, pixel)
    rr, cc = np.nonzero(mask)
    r, c = np.mgrid[0:17, 0:23]
    want = np.sqrt((r[..., None] - rr) ** 2 + (c[..., None] - cc) ** 2).min(axis=-1) * pixel
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_distance_without_any_river_names_the_fix():
    with pytest.raises(ValueError, match="threshold_km2"):
        distance_to_river(np.zeros((4, 4), bool), L)


# --------------------------------------------------------------------------------------------
# Rasterizing river lines


def test_rasterize_rivers_burns_the_pixels_a_line_crosses():
    transform = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0)
    # row 2 centres from col 1 to col 5; col 7 centres from row 0 to row 3
    lines = [
        LineString([(1015.0, 1975.0), (1055.0, 1975.0)]),
        {"type": "LineString", "coordinates": [(1075.0, 1995.0), (1075.0, 1965.0)]},
        None,
        LineString(),
    ]
    mask = rasterize_rivers(lines, transform, (6, 9))
    want = np.zeros((6, 9), bool)
    want[2, 1:6] = True
    want[0:4, 7] = True
    np.testing.assert_array_equal(mask, want)
    assert not rasterize_rivers([], transform, (6, 9)).any()


@pytest.mark.parametrize("seed", range(3))
def test_rasterize_rivers_all_touched_matches_shapely(seed):
    rng = np.random.default_rng(seed)
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 120.0)
    line = MultiLineString([rng.uniform(1, 119, size=(4, 2)).tolist() for _ in range(2)])
    mask = rasterize_rivers([line], transform, (12, 12))
    crossed = np.zeros((12, 12), bool)
    grazing = np.zeros((12, 12), bool)
    for r in range(12):
        for c in range(12):
            length = line.intersection(box(c * 10, 110 - r * 10, c * 10 + 10, 120 - r * 10)).length
            crossed[r, c] = length > 1e-3
            grazing[r, c] = 0 < length <= 1e-3
    assert crossed.sum() > 10
    np.testing.assert_array_equal(mask[~grazing], crossed[~grazing])
