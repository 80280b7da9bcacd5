"""Oracle tests of the generator's fields: noise, terrain, rivers, rupture distance, GMPE."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.synthetic.noise import fbm, gaussian_field, gradient_noise, ridged
from landslide_hazard.synthetic.rain import monsoon_bump
from landslide_hazard.synthetic.shaking import Rupture, ft90_ln_pga_g, rupture_distance_m
from landslide_hazard.synthetic.spec import monsoons_ended, slug
from landslide_hazard.synthetic.terrain import (
    make_river_network,
    relief_scale_for_mean_slope,
    river_distance,
    terrain_window,
)


def test_gradient_noise_is_zero_on_lattice_and_window_independent():
    u, v = np.meshgrid(np.arange(-5, 6, dtype=float), np.arange(-3, 4, dtype=float))
    assert np.all(gradient_noise(u, v, key=11) == 0.0)
    x, y = np.meshgrid(np.linspace(0, 9000, 301), np.linspace(0, 7000, 201))
    full = fbm(x, y, 3000.0, 5, key=3)
    part = fbm(x[50:90, 100:170], y[50:90, 100:170], 3000.0, 5, key=3)
    assert np.array_equal(full[50:90, 100:170], part)
    r = ridged(x, y, 3000.0, 5, key=4)
    assert r.min() >= 0 and r.max() < 2.0
    assert not np.array_equal(fbm(x, y, 3000.0, 5, key=4), full)


def test_gaussian_field_variance_and_correlation():
    rng = np.random.default_rng(0)
    fields = gaussian_field((64, 96), 6.0, rng, n=60)
    assert abs(fields.std() - 1.0) < 0.05
    assert abs(fields.mean()) < 0.1
    # squared-exponential correlation exp(-r2 / (2 L2)) at r = L and r = 2 L
    for lag, expect in ((6, np.exp(-0.5)), (12, np.exp(-2.0))):
        c = np.corrcoef(fields[:, :, :-lag].ravel(), fields[:, :, lag:].ravel())[0, 1]
        assert abs(c - expect) < 0.05
    again = gaussian_field((64, 96), 6.0, np.random.default_rng(0), n=60)
    assert np.array_equal(fields, again)


def test_river_distance_matches_brute_force_and_cap():
    bounds = (0.0, 0.0, 12000.0, 12000.0)
    net = make_river_network(bounds, np.random.default_rng(2), 20.0)
    x, y = np.meshgrid(np.linspace(500, 11500, 23), np.linspace(500, 11500, 19))
    d = river_distance(net, x, y, cap_m=1500.0)
    brute = np.sqrt(
        ((np.stack([x.ravel(), y.ravel()], 1)[:, None, :] - net.points[None]) ** 2).sum(-1)
    ).min(1)
    assert np.allclose(d.ravel(), np.minimum(brute, 1500.0))
    # river points are within half a step of the polylines they densify
    import shapely

    lines = shapely.MultiLineString(net.geometries())
    pts = shapely.points(x.ravel(), y.ravel())
    exact = shapely.distance(pts, lines)
    near = exact < 1400
    assert np.all(np.abs(exact[near] - d.ravel()[near]) <= 10.0 + 1e-9)


def test_terrain_windows_agree_and_mean_slope_is_calibrated():
    origin, p = (100000.0, 200000.0), 100.0
    bounds = (origin[0], origin[1] - 12800, origin[0] + 12800, origin[1])
    net = make_river_network(bounds, np.random.default_rng(5), p / 2)
    s = relief_scale_for_mean_slope(net, origin, p, (128, 128), key=9, sample_px=128)
    whole = terrain_window(net, origin, p, slice(0, 128), slice(0, 128), 9, s)
    part = terrain_window(net, origin, p, slice(32, 96), slice(64, 128), 9, s)
    assert np.array_equal(whole.elevation_m[32:96, 64:128], part.elevation_m)
    assert np.allclose(whole.slope_deg[32:96, 64:128], part.slope_deg, rtol=0, atol=1e-9)
    assert (
        abs(whole.slope_deg.mean() - 30.0) < 0.6
    )  # sample window = whole grid up to the edge rows
    assert whole.elevation_m.max() - whole.elevation_m.min() > 1000.0
    # a tilted plane has slope atan(gradient): check the generator's slope formula on one
    from landslide_hazard.synthetic import terrain as T

    z = 0.5 * np.arange(10)[None, :] * p + 0 * np.arange(8)[:, None]
    g_r, g_c = np.gradient(z, p)
    assert np.allclose(np.degrees(np.arctan(np.hypot(g_r, g_c))), np.degrees(np.arctan(0.5)))
    assert T.DIST_CAP_M > T.VALLEY_WIDTH_M


def _brute_rupture_distance(r: Rupture, x: float, y: float, n: int = 600) -> float:
    along, down, _ = r.axes()
    s = np.linspace(-r.length_m / 2, r.length_m / 2, n)
    w = np.linspace(0, r.width_m, n)
    S, W = np.meshgrid(s, w)
    px = r.top_centre[0] + S * along[0] + W * down[0]
    py = r.top_centre[1] + S * along[1] + W * down[1]
    pz = r.top_depth_m + S * along[2] + W * down[2]
    return float(np.sqrt((px - x) ** 2 + (py - y) ** 2 + pz**2).min())


@pytest.mark.parametrize(
    "xy", [(0.0, 0.0), (30000.0, 20000.0), (-80000.0, 5000.0), (10000.0, -40000.0)]
)
def test_rupture_distance_matches_brute_force(xy):
    r = Rupture((0.0, 0.0), 100000.0, 50000.0, 292.0, 10.0, 6000.0)
    got = float(rupture_distance_m(r, np.array(xy[0]), np.array(xy[1])))
    want = _brute_rupture_distance(r, *xy)
    # brute force on a 600 x 600 lattice overestimates by at most half a diagonal step
    assert want - 150.0 <= got <= want + 1e-6
    assert got >= 0


def test_rupture_distance_above_the_plane_is_the_normal_distance():
    r = Rupture((0.0, 0.0), 100000.0, 50000.0, 90.0, 30.0, 5000.0)  # strike east, dips south
    # a point above the middle of the plane, 20 km down dip horizontally
    y = -20000.0 * np.cos(np.radians(30.0))
    depth = 5000.0 + 20000.0 * np.sin(np.radians(30.0))
    got = float(rupture_distance_m(r, np.array(0.0), np.array(y)))
    assert got == pytest.approx(depth * np.cos(np.radians(30.0)), rel=1e-9)


def test_fukushima_tanaka_hand_values():
    # M 7.8, R = 0: log10 A = 3.198 - (log10 0.032 + 3.198) + 1.30 = 2.79485 -> 623.5 cm/s2
    a0 = 10 ** (3.198 - np.log10(0.032 * 10**3.198) + 1.30)
    assert np.exp(ft90_ln_pga_g(7.8, np.array(0.0))) == pytest.approx(a0 / 980.665, rel=1e-12)
    assert a0 == pytest.approx(623.5, rel=1e-3)
    # R = 50 km: 3.198 - log10(50 + 50.48) - 0.17 + 1.30
    a50 = 10 ** (3.198 - np.log10(50 + 0.032 * 10**3.198) - 0.17 + 1.30)
    assert np.exp(ft90_ln_pga_g(7.8, np.array(50.0))) == pytest.approx(a50 / 980.665, rel=1e-12)
    assert 0.15 < a50 / 980.665 < 0.3


def test_calendar_helpers():
    import datetime as dt

    eq = dt.date(2015, 4, 25)
    ends = [
        "2015-06-15",
        "2015-11-15",
        "2016-04-15",
        "2016-11-15",
        "2017-04-15",
        "2017-11-15",
        "2018-04-15",
        "2018-11-15",
    ]
    got = [monsoons_ended(eq, dt.date.fromisoformat(d)) for d in ends]
    assert got == [0, 1, 1, 2, 2, 3, 3, 4]  # the paper's code (DESIGN.md section 3)
    assert slug("Post-monsoon 2015") == "post-monsoon_2015"
    bump = monsoon_bump([dt.date(2015, 1, 15), dt.date(2015, 7, 29), dt.date(2015, 11, 1)])
    assert bump[0] == 0 and bump[2] == 0 and bump[1] > 0.95
