"""Landslide area on a grid: exact polygon area per cell or pixel, and new-failure differencing.

Pure functions. Grids are north-up rasters given by an affine transform and a shape (rows, cols).

- Cumulative density of a cell (% of cell area) = area of the landslide polygons inside the cell
  / cell area x 100, computed by exact polygon-box intersection (sub-pixel accurate; no
  rasterisation). Overlapping polygons are dissolved first, so no ground is counted twice.
- Pixel fractions (``difference: pixel``) are the same exact intersection on the fine grid,
  kept sparse (only pixels that hold landslide area).
- New failed density of period t = max(0, cumulative t - cumulative t-1) (the paper's rule:
  decreases from re-vegetation or mapping noise become 0); NaN stays NaN (unmapped).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine

from ..errors import InputError

# Pairs (polygon part, grid box) handled per vectorised batch: bounds memory to a few 10 MB.
PAIR_BATCH = 200_000


@dataclass(frozen=True)
class SparseFractions:
    """Area fractions (0, 1] of the pixels of a ``shape`` grid that hold landslide area.

    ``index``: sorted, unique flat (row-major) pixel indices, int64; ``fraction``: float64.
    Pixels not listed hold 0.
    """

    shape: tuple[int, int]
    index: np.ndarray
    fraction: np.ndarray

    def __post_init__(self) -> None:
        if self.index.shape != self.fraction.shape:
            raise ValueError("index and fraction must have the same length")

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> SparseFractions:
        return cls(shape, np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def from_dense(
        cls, fractions: np.ndarray, row_offset: int = 0, shape: tuple[int, int] | None = None
    ) -> SparseFractions:
        """Sparse form of a dense (y, x) fraction array (rows ``row_offset`` onwards of ``shape``)."""
        dense = np.asarray(fractions, dtype=np.float64)
        shape = shape or (dense.shape[0], dense.shape[1])
        rows, cols = np.nonzero(dense > 0)
        index = (rows + row_offset).astype(np.int64) * shape[1] + cols
        return cls(shape, index, dense[rows, cols])

    @classmethod
    def concatenate(cls, parts: list[SparseFractions], shape: tuple[int, int]) -> SparseFractions:
        """Join pieces covering disjoint pixels (e.g. row blocks) into one."""
        if not parts:
            return cls.empty(shape)
        index = np.concatenate([p.index for p in parts])
        fraction = np.concatenate([p.fraction for p in parts])
        order = np.argsort(index, kind="stable")
        return cls(shape, index[order], fraction[order])

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape[0] * self.shape[1], dtype=np.float64)
        out[self.index] = self.fraction
        return out.reshape(self.shape)

    @property
    def total(self) -> float:
        """Total landslide area in pixel units (sum of fractions)."""
        return float(self.fraction.sum())


def _check_north_up(transform: Affine) -> tuple[float, float, float, float]:
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise InputError(f"expected a north-up grid transform, got {tuple(transform)[:6]}")
    return transform.c, transform.f, transform.a, -transform.e


def dissolve(polygons: np.ndarray) -> np.ndarray:
    """The polygons as non-overlapping single Polygons with the same union.

    Only groups of polygons that overlap (share area, not merely an edge) are merged, so an
    inventory of disjoint landslides costs one spatial-index query, not a global union.
    """
    polygons = np.asarray(polygons, dtype=object)
    if len(polygons) == 0:
        return polygons
    polygons = shapely.get_parts(polygons)
    left, right = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    pair = left < right
    left, right = left[pair], right[pair]
    shared = shapely.area(shapely.intersection(polygons[left], polygons[right])) > 0
    left, right = left[shared], right[shared]
    if len(left) == 0:
        return polygons[(shapely.get_type_id(polygons) == 3) & ~shapely.is_empty(polygons)]
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(polygons)
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    counts = np.bincount(label)
    alone = counts[label] == 1
    grouped = np.nonzero(~alone)[0]
    grouped = grouped[np.argsort(label[grouped], kind="stable")]
    bounds = np.cumsum(counts[counts > 1])[:-1]
    merged = [shapely.union_all(polygons[g]) for g in np.split(grouped, bounds)]
    parts = np.concatenate([polygons[alone], shapely.get_parts(np.asarray(merged, dtype=object))])
    return parts[(shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)]


def _overlap_pairs(
    parts: np.ndarray, transform: Affine, shape: tuple[int, int]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (part, flat grid index, overlap area in CRS units^2) of the part-box pairs, by batch.

    Candidate boxes come from each part's bounding box on the regular grid (no spatial index
    needed). Boxes inside a part get the full box area and boxes that do not meet it are
    dropped (prepared-geometry predicates); only boundary boxes are intersected exactly.
    """
    x0, y0, px, py = _check_north_up(transform)
    rows, cols = shape
    if len(parts) == 0:
        return
    b = shapely.bounds(parts)
    c0 = np.clip(np.floor((b[:, 0] - x0) / px), 0, cols - 1).astype(np.int64)
    c1 = np.clip(np.ceil((b[:, 2] - x0) / px) - 1, 0, cols - 1).astype(np.int64)
    r0 = np.clip(np.floor((y0 - b[:, 3]) / py), 0, rows - 1).astype(np.int64)
    r1 = np.clip(np.ceil((y0 - b[:, 1]) / py) - 1, 0, rows - 1).astype(np.int64)
    inside_grid = (
        (b[:, 2] > x0) & (b[:, 0] < x0 + cols * px) & (b[:, 1] < y0) & (b[:, 3] > y0 - rows * py)
    )
    width = np.where(inside_grid, c1 - c0 + 1, 0)
    height = np.where(inside_grid, r1 - r0 + 1, 0)
    counts = width * height
    shapely.prepare(parts)
    box_area = px * py
    # Split the parts into batches of about PAIR_BATCH candidate boxes each.
    ends = np.cumsum(counts)
    start = 0
    while start < len(parts):
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + PAIR_BATCH, "right"))
        stop = max(stop, start + 1)
        sel = np.arange(start, stop)
        n = counts[sel]
        if n.sum():
            part = np.repeat(sel, n)
            offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            w = np.repeat(width[sel], n)
            col = np.repeat(c0[sel], n) + offset % w
            row = np.repeat(r0[sel], n) + offset // w
            boxes = shapely.box(
                x0 + col * px, y0 - (row + 1) * py, x0 + (col + 1) * px, y0 - row * py
            )
            geoms = parts[part]
            inside = shapely.contains_properly(geoms, boxes)
            edge = ~inside & shapely.intersects(geoms, boxes)
            area = np.zeros(len(part), dtype=np.float64)
            area[inside] = box_area
            area[edge] = shapely.area(shapely.intersection(geoms[edge], boxes[edge]))
            keep = area > 0
            yield part[keep], row[keep] * cols + col[keep], area[keep]
        start = stop


def polygon_area_per_box(
    polygons: np.ndarray, transform: Affine, shape: tuple[int, int], dissolved: bool = False
) -> np.ndarray:
    """Exact polygon area (CRS units^2) inside every box of a grid, (rows, cols) float64."""
    parts = polygons if dissolved else dissolve(polygons)
    total = np.zeros(shape[0] * shape[1], dtype=np.float64)
    for _, index, area in _overlap_pairs(parts, transform, shape):
        total += np.bincount(index, weights=area, minlength=total.size)
    return total.reshape(shape)


def polygon_cell_density(
    polygons: np.ndarray, transform: Affine, shape: tuple[int, int], dissolved: bool = False
) -> np.ndarray:
    """Area density (% of cell area) of the polygons in every cell of a grid, float64."""
    cell_area = abs(transform.a * transform.e)
    return polygon_area_per_box(polygons, transform, shape, dissolved) / cell_area * 100.0


def polygon_pixel_fractions(
    polygons: np.ndarray,
    transform: Affine,
    shape: tuple[int, int],
    dissolved: bool = False,
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] | None = None,
) -> SparseFractions:
    """Exact area fraction of every pixel covered by the polygons, sparse.

    cache: optional dict reused across calls on the same grid (e.g. consecutive cumulative
    inventories, which repeat most polygons): per polygon part (keyed by its WKB) the pixel
    indices and areas. After the call it holds exactly the parts of this call.
    """
    parts = polygons if dissolved else dissolve(polygons)
    pixel_area = abs(transform.a * transform.e)
    keys = shapely.to_wkb(parts) if cache is not None and len(parts) else None
    if keys is not None and cache is not None:
        pending = np.array([k not in cache for k in keys], dtype=np.bool_)
    else:
        pending = np.ones(len(parts), dtype=bool)
    pending_idx = np.nonzero(pending)[0]
    indices, areas = [], []
    fresh: dict[int, tuple[list, list]] = {}
    for part, index, area in _overlap_pairs(parts[pending_idx], transform, shape):
        indices.append(index)
        areas.append(area)
        if keys is not None:
            order = np.argsort(part, kind="stable")
            split = np.nonzero(np.diff(part[order]))[0] + 1
            for p_idx, i_grp, a_grp in zip(
                np.unique(part[order]),
                np.split(index[order], split),
                np.split(area[order], split),
                strict=True,
            ):
                entry = fresh.setdefault(int(pending_idx[p_idx]), ([], []))
                entry[0].append(i_grp)
                entry[1].append(a_grp)
    if keys is not None and cache is not None:
        empty = (np.empty(0, np.int64), np.empty(0, np.float64))
        new_cache = {}
        for j, key in enumerate(keys):
            if pending[j]:
                got = fresh.get(j)
                new_cache[key] = (np.concatenate(got[0]), np.concatenate(got[1])) if got else empty
            else:
                new_cache[key] = cache[key]
                indices.append(cache[key][0])
                areas.append(cache[key][1])
        cache.clear()
        cache.update(new_cache)
    if not indices:
        return SparseFractions.empty(shape)
    index = np.concatenate(indices)
    area = np.concatenate(areas)
    # Dissolved parts do not overlap, but two parts can share a pixel: sum them.
    unique, inverse = np.unique(index, return_inverse=True)
    summed = np.bincount(inverse, weights=area)
    fraction = np.minimum(summed / pixel_area, 1.0)
    return SparseFractions(shape, unique.astype(np.int64), fraction)


def fractions_to_cell_density(fractions: SparseFractions, k: int) -> np.ndarray:
    """Sum pixel fractions over k x k blocks: density (% of cell area) per cell, float64."""
    rows, cols = fractions.shape
    if rows % k or cols % k:
        raise InputError(f"fine grid {fractions.shape} is not a multiple of k = {k}")
    cell_rows, cell_cols = rows // k, cols // k
    r = fractions.index // cols
    c = fractions.index % cols
    cell = (r // k) * cell_cols + c // k
    total = np.bincount(cell, weights=fractions.fraction, minlength=cell_rows * cell_cols)
    return (total / (k * k) * 100.0).reshape(cell_rows, cell_cols)


def dense_fractions_to_cell_density(fractions: np.ndarray, k: int) -> np.ndarray:
    """Mean of a dense (y, x) fraction array over k x k blocks x 100 (% of cell); NaN propagates."""
    f = np.asarray(fractions, dtype=np.float64)
    rows, cols = f.shape
    if rows % k or cols % k:
        raise InputError(f"fine grid {f.shape} is not a multiple of k = {k}")
    return f.reshape(rows // k, k, cols // k, k).mean(axis=(1, 3)) * 100.0


def new_failed_fractions(current: SparseFractions, previous: SparseFractions) -> SparseFractions:
    """Per pixel max(0, current - previous): the area fraction that failed in between."""
    if current.shape != previous.shape:
        raise InputError(f"fraction grids differ: {current.shape} vs {previous.shape}")
    before = np.zeros(len(current.index), dtype=np.float64)
    if len(previous.index):
        pos = np.minimum(np.searchsorted(previous.index, current.index), len(previous.index) - 1)
        matched = previous.index[pos] == current.index
        before[matched] = previous.fraction[pos[matched]]
    new = np.maximum(current.fraction - before, 0.0)
    keep = new > 0
    return SparseFractions(current.shape, current.index[keep], new[keep])


def new_failed_density(cumulative: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """New failed density per period: max(0, cum_t - cum_{t-1}), with ``baseline`` as cum_{-1}.

    cumulative: (period, cy, cx) cumulative densities (%) in time order; baseline: (cy, cx) the
    pre-event density. NaN (unmapped) in either of two consecutive inventories gives NaN.
    Returns (period, cy, cx) float64, >= 0 where finite.
    """
    cum = np.asarray(cumulative, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    if cum.ndim != 3 or base.shape != cum.shape[1:]:
        raise InputError(
            f"expected cumulative (period, cy, cx) and baseline (cy, cx), got {cum.shape} and "
            f"{base.shape}"
        )
    previous = np.concatenate([base[None], cum[:-1]], axis=0)
    with np.errstate(invalid="ignore"):
        return np.maximum(cum - previous, 0.0)  # np.maximum keeps NaN
