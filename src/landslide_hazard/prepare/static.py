"""The cube's static bands: global passes on the whole fine grid, then tile by tile.

:func:`global_passes` (pit filling + D8 accumulation, river mask) runs on the whole fine grid
with a few bytes per pixel and spills its results to a scratch folder (:class:`StaticScratch`);
:func:`compute_static_tile` then computes the local 3 x 3 bands, TWI, elevation and the exact
distance to river of one tile (1-pixel halo, river window with a margin; identical to the
whole-array result). Memory and scale: ``docs/scale.md``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bands import STATIC_NAMES
from ..config import RunConfig
from ..cube import Cube
from ..grid import StudyGrid
from ..io.rasters import (
    read_on_grid,
)
from ..io.vectors import check_vector_crs, is_vector_path, read_vectors
from .inputs import PrepareError, ValidatedInputs

DEFAULT_TILE_PX = 512


def static_tiles(shape: tuple[int, int], tile: int) -> list[tuple[slice, slice]]:
    """Row-major tiles of at most ``tile`` x ``tile`` pixels covering ``shape``."""
    return [
        (slice(r, min(r + tile, shape[0])), slice(c, min(c + tile, shape[1])))
        for r in range(0, shape[0], tile)
        for c in range(0, shape[1], tile)
    ]


def static_tile(
    z: np.ndarray,
    accumulation: np.ndarray,
    distance: np.ndarray,
    valid: np.ndarray,
    rows: slice,
    cols: slice,
    pixel_size_m: float,
) -> np.ndarray:
    """The 8 static bands (STATIC_NAMES order) of one tile, float32, NaN outside ``valid``.

    The 3 x 3 window bands are computed on the tile plus a 1-pixel halo (NaN beyond the array
    border), so tiles equal the whole-array result exactly.
    """
    from ..predictors.hydrology import twi_from
    from ..predictors.terrain import zevenbergen_thorne

    r0, r1 = rows.start - 1, rows.stop + 1
    c0, c1 = cols.start - 1, cols.stop + 1
    window = np.full((r1 - r0, c1 - c0), np.nan, dtype=np.float64)
    sr0, sc0 = max(r0, 0), max(c0, 0)
    sr1, sc1 = min(r1, z.shape[0]), min(c1, z.shape[1])
    window[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = z[sr0:sr1, sc0:sc1]
    local = {k: v[1:-1, 1:-1] for k, v in zevenbergen_thorne(window, pixel_size_m).items()}
    bands = {
        "elevation": z[rows, cols],
        **local,
        "twi": twi_from(accumulation[rows, cols], local["slope"], pixel_size_m),
        "dist_to_river": distance[rows, cols],
    }
    out = np.stack([np.asarray(bands[n], dtype=np.float32) for n in STATIC_NAMES])
    out[:, ~valid[rows, cols]] = np.nan
    return out


@dataclass(frozen=True)
class StaticScratch:
    """The global passes' results, spilled as ``.npy`` files for the tile loop to read.

    dem: float64 m, the DEM as validated (collar NaN, outer holes filled); accumulation:
    float32 upslope pixel counts, NaN at nodata; river: bool river pixels; valid: bool valid
    pixels (valid DEM and inside the study mask). All on the fine grid. A tile reads only its
    window of each (a memory map opened and closed per tile), so the tile loop's memory does
    not grow with the grid and any worker that sees the folder can compute any tile.
    """

    folder: Path
    shape: tuple[int, int]
    pixel_size_m: float
    distance_margin_px: int = 256

    @property
    def dem(self) -> Path:
        return self.folder / "dem.npy"

    @property
    def accumulation(self) -> Path:
        return self.folder / "accumulation.npy"

    @property
    def river(self) -> Path:
        return self.folder / "river.npy"

    @property
    def valid(self) -> Path:
        return self.folder / "valid.npy"


def _window(path: Path, rows: slice, cols: slice) -> np.ndarray:
    """A copy of rows x cols of a .npy file (the memory map is closed again at once)."""
    mm = np.load(path, mmap_mode="r")
    try:
        return np.array(mm[rows, cols])
    finally:
        del mm


def compute_static_tile(src: StaticScratch, rows: slice, cols: slice) -> np.ndarray:
    """The 8 static bands (STATIC_NAMES order, float32) of one tile from the spilled passes.

    Reads the tile plus a 1-pixel halo of the DEM, the tile's accumulation and valid pixels,
    and computes the distance to river exactly from a window of the river mask
    (:func:`~landslide_hazard.predictors.hydrology.distance_to_river_tile`); then
    :func:`static_tile`. Equal to the whole-array computation bit for bit.
    """
    from ..predictors.hydrology import distance_to_river_tile

    height, width = src.shape
    r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, height)
    c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, width)
    win_r, win_c = slice(r0, r1), slice(c0, c1)
    local_r = slice(rows.start - r0, rows.stop - r0)
    local_c = slice(cols.start - c0, cols.stop - c0)
    z = _window(src.dem, win_r, win_c)
    accumulation = _window(src.accumulation, win_r, win_c)
    valid = _window(src.valid, win_r, win_c)
    distance = np.full(z.shape, np.nan, dtype=np.float32)
    river = np.load(src.river, mmap_mode="r")
    try:
        distance[local_r, local_c] = distance_to_river_tile(
            river,
            rows,
            cols,
            src.pixel_size_m,
            margin=src.distance_margin_px,
            where=valid[local_r, local_c],  # static_tile masks the others anyway
        )
    finally:
        del river
    return static_tile(z, accumulation, distance, valid, local_r, local_c, src.pixel_size_m)


def write_static_tile(src: StaticScratch, store: str, index: int, rows: slice, cols: slice) -> int:
    """Compute one tile and write it into the ``static`` array of the Zarr store; its index.

    The task a dask worker runs: it needs only ``src.folder`` and ``store`` on a file system
    it shares with the client. Tiles aligned with the Zarr chunks never share a chunk, so
    concurrent writes are safe.
    """
    from ..runtime import single_thread_worker

    single_thread_worker()  # parallelism comes from the workers (no-op cost after the first)
    Cube(store, mode="r+").static[:, rows, cols] = compute_static_tile(src, rows, cols)
    return index


def global_passes(
    cfg: RunConfig,
    inputs: ValidatedInputs,
    folder: Path,
    log: list[str],
    step=None,
) -> StaticScratch:
    """Pit filling, D8 accumulation and the river mask of the whole grid, spilled to ``folder``.

    The validated DEM is **taken out of** ``inputs`` (``inputs.dem`` becomes None, so that this
    function holds the only reference and can drop it): written to ``folder/dem.npy`` first,
    then filled in place. Memory: the DEM (8 B/px), a 1-byte flag and the flood's heap during
    the fill; then D8 codes (1 B/px) + uint8 indegree + uint32 counts (5 B/px); the river mask
    (1 B/px). See docs/scale.md.
    """
    from ..predictors.hydrology import (
        accumulate_d8_counts,
        counts_to_float32,
        d8_flow_directions,
        fill_pits,
        river_mask_from_counts,
    )

    step = step or (lambda _what: None)
    grid = inputs.grid
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    src = StaticScratch(folder, grid.fine_shape, grid.pixel_size_m)
    np.save(src.valid, inputs.valid_pixels)
    z = np.ascontiguousarray(inputs.dem, dtype=np.float64)
    inputs.dem = None  # type: ignore[assignment]  # consumed: filled in place below
    np.save(src.dem, z)
    step("pit filling (global)")
    fill_pits(z, in_place=True)
    step("D8 accumulation (global)")
    codes = d8_flow_directions(z)
    del z
    counts = accumulate_d8_counts(codes)
    step("rivers (global)")
    path = cfg.inputs.rivers.path
    if path is None:
        log.append(f"rivers: D8 contributing area >= {cfg.inputs.rivers.accumulation_km2} km2")
        river = river_mask_from_counts(
            counts, grid.pixel_size_m, cfg.inputs.rivers.accumulation_km2
        )
    else:
        river = _river_mask_from_file(path, grid, log)
    if not river.any():
        where = path or "rivers.accumulation_km2"
        raise PrepareError(
            f"{where}: the river mask holds no river pixel, so distance to river is undefined; "
            "lower rivers.accumulation_km2, or give river lines or a river raster"
        )
    np.save(src.river, river)
    del river
    # float32 holds pixel counts exactly up to 2^24 (16,777 km2 at 31.25 m), far more than
    # TWI's log needs beyond; counts are rounded once, as float64 -> float32 would.
    np.save(src.accumulation, counts_to_float32(counts, codes))
    return src


def _river_mask_from_file(path: Path, grid: StudyGrid, log: list[str]) -> np.ndarray:
    from ..predictors.hydrology import rasterize_rivers

    if is_vector_path(path):
        vec = read_vectors(path)
        check_vector_crs(vec, grid.crs, "rivers")
        return rasterize_rivers(vec.geometries, grid.fine_transform, grid.fine_shape)
    data = read_on_grid(path, grid, level="fine", kind="classes", bands=1, log=log)
    return np.isfinite(data) & (data > 0.5)
