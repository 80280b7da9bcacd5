"""Time the terrain predictors against the alternatives they were chosen over.

    .venv/bin/python benchmarks/bench_terrain.py            # 512 x 512 synthetic DEM (seconds)
    .venv/bin/python benchmarks/bench_terrain.py --size 1024 --langtang

Compares, per pixel: the numpy Zevenbergen-Thorne (whole array and in tiles) with a numba
kernel; the numba priority-flood fill with a pure-numpy fixed-point fill (small sizes only: it
is O(N x iterations)); the numba D8 accumulation with a scipy sparse linear solve; scipy's EDT.
Peak memory (tracemalloc) is reported in bytes per pixel. Numbers go to docs/predictors.md.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from landslide_hazard.predictors.hydrology import (
    D8_DCOL,
    D8_DROW,
    accumulate_d8,
    d8_flow_directions,
    distance_to_river,
    fill_pits,
    river_mask_from_accumulation,
)
from landslide_hazard.predictors.static import compute_local_bands_chunked, prepare_dem
from landslide_hazard.predictors.terrain import zevenbergen_thorne

LANGTANG = (
    Path(__file__).resolve().parents[2] / "shared/data/langtang/aw3d30_dsm_langtang_utm45.tif"
)


def fractal_dem(size: int, seed: int = 0) -> np.ndarray:
    """Spectral-synthesis relief (beta = 3), rescaled to 0-2,500 m."""
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = 1.0
    spectrum = (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape)) * k**-1.5
    z = np.fft.irfft2(spectrum, s=(size, size))
    return 2500.0 * (z - z.min()) / np.ptp(z)


@numba.njit(cache=True)
def numba_slope_curvature(z, length):
    """Slope and both curvatures with the same extrapolated edges, as a numba loop."""
    rows, cols = z.shape
    out = np.full((3, rows, cols), np.nan)
    for r in range(rows):
        for c in range(cols):
            z5 = z[r, c]
            if np.isnan(z5):
                continue
            w = np.empty(9)
            for i in range(9):
                rr, cc = r + i // 3 - 1, c + i % 3 - 1
                w[i] = z[rr, cc] if 0 <= rr < rows and 0 <= cc < cols else np.nan
            for a, b in ((1, 7), (7, 1), (3, 5), (5, 3)):
                if np.isnan(w[a]):
                    w[a] = z5 if np.isnan(w[b]) else 2 * z5 - w[b]
            for k, v, h in ((0, 1, 3), (2, 1, 5), (6, 7, 3), (8, 7, 5)):
                if np.isnan(w[k]):
                    w[k] = w[v] + w[h] - z5
            d = ((w[3] + w[5]) / 2 - z5) / length**2
            e = ((w[1] + w[7]) / 2 - z5) / length**2
            f = (-w[0] + w[2] + w[6] - w[8]) / (4 * length**2)
            g = (w[5] - w[3]) / (2 * length)
            h = (w[1] - w[7]) / (2 * length)
            g2 = g * g + h * h
            out[0, r, c] = np.degrees(np.arctan(np.sqrt(g2)))
            if g2 > 0:
                out[1, r, c] = -2 * (d * g * g + e * h * h + f * g * h) / g2
                out[2, r, c] = 2 * (d * h * h + e * g * g - f * g * h) / g2
            else:
                out[1, r, c] = 0.0
                out[2, r, c] = 0.0
    return out


def fixed_point_fill(dem: np.ndarray) -> np.ndarray:
    """Pure numpy depression fill: w = max(dem, min of the 8 neighbours of w) until stable."""
    rows, cols = dem.shape
    boundary = np.zeros(dem.shape, bool)
    boundary[[0, -1], :] = boundary[:, [0, -1]] = True
    w = np.where(boundary, dem, np.inf)
    for _ in range(dem.size):
        pad = np.pad(w, 1, constant_values=np.inf)
        nb = np.min(
            [
                pad[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
                for dr, dc in zip(D8_DROW, D8_DCOL, strict=True)
            ],
            axis=0,
        )
        new = np.where(boundary, dem, np.maximum(dem, nb))
        if np.array_equal(new, w):
            break
        w = new
    return w


def sparse_accumulation(codes: np.ndarray) -> np.ndarray:
    rows, cols = codes.shape
    idx = np.arange(codes.size).reshape(codes.shape)
    r, c = np.nonzero(codes >= 0)
    k = codes[r, c]
    receivers = (r + D8_DROW[k]) * cols + c + D8_DCOL[k]
    a = sparse.csc_matrix((np.ones(len(k)), (receivers, idx[r, c])), shape=(codes.size,) * 2)
    return spsolve(sparse.identity(codes.size, format="csc") - a, np.ones(codes.size))


def measure(fn: Callable, *args, repeat: int = 3, **kwargs) -> tuple[float, int]:
    """(best wall time in s, peak traced bytes of one call)."""
    fn(*args, **kwargs)  # warm up (numba compile, caches)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    fn(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="DEM side in pixels (default 512)")
    parser.add_argument("--langtang", action="store_true", help="crop the Langtang DSM instead")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pixel = 30.0
    if args.langtang:
        import rasterio

        with rasterio.open(LANGTANG) as ds:
            dem, _ = prepare_dem(ds.read(1)[: args.size, : args.size])
        pixel = float(ds.transform.a)
    else:
        dem = fractal_dem(args.size)
    n = dem.size
    filled = fill_pits(dem)
    codes = d8_flow_directions(filled)
    acc = accumulate_d8(codes)
    rivers = river_mask_from_accumulation(dem, pixel, 0.2, accumulation=acc)
    small = fractal_dem(128, seed=1)  # NaN-free: the fixed-point fill has no nodata handling
    rows = [
        ("ZT 6 bands, numpy, whole array", n, zevenbergen_thorne, (dem, pixel)),
        ("ZT 6 bands, numpy, 256 px tiles", n, compute_local_bands_chunked, (dem, pixel, 256)),
        ("slope + 2 curvatures, numba loop", n, numba_slope_curvature, (dem, pixel)),
        ("fill, numba priority-flood+eps", n, fill_pits, (dem,)),
        ("fill, numba priority-flood, 128 px fractal", small.size, fill_pits, (small,)),
        ("fill, numpy fixed point, 128 px fractal", small.size, fixed_point_fill, (small,)),
        ("D8 directions, numba", n, d8_flow_directions, (filled,)),
        ("accumulation, numba topological", n, accumulate_d8, (codes,)),
        ("accumulation, scipy sparse solve", n, sparse_accumulation, (codes,)),
        ("distance to river, scipy EDT", n, distance_to_river, (rivers, pixel)),
    ]
    print(f"DEM {dem.shape[0]} x {dem.shape[1]} ({'Langtang' if args.langtang else 'fractal'})")
    print(f"{'step':44s} {'ms':>9s} {'ns/px':>8s} {'peak B/px':>10s}")
    for name, pixels, fn, fargs in rows:
        seconds, peak = measure(fn, *fargs, repeat=args.repeat)
        print(
            f"{name:44s} {1e3 * seconds:9.1f} {1e9 * seconds / pixels:8.1f} {peak / pixels:10.1f}"
        )


if __name__ == "__main__":
    main()
