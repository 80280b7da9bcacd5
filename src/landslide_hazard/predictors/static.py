"""The eight static cube bands (``bands.STATIC_NAMES``) of a DEM, and its nodata collar.

Local bands (slope, northness, eastness, curvatures) depend only on the 3 x 3 window, so they
can be computed chunk by chunk with a 1-pixel halo and match the whole-array result exactly
(:func:`compute_local_bands_chunked`, :func:`local_bands_dask`). TWI (flow accumulation) and the
distance to river are global passes over the whole array (memory in ``docs/predictors.md``);
``prepare`` uses their lean variants and computes the distance tile by tile, with equal results
(``docs/scale.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..bands import STATIC_NAMES, TERRAIN_BANDS, UNITS
from ..errors import InputError
from .hydrology import (
    d8_flow_accumulation,
    distance_to_river,
    fill_pits,
    river_mask_from_accumulation,
    twi_from,
)
from .terrain import LOCAL_BAND_NAMES, CurvatureMethod, zevenbergen_thorne

#: Values GIS tools commonly leave as an undeclared fill around a reprojected raster.
COMMON_FILL_VALUES: tuple[float, ...] = (
    0.0,
    -9999.0,
    -32767.0,
    -32768.0,
    32767.0,
    65535.0,
    -99999.0,
    float(np.finfo(np.float32).min),
    float(np.finfo(np.float32).max),
)

#: Tile size (px) for the local bands: whole-array numpy needs ~220 B/px of temporaries,
#: 512 x 512 tiles bound that to ~60 MB whatever the DEM size (and run faster, in cache).
DEFAULT_CHUNK = 512

#: The steps :func:`compute_static_bands` reports to its ``progress`` callback, in order.
STATIC_STEPS: tuple[str, ...] = ("collar", "local", "flow", "rivers", "distance")

#: The local (3 x 3 window) bands among the static ones.
LOCAL_STATIC_NAMES: tuple[str, ...] = tuple(n for n in LOCAL_BAND_NAMES if n in STATIC_NAMES)


class DemError(InputError):
    """A DEM that cannot be used as given; the message says what to fix."""


def _border_values(dem: np.ndarray) -> np.ndarray:
    return np.concatenate([dem[0, :], dem[-1, :], dem[1:-1, 0], dem[1:-1, -1]])


def _connected_to_border(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` 4-connected to the array border."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    touching = np.unique(_border_values(labels))
    touching = touching[touching > 0]
    return np.isin(labels, touching)


def detect_fill_value(dem: np.ndarray) -> float | None:
    """The undeclared constant fill of a DEM's collar, or None if there is none.

    Candidate: the most frequent finite value on the array border. It is taken as fill when it
    occurs on at least 2 border pixels, lies strictly outside the range of all other finite
    values, and is separated from that range by a gap: more than 1 % of the range's width for a
    common fill value (``COMMON_FILL_VALUES``, e.g. 0 or -9999), more than 10 % for any other.
    (A real surface can repeat a value along the border - a lake, a flat valley floor, a DEM
    clamped at sea level 0 - but then it lies inside, or right at the edge of, the terrain's
    range.) Pass an explicit fill value, or switch detection off, when this guess is wrong.
    """
    z = np.asarray(dem)
    border = _border_values(z).astype(np.float64)
    border = border[np.isfinite(border)]
    if border.size == 0:
        return None
    values, counts = np.unique(border, return_counts=True)
    best = int(np.argmax(counts))
    value, count = float(values[best]), int(counts[best])
    if count < 2:
        return None
    rest = z[np.isfinite(z) & (z != value)]
    if rest.size == 0:
        return None
    low, high = float(rest.min()), float(rest.max())
    if low <= value <= high:
        return None
    gap = low - value if value < low else value - high
    width = high - low
    if gap > (0.01 if value in COMMON_FILL_VALUES else 0.1) * width:
        return value
    return None


def find_nodata_collar(dem: np.ndarray, fill_value: float | None = None) -> np.ndarray:
    """Mask of the outer nodata collar: NaN or fill-valued pixels 4-connected to the border.

    fill_value: the collar's constant value; None detects it (:func:`detect_fill_value`), e.g.
    the 0-valued collar of the Langtang DSM that no nodata tag declares. NaN pixels connected
    to the border are always part of the collar. Returns a bool (rows, cols) mask.
    """
    z = np.asarray(dem, dtype=np.float64)
    if z.ndim != 2:
        raise InputError(f"the DEM must be 2-D (rows, cols), got shape {z.shape}")
    if fill_value is None:
        fill_value = detect_fill_value(z)
    candidate = np.isnan(z)
    if fill_value is not None and not np.isnan(fill_value):
        candidate |= z == fill_value
    return _connected_to_border(candidate)


def prepare_dem(
    dem: np.ndarray, *, fill_value: float | None = None, detect_collar: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(float64 DEM with the collar set to NaN, collar mask); raise on holes inside the DEM.

    fill_value: an undeclared constant fill to treat as collar (None: detect it if
    ``detect_collar``). NaN (or fill-valued) pixels not connected to the border are holes:
    a DemError.
    """
    z = np.array(dem, dtype=np.float64)
    if z.ndim != 2:
        raise DemError(f"the DEM must be 2-D (rows, cols), got shape {z.shape}")
    if np.isinf(z).any():
        raise DemError("the DEM holds +-inf values; mark nodata as NaN or declare a nodata value")
    if fill_value is None and detect_collar:
        fill_value = detect_fill_value(z)
    collar = find_nodata_collar(z, fill_value if fill_value is not None else np.nan)
    holes = np.isnan(z) & ~collar
    if fill_value is not None and not np.isnan(fill_value):
        holes |= (z == fill_value) & ~collar
    if holes.any():
        rows, cols = np.nonzero(holes)
        what = "nodata" if fill_value is None else f"nodata (NaN or fill value {fill_value:g})"
        raise DemError(
            f"the DEM has {holes.sum()} {what} pixel(s) inside its valid area (first at row "
            f"{rows[0]}, col {cols[0]}); holes break slope and flow routing: fill them (e.g. "
            "gdal_fillnodata.py) or clip the DEM so that nodata only borders it"
        )
    z[collar] = np.nan
    if np.isnan(z).all():
        raise DemError("the DEM holds no valid elevation (all nodata)")
    return z, collar


def _as_chunk(chunk: int | tuple[int, int]) -> tuple[int, int]:
    size = (chunk, chunk) if isinstance(chunk, int | np.integer) else tuple(chunk)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"chunk must be a positive int or (rows, cols), got {chunk}")
    return int(size[0]), int(size[1])


def iter_chunks(
    shape: tuple[int, int], chunk: int | tuple[int, int]
) -> Iterator[tuple[slice, slice]]:
    """Row-major (row slice, col slice) tiles of at most ``chunk`` pixels covering ``shape``."""
    ch, cw = _as_chunk(chunk)
    for r0 in range(0, shape[0], ch):
        for c0 in range(0, shape[1], cw):
            yield slice(r0, min(r0 + ch, shape[0])), slice(c0, min(c0 + cw, shape[1]))


def _check_names(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in LOCAL_BAND_NAMES]
    if unknown:
        raise InputError(f"unknown local band(s) {unknown}; choose from {LOCAL_BAND_NAMES}")


def compute_local_bands_chunked(
    dem: np.ndarray,
    pixel_size_m: float,
    chunk: int | tuple[int, int],
    *,
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
    names: tuple[str, ...] = LOCAL_BAND_NAMES,
) -> dict[str, np.ndarray]:
    """The 3 x 3 window bands computed tile by tile with a 1-pixel halo (float32).

    Identical (bit for bit) to ``zevenbergen_thorne`` on the whole array: each tile is read with
    a 1-pixel halo of its neighbours, padded with NaN (= outside) at the array border, and the
    halo is cut off again. Peak memory is a few tiles, plus the outputs.
    """
    z = np.asarray(dem)
    if z.ndim != 2:
        raise InputError(f"the DEM must be 2-D (rows, cols), got shape {z.shape}")
    _check_names(names)
    out = {name: np.full(z.shape, np.nan, dtype=np.float32) for name in names}
    height, width = z.shape
    for rows, cols in iter_chunks(z.shape, chunk):
        r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, height)
        c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, width)
        # The halo: real neighbours inside the array, NaN (= outside) beyond its edges.
        pad = (
            (1 - (rows.start - r0), 1 - (r1 - rows.stop)),
            (1 - (cols.start - c0), 1 - (c1 - cols.stop)),
        )
        tile = np.pad(z[r0:r1, c0:c1].astype(np.float64), pad, constant_values=np.nan)
        bands = zevenbergen_thorne(tile, pixel_size_m, curvature_method=curvature_method)
        for name in names:
            out[name][rows, cols] = bands[name][1:-1, 1:-1]
    return out


def local_bands_dask(
    dem,
    pixel_size_m: float,
    *,
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
    names: tuple[str, ...] = LOCAL_BAND_NAMES,
):
    """Lazy version for a 2-D dask array: (band, y, x) float32 with ``names`` along axis 0.

    Uses a 1-pixel overlap with NaN at the outer boundary, so it equals the whole-array result
    exactly; the output keeps the DEM's chunks (one band chunk).
    """
    import dask.array as da

    if dem.ndim != 2:
        raise InputError(f"the DEM must be 2-D (rows, cols), got shape {dem.shape}")
    _check_names(names)
    dem = dem.astype(np.float64)
    overlapped = da.overlap.overlap(dem, depth={0: 1, 1: 1}, boundary={0: np.nan, 1: np.nan})

    def block(tile: np.ndarray) -> np.ndarray:
        bands = zevenbergen_thorne(tile, pixel_size_m, curvature_method=curvature_method)
        return np.stack([bands[n][1:-1, 1:-1] for n in names])

    return overlapped.map_blocks(
        block,
        dtype=np.float32,
        new_axis=0,
        chunks=((len(names),), *dem.chunks),
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )


@dataclass(frozen=True)
class CollarRule:
    """How a DEM's undeclared constant collar is found (:func:`prepare_dem`): ``fill_value``
    when known, else detected when ``detect``."""

    fill_value: float | None = None
    detect: bool = True


def compute_static_bands(
    dem: np.ndarray,
    pixel_size_m: float,
    river_mask: np.ndarray | None = None,
    accumulation_km2: float = 1.0,
    chunk: int | tuple[int, int] | None = None,
    *,
    collar: CollarRule = CollarRule(),
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """All of ``bands.STATIC_NAMES`` for a north-up DEM, float32, NaN outside the valid DEM.

    dem: (rows, cols) metres, NaN = nodata; an undeclared constant collar (``collar``: a known
    fill value, or detected) and NaN connected to the border become NaN in every band; NaN holes inside the
    valid area raise a :class:`DemError`.
    pixel_size_m: square pixel size (m).
    river_mask: bool (rows, cols) river pixels (e.g. from :func:`hydrology.rasterize_rivers`);
    None derives rivers as contributing area >= ``accumulation_km2`` (km2).
    chunk: tile size (px) for the local bands; None = ``DEFAULT_CHUNK``. The result does not
    depend on it (tiles carry a 1-pixel halo); it bounds the memory of the local bands.
    progress: called with the name of each step (``STATIC_STEPS``) as it starts.

    Returns ``{"elevation": m, "slope": deg, "northness": 1, "eastness": 1,
    "profile_curvature": 1/m, "plan_curvature": 1/m, "twi": 1, "dist_to_river": m}`` in the
    order of ``STATIC_NAMES``.
    """
    step = progress or (lambda _name: None)
    step("collar")
    z, _ = prepare_dem(dem, fill_value=collar.fill_value, detect_collar=collar.detect)
    if river_mask is not None:
        river_mask = np.asarray(river_mask, dtype=bool)
        if river_mask.shape != z.shape:
            raise InputError(
                f"river_mask shape {river_mask.shape} differs from the DEM {z.shape}; "
                "rasterize the rivers onto the DEM grid"
            )
    step("local")
    local = compute_local_bands_chunked(
        z,
        pixel_size_m,
        DEFAULT_CHUNK if chunk is None else chunk,
        curvature_method=curvature_method,
        names=LOCAL_STATIC_NAMES,
    )
    step("flow")
    accumulation = d8_flow_accumulation(fill_pits(z))
    step("rivers")
    if river_mask is None:
        river_mask = river_mask_from_accumulation(
            z, pixel_size_m, accumulation_km2, accumulation=accumulation
        )
        if not river_mask.any():
            largest_km2 = np.nanmax(accumulation) * pixel_size_m**2 / 1e6
            raise InputError(
                f"no pixel drains {accumulation_km2:g} km2 (the largest catchment in this DEM "
                f"is {largest_km2:.3g} km2), so there is no river to measure distance to; "
                "lower accumulation_km2 or give river lines or a river raster"
            )
    valid = ~np.isnan(z)
    twi_band = twi_from(accumulation, local["slope"], pixel_size_m)
    del accumulation
    step("distance")
    bands = {
        "elevation": z,
        **{name: local[name] for name in LOCAL_STATIC_NAMES},
        "twi": twi_band,
        "dist_to_river": distance_to_river(river_mask, pixel_size_m),
    }
    out: dict[str, np.ndarray] = {}
    for name in STATIC_NAMES:
        band = np.asarray(bands[name], dtype=np.float32)
        band[~valid] = np.nan
        out[name] = band
    return out


def compute_terrain_bands(
    dem: np.ndarray,
    pixel_size_m: float,
    *,
    collar: CollarRule = CollarRule(),
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The bands of ``bands.TERRAIN_BANDS`` (what ``landslide-hazard terrain`` writes).

    Same conventions as :func:`compute_static_bands` (aspect in degrees clockwise from north,
    NaN on flats). Returns (bands in ``TERRAIN_BANDS`` order as float32, collar mask).
    """
    z, collar_mask = prepare_dem(dem, fill_value=collar.fill_value, detect_collar=collar.detect)
    local = compute_local_bands_chunked(
        z, pixel_size_m, DEFAULT_CHUNK, curvature_method=curvature_method
    )
    accumulation = d8_flow_accumulation(fill_pits(z))
    bands = {**local, "twi": twi_from(accumulation, local["slope"], pixel_size_m)}
    valid = ~np.isnan(z)
    out: dict[str, np.ndarray] = {}
    for name in TERRAIN_BANDS:
        band = np.asarray(bands[name], dtype=np.float32)
        band[~valid] = np.nan
        out[name] = band
    return out, collar_mask


@dataclass(frozen=True)
class TerrainSummary:
    """What :func:`write_terrain` did: the output, the collar it masked, how nodata was known."""

    path: Path
    shape: tuple[int, int]
    pixel_size_m: float
    collar_pixels: int
    fill_value: float | None
    nodata_source: str  # "declared", "--nodata", "detected" or "none"


def dem_pixel_size_m(info, path: Path) -> float:
    """The square pixel size (m) of a north-up DEM in a projected metric CRS; a DemError
    naming the file and the fix otherwise."""
    t = info.transform
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise DemError(
            f"{path}: the DEM is not north-up (transform {tuple(t)[:6]}); warp it to a north-up "
            "grid (gdalwarp) first"
        )
    if not np.isclose(abs(t.a), abs(t.e), rtol=1e-6):
        raise DemError(
            f"{path}: pixels are not square ({abs(t.a):g} x {abs(t.e):g} m); resample it to "
            "square pixels (gdalwarp -tr P P)"
        )
    if info.crs is None:
        raise DemError(
            f"{path}: no CRS declared, so the pixel size has no unit; assign a projected CRS in "
            "metres (gdal_edit.py -a_srs EPSG:...)"
        )
    units = (info.crs.linear_units or "").lower()
    if not info.crs.is_projected or units not in ("metre", "meter", "m", "metres", "meters"):
        raise DemError(
            f"{path}: CRS {info.crs.to_string()} is not projected in metres (units: "
            f"{units or 'degrees'}); reproject the DEM to a metric CRS such as UTM (gdalwarp "
            "-t_srs EPSG:326NN)"
        )
    return float(abs(t.a))


def write_terrain(
    dem_path: str | Path,
    out_path: str | Path,
    *,
    nodata: float | None = None,
    detect_collar: bool = True,
    curvature_method: CurvatureMethod = "zevenbergen_thorne",
    progress: Callable[[str], None] | None = None,
) -> TerrainSummary:
    """Write ``bands.TERRAIN_BANDS`` of a DEM GeoTIFF as one multi-band GeoTIFF on its own grid.

    nodata: overrides the file's nodata value. When neither is given the undeclared collar is
    detected (:func:`detect_fill_value`) unless ``detect_collar`` is False. ``progress`` is
    called with the name of each step as it starts.
    """
    from ..io import RasterTags, read_raster, write_raster

    step = progress or (lambda _name: None)
    dem_path, out_path = Path(dem_path), Path(out_path)
    step("read")
    dem, info = read_raster(dem_path, bands=1, nodata=nodata, dtype="float64")
    pixel = dem_pixel_size_m(info, dem_path)
    if nodata is not None:
        source, detect = "--nodata", False
    elif info.nodata is not None:
        source, detect = "declared", False
    else:
        source, detect = "detected", detect_collar
    fill = detect_fill_value(dem) if detect else None
    if source == "detected" and fill is None:
        source = "none"
    step("terrain")
    try:
        bands, collar = compute_terrain_bands(
            dem, pixel, collar=CollarRule(fill, detect=False), curvature_method=curvature_method
        )
    except DemError as exc:
        raise DemError(f"{dem_path}: {exc}") from None
    step("write")
    write_raster(
        out_path,
        np.stack([bands[name] for name in TERRAIN_BANDS]),
        info.transform,
        info.crs,
        band_names=TERRAIN_BANDS,
        units=[UNITS[name] for name in TERRAIN_BANDS],
        tags=RasterTags(
            {
                "source_dem": str(dem_path.resolve()),
                "collar_pixels": str(int(collar.sum())),
                "nodata_source": source,
                "curvature_method": curvature_method,
            }
        ),
    )
    return TerrainSummary(
        path=out_path,
        shape=dem.shape,
        pixel_size_m=pixel,
        collar_pixels=int(collar.sum()),
        fill_value=fill,
        nodata_source=source,
    )
