"""Landslides of the synthetic scenario: rates, areas, polygons, and the exact truth.

Per cell c and period t, the number of new landslides is Poisson(lambda_ct) and their areas are
i.i.d. from a truncated inverse-gamma law (Malamud et al. 2004's landslide-area law without
the shift) with a per-period scale. Each landslide is an irregular ellipse placed wholly inside
its cell, at a pixel drawn in proportion to the pixel's static rate weight, elongated down the
slope, and not overlapping any earlier (or same-period) failure. Cumulative inventories only
grow, so the pipeline's new density max(0, cum_t - cum_{t-1}) (exact polygon area per cell)
is exactly the summed area of the period's landslides, and

    P(D > 0) = 1 - exp(-lambda),   E[D] = lambda * E[A] * 100 / cell_area,
    E[D | D > 0] = E[D] / P(D > 0).

A landslide that cannot be placed (after ``MAX_TRIES`` positions) is carved out of the free space
of its cell with exactly its area (to 1e-6 m2), which keeps the truth exact; only a full cell
would lose area, and that area is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.special import gammainc, gammaincinv

MAX_TRIES = 25
CARVE_TOL_M2 = 1e-6
N_VERTICES = 16
EDGE_MARGIN_M = 0.01


@dataclass(frozen=True)
class AreaLaw:
    """Inverse-gamma landslide area (m2), shape ``rho``, scale ``theta``, truncated to [lo, hi].

    X = theta / G with G ~ Gamma(rho, 1), so P(X <= x) = 1 - P(G < theta/x).
    """

    rho: float
    theta_m2: float
    lo_m2: float
    hi_m2: float

    def _g_bounds(self) -> tuple[float, float]:
        return self.theta_m2 / self.hi_m2, self.theta_m2 / self.lo_m2

    def mean(self) -> float:
        """E[X | lo <= X <= hi] (m2), see :func:`truncated_inverse_gamma_mean`."""
        return float(truncated_inverse_gamma_mean(self.rho, self.theta_m2, self.lo_m2, self.hi_m2))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        g1, g2 = self._g_bounds()
        x = np.clip(np.asarray(x, dtype=float), self.lo_m2, self.hi_m2)
        p = gammainc(self.rho, g2) - gammainc(self.rho, g1)
        return np.asarray((gammainc(self.rho, g2) - gammainc(self.rho, self.theta_m2 / x)) / p)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        g1, g2 = self._g_bounds()
        u = rng.uniform(gammainc(self.rho, g1), gammainc(self.rho, g2), n)
        return np.asarray(np.clip(self.theta_m2 / gammaincinv(self.rho, u), self.lo_m2, self.hi_m2))


def truncated_inverse_gamma_mean(
    rho: float, theta_m2: np.ndarray | float, lo_m2: float, hi_m2: float
) -> np.ndarray:
    """E[X | lo <= X <= hi] for X = theta / G, G ~ Gamma(rho, 1), rho > 1, in closed form:

    theta / (rho - 1) * P(G' in [g1, g2]) / P(G in [g1, g2]), G' ~ Gamma(rho - 1, 1),
    g1 = theta / hi, g2 = theta / lo. Vectorised over ``theta_m2``.
    """
    theta = np.asarray(theta_m2, dtype=float)
    g1, g2 = theta / hi_m2, theta / lo_m2
    p = gammainc(rho, g2) - gammainc(rho, g1)
    q = gammainc(rho - 1.0, g2) - gammainc(rho - 1.0, g1)
    return theta / (rho - 1.0) * q / p


def saturating_rate(raw_rate: np.ndarray, max_rate: float) -> np.ndarray:
    """lambda = L (1 - exp(-raw / L)): about ``raw`` when small, never above L (landslides per
    cell and period), so no cell is asked for more failures than it can hold."""
    return -max_rate * np.expm1(-np.asarray(raw_rate, dtype=float) / max_rate)


def truth_from_rates(
    rate: np.ndarray, mean_area_m2: np.ndarray, cell_area_m2: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(D>0), E[D | D>0] in %, E[D] in %) from Poisson rates and mean landslide areas.

    ``mean_area_m2`` broadcasts against ``rate`` (e.g. shape (period, 1, 1)). E[D | D>0] is NaN
    where the rate is 0.
    """
    rate = np.asarray(rate, dtype=float)
    p = -np.expm1(-rate)
    expected = rate * mean_area_m2 * 100.0 / cell_area_m2
    with np.errstate(invalid="ignore", divide="ignore"):
        conditional = np.where(p > 0, expected / p, np.nan)
    return p, conditional, expected


_PHI = np.linspace(0.0, 2 * np.pi, N_VERTICES, endpoint=False)
_HARMONICS = np.arange(2, 5)[:, None] * _PHI[None, :]  # (3, N): k phi for k = 2..4
_NEXT = np.roll(np.arange(N_VERTICES), -1)
UNIFORM_AFTER = 10  # tries by rate weight before falling back to uniform positions


def ellipse_coords(
    area_m2: float,
    centre: tuple[float, float],
    angle_rad: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(N_VERTICES, 2) ring of an irregular ellipse of exactly ``area_m2``, long axis at ``angle``.

    Radius 1 + sum_k c_k cos(k phi + psi_k), k = 2..4, c_k ~ U(0, 0.12): star-shaped, so simple.
    Axis ratio ~ U(1.5, 3.5) (landslides are longer down the slope than across).
    """
    c = rng.uniform(0.0, 0.12, 3)
    psi = rng.uniform(0.0, 2 * np.pi, 3)
    ratio = rng.uniform(1.5, 3.5)
    r = 1.0 + c @ np.cos(_HARMONICS + psi[:, None])
    sq = np.sqrt(ratio)
    u = r * np.cos(_PHI) * sq
    v = r * np.sin(_PHI) / sq
    ca, sa = np.cos(angle_rad), np.sin(angle_rad)
    x = u * ca - v * sa
    y = u * sa + v * ca
    shoelace = 0.5 * float(x @ y[_NEXT] - x[_NEXT] @ y)
    k = np.sqrt(area_m2 / shoelace)
    out = np.empty((N_VERTICES, 2))
    out[:, 0] = centre[0] + k * x
    out[:, 1] = centre[1] + k * y
    return out


@dataclass
class CellPlacer:
    """Places landslides in one cell; keeps the cell's polygons so far (all periods).

    ``weights``: (k, k) static rate weights of the cell's pixels (row 0 = north);
    ``downslope_rad``: (k, k) direction of steepest descent; ``box``: (x0, y0, x1, y1).
    A position is drawn by weight for the first ``UNIFORM_AFTER`` tries, then uniformly (a
    crowded cell's free space is often away from its steepest pixels).
    """

    box: tuple[float, float, float, float]
    pixel_m: float
    weights: np.ndarray
    downslope_rad: np.ndarray
    polygons: list

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=float).ravel()
        self._cum = np.cumsum(w / w.sum())
        self._k = self.weights.shape[1]
        self._bounds = np.array([shapely.bounds(p) for p in self.polygons]).reshape(-1, 4)
        self.lost_m2 = 0.0

    def _try(self, area: float, rng: np.random.Generator, uniform: bool):
        if uniform:
            i = int(rng.integers(self._cum.size))
        else:
            i = min(int(np.searchsorted(self._cum, rng.random(), side="right")), self._cum.size - 1)
        row, col = divmod(i, self._k)
        x0, y0, x1, y1 = self.box
        cx = x0 + (col + rng.random()) * self.pixel_m
        cy = y1 - (row + rng.random()) * self.pixel_m
        angle = float(self.downslope_rad.flat[i]) + rng.normal(0.0, 0.3)
        ring = ellipse_coords(area, (cx, cy), angle, rng)
        m = EDGE_MARGIN_M
        bx0, by0 = ring.min(axis=0)
        bx1, by1 = ring.max(axis=0)
        if bx0 < x0 + m or bx1 > x1 - m or by0 < y0 + m or by1 > y1 - m:
            return None
        b = self._bounds
        near = (b[:, 0] <= bx1) & (b[:, 2] >= bx0) & (b[:, 1] <= by1) & (b[:, 3] >= by0)
        poly = shapely.Polygon(ring)
        if near.any():
            others = [self.polygons[j] for j in np.flatnonzero(near)]
            if shapely.intersects(poly, others).any():
                return None
        return poly, (bx0, by0, bx1, by1)

    def _add(self, poly) -> None:
        self.polygons.append(poly)
        self._bounds = np.vstack([self._bounds, shapely.bounds(poly)])

    def _carve(self, area: float, rng: np.random.Generator) -> list:
        """Cut ``area`` (m2) out of the cell's free space: the free part nearest a random free
        point, grown as a disc until its area is ``area`` (bisection). Pieces touch earlier
        polygons but never overlap them; only a full cell loses area (``lost_m2``)."""
        x0, y0, x1, y1 = self.box
        m = EDGE_MARGIN_M
        free: shapely.Geometry = shapely.box(x0 + m, y0 + m, x1 - m, y1 - m)
        if self.polygons:
            free = shapely.difference(free, shapely.union_all(self.polygons))
        parts = sorted(
            (g for g in shapely.get_parts(free) if g.geom_type == "Polygon" and g.area > 0),
            key=lambda g: -g.area,
        )
        pieces, remaining = [], area
        for part in parts:
            if remaining <= CARVE_TOL_M2:
                break
            if part.area <= remaining:
                take = part
            else:
                bx0, by0, bx1, by1 = part.bounds
                centre = None
                for _ in range(50):
                    q = shapely.Point(rng.uniform(bx0, bx1), rng.uniform(by0, by1))
                    if part.contains(q):
                        centre = q
                        break
                centre = centre or part.representative_point()
                lo, hi = 0.0, float(np.hypot(bx1 - bx0, by1 - by0))
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    if (
                        shapely.intersection(part, centre.buffer(mid, quad_segs=16)).area
                        < remaining
                    ):
                        lo = mid
                    else:
                        hi = mid
                take = shapely.intersection(part, centre.buffer(hi, quad_segs=16))
            for piece in shapely.get_parts(take):
                if piece.geom_type == "Polygon" and piece.area > 0:
                    pieces.append(piece)
                    self._add(piece)
            remaining -= take.area
        if remaining > CARVE_TOL_M2:
            self.lost_m2 += remaining
        return pieces

    def place(self, areas: np.ndarray, rng: np.random.Generator) -> list:
        """Place landslides of ``areas`` (m2), largest first; return the new polygons.

        A landslide that does not fit in ``MAX_TRIES`` positions is carved out of the free
        space instead (:meth:`_carve`), so the placed area always equals the drawn area unless
        the cell is full.
        """
        placed = []
        for area in sorted((float(a) for a in areas), reverse=True):
            found = None
            for attempt in range(MAX_TRIES):
                found = self._try(area, rng, uniform=attempt >= UNIFORM_AFTER)
                if found is not None:
                    break
            if found is not None:
                self._add(found[0])
                placed.append(found[0])
            else:
                placed.extend(self._carve(area, rng))
        return placed


def draw_counts_and_areas(
    rates: np.ndarray, laws: list[AreaLaw], rng: np.random.Generator
) -> list[np.ndarray]:
    """For one cell: per period, the areas (m2) of Poisson(rate_t) landslides."""
    out = []
    for rate, law in zip(rates, laws, strict=True):
        n = int(rng.poisson(rate))
        out.append(law.sample(n, rng) if n else np.zeros(0))
    return out
