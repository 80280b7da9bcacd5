"""``prepare``: validate every input, derive the predictors and targets, write the cube.

The stage entry point :func:`prepare` turns a :class:`~landslide_hazard.config.RunConfig` into
``<output.dir>/cube.zarr`` (the contract in :mod:`landslide_hazard.cube`):

1. **Validate** every input before any long work: missing files (all listed at once), CRS,
   declared units, PGA plausibility, rain days of every period, raster coverage of the grid,
   inventory files, and NaN holes in the DEM inside the study mask. Each error names the file,
   the problem and the fix (:class:`PrepareError`).
2. ``valid_cells``: cells whose k x k fine pixels are all valid DEM pixels inside the study mask.
3. ``target_density``: new failed area density per period (:mod:`landslide_hazard.inventory`).
4. ``dynamic`` and ``monsoons_since_eq``: trigger statistics per period on the cell grid
   (:mod:`landslide_hazard.predictors.triggers`). Rain statistics are computed on the rain's
   native grid, then resampled bilinearly to the cell grid; each PGA / sigma raster is
   resampled bilinearly to the cell grid first (events may come on different grids), then
   combined. Every resampling is written to the log (``attrs["provenance"]["log"]``).
5. ``static``: global passes (pit filling + D8 accumulation, river mask) on the whole fine grid
   with a few bytes per pixel, spilled to a scratch folder beside the cube (:func:`global_passes`);
   then tile by tile (:func:`compute_static_tile`) the local 3 x 3 bands, TWI, elevation and
   the exact distance to river (1-pixel halo, river window with a margin; identical to the
   whole-array result) straight into the Zarr chunks - in this process or on a
   dask.distributed cluster (``scheduler``). Memory and scale: ``docs/scale.md``.

Dynamic bands and targets are NaN outside ``valid_cells``; static bands are NaN outside the
valid DEM and the study mask.

Atomic output and resume: the cube is built in ``.<name>.partial`` beside the final path and
renamed onto it at the end, so a reader never sees half a cube. A marker file in the partial
store records the parts (and static tiles) already written, together with a fingerprint of the
resolved config, the inputs (sha256 of small files, size + mtime of big ones) and the package
version. A rerun after an interruption with the same fingerprint skips what is marked done; a
different fingerprint starts afresh. The global passes are always recomputed (they are not
stored).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from .. import __version__
from ..bands import DYNAMIC_NAMES, STATIC_NAMES
from ..config import RunConfig
from ..cube import Cube, CubeMeta, PeriodInfo, create_cube
from ..distributed import resolve_scheduler
from ..errors import InputError
from ..grid import StudyGrid
from ..io.atomic import atomic_write_text
from ..io.rasters import (
    RainStack,
    RasterError,
    RasterInfo,
    check_grid,
    raster_info,
    read_on_grid,
    read_rain_stack,
    resample_array,
)
from ..io.vectors import check_vector_crs, is_vector_path, read_vectors, vector_info
from ..predictors.triggers import (
    PGA_UNITS,
    monsoons_since,
    pga_stats,
    pga_to_ms2,
    rain_period_stats,
)
from ..run import cube_path

logger = logging.getLogger(__name__)

PROGRESS_FILE = "prepare_progress.json"
#: Files up to this size get a sha256 in the provenance; bigger ones size + mtime.
HASH_MAX_BYTES = 64 * 2**20
#: Largest plausible PGA (m/s2, 5 g): above it the declared unit is almost surely wrong.
PGA_MAX_PLAUSIBLE_MS2 = 5.0 * 9.80665
#: Largest plausible sigma of ln PGA (ShakeMap values are ~0.2-1).
SIGMA_MAX_PLAUSIBLE = 5.0
DEFAULT_TILE_PX = 512

_METRE_UNITS = {"", "m", "metre", "metres", "meter", "meters"}
_RAIN_UNITS = {"", "mm", "mm/day", "mm/d", "mm day-1", "mm d-1", "mm per day", "kg m-2 day-1"}
_PGA_UNIT_ALIASES = {
    "g": "g",
    "%g": "%g",
    "pctg": "%g",
    "percent g": "%g",
    "m/s2": "m/s2",
    "m/s^2": "m/s2",
    "m s-2": "m/s2",
    "m/s**2": "m/s2",
}


class PrepareError(InputError):
    """An input that prepare cannot use; the message names the file, the problem and the fix."""


# --------------------------------------------------------------------------------------------
# Small helpers


def _unit_of(path: Path) -> str:
    with rasterio.open(path) as ds:
        unit = ds.units[0] if ds.units else None
    return (unit or "").strip()


def file_provenance(path: str | Path) -> dict[str, Any]:
    """Path, size, mtime and (files up to HASH_MAX_BYTES) sha256 of an input file."""
    path = Path(path)
    stat = path.stat()
    entry: dict[str, Any] = {
        "path": str(path),
        "size": stat.st_size,
        "mtime": dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc).isoformat(),
    }
    if stat.st_size <= HASH_MAX_BYTES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    return entry


def input_paths(cfg: RunConfig) -> dict[str, Path]:
    """Every input file of a config, keyed by its role (``dem``, ``inventory:<name>`` ...)."""
    inp = cfg.inputs
    paths: dict[str, Path] = {"dem": inp.dem, "rain": inp.rain}
    for eq in inp.earthquakes:
        paths[f"pga:{eq.name}"] = eq.pga
        if eq.sigma_ln_pga is not None:
            paths[f"sigma_ln_pga:{eq.name}"] = eq.sigma_ln_pga
    if inp.rivers.path is not None:
        paths["rivers"] = inp.rivers.path
    if inp.study_mask is not None:
        paths["study_mask"] = inp.study_mask
    dates = [cfg.baseline, *cfg.periods] if cfg.inventory.kind == "cumulative" else cfg.periods
    for d in dates:
        paths[f"inventory:{d.name}"] = d.inventory
        if d.mapped_extent is not None:
            paths[f"mapped_extent:{d.name}"] = d.mapped_extent
    return paths


def period_infos(cfg: RunConfig) -> list[PeriodInfo]:
    """Periods with their (start exclusive, end inclusive] ISO dates."""
    starts = [cfg.baseline.date] + [p.date for p in cfg.periods[:-1]]
    return [
        PeriodInfo(p.name, s.isoformat(), p.date.isoformat())
        for p, s in zip(cfg.periods, starts, strict=True)
    ]


def cells_all(mask: np.ndarray, k: int) -> np.ndarray:
    """(cy, cx) bool: True where all k x k fine pixels of the cell are True."""
    rows, cols = mask.shape
    return mask.reshape(rows // k, k, cols // k, k).all(axis=(1, 3))


# --------------------------------------------------------------------------------------------
# Validation (everything cheap, before any long work)


@dataclass
class ValidatedInputs:
    """What validation read and checked, reused by the long work."""

    grid: StudyGrid
    dem: np.ndarray  # fine grid, float64 metres, NaN outside the valid DEM (collar)
    inside: np.ndarray  # fine grid bool: inside the study mask
    rain: RainStack
    provenance: dict[str, Any]
    log: list[str] = field(default_factory=list)

    @property
    def valid_pixels(self) -> np.ndarray:
        return np.isfinite(self.dem) & self.inside


def _check_files_exist(paths: dict[str, Path]) -> None:
    missing = [f"  - {role}: {path}" for role, path in paths.items() if not Path(path).exists()]
    if missing:
        raise PrepareError(
            f"{len(missing)} input file(s) not found:\n"
            + "\n".join(missing)
            + "\nfix the paths in the config (relative paths are relative to the config file)"
        )


def _check_raster_crs(path: Path, grid: StudyGrid, what: str) -> None:
    info = raster_info(path)
    if info.crs is None:
        raise PrepareError(
            f"{path}: {what} raster declares no CRS; assign one (gdal_edit.py -a_srs "
            f"{grid.crs} {path.name}) or reproject it onto the study grid"
        )


def _check_covers_grid(
    path: Path | str, crs, transform, shape: tuple[int, int], grid: StudyGrid, what: str
) -> None:
    """A raster's extent must contain the study grid (else resampling leaves NaN cells)."""
    h, w = shape
    t = transform
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    left, bottom, right, top = transform_bounds(
        crs, grid.crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21
    )
    g_left, g_bottom, g_right, g_top = grid.bounds
    slack = 1e-6 * grid.cell_size_m
    if (
        left > g_left + slack
        or right < g_right - slack
        or bottom > g_bottom + slack
        or top < g_top - slack
    ):
        raise PrepareError(
            f"{path}: the {what} raster covers ({left:.0f}, {bottom:.0f}, {right:.0f}, "
            f"{top:.0f}) but the study grid spans ({g_left:.0f}, {g_bottom:.0f}, {g_right:.0f}, "
            f"{g_top:.0f}) in {grid.crs}; give a raster that covers the whole grid"
        )


def _check_pga(cfg: RunConfig, grid: StudyGrid) -> None:
    for eq in cfg.inputs.earthquakes:
        # No coverage check per event: an aftershock ShakeMap may cover part of the grid only;
        # the maximum over events must be finite on every valid cell (checked in prepare).
        _check_raster_crs(eq.pga, grid, f"PGA ({eq.name})")
        declared = _unit_of(eq.pga).lower()
        if declared and _PGA_UNIT_ALIASES.get(declared) not in (None, eq.pga_unit):
            raise PrepareError(
                f"{eq.pga}: the file declares PGA in '{declared}' but the config says "
                f"pga_unit: '{eq.pga_unit}'; set earthquakes[{eq.name}].pga_unit to "
                f"'{_PGA_UNIT_ALIASES[declared]}'"
            )
        with rasterio.open(eq.pga) as ds:
            values = ds.read(1, out_dtype="float64", masked=True).compressed()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise PrepareError(f"{eq.pga}: PGA raster holds no valid value")
        if values.min() < 0:
            raise PrepareError(f"{eq.pga}: negative PGA values ({values.min():g}); PGA is >= 0")
        top = float(pga_to_ms2(values.max(), eq.pga_unit))
        if top > PGA_MAX_PLAUSIBLE_MS2:
            others = [u for u in PGA_UNITS if u != eq.pga_unit]
            raise PrepareError(
                f"{eq.pga}: PGA up to {values.max():g} {eq.pga_unit} = {top / 9.80665:.1f} g is "
                f"implausible (> 5 g); is the unit right? set pga_unit to one of {others}"
            )
        if eq.sigma_ln_pga is not None:
            _check_raster_crs(eq.sigma_ln_pga, grid, f"sigma of ln PGA ({eq.name})")
            with rasterio.open(eq.sigma_ln_pga) as ds:
                sig = ds.read(1, out_dtype="float64", masked=True).compressed()
            sig = sig[np.isfinite(sig)]
            if sig.size and (sig.min() < 0 or sig.max() > SIGMA_MAX_PLAUSIBLE):
                raise PrepareError(
                    f"{eq.sigma_ln_pga}: sigma of ln PGA spans [{sig.min():g}, {sig.max():g}]; "
                    "it is the dimensionless ShakeMap uncertainty of ln PGA (typically 0.2-1), "
                    "not a PGA in g or m/s2"
                )


def _check_rain(cfg: RunConfig, grid: StudyGrid) -> RainStack:
    netcdf = cfg.inputs.rain.suffix.lower() in (".nc", ".nc4", ".netcdf")
    if not netcdf:
        _check_raster_crs(cfg.inputs.rain, grid, "rain")
    declared = "" if netcdf else _unit_of(cfg.inputs.rain).lower()
    if declared not in _RAIN_UNITS:
        raise PrepareError(
            f"{cfg.inputs.rain}: daily rain declared in '{declared}'; prepare expects mm/day - "
            "convert the file (e.g. m/day x 1000) and set the band unit to mm/day"
        )
    rain = read_rain_stack(cfg.inputs.rain)
    for p in period_infos(cfg):
        rain.days_in(dt.date.fromisoformat(p.start), dt.date.fromisoformat(p.end))
    _check_covers_grid(rain.path, rain.crs, rain.transform, rain.data.shape[1:], grid, "rain")
    return rain


def _check_vectors(path: Path, grid: StudyGrid, what: str) -> None:
    info = vector_info(path)
    check_vector_crs(info, grid.crs, what)
    if info.features == 0:
        raise PrepareError(f"{path}: {what} layer holds no feature; give a non-empty file")


def _read_study_mask(cfg: RunConfig, grid: StudyGrid, log: list[str]) -> np.ndarray:
    """Fine-grid bool: pixel centre inside the study mask polygons, or raster value > 0.5."""
    path = cfg.inputs.study_mask
    if path is None:
        return np.ones(grid.fine_shape, dtype=bool)
    if is_vector_path(path):
        from rasterio.features import rasterize

        from ..io.vectors import polygonal_parts

        parts = polygonal_parts(read_vectors(path), "study mask")
        if len(parts) == 0:
            raise PrepareError(f"{path}: the study mask holds no polygon")
        burned = rasterize(
            ((g, 1) for g in parts),
            out_shape=grid.fine_shape,
            transform=grid.fine_transform,
            fill=0,
            all_touched=False,
            dtype="uint8",
        )
        return burned.astype(bool)
    data = read_on_grid(path, grid, level="fine", kind="classes", bands=1, log=log)
    return np.isfinite(data) & (data > 0.5)


def _read_dem(cfg: RunConfig, grid: StudyGrid, inside: np.ndarray, log: list[str]) -> np.ndarray:
    """The DEM on the fine grid with its collar NaN; NaN holes inside the study mask are an error.

    Holes outside the study mask are filled with the nearest valid elevation (flow routing
    needs a hole-free surface); those pixels are NaN in every static band anyway.
    """
    from scipy import ndimage

    from ..predictors.static import detect_fill_value, find_nodata_collar

    path = cfg.inputs.dem
    dem = read_on_grid(
        path, grid, level="fine", kind="continuous", bands=1, nodata=cfg.inputs.dem_nodata, log=log
    ).astype(np.float64)
    if np.isinf(dem).any():
        raise PrepareError(f"{path}: the DEM holds +-inf values; declare its nodata value")
    # The same collar rule as predictors.static.prepare_dem (NaN or an undeclared constant fill
    # connected to the border), applied in place: one whole-grid float64 array, not three.
    fill_value = detect_fill_value(dem) if cfg.inputs.dem_nodata is None else None
    collar = find_nodata_collar(dem, fill_value if fill_value is not None else np.nan)
    if fill_value is not None:
        log.append(f"{path}: undeclared fill value {fill_value:g} around the DEM taken as nodata")
    dem[collar] = np.nan
    holes = np.isnan(dem) & ~collar
    del collar
    inner = holes & inside
    if inner.any():
        rows, cols = np.nonzero(inner)
        x, y = grid.fine_transform @ (cols[0] + 0.5, rows[0] + 0.5)
        raise PrepareError(
            f"{path}: {int(inner.sum())} nodata pixel(s) inside the study area, not connected "
            f"to the DEM's border (first at fine row {rows[0]}, col {cols[0]}; x {x:.0f}, "
            f"y {y:.0f}); fill them (gdal_fillnodata.py), declare dem_nodata correctly, or "
            "exclude them with a study mask"
        )
    del inner
    if holes.any():
        _, (ri, ci) = ndimage.distance_transform_edt(np.isnan(dem), return_indices=True)
        dem[holes] = dem[ri[holes], ci[holes]]
        del ri, ci
        log.append(
            f"{path}: {int(holes.sum())} nodata pixel(s) outside the study mask filled "
            "with the nearest elevation for flow routing (NaN in the cube)"
        )
    return dem


def validate_inputs(cfg: RunConfig, log: list[str] | None = None) -> ValidatedInputs:
    """Check every input of ``cfg`` and read the DEM, study mask and rain (no long work).

    Raises a :class:`PrepareError` (or a RasterError / VectorError / InventoryError, all
    ValueErrors) naming the file and the fix.
    """
    from ..inventory import check_inventory_file

    log = [] if log is None else log
    grid = cfg.study_grid()
    paths = input_paths(cfg)
    _check_files_exist(paths)

    _check_raster_crs(cfg.inputs.dem, grid, "DEM")
    unit = _unit_of(cfg.inputs.dem).lower()
    if unit not in _METRE_UNITS:
        raise PrepareError(
            f"{cfg.inputs.dem}: DEM elevation declared in '{unit}'; prepare expects metres - "
            "convert it (e.g. feet x 0.3048) and set the band unit to m"
        )
    rain = _check_rain(cfg, grid)
    _check_pga(cfg, grid)
    last_end = cfg.periods[-1].date
    for eq in cfg.inputs.earthquakes:
        if eq.date > last_end:
            log.append(f"earthquake {eq.name} ({eq.date}) is after the last period: not used")
    rivers = cfg.inputs.rivers.path
    if rivers is not None:
        if is_vector_path(rivers):
            _check_vectors(rivers, grid, "rivers")
        else:
            _check_raster_crs(rivers, grid, "river mask")
    if cfg.inputs.study_mask is not None:
        if is_vector_path(cfg.inputs.study_mask):
            _check_vectors(cfg.inputs.study_mask, grid, "study mask")
        else:
            _check_raster_crs(cfg.inputs.study_mask, grid, "study mask")
    dates = [cfg.baseline, *cfg.periods] if cfg.inventory.kind == "cumulative" else cfg.periods
    for d in dates:
        check_inventory_file(d.inventory, grid, f"inventory '{d.name}'")
        if d.mapped_extent is not None:
            check_inventory_file(d.mapped_extent, grid, f"mapped extent '{d.name}'")

    inside = _read_study_mask(cfg, grid, log)
    dem = _read_dem(cfg, grid, inside, log)
    if not (np.isfinite(dem) & inside).any():
        raise PrepareError(
            f"{cfg.inputs.dem}: no valid DEM pixel inside the study area; check that the DEM, "
            "the study mask and grid.origin / grid.shape_cells describe the same place"
        )
    provenance = {
        "inputs": {role: file_provenance(p) for role, p in paths.items()},
        "config": cfg.model_dump(mode="json"),
        "package_version": __version__,
    }
    return ValidatedInputs(grid, dem, inside, rain, provenance, log)


# --------------------------------------------------------------------------------------------
# Computation of the parts


def compute_dynamic(
    cfg: RunConfig, rain: RainStack, grid: StudyGrid, log: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(dynamic (period, band, cy, cx) float32 in DYNAMIC_NAMES order, monsoons (period,))."""
    periods = period_infos(cfg)
    cell_shape = grid.cell_shape
    resample_rain = not _on_cell_grid(rain.crs, rain.transform, rain.data.shape[1:], grid)
    if resample_rain:
        log.append(
            f"{rain.path}: rain statistics computed on the native grid "
            f"{rain.data.shape[1:]} @ {abs(rain.transform.a):g} m and resampled (bilinear) "
            f"onto the cell grid {cell_shape}"
        )
    pga, sigma = [], []
    for eq in cfg.inputs.earthquakes:
        values = read_on_grid(eq.pga, grid, level="cell", kind="continuous", bands=1, log=log)
        pga.append(pga_to_ms2(values, eq.pga_unit))
        sigma.append(
            None
            if eq.sigma_ln_pga is None
            else read_on_grid(
                eq.sigma_ln_pga, grid, level="cell", kind="continuous", bands=1, log=log
            ).astype(np.float64)
        )
    events = sorted(cfg.inputs.earthquakes, key=lambda e: e.date)
    if not events:
        log.append("no earthquake configured: pga_max = pga_std = 0 and monsoons_since_eq = 0")
    out = np.full((len(periods), len(DYNAMIC_NAMES), *cell_shape), np.nan, dtype=np.float32)
    monsoons = np.zeros(len(periods), dtype=np.float32)
    for i, p in enumerate(periods):
        start, end = dt.date.fromisoformat(p.start), dt.date.fromisoformat(p.end)
        rain_max, rain_ci95 = rain_period_stats(rain.data, rain.days_in(start, end))
        if resample_rain:
            rain_max, rain_ci95 = resample_array(
                np.stack([rain_max, rain_ci95]),
                rain.transform,
                rain.crs,
                grid.cell_transform,
                grid.crs,
                cell_shape,
                kind="continuous",
            )
        active = [j for j, eq in enumerate(cfg.inputs.earthquakes) if eq.date <= end]
        pga_max, pga_std = pga_stats(
            [pga[j] for j in active], [sigma[j] for j in active], shape=cell_shape
        )
        bands = {
            "rain_max": rain_max,
            "rain_ci95": rain_ci95,
            "pga_max": pga_max,
            "pga_std": pga_std,
        }
        for b, name in enumerate(DYNAMIC_NAMES):
            out[i, b] = bands[name]
        if events:
            monsoons[i] = monsoons_since(events[0].date, end, cfg.monsoon.start, cfg.monsoon.end)
    return out, monsoons


def _on_cell_grid(crs, transform, shape: tuple[int, int], grid: StudyGrid) -> bool:
    """True if a native grid is exactly the study cell grid (no resampling needed)."""
    info = RasterInfo("", crs, transform, tuple(shape), None, (), 1)
    try:
        check_grid(info, grid.crs, grid.cell_transform, grid.cell_shape)
    except RasterError:
        return False
    return True


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


# --------------------------------------------------------------------------------------------
# Resume markers


def _fingerprint(provenance: dict[str, Any], tile_px: int, chunk_px: int) -> str:
    blob = json.dumps(
        {"p": provenance, "tile": tile_px, "chunk": chunk_px}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_progress(store: Path) -> dict[str, Any]:
    try:
        return json.loads((store / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_progress(store: Path, progress: dict[str, Any]) -> None:
    atomic_write_text(store / PROGRESS_FILE, json.dumps(progress))


# --------------------------------------------------------------------------------------------
# The entry point


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]prepare[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        yield bar


def prepare(
    cfg: RunConfig,
    out: Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    tile_px: int = DEFAULT_TILE_PX,
    chunk_px: int = 256,
    scheduler: str | None = None,
) -> Path:
    """Validate the inputs of ``cfg`` and write the predictor cube; return its path.

    out: the cube path (default ``<cfg.output.dir>/cube.zarr``); progress: show a rich progress
    bar; overwrite: replace an existing cube (it stays intact until the new one is complete);
    tile_px: fine pixels per side of the static tiles (memory of the tile loop); chunk_px: Zarr
    chunk of the static array (a divisor of tile_px keeps writes chunk-aligned); scheduler:
    run the static tiles on dask.distributed - ``"local"`` for a LocalCluster on this machine,
    or a scheduler address such as ``tcp://10.0.0.5:8786`` (None: the environment variable
    ``LANDSLIDE_HAZARD_SCHEDULER`` if set, else in this process). The cube is the same either
    way (docs/scale.md).
    """
    scheduler = resolve_scheduler(scheduler)
    out = Path(out) if out is not None else cube_path(cfg)
    if out.exists() and not overwrite:
        raise PrepareError(f"{out}: a cube already exists; pass --overwrite to replace it")
    partial = out.parent / f".{out.name}.partial"
    log: list[str] = []
    with _progress_bar(progress) as bar:
        task = bar.add_task("validating inputs", total=None) if bar else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inputs = validate_inputs(cfg, log)
        for w in caught:
            log.append(f"warning: {w.message}")
        grid = inputs.grid
        fingerprint = _fingerprint(inputs.provenance, tile_px, chunk_px)
        state = _read_progress(partial) if partial.exists() else {}
        if partial.exists() and state.get("fingerprint") != fingerprint:
            log.append(f"{partial}: leftover from another config or inputs; starting afresh")
            shutil.rmtree(partial)
            state = {}
        if partial.exists():
            # keep what the interrupted run logged about the parts it finished
            log.extend(line for line in state.get("log", []) if line not in log)
            log.append(
                f"{partial}: resuming (done: {state.get('parts', [])}, "
                f"{len(state.get('tiles', []))} static tile(s))"
            )
            cube = Cube(partial, mode="r+")
        else:
            meta = CubeMeta(grid, period_infos(cfg), provenance=inputs.provenance)
            cube = create_cube(partial, meta, chunk_px=chunk_px)
            state = {"fingerprint": fingerprint, "parts": [], "tiles": []}
            _write_progress(partial, state)
        parts: list[str] = state["parts"]

        def done(part: str) -> None:
            parts.append(part)
            state["log"] = log
            _write_progress(partial, state)

        valid_cells = cells_all(inputs.valid_pixels, grid.cell_pixels)
        if "valid_cells" not in parts:
            cube.group["valid_cells"][:] = valid_cells.astype(np.uint8)
            done("valid_cells")

        n_dates = len(cfg.periods) + (cfg.inventory.kind == "cumulative")
        if "targets" not in parts:
            from ..inventory import new_failure_targets

            if bar:
                bar.update(task, description="inventories", total=n_dates, completed=0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                targets = new_failure_targets(
                    cfg, log, on_date=(lambda _: bar.advance(task)) if bar else None
                )
            for w in caught:
                log.append(f"warning: {w.message}")
                warnings.warn(str(w.message), stacklevel=2)
            targets[:, ~valid_cells] = np.nan
            cube.target_density[:] = targets
            done("targets")

        if "dynamic" not in parts:
            if bar:
                bar.update(task, description="trigger bands", total=1, completed=0)
            dynamic, monsoons = compute_dynamic(cfg, inputs.rain, grid, log)
            dynamic[:, :, ~valid_cells] = np.nan
            gap = np.isnan(dynamic[:, :, valid_cells]).any(axis=(0, 2))
            if gap.any():
                names = [DYNAMIC_NAMES[b] for b in np.nonzero(gap)[0]]
                files = [str(cfg.inputs.rain)] if gap[:2].any() else []
                files += [str(e.pga) for e in cfg.inputs.earthquakes] if gap[2:].any() else []
                raise PrepareError(
                    f"{', '.join(files)}: {', '.join(names)} NaN on "
                    f"{int(np.isnan(dynamic[:, :, valid_cells]).any(axis=(0, 1)).sum())} valid "
                    "cell(s): the raster(s) hold nodata or do not reach there; fill them, give "
                    "rasters that cover the study area, or exclude those cells with a study mask"
                )
            cube.dynamic[:] = dynamic
            cube.group["monsoons_since_eq"][:] = monsoons
            if bar:
                bar.advance(task)
            done("dynamic")

        if "static" not in parts:
            _write_static(
                cfg, inputs, cube, state, partial, tile_px, log, bar, task, scheduler=scheduler
            )
            done("static")

        if bar:
            bar.update(task, description="finishing", total=1, completed=1)
        provenance = dict(inputs.provenance)
        provenance["log"] = log
        provenance["prepared"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        cube.group.attrs["provenance"] = provenance
        (partial / PROGRESS_FILE).unlink()
    _replace(partial, out)
    for line in log:
        logger.info(line)
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


def _write_static(
    cfg,
    inputs: ValidatedInputs,
    cube: Cube,
    state: dict,
    partial: Path,
    tile_px: int,
    log: list[str],
    bar,
    task,
    scheduler: str | None = None,
) -> None:
    """Global passes (spilled to a scratch folder), then the static bands tile by tile.

    Resumable per tile. The tiles run in this process, or on a dask.distributed cluster when
    ``scheduler`` is given (``"local"``: a LocalCluster; else a scheduler address).
    """
    from .. import distributed as dist

    grid = inputs.grid
    tiles = static_tiles(grid.fine_shape, tile_px)
    done_tiles = set(state.get("tiles", []))
    chunk = cube.static.chunks[1:]
    if scheduler is not None and (tile_px % chunk[0] or tile_px % chunk[1]):
        raise PrepareError(
            f"tile_px {tile_px} is not a multiple of the cube's chunk {chunk[0]} px: parallel "
            "tiles would write into the same Zarr chunks; choose tile_px as a multiple of "
            "chunk_px"
        )

    def step(what: str) -> None:
        if bar:
            bar.update(task, description=what, total=None)

    folder = partial.parent / (partial.name.removesuffix(".partial") + ".scratch")
    try:
        src = global_passes(cfg, inputs, folder, log, step)
        pending = [(i, t) for i, t in enumerate(tiles) if i not in done_tiles]
        if bar:
            bar.update(
                task, description="static bands", total=len(tiles), completed=len(done_tiles)
            )

        def finished(i: int) -> None:
            state["tiles"].append(i)
            _write_progress(partial, state)
            if bar:
                bar.advance(task)

        if scheduler is None:
            for i, (rows, cols) in pending:
                cube.static[:, rows, cols] = compute_static_tile(src, rows, cols)
                finished(i)
        else:
            with dist.client_for(scheduler) as client:
                log.append(f"static tiles computed on dask.distributed ({dist.describe(client)})")
                for i in dist.run_tiles(client, write_static_tile, src, str(partial), pending):
                    finished(i)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(partial: Path, out: Path) -> None:
    """Move the finished store onto ``out``; an old cube is removed only after the move."""
    if out.exists():
        trash = out.parent / f".{out.name}.old"
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash)
    else:
        os.replace(partial, out)
