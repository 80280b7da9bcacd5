"""Local terrain derivatives on the 3 x 3 window: slope, aspect, northness, eastness, curvatures.

Conventions (DESIGN.md section 3):

* The DEM is north-up: row 0 is the northern edge, column 0 the western edge, square pixels of
  ``pixel_size_m`` metres, elevations in metres, NaN = nodata.
* The window is z1..z9 row-major, z1 north-west, z5 the centre. With L = pixel size:
  ``G = (z6 - z4) / 2L`` = dz/dx (x east), ``H = (z2 - z8) / 2L`` = dz/dy (y north),
  ``D = ((z4 + z6)/2 - z5) / L^2`` = z_xx / 2, ``E = ((z2 + z8)/2 - z5) / L^2`` = z_yy / 2,
  ``F = (-z1 + z3 + z7 - z9) / 4L^2`` = z_xy (Zevenbergen & Thorne 1987).
* Slope = atan(sqrt(G^2 + H^2)) in degrees.
* Aspect = compass direction of steepest *descent*, degrees clockwise from north in [0, 360);
  NaN on flats (G = H = 0). Northness = cos(aspect), eastness = sin(aspect), both 0 on flats.
* Profile curvature = -2 (D G^2 + E H^2 + F G H) / (G^2 + H^2) = minus the second derivative of
  the surface along the slope line, in 1/m. **Positive = convex profile** (the slope steepens
  downhill, flow accelerates); negative = concave profile (the slope eases downhill, flow
  decelerates, e.g. a valley floor or toe slope).
* Plan curvature = 2 (D H^2 + E G^2 - F G H) / (G^2 + H^2) = the second derivative of the surface
  along the contour, in 1/m. **Positive = concave across the slope** (a hollow or valley: flow
  converges); negative = convex across the slope (a nose or ridge: flow diverges).
* Both curvatures are 0 on flats. They are the simplified (directional second derivative) forms
  of Zevenbergen & Thorne, without the ``(1 + p^2)^(3/2)`` normal-curvature denominators.

Edge handling (``edge="extrapolate"``, the default): a neighbour that is missing (outside the
array or NaN) is linearly extrapolated through the centre from the opposite neighbour,
``z_missing = 2 z5 - z_opposite``, which turns the central difference into the one-sided one and
keeps every derivative exact on a plane; if both opposite neighbours are missing the derivative
along that axis is 0. A missing corner is taken from the plane through its two edge neighbours
(``z1 = z2 + z4 - z5``). So every valid DEM pixel gets a value, the outer collar of a real DEM
never shows up as a cliff, and the result depends only on the 3 x 3 window - which is what makes
chunked computation with a 1-pixel halo exact. ``edge="nan"`` instead returns NaN wherever any
of the 9 window values is missing.

``curvature_method="heerdegen_beran"`` estimates the second (and, inside the curvature formulas,
first) derivatives from the least-squares quadratic ``z = a x^2 + b y^2 + c xy + d x + e y + f``
fitted to all 9 window values (Heerdegen & Beran 1982; Evans 1979), the method Table 1 of the
paper cites, instead of the Zevenbergen-Thorne partial quartic that passes through all 9. Slope
and aspect are Zevenbergen-Thorne in both cases; units and signs of the curvatures are the same.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError

CurvatureMethod = Literal["zevenbergen_thorne", "heerdegen_beran"]
EdgeMode = Literal["extrapolate", "nan"]


def curvature_method_named(name: str) -> CurvatureMethod:
    """The curvature method called ``name`` (e.g. a CLI option's text); an InputError otherwise."""
    if name == "zevenbergen_thorne":
        return "zevenbergen_thorne"
    if name == "heerdegen_beran":
        return "heerdegen_beran"
    raise InputError(
        f"curvature_method {name!r} unknown; use 'zevenbergen_thorne' or 'heerdegen_beran'"
    )


#: The bands :func:`zevenbergen_thorne` returns, in this order.
LOCAL_BAND_NAMES: tuple[str, ...] = (
    "slope",
    "aspect",
    "northness",
    "eastness",
    "profile_curvature",
    "plan_curvature",
)


def _check_dem(dem: np.ndarray, pixel_size_m: float) -> np.ndarray:
    z = np.asarray(dem, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"the DEM must be a 2-D array (rows, cols), got shape {z.shape}")
    if not np.isfinite(pixel_size_m) or pixel_size_m <= 0:
        raise InputError(f"pixel_size_m must be a positive number of metres, got {pixel_size_m}")
    if np.isinf(z).any():
        raise InputError("the DEM holds +-inf values; mark nodata as NaN")
    return z


def _window(z: np.ndarray, edge: EdgeMode) -> list[np.ndarray]:
    """The 9 window values z1..z9 for every pixel, with missing neighbours filled (see module)."""
    pad = np.pad(z, 1, mode="constant", constant_values=np.nan)
    rows, cols = z.shape

    def shifted(dr: int, dc: int) -> np.ndarray:
        return pad[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]

    # Row-major, z1 = north-west (row - 1, col - 1).
    w = [shifted(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    if edge == "nan":
        return w
    z5 = w[4]
    filled = [a.copy() for a in w]
    # Edge neighbours: z2 (N) <-> z8 (S), z4 (W) <-> z6 (E).
    for a, b in ((1, 7), (7, 1), (3, 5), (5, 3)):
        miss = np.isnan(w[a])
        if miss.any():
            reflected = 2.0 * z5 - w[b]
            filled[a] = np.where(miss, np.where(np.isnan(w[b]), z5, reflected), w[a])
    # Corners from the plane through the two (filled) edge neighbours next to them.
    for corner, (vert, horiz) in ((0, (1, 3)), (2, (1, 5)), (6, (7, 3)), (8, (7, 5))):
        miss = np.isnan(w[corner])
        if miss.any():
            filled[corner] = np.where(miss, filled[vert] + filled[horiz] - z5, w[corner])
    return filled


def _partials_zt(w: list[np.ndarray], length: float):
    z1, z2, z3, z4, z5, z6, z7, z8, z9 = w
    l2 = length * length
    d = ((z4 + z6) / 2.0 - z5) / l2
    e = ((z2 + z8) / 2.0 - z5) / l2
    f = (-z1 + z3 + z7 - z9) / (4.0 * l2)
    g = (z6 - z4) / (2.0 * length)
    h = (z2 - z8) / (2.0 * length)
    return d, e, f, g, h


def _partials_hb(w: list[np.ndarray], length: float):
    """Least-squares quadratic over the 9 window values: D, E, F, G, H in the Z&T sense."""
    z1, z2, z3, z4, z5, z6, z7, z8, z9 = w
    l2 = length * length
    # a = z_xx / 2 and b = z_yy / 2 of the fitted quadratic (Evans 1979).
    a = ((z1 + z3 + z4 + z6 + z7 + z9) / 6.0 - (z2 + z5 + z8) / 3.0) / l2
    b = ((z1 + z2 + z3 + z7 + z8 + z9) / 6.0 - (z4 + z5 + z6) / 3.0) / l2
    c = (-z1 + z3 + z7 - z9) / (4.0 * l2)
    gx = (z3 + z6 + z9 - z1 - z4 - z7) / (6.0 * length)
    gy = (z1 + z2 + z3 - z7 - z8 - z9) / (6.0 * length)
    return a, b, c, gx, gy


def _curvatures(d, e, f, g, h) -> tuple[np.ndarray, np.ndarray]:
    g2, h2 = g * g, h * h
    grad2 = g2 + h2
    flat = grad2 == 0.0
    safe = np.where(flat, 1.0, grad2)
    profile = np.where(flat, 0.0, -2.0 * (d * g2 + e * h2 + f * g * h) / safe)
    plan = np.where(flat, 0.0, 2.0 * (d * h2 + e * g2 - f * g * h) / safe)
    return profile, plan


def zevenbergen_thorne(
    dem: np.ndarray,
    pixel_size_m: float,
    *,
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
    edge: EdgeMode = "extrapolate",
    dtype: type | str = np.float32,
) -> dict[str, np.ndarray]:
    """Slope, aspect, northness, eastness and curvatures of a north-up DEM (see module doc).

    Parameters
    ----------
    dem: (rows, cols) elevations in metres, NaN = nodata; computed internally in float64.
    pixel_size_m: the (square) pixel size in metres.
    curvature_method: ``"zevenbergen_thorne"`` (DESIGN default) or ``"heerdegen_beran"``.
    edge: ``"extrapolate"`` (default; every valid pixel gets a value) or ``"nan"``.
    dtype: output dtype (float32 for the cube; float64 for tests).

    Returns
    -------
    ``{"slope": deg, "aspect": deg clockwise from north (NaN on flats), "northness": 1,
    "eastness": 1, "profile_curvature": 1/m, "plan_curvature": 1/m}``, each (rows, cols), NaN
    where the DEM is NaN.
    """
    if curvature_method not in ("zevenbergen_thorne", "heerdegen_beran"):
        raise InputError(
            f"curvature_method {curvature_method!r} unknown; use 'zevenbergen_thorne' or "
            "'heerdegen_beran'"
        )
    if edge not in ("extrapolate", "nan"):
        raise InputError(f"edge {edge!r} unknown; use 'extrapolate' or 'nan'")
    z = _check_dem(dem, pixel_size_m)
    w = _window(z, edge)
    d, e, f, g, h = _partials_zt(w, float(pixel_size_m))
    grad = np.hypot(g, h)
    slope = np.degrees(np.arctan(grad))
    flat = grad == 0.0
    safe = np.where(flat, 1.0, grad)
    # Steepest descent is -(G, H): its compass azimuth is atan2(east, north) = atan2(-G, -H).
    northness = np.where(flat, 0.0, -h / safe)
    eastness = np.where(flat, 0.0, -g / safe)
    aspect = np.where(flat, np.nan, np.mod(np.degrees(np.arctan2(-g, -h)), 360.0))
    # mod can round 359.99999... up to exactly 360.0
    aspect = np.where(aspect >= 360.0, 0.0, aspect)
    if curvature_method == "heerdegen_beran":
        profile, plan = _curvatures(*_partials_hb(w, float(pixel_size_m)))
    else:
        profile, plan = _curvatures(d, e, f, g, h)
    out = {
        "slope": slope,
        "aspect": aspect,
        "northness": northness,
        "eastness": eastness,
        "profile_curvature": profile,
        "plan_curvature": plan,
    }
    invalid = np.isnan(z)
    if edge == "nan":
        invalid = invalid | np.isnan(g) | np.isnan(h) | np.isnan(d) | np.isnan(e) | np.isnan(f)
    for name, band in out.items():
        band = np.asarray(band, dtype=dtype)
        band[invalid] = np.nan
        out[name] = band
    return out


def slope(dem: np.ndarray, pixel_size_m: float, **kwargs) -> np.ndarray:
    """Zevenbergen-Thorne slope in degrees (see :func:`zevenbergen_thorne`)."""
    return zevenbergen_thorne(dem, pixel_size_m, **kwargs)["slope"]


def aspect(dem: np.ndarray, pixel_size_m: float, **kwargs) -> np.ndarray:
    """Aspect in degrees clockwise from north (direction of steepest descent), NaN on flats."""
    return zevenbergen_thorne(dem, pixel_size_m, **kwargs)["aspect"]


def northness_eastness(
    dem: np.ndarray, pixel_size_m: float, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """(cos(aspect), sin(aspect)), both 0 on flats."""
    bands = zevenbergen_thorne(dem, pixel_size_m, **kwargs)
    return bands["northness"], bands["eastness"]


def curvatures(dem: np.ndarray, pixel_size_m: float, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(profile curvature, plan curvature) in 1/m; signs as in the module doc."""
    bands = zevenbergen_thorne(dem, pixel_size_m, **kwargs)
    return bands["profile_curvature"], bands["plan_curvature"]
