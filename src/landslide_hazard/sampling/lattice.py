"""Patch lattices over the cell grid (DESIGN.md section 2, paper Sect. 4).

A patch is ``n x n`` cells. Lattice 0 starts at the cell-grid origin; lattice 1 is shifted
``n // 2`` cells east and south. Each lattice tiles the whole grid: its first row/column of
patches may start above/left of the grid (lattice 1 starts at ``-n/2``) and its last ones may
reach past the grid; those edge patches are padded (inputs NaN -> 0, targets masked), never
dropped. So every cell is covered exactly once by each lattice.

Everything here works on cell indices (row, col) and plain numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

LATTICES: tuple[int, ...] = (0, 1)


def lattice_offset(patch_cells: int, lattice: int) -> int:
    """Row/column shift (cells) of a lattice: 0 for lattice 0, ``n // 2`` for lattice 1."""
    if lattice not in LATTICES:
        raise InputError(f"lattice must be 0 or 1, got {lattice}")
    return lattice * (patch_cells // 2)


def lattice_starts(size_cells: int, patch_cells: int, lattice: int) -> np.ndarray:
    """First cell index of every patch of ``lattice`` along one axis of ``size_cells`` cells.

    Lattice 1 starts at ``n/2 - n`` (= -n/2) so that the cells before its first full patch
    are covered too; starts run while the patch still touches the grid.
    """
    off = lattice_offset(patch_cells, lattice)
    first = off - patch_cells if off > 0 else 0
    return np.arange(first, size_cells, patch_cells, dtype=np.int64)


def lattice_origins(shape_cells: tuple[int, int], patch_cells: int, lattice: int) -> np.ndarray:
    """(row0, col0) of every patch of one lattice, row-major, as an (M, 2) int array."""
    rows = lattice_starts(shape_cells[0], patch_cells, lattice)
    cols = lattice_starts(shape_cells[1], patch_cells, lattice)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def tile_cells(
    arr: np.ndarray, patch_cells: int, lattice: int, fill: float | bool = np.nan
) -> np.ndarray:
    """View a (..., cy, cx) array as the patches of one lattice: (..., R, C, n, n).

    Cells outside the grid are ``fill``. Patch (i, j) starts at cell
    (lattice_starts(cy)[i], lattice_starts(cx)[j]).
    """
    n = patch_cells
    cy, cx = arr.shape[-2:]
    rows = lattice_starts(cy, n, lattice)
    cols = lattice_starts(cx, n, lattice)
    top, left = -int(rows[0]), -int(cols[0])
    bottom = int(rows[-1]) + n - cy
    right = int(cols[-1]) + n - cx
    pad = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
    padded = np.pad(arr, pad, constant_values=fill)
    r, c = len(rows), len(cols)
    shaped = padded.reshape(*arr.shape[:-2], r, n, c, n)
    return np.moveaxis(shaped, -3, -2)  # (..., R, C, n, n)


def untile_cells(tiles: np.ndarray, shape_cells: tuple[int, int], lattice: int) -> np.ndarray:
    """Inverse of :func:`tile_cells`: (..., R, C, n, n) -> (..., cy, cx), cropping the padding."""
    n = tiles.shape[-1]
    cy, cx = shape_cells
    rows = lattice_starts(cy, n, lattice)
    cols = lattice_starts(cx, n, lattice)
    lead = tiles.shape[:-4]
    r, c = tiles.shape[-4], tiles.shape[-3]
    full = np.moveaxis(tiles, -2, -3).reshape(*lead, r * n, c * n)
    top, left = -int(rows[0]), -int(cols[0])
    return full[..., top : top + cy, left : left + cx]


def read_window(
    arr,
    row0: int,
    col0: int,
    height: int,
    width: int,
    fill: float = np.nan,
    prefix: tuple[int, ...] = (),
) -> np.ndarray:
    """Window ``[row0, row0+height) x [col0, col0+width)`` of the last two axes of ``arr``.

    ``arr`` is a numpy or zarr array of shape (..., H, W); ``prefix`` indexes its leading axes
    first (e.g. ``(period,)``). Parts of the window outside the array are ``fill``. Only the
    inside part is read, so a zarr array reads only the chunks it needs.
    """
    h_tot, w_tot = arr.shape[-2:]
    lead = arr.shape[len(prefix) : -2]
    r_a, r_b = max(row0, 0), min(row0 + height, h_tot)
    c_a, c_b = max(col0, 0), min(col0 + width, w_tot)
    out = np.full((*lead, height, width), fill, dtype=np.float32)
    if r_a < r_b and c_a < c_b:
        window = (*prefix, *(slice(None),) * len(lead), slice(r_a, r_b), slice(c_a, c_b))
        out[..., r_a - row0 : r_b - row0, c_a - col0 : c_b - col0] = arr[window]
    return out


@dataclass(frozen=True)
class PatchIndex:
    """Patches (lattice, row0, col0 in cells) times periods, as parallel int arrays."""

    lattice: np.ndarray
    row0: np.ndarray
    col0: np.ndarray
    period: np.ndarray

    def __post_init__(self) -> None:
        lengths = {len(self.lattice), len(self.row0), len(self.col0), len(self.period)}
        if len(lengths) != 1:
            raise ValueError("PatchIndex arrays must have the same length")

    def __len__(self) -> int:
        return len(self.lattice)

    def subset(self, which: np.ndarray) -> PatchIndex:
        """The patches selected by a boolean mask or an index array."""
        return PatchIndex(
            self.lattice[which], self.row0[which], self.col0[which], self.period[which]
        )

    def as_array(self) -> np.ndarray:
        """(N, 4) int64 array of (lattice, row0, col0, period)."""
        return (
            np.stack([self.lattice, self.row0, self.col0, self.period], axis=1)
            .astype(np.int64)
            .reshape(-1, 4)
        )

    @classmethod
    def from_array(cls, a: np.ndarray) -> PatchIndex:
        a = np.asarray(a, dtype=np.int64).reshape(-1, 4)
        return cls(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy())

    @classmethod
    def empty(cls) -> PatchIndex:
        return cls.from_array(np.zeros((0, 4), dtype=np.int64))

    @classmethod
    def concat(cls, parts: list[PatchIndex]) -> PatchIndex:
        if not parts:
            return cls.empty()
        return cls.from_array(np.concatenate([p.as_array() for p in parts], axis=0))


def patch_cell_counts(
    cell_mask: np.ndarray, patch_cells: int, lattice: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per patch of one lattice, the number of True cells of a (..., cy, cx) mask.

    Returns (counts (..., M), origins (M, 2)) with origins as in :func:`lattice_origins`.
    """
    tiles = tile_cells(np.asarray(cell_mask, dtype=bool), patch_cells, lattice, fill=False)
    counts = tiles.sum(axis=(-1, -2))
    lead = counts.shape[:-2]
    origins = lattice_origins(cell_mask.shape[-2:], patch_cells, lattice)
    return counts.reshape(*lead, -1), origins


def build_patch_index(
    label_mask: np.ndarray,
    patch_cells: int,
    lattices: tuple[int, ...] = LATTICES,
    periods: np.ndarray | None = None,
) -> PatchIndex:
    """Every (lattice, patch, period) holding at least one True cell of ``label_mask``.

    label_mask: (P, cy, cx) bool, the cells with a valid target per period.
    periods: optional subset of period indices to index (default all).
    Ordered by period, lattice, then row-major patch position.
    """
    label_mask = np.asarray(label_mask, dtype=bool)
    n_periods = label_mask.shape[0]
    use = np.arange(n_periods) if periods is None else np.asarray(periods, dtype=np.int64)
    parts = []
    for t in use:
        for lat in lattices:
            counts, origins = patch_cell_counts(label_mask[t], patch_cells, lat)
            keep = counts > 0
            k = int(keep.sum())
            parts.append(
                PatchIndex(
                    np.full(k, lat, dtype=np.int64),
                    origins[keep, 0],
                    origins[keep, 1],
                    np.full(k, t, dtype=np.int64),
                )
            )
    return PatchIndex.concat(parts)


def patch_cells_mask(
    patches: PatchIndex, shape: tuple[int, int, int], patch_cells: int
) -> np.ndarray:
    """(P, cy, cx) bool: the cells covered by the given patches (clipped to the grid)."""
    out = np.zeros(shape, dtype=bool)
    _, cy, cx = shape
    n = patch_cells
    for r0, c0, t in zip(patches.row0, patches.col0, patches.period, strict=True):
        out[t, max(r0, 0) : min(r0 + n, cy), max(c0, 0) : min(c0 + n, cx)] = True
    return out


def patch_all_within(
    label_mask: np.ndarray, region: np.ndarray, patches: PatchIndex, patch_cells: int
) -> np.ndarray:
    """For each patch, whether all its labelled cells lie in ``region`` (and there is one).

    label_mask: (P, cy, cx) bool; region: (P, cy, cx) or (cy, cx) bool.
    """
    label_mask = np.asarray(label_mask, dtype=bool)
    region = np.broadcast_to(np.asarray(region, dtype=bool), label_mask.shape)
    inside = label_mask & region
    outside = label_mask & ~region
    result = np.zeros(len(patches), dtype=bool)
    for lat in LATTICES:
        sel = np.flatnonzero(patches.lattice == lat)
        if not len(sel):
            continue
        cin, _ = patch_cell_counts(inside, patch_cells, lat)
        cout, _ = patch_cell_counts(outside, patch_cells, lat)
        n = patch_cells
        rows = lattice_starts(label_mask.shape[1], n, lat)
        cols = lattice_starts(label_mask.shape[2], n, lat)
        ri = (patches.row0[sel] - rows[0]) // n
        ci = (patches.col0[sel] - cols[0]) // n
        flat = ri * len(cols) + ci
        t = patches.period[sel]
        result[sel] = (cin[t, flat] > 0) & (cout[t, flat] == 0)
    return result
