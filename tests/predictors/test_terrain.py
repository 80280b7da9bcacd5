"""Oracle and property tests of the 3 x 3 terrain derivatives (predictors/terrain.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from landslide_hazard.predictors.terrain import (
    LOCAL_BAND_NAMES,
    aspect,
    curvatures,
    northness_eastness,
    slope,
    zevenbergen_thorne,
)

L = 30.0  # pixel size (m)


def coords(rows: int, cols: int, pixel: float = L, x0: float = 0.0, y0: float = 0.0):
    """x east and y north (m) of pixel centres of a north-up grid (row 0 = north)."""
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return x0 + c * pixel, y0 - r * pixel


def zt(dem, pixel=L, **kw):
    return zevenbergen_thorne(dem, pixel, dtype=np.float64, **kw)


# --------------------------------------------------------------------------------------------
# Plane: exact slope and aspect everywhere (edges included), zero curvature.


@pytest.mark.parametrize(
    ("a", "b", "want_aspect"),
    [
        (0.0, 0.5, 180.0),  # rises to the north = falls to the south: faces south
        (0.0, -0.5, 0.0),  # falls to the north
        (0.3, 0.0, 270.0),  # rises to the east: faces west
        (-0.3, 0.0, 90.0),
        (-0.2, -0.2, 45.0),  # falls to the north-east
        (0.2, 0.2, 225.0),  # falls to the south-west
        (0.7, 1.3, None),
    ],
)
def test_plane_has_exact_slope_aspect_and_zero_curvature(a, b, want_aspect):
    x, y = coords(9, 11)
    dem = 1500.0 + a * x + b * y
    out = zt(dem)
    want_slope = np.degrees(np.arctan(np.hypot(a, b)))
    if want_aspect is None:
        want_aspect = np.degrees(np.arctan2(-a, -b)) % 360.0
    np.testing.assert_allclose(out["slope"], want_slope, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(out["aspect"], want_aspect, atol=1e-7)
    np.testing.assert_allclose(out["northness"], np.cos(np.radians(want_aspect)), atol=1e-9)
    np.testing.assert_allclose(out["eastness"], np.sin(np.radians(want_aspect)), atol=1e-9)
    np.testing.assert_allclose(out["profile_curvature"], 0.0, atol=1e-12)
    np.testing.assert_allclose(out["plan_curvature"], 0.0, atol=1e-12)


def test_plane_stays_exact_next_to_nodata_and_edge_nan_mode_masks_the_rim():
    x, y = coords(12, 12)
    dem = 800.0 + 0.4 * x - 0.9 * y
    dem[:3, :5] = np.nan  # a ragged collar
    dem[:, 0] = np.nan
    dem[7, 1] = np.nan
    valid = ~np.isnan(dem)
    out = zt(dem)
    want = np.degrees(np.arctan(np.hypot(0.4, 0.9)))
    np.testing.assert_allclose(out["slope"][valid], want, rtol=1e-10)
    assert np.isnan(out["slope"][~valid]).all()
    np.testing.assert_allclose(out["plan_curvature"][valid], 0.0, atol=1e-12)
    strict = zt(dem, edge="nan")
    # a pixel is kept only if its whole window is valid
    from scipy import ndimage

    full = ndimage.binary_erosion(valid, np.ones((3, 3), bool), border_value=0)
    np.testing.assert_array_equal(np.isfinite(strict["slope"]), full)
    np.testing.assert_allclose(strict["slope"][full], want, rtol=1e-10)


def test_flat_has_nan_aspect_and_zero_northness_eastness_and_curvature():
    out = zt(np.full((5, 6), 1234.0))
    assert np.isnan(out["aspect"]).all()
    for name in ("slope", "northness", "eastness", "profile_curvature", "plan_curvature"):
        np.testing.assert_array_equal(out[name], 0.0)


# --------------------------------------------------------------------------------------------
# Quadratics: both estimators are exact for them, so the closed form holds to rounding.


def quadratic_closed_form(a, b, c, d, e, x, y):
    """Slope (deg), profile and plan curvature of z = a x2 + b y2 + c xy + d x + e y."""
    zx, zy = 2 * a * x + c * y + d, 2 * b * y + c * x + e
    zxx, zyy, zxy = 2 * a, 2 * b, c
    g2 = zx**2 + zy**2
    profile = -(zxx * zx**2 + zyy * zy**2 + 2 * zxy * zx * zy) / g2
    plan = (zxx * zy**2 + zyy * zx**2 - 2 * zxy * zx * zy) / g2
    return np.degrees(np.arctan(np.sqrt(g2))), profile, plan


@pytest.mark.parametrize("method", ["zevenbergen_thorne", "heerdegen_beran"])
@pytest.mark.parametrize(
    "coef",
    [
        (2e-4, 5e-4, 0.0, 0.0, 0.0),  # paraboloid z = a x2 + b y2, off-centre on the grid
        (-3e-4, 1e-4, 2e-4, 0.1, -0.2),  # a general quadratic (exercises F = z_xy)
    ],
)
def test_quadratic_curvatures_equal_closed_form(method, coef):
    a, b, c, d, e = coef
    x, y = coords(15, 17, x0=75.0, y0=400.0)
    dem = a * x**2 + b * y**2 + c * x * y + d * x + e * y + 2000.0
    out = zt(dem, curvature_method=method)
    want_slope, want_profile, want_plan = quadratic_closed_form(a, b, c, d, e, x, y)
    inner = (slice(1, -1), slice(1, -1))
    ok = np.hypot(2 * a * x + c * y + d, 2 * b * y + c * x + e)[inner] > 1e-3
    assert ok.mean() > 0.9
    np.testing.assert_allclose(out["slope"][inner], want_slope[inner], rtol=1e-9)
    scale = max(abs(a), abs(b), abs(c))
    np.testing.assert_allclose(
        out["profile_curvature"][inner][ok], want_profile[inner][ok], atol=1e-9 * scale
    )
    np.testing.assert_allclose(
        out["plan_curvature"][inner][ok], want_plan[inner][ok], atol=1e-9 * scale
    )


def test_curvature_signs_mean_what_the_docs_say():
    x, y = coords(9, 9, x0=-120.0, y0=120.0)  # centre pixel (4, 4) at x = y = 0
    k = 1e-3
    falls_south = 0.5 * y  # higher in the north: the slope line runs north -> south
    valley = zt(k * x**2 + falls_south)  # concave across the slope: flow converges
    ridge = zt(-k * x**2 + falls_south)  # convex across the slope: flow diverges
    steepening = zt(falls_south - k * y**2)  # gradient grows downhill: convex profile
    easing = zt(falls_south + k * y**2)  # gradient shrinks downhill: concave profile
    c = (4, 4)
    assert valley["aspect"][c] == pytest.approx(180.0)
    assert valley["plan_curvature"][c] == pytest.approx(2 * k)
    assert ridge["plan_curvature"][c] == pytest.approx(-2 * k)
    assert valley["profile_curvature"][c] == pytest.approx(0.0, abs=1e-12)
    assert steepening["profile_curvature"][c] == pytest.approx(2 * k)
    assert easing["profile_curvature"][c] == pytest.approx(-2 * k)
    assert steepening["plan_curvature"][c] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# A sinusoid: curvatures converge to the closed form (discretisation error ~ (k L)^2).


@pytest.mark.parametrize(
    ("method", "rtol"), [("zevenbergen_thorne", 0.01), ("heerdegen_beran", 0.012)]
)
def test_sinusoid_curvatures_match_closed_form_within_discretisation(method, rtol):
    amp, wave_x, wave_y, tilt = 40.0, 60 * L, 45 * L, 0.3
    kx, ky = 2 * np.pi / wave_x, 2 * np.pi / wave_y
    x, y = coords(70, 80)
    dem = amp * np.sin(kx * x) * np.cos(ky * y) + tilt * x + 0.1 * y
    zx = amp * kx * np.cos(kx * x) * np.cos(ky * y) + tilt
    zy = -amp * ky * np.sin(kx * x) * np.sin(ky * y) + 0.1
    zxx = -amp * kx**2 * np.sin(kx * x) * np.cos(ky * y)
    zyy = -amp * ky**2 * np.sin(kx * x) * np.cos(ky * y)
    zxy = -amp * kx * ky * np.cos(kx * x) * np.sin(ky * y)
    g2 = zx**2 + zy**2
    want_profile = -(zxx * zx**2 + zyy * zy**2 + 2 * zxy * zx * zy) / g2
    want_plan = (zxx * zy**2 + zyy * zx**2 - 2 * zxy * zx * zy) / g2
    out = zt(dem, curvature_method=method)
    inner = (slice(1, -1), slice(1, -1))
    scale = amp * max(kx, ky) ** 2
    for name, want in (("profile_curvature", want_profile), ("plan_curvature", want_plan)):
        err = np.abs(out[name][inner] - want[inner]).max()
        assert err < rtol * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g}"
    np.testing.assert_allclose(
        np.tan(np.radians(out["slope"][inner])), np.sqrt(g2)[inner], rtol=0.005
    )


def test_sinusoid_error_shrinks_with_resolution():
    """Halving the pixel size cuts the curvature error about 4-fold (second-order scheme)."""
    errors = []
    for pixel in (40.0, 20.0):
        n = int(round(3000 / pixel))
        x, y = coords(n, n, pixel=pixel)
        k = 2 * np.pi / 1500.0
        dem = 30 * np.sin(k * x) + 0.2 * y
        want_profile = -(-30 * k**2 * np.sin(k * x) * (30 * k * np.cos(k * x)) ** 2) / (
            (30 * k * np.cos(k * x)) ** 2 + 0.04
        )
        out = zt(dem, pixel=pixel)
        errors.append(np.abs(out["profile_curvature"] - want_profile)[2:-2, 2:-2].max())
    assert 3.0 < errors[0] / errors[1] < 5.0


# --------------------------------------------------------------------------------------------
# Properties (integer DEMs keep the arithmetic exact).

dems = arrays(
    np.float64,
    st.tuples(st.integers(3, 9), st.integers(3, 9)),
    elements=st.integers(0, 3000).map(float),
)


@settings(max_examples=60, deadline=None)
@given(dem=dems)
def test_rotating_the_dem_rotates_aspect(dem):
    base = zt(dem)
    rot = zt(np.rot90(dem))  # counter-clockwise: what faced east now faces north
    turn = lambda a: np.rot90(a)  # noqa: E731
    np.testing.assert_allclose(rot["slope"], turn(base["slope"]), atol=1e-9)
    want_aspect = np.mod(turn(base["aspect"]) - 90.0, 360.0)
    diff = np.abs(np.mod(rot["aspect"] - want_aspect + 180.0, 360.0) - 180.0)
    assert np.all((diff < 1e-7) | (np.isnan(rot["aspect"]) & np.isnan(want_aspect)))
    np.testing.assert_allclose(rot["northness"], turn(base["eastness"]), atol=1e-12)
    np.testing.assert_allclose(rot["eastness"], -turn(base["northness"]), atol=1e-12)
    for name in ("profile_curvature", "plan_curvature"):
        np.testing.assert_allclose(rot[name], turn(base[name]), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(dem=dems, offset=st.integers(-2000, 6000))
def test_adding_a_constant_changes_no_derivative(dem, offset):
    base, shifted = zt(dem), zt(dem + offset)
    for name in LOCAL_BAND_NAMES:
        np.testing.assert_allclose(shifted[name], base[name], atol=1e-9, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(dem=dems, scale=st.sampled_from([0.5, 2.0, 3.0, 10.0]))
def test_scaling_the_pixel_size_divides_tan_slope(dem, scale):
    base, coarse = zt(dem, pixel=L), zt(dem, pixel=L * scale)
    np.testing.assert_allclose(
        np.tan(np.radians(coarse["slope"])), np.tan(np.radians(base["slope"])) / scale, rtol=1e-9
    )
    # aspect is scale-free, curvatures scale with 1 / s^2
    np.testing.assert_allclose(coarse["northness"], base["northness"], atol=1e-12)
    np.testing.assert_allclose(
        coarse["plan_curvature"], base["plan_curvature"] / scale**2, atol=1e-12
    )


# --------------------------------------------------------------------------------------------
# Wrappers, dtypes and errors.


def test_wrappers_and_float32_output_agree_with_the_dict():
    x, y = coords(6, 7)
    dem = 0.001 * x**2 - 0.3 * y
    full = zt(dem)
    np.testing.assert_allclose(slope(dem, L), full["slope"], rtol=1e-6)
    np.testing.assert_allclose(aspect(dem, L), full["aspect"], rtol=1e-6)
    north, east = northness_eastness(dem, L)
    np.testing.assert_allclose(north, full["northness"], atol=1e-6)
    np.testing.assert_allclose(east, full["eastness"], atol=1e-6)
    profile, plan = curvatures(dem, L)
    np.testing.assert_allclose(plan, full["plan_curvature"], rtol=1e-5)
    np.testing.assert_allclose(profile, full["profile_curvature"], atol=1e-9)
    assert slope(dem, L).dtype == np.float32


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((2, 3, 3)), 30.0), {}, "2-D"),
        ((np.zeros((3, 3)), 0.0), {}, "pixel_size_m"),
        ((np.zeros((3, 3)), 30.0), {"curvature_method": "evans"}, "curvature_method"),
        ((np.zeros((3, 3)), 30.0), {"edge": "wrap"}, "edge"),
        ((np.array([[0.0, np.inf], [1.0, 2.0]]), 30.0), {}, "inf"),
    ],
)
def test_bad_input_raises_a_clear_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zevenbergen_thorne(*args, **kwargs)
