"""Synthetic terrain: a river network, fractal relief carved into valleys, and its derivatives.

Elevation (m) at map coordinates (x, y):

    z = z0 + s * [ R(x, y) + V * tanh(min(d, d_cap) / L_v) ]

with R a regional fBm plus a ridged multifractal (ridges and valleys), d the distance to the
nearest river line (valley bottoms along the rivers), and the relief scale ``s`` chosen so that
the mean slope of the grid is 30 degrees (:func:`relief_scale_for_mean_slope`). Everything is a
pure function of coordinates, so any window is computed on its own (tile by tile).

The generator's own terrain attributes (slope, Laplacian curvature, a TWI-like wetness, the
downslope direction) use ``np.gradient``; the pipeline's terrain module is independent of this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from .noise import fbm, ridged

Z0_M = 1800.0  # base elevation
VALLEY_RELIEF_M = 700.0  # V: valley side height, before scaling
VALLEY_WIDTH_M = 1200.0  # L_v
DIST_CAP_M = 3000.0  # d_cap: beyond it the valley profile is flat (tanh(2.5) = 0.987)
MAIN_SPACING_M = 6000.0
TRIB_SPACING_M = 2500.0
VERTEX_STEP_M = 250.0


@dataclass(frozen=True)
class RiverNetwork:
    """River polylines (list of (n, 2) arrays, m) and densified points for distance queries."""

    lines: tuple[np.ndarray, ...]
    kinds: tuple[str, ...]
    points: np.ndarray  # (m, 2) points every <= step along all lines

    def geometries(self) -> list:
        return [shapely.LineString(line) for line in self.lines]


def make_river_network(
    bounds: tuple[float, float, float, float], rng: np.random.Generator, point_step_m: float
) -> RiverNetwork:
    """Main rivers flowing north to south every ~6 km, meandering, with tributaries.

    Lines extend ``DIST_CAP_M`` beyond ``bounds`` so the valleys continue past the edges.
    Tributaries leave each main river every ~2.5 km alternately east and west, 1.5-3.5 km long,
    pointing upstream at 30-60 degrees.
    """
    x0, y0, x1, y1 = bounds
    m = DIST_CAP_M
    lines: list[np.ndarray] = []
    kinds: list[str] = []
    xs = np.arange(x0 - m + rng.uniform(0.2, 0.8) * MAIN_SPACING_M, x1 + m, MAIN_SPACING_M)
    for xc in xs:
        xc = xc + rng.uniform(-0.2, 0.2) * MAIN_SPACING_M
        ys = np.arange(y1 + m, y0 - m - VERTEX_STEP_M, -VERTEX_STEP_M)
        ph = rng.uniform(0, 2 * np.pi, 3)
        x = (
            xc
            + 900.0 * np.sin(2 * np.pi * ys / 11000.0 + ph[0])
            + 300.0 * np.sin(2 * np.pi * ys / 3100.0 + ph[1])
            + 120.0 * np.sin(2 * np.pi * ys / 1300.0 + ph[2])
        )
        main = np.column_stack([x, ys])
        lines.append(main)
        kinds.append("main")
        # Tributaries at arc positions along the main river.
        seg = np.hypot(*np.diff(main, axis=0).T)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        pos = rng.uniform(0.2, 1.0) * TRIB_SPACING_M
        side = 1.0 if rng.random() < 0.5 else -1.0
        while pos < arc[-1]:
            i = int(np.searchsorted(arc, pos))
            i = min(max(i, 1), len(main) - 1)
            start = main[i]
            length = rng.uniform(1500.0, 3500.0)
            angle = np.deg2rad(rng.uniform(30.0, 60.0))  # from the east/west axis towards north
            bend = rng.uniform(-0.4, 0.4)
            n = max(int(length / VERTEX_STEP_M), 2)
            s = np.linspace(0.0, length, n + 1)
            theta = angle + bend * s / length
            dx = side * np.cos(theta) * VERTEX_STEP_M * (length / n / VERTEX_STEP_M)
            dy = np.sin(theta) * VERTEX_STEP_M * (length / n / VERTEX_STEP_M)
            trib = start + np.column_stack(
                [
                    np.concatenate([[0.0], np.cumsum(dx[1:])]),
                    np.concatenate([[0.0], np.cumsum(dy[1:])]),
                ]
            )
            lines.append(trib)
            kinds.append("tributary")
            side = -side
            pos += TRIB_SPACING_M * rng.uniform(0.6, 1.4)
    points = np.concatenate([_densify(line, point_step_m) for line in lines])
    return RiverNetwork(tuple(lines), tuple(kinds), points)


def _densify(line: np.ndarray, step: float) -> np.ndarray:
    out = []
    for a, b in zip(line[:-1], line[1:], strict=True):
        n = max(int(np.ceil(np.hypot(*(b - a)) / step)), 1)
        t = np.arange(n)[:, None] / n
        out.append(a + t * (b - a))
    out.append(line[-1:])
    return np.concatenate(out)


def river_distance(
    network: RiverNetwork, x: np.ndarray, y: np.ndarray, cap_m: float = DIST_CAP_M
) -> np.ndarray:
    """Distance (m) from each (x, y) to the nearest river point, capped at ``cap_m``.

    Only river points within ``cap_m`` of the query window are used, and beyond ``cap_m`` the
    value is ``cap_m``: the result is the same whatever window a point is computed in.
    """
    xmin, xmax = float(x.min()) - cap_m, float(x.max()) + cap_m
    ymin, ymax = float(y.min()) - cap_m, float(y.max()) + cap_m
    p = network.points
    sel = (p[:, 0] >= xmin) & (p[:, 0] <= xmax) & (p[:, 1] >= ymin) & (p[:, 1] <= ymax)
    out = np.full(x.shape, cap_m)
    if not sel.any():
        return out
    tree = cKDTree(p[sel])
    d, _ = tree.query(np.column_stack([x.ravel(), y.ravel()]), distance_upper_bound=cap_m)
    d = np.asarray(d).reshape(x.shape)
    return np.where(np.isfinite(d), np.minimum(d, cap_m), cap_m)


def unit_relief(
    x: np.ndarray, y: np.ndarray, dist_m: np.ndarray, key: int, pixel_m: float
) -> np.ndarray:
    """Relief before scaling (m): regional fBm + ridged multifractal + river valleys.

    Octaves stop at about two pixels: finer noise would only alias.
    """
    octaves = max(int(np.floor(np.log2(12000.0 / (2.0 * pixel_m)))) + 1, 1)
    regional = 900.0 * fbm(x, y, 60000.0, 3, key + 1)
    ridges = 1100.0 * ridged(x, y, 12000.0, octaves, key + 2)
    valley = VALLEY_RELIEF_M * np.tanh(np.minimum(dist_m, DIST_CAP_M) / VALLEY_WIDTH_M)
    return regional + ridges + valley


def smooth_elevation(x: np.ndarray, y: np.ndarray, key: int, scale: float) -> np.ndarray:
    """Large-scale elevation (m) for orographic rain: the regional part only."""
    return Z0_M + scale * 900.0 * fbm(x, y, 60000.0, 3, key + 1)


def window_coords(
    origin: tuple[float, float], pixel_m: float, rows: slice, cols: slice
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (m) of fine rows/cols (may extend outside the grid)."""
    r = np.arange(rows.start, rows.stop)
    c = np.arange(cols.start, cols.stop)
    x = origin[0] + (c + 0.5) * pixel_m
    y = origin[1] - (r + 0.5) * pixel_m
    return np.meshgrid(x, y)


@dataclass(frozen=True)
class TerrainWindow:
    """Terrain of a window of fine pixels (without halo): elevation and derivatives."""

    elevation_m: np.ndarray
    slope_deg: np.ndarray
    laplacian_per_m: np.ndarray  # d2z/dx2 + d2z/dy2, 1/m (negative = convex)
    wetness: np.ndarray  # TWI-like, ln(m)
    dist_river_m: np.ndarray  # capped at DIST_CAP_M
    downslope_rad: np.ndarray  # direction of steepest descent, radians from +x (east), CCW


def terrain_window(
    network: RiverNetwork,
    origin: tuple[float, float],
    pixel_m: float,
    rows: slice,
    cols: slice,
    key: int,
    scale: float,
) -> TerrainWindow:
    """Elevation and derivatives on fine ``rows`` x ``cols``; a 2-pixel halo makes them exact."""
    h = 2
    xx, yy = window_coords(
        origin, pixel_m, slice(rows.start - h, rows.stop + h), slice(cols.start - h, cols.stop + h)
    )
    dist = river_distance(network, xx, yy)
    z = Z0_M + scale * unit_relief(xx, yy, dist, key, pixel_m)
    # np.gradient along rows (y decreasing with row) and cols (x increasing).
    dz_dr, dz_dc = (np.asarray(g) for g in np.gradient(z, pixel_m))
    dz_dx, dz_dy = dz_dc, -dz_dr
    d2_dr2 = np.gradient(dz_dr, pixel_m, axis=0)
    d2_dc2 = np.gradient(dz_dc, pixel_m, axis=1)
    core = (slice(h, -h), slice(h, -h))
    grad = np.hypot(dz_dx, dz_dy)[core]
    slope = np.degrees(np.arctan(grad))
    lap = (d2_dr2 + d2_dc2)[core]
    d = dist[core]
    # TWI-like wetness: specific catchment area grows towards the rivers (a proxy for D8
    # accumulation, which is a global pass this generator avoids).
    area_proxy = pixel_m * (1.0 + 200.0 * np.exp(-d / 400.0))
    wet = np.log(area_proxy / np.tan(np.radians(np.maximum(slope, 1.0))))
    down = np.arctan2(-dz_dy[core], -dz_dx[core])
    return TerrainWindow(z[core], slope, lap, wet, d, down)


def landslide_log_weight(t: TerrainWindow) -> np.ndarray:
    """Static part of the landslide log-rate per fine pixel (dimensionless).

    eta_s = 0.09 (min(slope, 55) - 30) - 0.5 tanh(lap / 1e-3 m-1) + 0.15 (wetness - 5)
            - 0.35 min(d, 3 km) / 1 km
    Steep, concave (hollows), wet pixels near rivers fail most.
    """
    return (
        0.09 * (np.minimum(t.slope_deg, 55.0) - 30.0)
        - 0.5 * np.tanh(t.laplacian_per_m / 1e-3)
        + 0.15 * (t.wetness - 5.0)
        - 0.35 * np.minimum(t.dist_river_m, DIST_CAP_M) / 1000.0
    )


def relief_scale_for_mean_slope(
    network: RiverNetwork,
    origin: tuple[float, float],
    pixel_m: float,
    fine_shape: tuple[int, int],
    key: int,
    target_deg: float = 30.0,
    sample_px: int = 256,
) -> float:
    """The relief scale ``s`` giving a mean slope of ``target_deg`` on a central sample window.

    tan(slope) is linear in ``s``, so one gradient sample of the unscaled relief suffices.
    """
    n_r = min(sample_px, fine_shape[0])
    n_c = min(sample_px, fine_shape[1])
    r0 = (fine_shape[0] - n_r) // 2
    c0 = (fine_shape[1] - n_c) // 2
    xx, yy = window_coords(
        origin, pixel_m, slice(r0 - 1, r0 + n_r + 1), slice(c0 - 1, c0 + n_c + 1)
    )
    rel = unit_relief(xx, yy, river_distance(network, xx, yy), key, pixel_m)
    g_r, g_c = np.gradient(rel, pixel_m)
    grad = np.hypot(g_r, g_c)[1:-1, 1:-1]
    target = np.radians(target_deg)
    return float(brentq(lambda s: np.arctan(s * grad).mean() - target, 1e-4, 1e3, xtol=1e-10))
