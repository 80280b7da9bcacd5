"""Inventories from files to new-failure targets on the cell grid (the I/O edge of labelling).

An inventory (one per date) is one of:
- polygons (.gpkg / .geojson ...): exact area per cell or pixel (``density.py``);
- a fine mask (.tif on the fine grid): 0/1 or area fractions per pixel, NaN = unmapped;
- a cell-grid density raster (.tif on the cell grid): % of cell area, NaN = unmapped.
Rasters on other grids are resampled by area fraction (average), and the log says so: a raster
whose pixels are at most half a cell is taken as a mask, a coarser one as a density.

Mapped extent (optional, per date; polygons or a raster): a cell counts as mapped only when it
lies entirely inside the mapped extent (the same all-pixels rule as ``valid_cells``); unmapped
cells are NaN, and a new-failure density is NaN where either of its two inventories is NaN.

Empty inventories: an empty baseline or empty leading inventories, and empty per-period
inventories, are legitimate (nothing mapped yet, or no new landslide) and only warn. An empty
cumulative inventory after a non-empty one is an error: cumulative area cannot vanish, so the
file is almost surely wrong (use ``kind: per_period`` if the files hold new area only).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from rasterio.windows import Window

from ..config import InventoryDate, RunConfig
from ..errors import InputError
from ..grid import StudyGrid
from ..io.rasters import (
    RasterError,
    check_grid,
    open_raster,
    raster_info,
    read_on_grid,
    read_pixels,
    read_raster,
    resample_array,
)
from ..io.vectors import (
    check_vector_crs,
    is_vector_path,
    polygonal_parts,
    read_vectors,
    vector_info,
)
from .density import (
    SparseFractions,
    dense_fractions_to_cell_density,
    dissolve,
    fractions_to_cell_density,
    new_failed_density,
    new_failed_fractions,
    polygon_cell_density,
    polygon_pixel_fractions,
)

# A cell is mapped when at least this fraction of it is inside the mapped extent (float slack).
MAPPED_MIN_FRACTION = 1.0 - 1e-6
# Fine rasters are read in blocks of this many cell rows (bounded memory).
BLOCK_CELL_ROWS = 32

Level = Literal["fine", "cell"]


class InventoryError(InputError):
    """An inventory that cannot be used as given; the message names the file and the fix."""


@dataclass
class CellDensity:
    """Cumulative (or per-period) density of one inventory date on the cell grid (%)."""

    density: np.ndarray  # (cy, cx) float64, NaN = unmapped
    total_area_m2: float


@dataclass
class PixelFractions:
    """Area fractions of one inventory date on the fine grid, plus its unmapped cells."""

    fractions: SparseFractions
    unmapped_cells: np.ndarray  # (cy, cx) bool
    total_area_m2: float


def raster_level(path: str | Path, grid: StudyGrid) -> Level | None:
    """'fine' or 'cell' when the raster lies exactly on that grid, else None (resample)."""
    info = raster_info(path)
    levels: tuple[tuple[Level, Affine, tuple[int, int]], ...] = (
        ("fine", grid.fine_transform, grid.fine_shape),
        ("cell", grid.cell_transform, grid.cell_shape),
    )
    for level, transform, shape in levels:
        try:
            check_grid(info, grid.crs, transform, shape)
        except RasterError:
            continue
        return level
    if info.crs is None:
        check_grid(info, grid.crs, grid.fine_transform, grid.fine_shape)  # raises: no CRS
    return None


def check_inventory_file(path: str | Path, grid: StudyGrid, what: str = "inventory") -> None:
    """Cheap checks before any long work: the file exists, is readable and declares the CRS."""
    path = Path(path)
    if not path.exists():
        raise InventoryError(f"{path}: {what} file not found; check the path in your config")
    if is_vector_path(path):
        info = vector_info(path)
        check_vector_crs(info, grid.crs, what)
        if info.geometry_type and not any(k in info.geometry_type for k in ("Polygon", "Unknown")):
            raise InventoryError(
                f"{path}: {what} holds {info.geometry_type} geometries; it must hold polygons"
            )
    else:
        raster_level(path, grid)  # raises on unreadable or CRS-less rasters


def _fine_blocks(path: str | Path, grid: StudyGrid) -> Iterator[tuple[int, np.ndarray]]:
    """Rows blocks (first row, (rows, x) float64 with NaN nodata) of a raster on the fine grid."""
    block = BLOCK_CELL_ROWS * grid.cell_pixels
    rows, cols = grid.fine_shape
    with open_raster(path) as ds:
        nodata = ds.nodata
        for r0 in range(0, rows, block):
            h = min(block, rows - r0)
            data = read_pixels(ds, path, 1, window=Window(0, r0, cols, h), out_dtype="float64")
            if nodata is not None and not np.isnan(nodata):
                data[data == nodata] = np.nan
            yield r0, data


def _check_fraction_range(values: np.ndarray, path: str | Path, top: float, what: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    if lo < 0 or hi > top * (1 + 1e-6):
        fix = (
            "a fine mask holds 0/1 or area fractions in [0, 1]: rescale it (e.g. divide by 100 "
            "or 255)"
            if top == 1.0
            else "a cell density raster holds % of cell area in [0, 100]"
        )
        raise InventoryError(f"{path}: {what} values span [{lo:g}, {hi:g}]; {fix}")


def _raster_kind(path: str | Path, grid: StudyGrid) -> Level:
    level = raster_level(path, grid)
    if level is not None:
        return level
    info = raster_info(path)
    return "fine" if max(info.pixel_size) <= grid.cell_size_m / 2 else "cell"


def read_cell_density(
    path: str | Path, grid: StudyGrid, log: list[str] | None = None, what: str = "inventory"
) -> CellDensity:
    """Density (% of cell area) of one inventory on the cell grid; NaN = unmapped."""
    path = Path(path)
    cell_area = grid.cell_area_m2
    if is_vector_path(path):
        vec = read_vectors(path)
        check_vector_crs(vec, grid.crs, what)
        parts = dissolve(polygonal_parts(vec, what))
        density = polygon_cell_density(parts, grid.cell_transform, grid.cell_shape, dissolved=True)
        return CellDensity(density, float(np.nansum(density)) / 100.0 * cell_area)
    kind = _raster_kind(path, grid)
    if raster_level(path, grid) is None:
        data = read_on_grid(path, grid, level=kind, kind="mask", bands=1, log=log).astype(
            np.float64
        )
        _check_fraction_range(data, path, 1.0 if kind == "fine" else 100.0, what)
        density = (
            dense_fractions_to_cell_density(data, grid.cell_pixels) if kind == "fine" else data
        )
    elif kind == "cell":
        data, _ = read_raster(path, bands=1, dtype="float64")
        _check_fraction_range(data, path, 100.0, what)
        density = data
    else:
        density = np.empty(grid.cell_shape, dtype=np.float64)
        k = grid.cell_pixels
        for r0, block in _fine_blocks(path, grid):
            _check_fraction_range(block, path, 1.0, what)
            density[r0 // k : (r0 + block.shape[0]) // k] = dense_fractions_to_cell_density(
                block, k
            )
    return CellDensity(density, float(np.nansum(density)) / 100.0 * cell_area)


def read_pixel_fractions(
    path: str | Path,
    grid: StudyGrid,
    log: list[str] | None = None,
    what: str = "inventory",
    cache: dict | None = None,
) -> PixelFractions:
    """Area fraction per fine pixel of one inventory (for ``difference: pixel``), sparse.

    cache: shared across the dates of one run, so polygons repeated by consecutive cumulative
    inventories are intersected with the pixel grid once (``polygon_pixel_fractions``).
    """
    path = Path(path)
    k = grid.cell_pixels
    pixel_area = grid.pixel_size_m**2
    if is_vector_path(path):
        vec = read_vectors(path)
        check_vector_crs(vec, grid.crs, what)
        parts = dissolve(polygonal_parts(vec, what))
        fr = polygon_pixel_fractions(
            parts, grid.fine_transform, grid.fine_shape, dissolved=True, cache=cache
        )
        unmapped = np.zeros(grid.cell_shape, dtype=bool)
        return PixelFractions(fr, unmapped, fr.total * pixel_area)
    if _raster_kind(path, grid) == "cell":
        raise InventoryError(
            f"{path}: a cell-grid density raster cannot be differenced per pixel; set "
            "inventory.difference: cell, or give polygons or a fine mask"
        )
    if raster_level(path, grid) is None:
        data = read_on_grid(path, grid, level="fine", kind="mask", bands=1, log=log)
        blocks: Iterator[tuple[int, np.ndarray]] = iter([(0, data.astype(np.float64))])
    else:
        blocks = _fine_blocks(path, grid)
    pieces = []
    unmapped = np.zeros(grid.cell_shape, dtype=bool)
    for r0, block in blocks:
        _check_fraction_range(block, path, 1.0, what)
        nan = np.isnan(block)
        rows = block.shape[0]
        unmapped[r0 // k : (r0 + rows) // k] = nan.reshape(rows // k, k, -1, k).any(axis=(1, 3))
        pieces.append(SparseFractions.from_dense(np.where(nan, 0.0, block), r0, grid.fine_shape))
    fr = SparseFractions.concatenate(pieces, grid.fine_shape)
    return PixelFractions(fr, unmapped, fr.total * pixel_area)


def read_mapped_cells(
    path: str | Path, grid: StudyGrid, log: list[str] | None = None
) -> np.ndarray:
    """(cy, cx) bool: cells entirely inside a mapped-extent polygon layer or raster (> 0.5)."""
    path = Path(path)
    if is_vector_path(path):
        vec = read_vectors(path)
        check_vector_crs(vec, grid.crs, "mapped extent")
        parts = polygonal_parts(vec, "mapped extent")
        covered = polygon_cell_density(parts, grid.cell_transform, grid.cell_shape) / 100.0
        return covered >= MAPPED_MIN_FRACTION
    level = raster_level(path, grid)
    if level == "cell":
        data, _ = read_raster(path, bands=1, dtype="float64")
        return np.isfinite(data) & (data > 0.5)
    if level == "fine":
        mapped = np.zeros(grid.cell_shape, dtype=bool)
        k = grid.cell_pixels
        for r0, block in _fine_blocks(path, grid):
            inside = np.isfinite(block) & (block > 0.5)
            rows = block.shape[0]
            mapped[r0 // k : (r0 + rows) // k] = inside.reshape(rows // k, k, -1, k).all(
                axis=(1, 3)
            )
        return mapped
    data = read_raster(path, bands=1)[0]
    binary = np.where(np.isfinite(data), (data > 0.5).astype(np.float32), np.nan)
    info = raster_info(path)
    if log is not None:
        log.append(f"{path}: mapped extent resampled (area fraction) onto the cell grid")
    fraction = resample_array(
        binary,
        info.transform,
        info.crs,
        grid.cell_transform,
        grid.crs,
        grid.cell_shape,
        kind="mask",
    )
    return np.isfinite(fraction) & (fraction >= MAPPED_MIN_FRACTION)


def _empty_rule(totals: list[float], names: list[str], paths: list[Path], cumulative: bool) -> None:
    seen_area = False
    for total, name, path in zip(totals, names, paths, strict=True):
        if total > 0:
            seen_area = True
            continue
        if cumulative and seen_area:
            raise InventoryError(
                f"{path}: cumulative inventory '{name}' holds no landslide area although an "
                "earlier one does; cumulative area cannot vanish - check the file, or set "
                "inventory.kind: per_period if the files hold each period's new area"
            )
        warnings.warn(f"{path}: inventory '{name}' holds no landslide area", stacklevel=3)


#: A cumulative density falling by more than this (percentage points of the cell's area)
#: between two dates is refused: re-vegetation and mapping noise remove much less.
DECREASE_REFUSE_POINTS = 5.0
#: A cumulative inventory keeping less than this share of the previous date's landslide area is
#: taken for a per-period one (each file maps the new landslides only).
PER_PERIOD_RETAINED = 0.5


def _decrease_rule(densities: list[np.ndarray], names: list[str], paths: list[Path]) -> None:
    """Check cumulative cell densities (% of cell) for decreases between consecutive dates.

    A file that keeps less than :data:`PER_PERIOD_RETAINED` of the previous area is refused as
    a per-period inventory; a decrease above :data:`DECREASE_REFUSE_POINTS` is refused naming
    the dates and cells; smaller decreases are clipped to 0 new failure (DESIGN, Targets) with
    a warning counting the cells (prepare writes it to the cube's log).
    """
    for i in range(1, len(densities)):
        prev, cur = densities[i - 1], densities[i]
        both = np.isfinite(prev) & np.isfinite(cur)
        before = float(prev[both].sum())
        if before <= 0:
            continue
        kept = float(np.minimum(prev[both], cur[both]).sum()) / before
        if kept < PER_PERIOD_RETAINED:
            raise InventoryError(
                f"{paths[i]}: inventory.kind is cumulative but '{names[i]}' keeps only "
                f"{100 * kept:.0f} % of the landslide area that '{names[i - 1]}' ({paths[i - 1]}) "
                "maps: these look like per-period inventories (each file the new landslides "
                "only); set inventory.kind: per_period"
            )
        drop = np.where(both, prev - cur, 0.0)
        big = drop > DECREASE_REFUSE_POINTS
        if big.any():
            rows, cols = np.nonzero(big)
            shown = ", ".join(f"({r}, {c})" for r, c in zip(rows[:5], cols[:5], strict=True))
            raise InventoryError(
                f"{paths[i]}: the cumulative landslide density falls from '{names[i - 1]}' to "
                f"'{names[i]}' by up to {float(drop.max()):.1f} % of the cell area on "
                f"{int(big.sum())} cell(s) (row, col: {shown}{' ...' if big.sum() > 5 else ''}); "
                f"more than {DECREASE_REFUSE_POINTS:g} points is not re-vegetation or mapping "
                "noise: check that the files are cumulative and in date order, or set "
                "inventory.kind: per_period"
            )
        small = drop > 0
        if small.any():
            message = (
                f"{paths[i]}: cumulative density decreases from '{names[i - 1]}' to "
                f"'{names[i]}' on {int(small.sum())} cell(s) (at most {float(drop.max()):.2f} % "
                "of the cell area): clipped to 0 new failure (re-vegetation or mapping noise)"
            )
            warnings.warn(message, stacklevel=3)


def new_failure_targets(
    cfg: RunConfig,
    log: list[str] | None = None,
    on_date: Callable[[str], None] | None = None,
) -> np.ndarray:
    """New failed area density (% of cell) per period, (period, cy, cx) float32.

    ``inventory.kind: cumulative`` (default): max(0, cum_t - cum_{t-1}) with the baseline closing
    period 0, per cell (``difference: cell``, the paper) or per fine pixel before summing per
    cell (``difference: pixel``). ``kind: per_period``: each period's inventory is its new area
    (the baseline is not read). Unmapped cells are NaN. ``on_date(name)`` is called after each
    inventory date is read (for progress bars).
    """
    grid = cfg.study_grid()
    inv = cfg.inventory
    dates: list[InventoryDate] = list(cfg.periods)
    if inv.kind == "cumulative":
        dates = [cfg.baseline, *dates]
    elif log is not None:
        log.append(f"inventory.kind per_period: baseline {cfg.baseline.inventory} not used")

    def mapped_of(d: InventoryDate) -> np.ndarray | None:
        return None if d.mapped_extent is None else read_mapped_cells(d.mapped_extent, grid, log)

    totals: list[float] = []
    if inv.kind == "per_period" or inv.difference == "cell":
        densities = []
        for d in dates:
            cd = read_cell_density(d.inventory, grid, log, what=f"inventory '{d.name}'")
            mapped = mapped_of(d)
            if mapped is not None:
                cd.density[~mapped] = np.nan
            densities.append(cd.density)
            totals.append(cd.total_area_m2)
            if on_date:
                on_date(d.name)
        _empty_rule(
            totals, [d.name for d in dates], [d.inventory for d in dates], inv.kind == "cumulative"
        )
        stack = np.stack(densities)
        if inv.kind == "per_period":
            return stack.astype(np.float32)
        _decrease_rule(densities, [d.name for d in dates], [d.inventory for d in dates])
        return new_failed_density(stack[1:], stack[0]).astype(np.float32)

    out = np.empty((len(cfg.periods), *grid.cell_shape), dtype=np.float32)
    previous: PixelFractions | None = None
    previous_unmapped: np.ndarray | None = None
    cache: dict = {}
    cumulative: list[np.ndarray] = []
    for i, d in enumerate(dates):
        pf = read_pixel_fractions(d.inventory, grid, log, what=f"inventory '{d.name}'", cache=cache)
        unmapped = pf.unmapped_cells.copy()
        mapped = mapped_of(d)
        if mapped is not None:
            unmapped |= ~mapped
        totals.append(pf.total_area_m2)
        density = fractions_to_cell_density(pf.fractions, grid.cell_pixels)
        density[unmapped] = np.nan
        cumulative.append(density)
        if previous is not None:
            new = fractions_to_cell_density(
                new_failed_fractions(pf.fractions, previous.fractions), grid.cell_pixels
            )
            new[unmapped | previous_unmapped] = np.nan
            out[i - 1] = new
        previous, previous_unmapped = pf, unmapped
        if on_date:
            on_date(d.name)
    _empty_rule(totals, [d.name for d in dates], [d.inventory for d in dates], True)
    _decrease_rule(cumulative, [d.name for d in dates], [d.inventory for d in dates])
    return out
