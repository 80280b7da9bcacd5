"""Validation of a run's inputs, before any long work, and what it reads for the long work.

:func:`validate_inputs` checks every input of a config: missing files (all listed at once), CRS,
declared units, PGA plausibility, rain days of every period, raster coverage of the grid,
inventory files, and NaN holes in the DEM inside the study mask. Each error names the file, the
problem and the fix (:class:`PrepareError`). It returns the DEM, the study mask and the rain
stack (:class:`ValidatedInputs`) and the inputs' provenance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.warp import transform_bounds

from .. import __version__
from ..config import RunConfig
from ..cube import PeriodInfo
from ..errors import InputError
from ..grid import StudyGrid
from ..io.rasters import (
    RainStack,
    raster_info,
    read_on_grid,
    read_rain_stack,
    read_raster,
)
from ..io.vectors import check_vector_crs, is_vector_path, read_vectors, vector_info
from ..predictors.triggers import (
    PGA_UNIT_ALIASES,
    PGA_UNITS,
    pga_to_ms2,
)
from ..units import elevation_factor, normalise_tag

#: Files up to this size get a sha256 in the provenance; bigger ones size + mtime.
HASH_MAX_BYTES = 64 * 2**20
#: Largest plausible PGA (m/s2, 5 g): above it the declared unit is almost surely wrong.
PGA_MAX_PLAUSIBLE_MS2 = 5.0 * 9.80665
# Plausibility bounds of the inputs' values (docs/prepare.md, "Units"): outside them prepare
# refuses, in the grey zone it warns. The largest PGA recorded is about 4 g (Iwate 2008); a
# mainshock that triggers landslides shakes its area far above 0.05 g.
PGA_GREY_G = 2.0
PGA_MAINSHOCK_MIN_G = 0.05
DEM_MAX_PLAUSIBLE_M = 9000.0  # above Everest (8,849 m): feet or decimetres
RAIN_MAX_PLAUSIBLE_MM = 2000.0  # above the world's 24-hour record (1,825 mm, Reunion 1966)
RAIN_GREY_MM = 1000.0
RAIN_MIN_WETTEST_MM = 1.0  # the wettest day of a stack of >= 30 days, anywhere: m/day?
RAIN_MIN_DAYS_FOR_CHECK = 30
#: Largest plausible sigma of ln PGA (ShakeMap values are ~0.2-1).
SIGMA_MAX_PLAUSIBLE = 5.0


class PrepareError(InputError):
    """An input that prepare cannot use; the message names the file, the problem and the fix."""


# --------------------------------------------------------------------------------------------
# Small helpers


def _unit_of(path: Path) -> str:
    """The first band's unit tag, normalised (lower case, single spaces)."""
    units = raster_info(path).units
    return normalise_tag(units[0] if units else None)


def _check_one_band(path: Path, what: str, fix: str) -> None:
    """Refuse a raster with more bands than the one prepare reads (the rest would be dropped)."""
    count = raster_info(path).count
    if count != 1:
        raise PrepareError(
            f"{path}: the {what} raster holds {count} bands but prepare reads one (the others "
            f"would be silently dropped); {fix}"
        )


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
    return np.asarray(mask.reshape(rows // k, k, cols // k, k).all(axis=(1, 3)))


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
        _check_one_band(
            eq.pga,
            f"PGA ({eq.name})",
            "give one file per event, each a separate earthquakes entry",
        )
        declared = _unit_of(eq.pga)
        if declared and PGA_UNIT_ALIASES.get(declared) not in (None, eq.pga_unit):
            raise PrepareError(
                f"{eq.pga}: the file declares PGA in '{declared}' but the config says "
                f"pga_unit: '{eq.pga_unit}'; set earthquakes[{eq.name}].pga_unit to "
                f"'{PGA_UNIT_ALIASES[declared]}'"
            )
        values, _ = read_raster(eq.pga, bands=1, dtype="float64")
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
        top_g = top / 9.80665
        if top_g > PGA_GREY_G:
            warnings.warn(
                f"{eq.pga}: PGA up to {top_g:.1f} g; the largest ever recorded is about 4 g - if "
                f"the file is in m/s2, set earthquakes[{eq.name}].pga_unit: m/s2",
                stacklevel=2,
            )
        if eq is cfg.inputs.earthquakes[0] and top_g < PGA_MAINSHOCK_MIN_G:
            warnings.warn(
                f"{eq.pga}: the mainshock's largest PGA is {top_g:.3f} g (< {PGA_MAINSHOCK_MIN_G} "
                "g), too weak to trigger landslides: either the file is in g and pga_unit says "
                f"m/s2 (set earthquakes[{eq.name}].pga_unit: g), or the raster does not cover "
                "the epicentral area",
                stacklevel=2,
            )
        if eq.sigma_ln_pga is not None:
            _check_raster_crs(eq.sigma_ln_pga, grid, f"sigma of ln PGA ({eq.name})")
            _check_one_band(
                eq.sigma_ln_pga,
                f"sigma of ln PGA ({eq.name})",
                "give the event's ShakeMap uncertainty as a one-band file",
            )
            sig, _ = read_raster(eq.sigma_ln_pga, bands=1, dtype="float64")
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
    rain = read_rain_stack(cfg.inputs.rain)  # converts a declared unit to mm/day
    _check_rain_values(rain)
    for p in period_infos(cfg):
        rain.days_in(dt.date.fromisoformat(p.start), dt.date.fromisoformat(p.end))
    _check_covers_grid(rain.path, rain.crs, rain.transform, rain.data.shape[1:], grid, "rain")
    return rain


def _check_rain_values(rain: RainStack) -> None:
    """Refuse daily rain outside the plausible bounds (a unit error), warn in the grey zone."""
    data = np.asarray(rain.data, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise PrepareError(f"{rain.path}: the rain stack holds no valid value")
    wettest = float(finite.max())
    if finite.min() < 0:
        raise PrepareError(f"{rain.path}: negative daily rain ({finite.min():g} mm); rain is >= 0")
    if wettest > RAIN_MAX_PLAUSIBLE_MM:
        raise PrepareError(
            f"{rain.path}: daily rain up to {wettest:g} mm, above the world's 24-hour record "
            f"(1,825 mm); prepare expects mm/day - convert the file (e.g. 0.1 mm units / 10, "
            "kg m-2 s-1 x 86400)"
        )
    if len(rain.dates) >= RAIN_MIN_DAYS_FOR_CHECK and wettest < RAIN_MIN_WETTEST_MM:
        raise PrepareError(
            f"{rain.path}: the wettest of its {len(rain.dates)} days holds {wettest:g} mm; prepare "
            "expects mm/day - a file in m/day needs x 1000 (set the band unit to mm/day)"
        )
    if wettest > RAIN_GREY_MM:
        warnings.warn(
            f"{rain.path}: daily rain up to {wettest:g} mm, beyond almost every record: check "
            "that the file is in mm/day",
            stacklevel=3,
        )


def _check_dem_values(cfg: RunConfig, dem: np.ndarray, inside: np.ndarray) -> None:
    """Refuse a DEM whose highest point is above Everest: a unit error (feet, decimetres)."""
    values = dem[inside & np.isfinite(dem)]
    if values.size and float(values.max()) > DEM_MAX_PLAUSIBLE_M:
        top = float(values.max())
        raise PrepareError(
            f"{cfg.inputs.dem}: highest point {top:,.0f} m, above Everest (8,849 m); is the DEM "
            f"in feet ({top * 0.3048:,.0f} m if so)? convert it to metres (feet x 0.3048) and "
            "set the band unit to m"
        )


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
    unit = _unit_of(path)
    factor = elevation_factor(unit)
    if factor is not None and factor != 1.0:
        dem *= factor
        message = f"{path}: DEM elevation declared in '{unit}': converted to metres (x {factor:g})"
        log.append(message)
        warnings.warn(message, stacklevel=3)
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
    holes |= _fill_blocks(path, dem, inside, grid, log)
    if holes.any():
        _, (ri, ci) = ndimage.distance_transform_edt(np.isnan(dem), return_indices=True)
        dem[holes] = dem[ri[holes], ci[holes]]
        del ri, ci
        log.append(
            f"{path}: {int(holes.sum())} nodata pixel(s) outside the study mask filled "
            "with the nearest elevation for flow routing (NaN in the cube)"
        )
    return dem


def _fill_blocks(
    path: Path, dem: np.ndarray, inside: np.ndarray, grid: StudyGrid, log: list[str]
) -> np.ndarray:
    """Refuse constant fill blocks inside the study area (``dem_checks``); blocks outside it
    become NaN (returned as a mask, filled for flow routing like the other holes)."""
    from .dem_checks import find_fill_blocks

    blocks = find_fill_blocks(dem)
    if not blocks:
        return np.zeros(dem.shape, dtype=bool)
    mask = np.zeros(dem.shape, dtype=bool)
    refused = []
    for b in blocks:
        window = (slice(b.rows[0], b.rows[1] + 1), slice(b.cols[0], b.cols[1] + 1))
        pixels = dem[window] == b.value
        if (pixels & inside[window]).any():
            refused.append(b)
        mask[window] |= pixels
    if refused:
        b = max(refused, key=lambda blk: blk.pixels)
        x0, y0 = grid.fine_transform @ (b.cols[0], b.rows[0])
        x1, y1 = grid.fine_transform @ (b.cols[1] + 1, b.rows[1] + 1)
        total = sum(blk.pixels for blk in refused)
        raise PrepareError(
            f"{path}: {len(refused)} block(s) of a constant value inside the DEM with cliffs at "
            f"their edges ({total} pixels), the largest {b.pixels} pixels of {b.value:g} at fine "
            f"rows {b.rows[0]}-{b.rows[1]}, cols {b.cols[0]}-{b.cols[1]} (x {x0:.0f}-{x1:.0f}, "
            f"y {y1:.0f}-{y0:.0f}) with a {b.cliff_m:.0f} m wall: an undeclared nodata value, "
            f"not terrain; declare it (inputs.dem_nodata: {b.value:g}) and fill the holes "
            "(gdal_fillnodata.py), or exclude them with a study mask"
        )
    dem[mask] = np.nan
    log.append(
        f"{path}: {int(mask.sum())} pixel(s) of constant fill blocks outside the study mask "
        "taken as nodata"
    )
    return mask


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
    _check_one_band(cfg.inputs.dem, "DEM", "extract the elevation band (gdal_translate -b 1)")
    unit = _unit_of(cfg.inputs.dem)
    if elevation_factor(unit) is None:
        raise PrepareError(
            f"{cfg.inputs.dem}: DEM elevation declared in '{unit}', a unit this version does not "
            "convert; convert it to metres and set the band unit to m (gdal_edit.py -units m)"
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
    _check_dem_values(cfg, dem, inside)
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
