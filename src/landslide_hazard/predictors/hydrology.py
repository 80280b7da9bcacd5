"""Hydrology on the fine grid: pit filling, D8 flow, accumulation, TWI, rivers and distance.

All functions take north-up arrays (row 0 north), square pixels of ``pixel_size_m`` metres and
NaN as nodata. NaN pixels and the array border are both "outside": water leaving a valid pixel
into them leaves the grid. The global passes (fill, accumulation, distance) run on the whole
array at once; their memory is stated in ``docs/predictors.md``. Lean variants for grids near
the memory limit: ``fill_pits(in_place=True)``, :func:`accumulate_d8_counts` (5 B/px),
:func:`river_mask_from_counts` and :func:`distance_to_river_tile` (exact, tile by tile; see
``docs/scale.md``).

D8 direction codes (int8): ``k = 0..7`` points to the neighbour at compass azimuth ``45 k``
degrees (0 N, 1 NE, 2 E, 3 SE, 4 S, 5 SW, 6 W, 7 NW); ``-1`` = no downslope neighbour (the
water leaves the grid there, or, on an unfilled DEM, a pit or a flat); ``-2`` = nodata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numba
import numpy as np
from affine import Affine
from scipy import ndimage

from ..errors import InputError
from .terrain import zevenbergen_thorne

#: Row and column offsets of the D8 codes 0..7 (N, NE, E, SE, S, SW, W, NW); numba freezes
#: these module-level arrays into the compiled functions as constants.
D8_DROW = np.array([-1, -1, 0, 1, 1, 1, 0, -1], dtype=np.int64)
D8_DCOL = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
D8_OUTLET = -1
D8_NODATA = -2
#: TWI uses tan(max(slope, MIN_TWI_SLOPE_DEG)) so flats do not divide by zero.
MIN_TWI_SLOPE_DEG = 0.1


def _as_dem(dem: np.ndarray) -> np.ndarray:
    z = np.ascontiguousarray(dem, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"the DEM must be a 2-D array (rows, cols), got shape {z.shape}")
    if np.isinf(z).any():
        raise InputError("the DEM holds +-inf values; mark nodata as NaN")
    return z


# --------------------------------------------------------------------------------------------
# A binary min-heap on parallel arrays, keyed by (elevation, insertion order). The insertion
# order breaks ties first-in first-out, so flats are flooded breadth-first from their outlet.


@numba.njit(cache=True)
def _heap_push(keys, order, items, size, key, seq, item):
    i = size
    keys[i] = key
    order[i] = seq
    items[i] = item
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] < keys[i] or (keys[parent] == keys[i] and order[parent] < order[i]):
            break
        keys[parent], keys[i] = keys[i], keys[parent]
        order[parent], order[i] = order[i], order[parent]
        items[parent], items[i] = items[i], items[parent]
        i = parent
    return size + 1


@numba.njit(cache=True)
def _heap_pop(keys, order, items, size):
    item = items[0]
    size -= 1
    keys[0] = keys[size]
    order[0] = order[size]
    items[0] = items[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and (
            keys[right] < keys[left] or (keys[right] == keys[left] and order[right] < order[left])
        ):
            child = right
        if keys[i] < keys[child] or (keys[i] == keys[child] and order[i] < order[child]):
            break
        keys[child], keys[i] = keys[i], keys[child]
        order[child], order[i] = order[i], order[child]
        items[child], items[i] = items[i], items[child]
        i = child
    return item, size


@numba.njit(cache=True)
def _priority_flood(z, drain_flats, order, items):
    """Priority-Flood (Barnes et al. 2014), optionally +epsilon; z is modified in place.

    order, items: empty integer arrays of z.size for the heap (int32 when that suffices).
    """
    rows, cols = z.shape
    n = rows * cols
    closed = np.zeros(n, dtype=np.bool_)
    keys = np.empty(n, dtype=np.float64)
    size = 0
    seq = 0
    # Seeds: valid pixels on the array border or next to a NaN pixel.
    for r in range(rows):
        for c in range(cols):
            if np.isnan(z[r, c]):
                closed[r * cols + c] = True
                continue
            edge = r == 0 or c == 0 or r == rows - 1 or c == cols - 1
            if not edge:
                for k in range(8):
                    if np.isnan(z[r + D8_DROW[k], c + D8_DCOL[k]]):
                        edge = True
                        break
            if edge:
                closed[r * cols + c] = True
                size = _heap_push(keys, order, items, size, z[r, c], seq, r * cols + c)
                seq += 1
    while size > 0:
        cell, size = _heap_pop(keys, order, items, size)
        r = cell // cols
        c = cell - r * cols
        level = z[r, c]
        for k in range(8):
            rr = r + D8_DROW[k]
            cc = c + D8_DCOL[k]
            if rr < 0 or cc < 0 or rr >= rows or cc >= cols:
                continue
            nb = rr * cols + cc
            if closed[nb]:
                continue
            closed[nb] = True
            if drain_flats:
                if z[rr, cc] <= level:
                    z[rr, cc] = np.nextafter(level, np.inf)
            elif z[rr, cc] < level:
                z[rr, cc] = level
            size = _heap_push(keys, order, items, size, z[rr, cc], seq, nb)
            seq += 1
    return z


def fill_pits(dem: np.ndarray, *, drain_flats: bool = True, in_place: bool = False) -> np.ndarray:
    """Fill every depression of a DEM so that each valid pixel drains to the grid's outside.

    Priority-Flood (Barnes, Lehman & Mulla 2014, Algorithm 2, numba, O(N log N)). With
    ``drain_flats`` (the default) it is Priority-Flood+epsilon (their Algorithm 3): every pixel
    that would end up level with the pixel it drains to is raised by the smallest float64 step
    above it, so filled depressions and the DEM's own flats slope (by ~1e-12 m per pixel)
    towards their outlet and every valid pixel not on the outside has a strictly lower
    neighbour; D8 is then defined everywhere. With ``drain_flats=False`` the result is the
    plain depression fill (the lowest surface >= dem without interior pits), flats stay flat.

    dem: (rows, cols) metres, NaN = nodata (outside). Returns float64 metres, NaN where dem is.
    in_place: fill ``dem`` itself and return it (it must then be a C-contiguous float64 array);
    saves the 8 bytes per pixel of the copy. Memory: the surface, a 1-byte closed flag per
    pixel and the heap (16 bytes per queued pixel; the heap arrays are allocated for every pixel
    but only the pages of the largest queue are ever touched).
    """
    if in_place:
        if not (
            isinstance(dem, np.ndarray)
            and dem.dtype == np.float64
            and dem.ndim == 2
            and dem.flags.c_contiguous
            and dem.flags.writeable
        ):
            raise InputError("in_place=True needs a writeable C-contiguous 2-D float64 array")
        z = _as_dem(dem)
    else:
        z = _as_dem(dem).copy()
    index = _index_dtype(z.size)
    order: np.ndarray = np.empty(z.size, dtype=index)
    items: np.ndarray = np.empty(z.size, dtype=index)
    return _priority_flood(z, bool(drain_flats), order, items)


def _index_dtype(size: int) -> type:
    """int32 pixel indices while they fit (a quarter less memory in the global passes)."""
    return np.int32 if size < np.iinfo(np.int32).max else np.int64


@numba.njit(cache=True)
def _d8(z):
    rows, cols = z.shape
    out = np.empty((rows, cols), dtype=np.int8)
    sqrt2 = np.sqrt(2.0)
    for r in range(rows):
        for c in range(cols):
            zc = z[r, c]
            if np.isnan(zc):
                out[r, c] = -2
                continue
            best = 0.0
            code = -1
            for k in range(8):
                rr = r + D8_DROW[k]
                cc = c + D8_DCOL[k]
                if rr < 0 or cc < 0 or rr >= rows or cc >= cols:
                    continue
                zn = z[rr, cc]
                if np.isnan(zn) or zn >= zc:
                    continue
                drop = zc - zn
                if k % 2 == 1:
                    drop = drop / sqrt2
                if drop > best:
                    best = drop
                    code = k
            out[r, c] = code
    return out


def d8_flow_directions(filled: np.ndarray) -> np.ndarray:
    """D8 steepest-descent direction codes (see module doc) of a (pit-filled) DEM.

    The drop to each lower neighbour is divided by its distance (1 or sqrt 2 pixels; the pixel
    size cancels); ties go to the lowest code (north first, clockwise). A pixel with no strictly
    lower valid neighbour gets -1: on a DEM filled with ``fill_pits(drain_flats=True)`` that
    happens only on the outside (border or next to nodata), where the water leaves the grid.
    """
    return _d8(_as_dem(filled))


@numba.njit(cache=True)
def _accumulate(directions, receiver, queue):
    """Kahn's pass; receiver (filled with -1) and queue: integer arrays of directions.size."""
    rows, cols = directions.shape
    n = rows * cols
    indegree = np.zeros(n, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            k = directions[r, c]
            if k >= 0:
                rr = r + D8_DROW[k]
                cc = c + D8_DCOL[k]
                if 0 <= rr < rows and 0 <= cc < cols and directions[rr, cc] != -2:
                    receiver[r * cols + c] = rr * cols + cc
                    indegree[rr * cols + cc] += 1
    acc = np.zeros(n, dtype=np.float64)
    head = 0
    tail = 0
    flat_codes = directions.ravel()
    for i in range(n):
        if flat_codes[i] != -2:
            acc[i] = 1.0
            if indegree[i] == 0:
                queue[tail] = i
                tail += 1
    # Kahn's topological order: a pixel is passed on once all its donors have been added.
    while head < tail:
        i = queue[head]
        head += 1
        j = receiver[i]
        if j >= 0:
            acc[j] += acc[i]
            indegree[j] -= 1
            if indegree[j] == 0:
                queue[tail] = j
                tail += 1
    if tail != np.sum(flat_codes != -2):
        return acc, False  # a cycle: never happens for steepest descent, checked anyway
    return acc, True


def accumulate_d8(directions: np.ndarray) -> np.ndarray:
    """Upslope pixel count (including the pixel itself) of D8 codes; NaN where code is -2.

    One topological pass (numba, O(N)). Returns float64 (counts are exact up to 2**53).
    """
    codes = np.ascontiguousarray(directions, dtype=np.int8)
    if codes.ndim != 2:
        raise InputError(f"directions must be 2-D, got shape {codes.shape}")
    index = _index_dtype(codes.size)
    acc, ok = _accumulate(
        codes, np.full(codes.size, -1, dtype=index), np.empty(codes.size, dtype=index)
    )
    if not ok:
        raise InputError("the D8 directions contain a cycle; derive them with d8_flow_directions")
    acc = acc.reshape(codes.shape)
    acc[codes == D8_NODATA] = np.nan
    return acc


@numba.njit(cache=True)
def _accumulate_counts(directions):
    """Upslope counts (uint32) without receiver or queue arrays: 1 + 4 bytes per pixel.

    Each source pixel (no donor) starts a walk downstream that passes its count on and goes on
    while the receiver has no unfinished donor left (indegree reaches 0); a finished pixel gets
    the indegree 255. Integer sums, so the order of the additions does not matter.
    """
    rows, cols = directions.shape
    n = rows * cols
    flat_codes = directions.ravel()
    indegree = np.zeros(n, dtype=np.uint8)
    acc = np.zeros(n, dtype=np.uint32)
    valid = 0
    for r in range(rows):
        for c in range(cols):
            k = directions[r, c]
            if k == -2:
                continue
            valid += 1
            acc[r * cols + c] = 1
            if k >= 0:
                rr = r + D8_DROW[k]
                cc = c + D8_DCOL[k]
                if 0 <= rr < rows and 0 <= cc < cols and directions[rr, cc] != -2:
                    indegree[rr * cols + cc] += 1
    done = 0
    for i in range(n):
        if flat_codes[i] == -2 or indegree[i] != 0:
            continue
        j = i
        while True:
            indegree[j] = 255
            done += 1
            k = flat_codes[j]
            if k < 0:
                break
            r = j // cols
            rr = r + D8_DROW[k]
            cc = j - r * cols + D8_DCOL[k]
            if rr < 0 or cc < 0 or rr >= rows or cc >= cols:
                break
            t = rr * cols + cc
            if flat_codes[t] == -2:
                break
            acc[t] += acc[j]
            indegree[t] -= 1
            if indegree[t] != 0:
                break
            j = t
    return acc, done == valid


@numba.njit(cache=True)
def _counts_to_float32(acc, flat_codes):
    """Reinterpret the uint32 counts' buffer as float32 in place (NaN at nodata)."""
    out = acc.view(np.float32)
    for i in range(acc.size):
        if flat_codes[i] == -2:
            out[i] = np.nan
        else:
            out[i] = np.float32(acc[i])
    return out


def accumulate_d8_counts(directions: np.ndarray) -> np.ndarray:
    """Upslope pixel counts (uint32, including the pixel; 0 at nodata) of D8 codes.

    The same counts as :func:`accumulate_d8`, with 5 bytes per pixel of memory (uint8
    indegree, uint32 counts) instead of its 17-25: for grids too big for the float64 pass.
    """
    codes = np.ascontiguousarray(directions, dtype=np.int8)
    if codes.ndim != 2:
        raise InputError(f"directions must be 2-D, got shape {codes.shape}")
    if codes.size >= 2**32:
        raise InputError(f"{codes.size} pixels: uint32 counts need fewer than 2**32 pixels")
    acc, ok = _accumulate_counts(codes)
    if not ok:
        raise InputError("the D8 directions contain a cycle; derive them with d8_flow_directions")
    return acc.reshape(codes.shape)


def counts_to_float32(counts: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """uint32 counts -> float32 with NaN at nodata (code -2), reusing the counts' memory.

    ``counts`` is consumed (its buffer now holds the float32 values). Each count is rounded
    once, so the result equals ``accumulate_d8(directions).astype(np.float32)``.
    """
    if counts.dtype != np.uint32 or not counts.flags.c_contiguous:
        raise InputError("counts must be a C-contiguous uint32 array (accumulate_d8_counts)")
    codes = np.ascontiguousarray(directions, dtype=np.int8)
    if codes.shape != counts.shape:
        raise InputError(f"counts {counts.shape} and directions {codes.shape} differ in shape")
    return _counts_to_float32(counts.ravel(), codes.ravel()).reshape(counts.shape)


def d8_flow_accumulation(filled: np.ndarray) -> np.ndarray:
    """Upslope pixel count including the pixel itself, by D8 on a pit-filled DEM.

    filled: the output of :func:`fill_pits` (metres, NaN = nodata). Returns float64 counts,
    NaN at nodata. Multiply by ``pixel_size_m**2`` for the contributing area in m2.
    """
    return accumulate_d8(d8_flow_directions(filled))


def twi_from(accumulation: np.ndarray, slope_deg: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """TWI = ln(a / tan(max(slope, 0.1 deg))), a = accumulation * p^2 / p (m2 per m contour).

    accumulation: upslope pixel count including the pixel; slope_deg: degrees; float64 out.
    """
    acc = np.asarray(accumulation, dtype=np.float64)
    slope_rad = np.radians(np.maximum(np.asarray(slope_deg, dtype=np.float64), MIN_TWI_SLOPE_DEG))
    specific_area_m = acc * float(pixel_size_m)  # (count * p^2) / p
    return np.log(specific_area_m / np.tan(slope_rad))


def twi(
    dem: np.ndarray,
    pixel_size_m: float,
    *,
    slope_deg: np.ndarray | None = None,
    accumulation: np.ndarray | None = None,
) -> np.ndarray:
    """Topographic wetness index (dimensionless) of a DEM (metres, NaN = nodata).

    D8 accumulation on the pit-filled DEM (``fill_pits``), Zevenbergen-Thorne slope of the DEM
    itself; pass ``slope_deg`` / ``accumulation`` if already computed. float64, NaN at nodata.
    """
    z = _as_dem(dem)
    if slope_deg is None:
        slope_deg = zevenbergen_thorne(z, pixel_size_m, dtype=np.float64)["slope"]
    if accumulation is None:
        accumulation = d8_flow_accumulation(fill_pits(z))
    out = twi_from(accumulation, slope_deg, pixel_size_m)
    out[np.isnan(z)] = np.nan
    return out


def river_mask_from_accumulation(
    dem: np.ndarray,
    pixel_size_m: float,
    threshold_km2: float = 1.0,
    *,
    accumulation: np.ndarray | None = None,
) -> np.ndarray:
    """River pixels: contributing area (D8 on the filled DEM) >= ``threshold_km2`` (km2).

    Returns a bool mask; nodata pixels are False.
    """
    if threshold_km2 <= 0:
        raise InputError(f"threshold_km2 must be > 0 km2, got {threshold_km2}")
    if accumulation is None:
        accumulation = d8_flow_accumulation(fill_pits(dem))
    area_km2 = np.asarray(accumulation, dtype=np.float64) * float(pixel_size_m) ** 2 / 1e6
    return np.nan_to_num(area_km2, nan=0.0) >= threshold_km2


def distance_to_river(river_mask: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """Euclidean distance (metres, float64) from each pixel centre to the nearest river pixel.

    scipy.ndimage.distance_transform_edt (exact EDT); 0 on river pixels.
    """
    mask = np.asarray(river_mask, dtype=bool)
    if mask.ndim != 2:
        raise InputError(f"river_mask must be 2-D, got shape {mask.shape}")
    if not mask.any():
        raise InputError(
            "the river mask holds no river pixel, so distance to river is undefined; lower the "
            "accumulation threshold (threshold_km2), or give river lines or a river raster"
        )
    return ndimage.distance_transform_edt(~mask, sampling=float(pixel_size_m))


def river_mask_from_counts(
    accumulation: np.ndarray, pixel_size_m: float, threshold_km2: float, block_rows: int = 256
) -> np.ndarray:
    """:func:`river_mask_from_accumulation` of given counts, computed by row blocks.

    The same float64 arithmetic per pixel (so the same mask) without the whole-grid float64
    temporaries: 1 byte per pixel for the result.
    """
    if threshold_km2 <= 0:
        raise InputError(f"threshold_km2 must be > 0 km2, got {threshold_km2}")
    acc = np.asarray(accumulation)
    out = np.empty(acc.shape, dtype=bool)
    for r0 in range(0, acc.shape[0], block_rows):
        area_km2 = acc[r0 : r0 + block_rows].astype(np.float64) * float(pixel_size_m) ** 2 / 1e6
        out[r0 : r0 + block_rows] = np.nan_to_num(area_km2, nan=0.0) >= threshold_km2
    return out


def _edt_from_indices(nearest: np.ndarray, r0: int, c0: int, p: float) -> np.ndarray:
    """Distances (float64, m) of a block from scipy's nearest-feature indices.

    (row, col) offsets times the pixel size, squared and summed in float64, square root: the
    values of :func:`distance_to_river` (the caller rounds them to float32).
    """
    rows, cols = nearest.shape[1:]
    dr = (nearest[0] - np.arange(r0, r0 + rows, dtype=np.int64)[:, None]).astype(np.float64)
    dc = (nearest[1] - np.arange(c0, c0 + cols, dtype=np.int64)[None, :]).astype(np.float64)
    dr *= p
    dc *= p
    dr *= dr
    dc *= dc
    return np.sqrt(dr + dc)


def distance_to_river_tile(
    river_mask: np.ndarray,
    rows: slice,
    cols: slice,
    pixel_size_m: float,
    margin: int = 256,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Exact distance (m, float32) to the nearest river pixel for one tile of a grid.

    river_mask: the whole grid's bool mask (an array or a read-only memmap; only windows of it
    are read). The EDT runs on the tile plus ``margin`` pixels. A tile pixel's distance d
    found in that window is exact when every pixel outside the window is at least d away (the
    window reaches the grid's edge on that side, or the gap to it is >= d); otherwise the
    margin doubles until it is, up to the whole grid. Equals ``distance_to_river`` as float32
    on the tile.
    where: optional bool (tile shape) of the pixels that need a distance; the others are NaN
    and do not widen the window (e.g. a wide nodata collar far from any river).
    """
    from scipy import ndimage

    height, width = river_mask.shape
    p = float(pixel_size_m)
    r_lo, r_hi, c_lo, c_hi = rows.start, rows.stop, cols.start, cols.stop
    if where is not None:
        where = np.asarray(where, dtype=bool)
        if where.shape != (r_hi - r_lo, c_hi - c_lo):
            raise InputError(
                f"where has shape {where.shape}, the tile {(r_hi - r_lo, c_hi - c_lo)}"
            )
        if not where.any():
            return np.full(where.shape, np.nan, dtype=np.float32)
    m = max(int(margin), 1)
    while True:
        w_r0, w_r1 = max(r_lo - m, 0), min(r_hi + m, height)
        w_c0, w_c1 = max(c_lo - m, 0), min(c_hi + m, width)
        window = np.asarray(river_mask[w_r0:w_r1, w_c0:w_c1], dtype=bool)
        whole = w_r0 == 0 and w_c0 == 0 and w_r1 == height and w_c1 == width
        if window.any():
            nearest = ndimage.distance_transform_edt(
                ~window, sampling=(p, p), return_distances=False, return_indices=True
            )
            tile_nearest = nearest[:, r_lo - w_r0 : r_hi - w_r0, c_lo - w_c0 : c_hi - w_c0]
            tile_nearest[0] += w_r0
            tile_nearest[1] += w_c0
            dist = _edt_from_indices(tile_nearest, r_lo, c_lo, p)
            if where is not None:
                dist[~where] = np.nan
            if whole:
                return dist.astype(np.float32)
            # Distance from each tile pixel to the nearest pixel outside the window, on the
            # sides where the window stops short of the grid's edge (inf elsewhere).
            rr = np.arange(r_lo, r_hi)[:, None]
            cc = np.arange(c_lo, c_hi)[None, :]
            inf = np.inf
            gap = np.minimum(
                np.minimum(
                    (rr - (w_r0 - 1)) * p if w_r0 > 0 else inf,
                    (w_r1 - rr) * p if w_r1 < height else inf,
                ),
                np.minimum(
                    (cc - (w_c0 - 1)) * p if w_c0 > 0 else inf,
                    (w_c1 - cc) * p if w_c1 < width else inf,
                ),
            )
            if not np.any(dist > gap):  # NaN (not needed) pixels pass
                return dist.astype(np.float32)
        elif whole:
            raise InputError(
                "the river mask holds no river pixel, so distance to river is undefined; lower "
                "the accumulation threshold (threshold_km2), or give river lines or a river raster"
            )
        m *= 2


def rasterize_rivers(lines: Iterable[Any], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Burn river lines into a bool mask of ``shape`` on ``transform`` (all touched pixels).

    lines: shapely geometries or GeoJSON-like mappings in the grid's CRS (metres); empty or
    None geometries are skipped. Uses rasterio.features.rasterize(all_touched=True).
    """
    from rasterio.features import rasterize

    geoms = []
    for geom in lines:
        if geom is None:
            continue
        if hasattr(geom, "is_empty"):
            if geom.is_empty:
                continue
            geoms.append((geom, 1))
        else:
            geoms.append((geom, 1))
    if not geoms:
        return np.zeros(shape, dtype=bool)
    burned = rasterize(
        geoms, out_shape=shape, transform=transform, fill=0, all_touched=True, dtype="uint8"
    )
    return burned.astype(bool)
