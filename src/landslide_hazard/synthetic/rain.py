"""Synthetic daily rain (mm/day) on a coarse, CHIRPS-like grid.

For day d and pixel x:

    m(d)   = 1.6 + 11.5 b(d)              climatological mean, mm/day (b: monsoon bump 0..1,
                                          May 20 - Oct 7, peak July 29)
    p(d)   = 0.12 + 0.78 b(d)             wet-day probability
    wet    = U_occ(x, d) > 1 - p(d)       U_occ = Phi(correlated Gaussian field, L = 25 km)
    amount = F^-1_Gamma(k=0.7)(U_amt) * m(d) / (p(d) k) * o(x)   (Gaussian copula, L = 15 km)
    o(x)   = clip(1 + 0.5 (z_s(x) - mean z_s) / sd z_s, 0.4, 2) * exp(0.2 c(x) - 0.02)

so E[rain] = m(d) o(x): monsoon seasonality (June-September, peak late July), orographic
enhancement with the large-scale elevation z_s and a fixed climatology field c (L = 40 km).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from scipy.special import gammaincinv, ndtr

from .noise import gaussian_field
from .shaking import NativeGrid

GAMMA_SHAPE = 0.7


RainGrid = NativeGrid


def rain_grid(
    bounds: tuple[float, float, float, float], rng: np.random.Generator, pixel_m: float = 5000.0
) -> RainGrid:
    """A ``pixel_m`` grid offset from the study grid and covering it with a margin of 1-2 pixels."""
    x0, y0, x1, y1 = bounds
    west, north = rng.uniform(1.0, 2.0, 2) * pixel_m
    nx = int(np.ceil((x1 - x0 + west) / pixel_m)) + 1
    ny = int(np.ceil((y1 - y0 + north) / pixel_m)) + 1
    return RainGrid(x0 - west, y1 + north, pixel_m, (ny, nx))


def monsoon_bump(dates: list[dt.date]) -> np.ndarray:
    """0..1 seasonality: a raised cosine from May 20 to Oct 7 (day 140-280), peaking July 29."""
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=float)
    start, end = 140.0, 280.0
    t = (doy - start) / (end - start)
    return np.where((t > 0) & (t < 1), 0.5 * (1 - np.cos(2 * np.pi * t)), 0.0)


def daily_rain(
    grid: RainGrid,
    dates: list[dt.date],
    smooth_elev_m: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Daily rain (day, y, x) in mm/day, float32, following the module equations."""
    px_km = grid.pixel_m / 1000.0
    z = smooth_elev_m
    zs = (z - z.mean()) / max(float(z.std()), 1e-6)
    climate = gaussian_field(grid.shape, 40.0 / px_km, rng)
    oro = np.clip(1.0 + 0.5 * zs, 0.4, 2.0) * np.exp(0.2 * climate - 0.02)
    bump = monsoon_bump(dates)
    mean = 1.6 + 11.5 * bump
    p_wet = 0.12 + 0.78 * bump
    out = np.empty((len(dates), *grid.shape), dtype=np.float32)
    chunk = 128
    for s in range(0, len(dates), chunk):
        e = min(s + chunk, len(dates))
        u_occ = ndtr(gaussian_field(grid.shape, 25.0 / px_km, rng, n=e - s))
        u_amt = ndtr(gaussian_field(grid.shape, 15.0 / px_km, rng, n=e - s))
        u_amt = np.clip(u_amt, 1e-12, 1 - 1e-12)
        amount = gammaincinv(GAMMA_SHAPE, u_amt) / GAMMA_SHAPE  # unit mean
        p = p_wet[s:e, None, None]
        wet = u_occ > 1.0 - p
        daily = np.where(wet, amount * (mean[s:e, None, None] / p) * oro, 0.0)
        out[s:e] = daily
    return out
