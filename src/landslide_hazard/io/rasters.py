"""Raster I/O at the edge of the pipeline: read, check against the study grid, resample, write.

Everything here speaks numpy arrays plus a :class:`RasterInfo`; the science elsewhere never
touches files. Errors name the file, the problem and the fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject

from ..errors import InputError, OutputError
from ..grid import StudyGrid
from ..units import normalise_tag, rain_factor
from .atomic import atomic_path
from .damage import check_not_truncated, gdal_io_errors

ResampleKind = Literal["continuous", "classes", "mask"]
_RESAMPLING = {
    "continuous": Resampling.bilinear,
    "classes": Resampling.nearest,
    "mask": Resampling.average,  # area fraction of a 0/1 mask
}


class RasterError(InputError):
    """A raster input that cannot be used as given; the message names the file and the fix."""


@dataclass(frozen=True)
class RasterInfo:
    path: str
    crs: CRS | None
    transform: Affine
    shape: tuple[int, int]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    count: int
    units: tuple[str | None, ...] = ()  # the bands' unit tags (gdal_edit.py -units)

    @property
    def pixel_size(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))


def open_raster(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: file not found; check the path in your config")
    with gdal_io_errors() as io_errors:
        try:
            ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise RasterError(
                f"{path}: cannot be read as a raster ({exc}); is it a GeoTIFF (or another GDAL "
                "format)?"
            ) from None
    try:
        if io_errors:  # e.g. the band descriptions' tag cut off: read on, it would look undated
            raise RasterError(
                f"{path}: the file is truncated or damaged (GDAL: {io_errors[0]}); copy or "
                "export it again"
            )
        check_not_truncated(ds, path)
    except RasterError:
        ds.close()
        raise
    return ds


def read_pixels(ds, path: str | Path, *args, **kwargs) -> np.ndarray:
    """``ds.read`` with a failure that names the file (GDAL says only "Read failed")."""
    try:
        return ds.read(*args, **kwargs)
    except RasterioIOError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "read failed"
        raise RasterError(
            f"{path}: the file is damaged or truncated: reading its pixels failed ({first}); "
            "copy or export it again"
        ) from None


def raster_info(path: str | Path) -> RasterInfo:
    with open_raster(path) as ds:
        return RasterInfo(
            path=str(path),
            crs=ds.crs,
            transform=ds.transform,
            shape=(ds.height, ds.width),
            nodata=ds.nodata,
            descriptions=tuple(ds.descriptions),
            count=ds.count,
            units=tuple(ds.units or ()),
        )


def read_raster(
    path: str | Path,
    bands: int | Sequence[int] | None = None,
    nodata: float | None = None,
    dtype: str = "float32",
) -> tuple[np.ndarray, RasterInfo]:
    """Read bands (1-based; default all) as float with nodata turned into NaN.

    ``nodata`` overrides the value declared in the file. A 2-D array is returned for a single
    int band, else (band, y, x).
    """
    info = raster_info(path)
    with open_raster(path) as ds:
        data = read_pixels(ds, path, bands, out_dtype=dtype)
    nd = nodata if nodata is not None else info.nodata
    if nd is not None and not np.isnan(nd):
        data[data == nd] = np.nan
    return data, info


def check_grid(
    info: RasterInfo,
    crs: str | CRS,
    transform: Affine,
    shape: tuple[int, int],
    what: str = "raster",
) -> None:
    """Raise a RasterError if ``info`` is not exactly on the given grid."""
    want = CRS.from_user_input(crs)
    if info.crs is None:
        raise RasterError(
            f"{info.path}: no CRS declared; assign one (e.g. gdal_edit.py -a_srs {want.to_string()})"
        )
    if CRS.from_user_input(info.crs) != want:
        raise RasterError(
            f"{info.path}: CRS {info.crs.to_string()} differs from the study grid "
            f"{want.to_string()}; reproject the file (gdalwarp -t_srs {want.to_string()}) "
            "or let prepare resample it"
        )
    if info.shape != tuple(shape):
        raise RasterError(
            f"{info.path}: shape {info.shape} differs from the {what} grid {tuple(shape)}; "
            "clip/resample it onto the study grid"
        )
    if not info.transform.almost_equals(transform, precision=1e-6 * max(abs(transform.a), 1)):
        raise RasterError(
            f"{info.path}: transform {tuple(info.transform)[:6]} differs from the {what} grid "
            f"{tuple(transform)[:6]}; align the origin and pixel size with the study grid"
        )


def on_grid(info: RasterInfo, crs: str | CRS, transform: Affine, shape: tuple[int, int]) -> bool:
    try:
        check_grid(info, crs, transform, shape)
    except RasterError:
        return False
    return True


def resample_array(
    data: np.ndarray,
    src_transform: Affine,
    src_crs: str | CRS,
    dst_transform: Affine,
    dst_crs: str | CRS,
    dst_shape: tuple[int, int],
    kind: ResampleKind = "continuous",
) -> np.ndarray:
    """Resample a 2-D or (band, y, x) float array onto a target grid; NaN is nodata.

    ``continuous`` is bilinear, ``classes`` nearest, ``mask`` the area fraction (average) of a
    0/1 mask.
    """
    src = np.asarray(data, dtype="float32")
    squeeze = src.ndim == 2
    if squeeze:
        src = src[None]
    out = np.full((src.shape[0], *dst_shape), np.nan, dtype="float32")
    for i in range(src.shape[0]):
        reproject(
            source=src[i],
            destination=out[i],
            src_transform=src_transform,
            src_crs=CRS.from_user_input(src_crs),
            src_nodata=np.nan,
            dst_transform=dst_transform,
            dst_crs=CRS.from_user_input(dst_crs),
            dst_nodata=np.nan,
            resampling=_RESAMPLING[kind],
        )
    return out[0] if squeeze else out


def read_on_grid(
    path: str | Path,
    grid: StudyGrid,
    level: Literal["fine", "cell"] = "fine",
    kind: ResampleKind = "continuous",
    bands: int | Sequence[int] | None = None,
    nodata: float | None = None,
    log: list[str] | None = None,
) -> np.ndarray:
    """Read a raster onto the study grid, resampling (and noting it in ``log``) if needed.

    A single-band file read with ``bands=None`` comes back 2-D.
    """
    transform = grid.fine_transform if level == "fine" else grid.cell_transform
    shape = grid.fine_shape if level == "fine" else grid.cell_shape
    data, info = read_raster(path, bands=bands, nodata=nodata)
    if bands is None and data.shape[0] == 1:
        data = data[0]
    if info.crs is None:
        check_grid(info, grid.crs, transform, shape)  # raises with the fix
    if on_grid(info, grid.crs, transform, shape):
        return data
    if log is not None:
        log.append(
            f"{path}: resampled ({_RESAMPLING[kind].name}) from "
            f"{info.crs.to_string() if info.crs is not None else 'no CRS'} "
            f"{info.shape} @ {info.pixel_size[0]:g} m onto the {level} grid {shape}"
        )
    return resample_array(data, info.transform, info.crs, transform, grid.crs, shape, kind)


@dataclass(frozen=True)
class RasterEncoding:
    """How :func:`write_raster` encodes the values: a Cloud-Optimized GeoTIFF (else a plain
    tiled GeoTIFF), the data type, the nodata value and a colour table.

    ``dtype`` float32 (the default) has NaN as nodata; an integer ``dtype`` needs ``nodata``
    (a value the caller has already put in the data). ``colormap`` (value -> RGBA) is the
    colour table of band 1 (a single-byte ``dtype`` only; GDAL applies it to every band)."""

    cog: bool = True
    dtype: str = "float32"
    nodata: float | None = None
    colormap: dict[int, tuple[int, int, int, int]] | None = None


#: A plain (not cloud-optimized) float32 GeoTIFF.
PLAIN_GTIFF = RasterEncoding(cog=False)


@dataclass(frozen=True)
class RasterTags:
    """Metadata of a raster: ``file`` tags of the dataset, and ``bands[i]`` those of band i+1."""

    file: dict[str, str] | None = None
    bands: Sequence[dict[str, str]] | None = None


def write_raster(
    path: str | Path,
    data: np.ndarray,
    transform: Affine,
    crs: str | CRS,
    band_names: Sequence[str] | None = None,
    units: str | Sequence[str] | None = None,
    tags: RasterTags | None = None,
    encoding: RasterEncoding = RasterEncoding(),
) -> Path:
    """Write a 2-D or (band, y, x) array as a (Cloud-Optimized) GeoTIFF, atomically.

    Band descriptions carry ``band_names``, band units ``units``; ``tags`` the dataset's and
    each band's metadata; ``encoding`` COG or plain, data type, nodata and colour table.
    Overviews are averages for floats, nearest-neighbour for integers (classes must not be
    averaged).
    """
    tags = tags or RasterTags()
    band_tags = tags.bands
    cog, dtype, nodata = encoding.cog, encoding.dtype, encoding.nodata
    colormap = encoding.colormap
    path = Path(path)
    arr = np.asarray(data, dtype=dtype)
    if arr.ndim == 2:
        arr = arr[None]
    count, height, width = arr.shape
    if band_names is not None and len(band_names) != count:
        raise InputError(f"{path}: {len(band_names)} band names for {count} bands")
    if band_tags is not None and len(band_tags) != count:
        raise InputError(f"{path}: {len(band_tags)} sets of band tags for {count} bands")
    is_float = np.issubdtype(arr.dtype, np.floating)
    if nodata is None and not is_float:
        raise InputError(f"{path}: an integer raster ({dtype}) needs a nodata value")
    if colormap is not None and arr.dtype != np.uint8:
        raise InputError(f"{path}: a colour table needs dtype uint8, not {dtype}")
    resampling = "average" if is_float else "nearest"
    profile = {
        "driver": "COG" if cog else "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": dtype,
        "crs": CRS.from_user_input(crs),
        "transform": transform,
        "nodata": np.nan if nodata is None else nodata,
        "compress": "deflate",
    }
    if cog:
        profile.update(blocksize=256, overview_resampling=resampling, predictor=2)
    else:
        profile.update(tiled=height >= 256 and width >= 256, predictor=2)
    with atomic_path(path) as tmp, _named_write_errors(path):
        if cog:
            # The COG driver is create-copy only: build in memory, then copy to disk.
            mem_profile = {**profile, "driver": "GTiff"}
            mem_profile.pop("blocksize", None)
            mem_profile.pop("overview_resampling", None)
            with rasterio.MemoryFile() as mem:
                with mem.open(**mem_profile) as ds:
                    _fill(ds, arr, band_names, units, tags, colormap)
                with mem.open() as src:
                    rasterio.shutil.copy(
                        src,
                        tmp,
                        driver="COG",
                        compress="deflate",
                        blocksize=256,
                        overview_resampling=resampling,
                        predictor=2,
                    )
        else:
            with rasterio.open(tmp, "w", **profile) as ds:
                _fill(ds, arr, band_names, units, tags, colormap)
    return path


@contextlib.contextmanager
def _named_write_errors(path: Path):
    """GDAL's write failures (a full disk: "Free disk space available is ...") as an
    OutputError naming the file."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith("rasterio"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(
            f"{path}: writing the raster failed ({first}); check the free space and write "
            f"permission of {path.parent}"
        ) from exc


def _fill(
    ds: Any,
    arr: np.ndarray,
    band_names: Sequence[str] | None,
    units: str | Sequence[str] | None,
    tags: RasterTags,
    colormap: dict[int, tuple[int, int, int, int]] | None,
) -> None:
    band_tags = tags.bands
    ds.write(arr)
    for i in range(arr.shape[0]):
        if band_names is not None:
            ds.set_band_description(i + 1, str(band_names[i]))
        if units is not None:
            ds.set_band_unit(i + 1, units if isinstance(units, str) else units[i])
        if band_tags is not None and band_tags[i]:
            ds.update_tags(i + 1, **{k: str(v) for k, v in band_tags[i].items()})
    if colormap is not None:
        ds.write_colormap(1, colormap)
    if tags.file:
        ds.update_tags(**{k: str(v) for k, v in tags.file.items()})


# --------------------------------------------------------------------------------------------
# Daily rain stacks


@dataclass(frozen=True)
class RainStack:
    """Daily rain (mm/day), (day, y, x), on its native grid."""

    data: np.ndarray
    dates: tuple[dt.date, ...]
    transform: Affine
    crs: CRS
    path: str

    def days_in(self, start_exclusive: dt.date, end_inclusive: dt.date) -> np.ndarray:
        """Indices of the days in (start, end]; raise if any day of that range is missing."""
        want = [
            start_exclusive + dt.timedelta(days=i)
            for i in range(1, (end_inclusive - start_exclusive).days + 1)
        ]
        index = {d: i for i, d in enumerate(self.dates)}
        missing = [d for d in want if d not in index]
        if missing and self.dates and (missing[0] > self.dates[-1] or missing[-1] < self.dates[0]):
            raise RasterError(
                f"{self.path}: the rain stack covers {self.dates[0]} to {self.dates[-1]} "
                f"({len(self.dates)} days) but the period ({start_exclusive}, {end_inclusive}] "
                f"needs {len(missing)} day(s) {'after' if missing[0] > self.dates[-1] else 'before'} "
                "it; extend the stack to cover every period (or check that the file was not cut "
                "short)"
            )
        if missing:
            shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise RasterError(
                f"{self.path}: {len(missing)} day(s) of the period ({start_exclusive}, "
                f"{end_inclusive}] missing from the rain stack ({shown}); add those days "
                "(0 mm is a valid value) or change the period dates"
            )
        return np.array([index[d] for d in want], dtype=np.int64)


def _parse_date(text: str | None, path: str, band: int) -> dt.date:
    try:
        return dt.date.fromisoformat(str(text).strip()[:10])
    except (TypeError, ValueError):
        raise RasterError(
            f"{path}: band {band} description {text!r} is not an ISO date; a daily rain GeoTIFF "
            "needs one band per day described YYYY-MM-DD (or use NetCDF with a CF time axis)"
        ) from None


def read_rain_stack(path: str | Path) -> RainStack:
    """Read daily rain from a GeoTIFF (ISO dates as band descriptions) or CF NetCDF."""
    path = Path(path)
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        return _read_rain_netcdf(path)
    data, info = read_raster(path)
    if data.ndim == 2:
        data = data[None]
    if not any(info.descriptions):
        raise RasterError(
            f"{path}: none of its {info.count} band(s) carries a date; a daily rain GeoTIFF needs "
            "one band per day described YYYY-MM-DD (set them with rasterio's "
            "set_band_description, or use NetCDF with a CF time axis)"
        )
    dates = tuple(_parse_date(d, str(path), i + 1) for i, d in enumerate(info.descriptions))
    tags = {normalise_tag(u) for u in info.units if u}
    if len(tags) > 1:
        raise RasterError(
            f"{path}: its bands declare different units {sorted(tags)}; convert every band to "
            "mm/day"
        )
    return _checked_stack(data, dates, info.transform, info.crs, str(path), next(iter(tags), ""))


def _checked_stack(data, dates, transform, crs, path, unit: str = "") -> RainStack:
    factor = rain_factor(unit)
    if factor is None:
        raise RasterError(
            f"{path}: daily rain declared in '{unit}', a unit this version does not convert; "
            "convert the file to mm/day and set that unit (gdal_edit.py -units mm/day, or the "
            "NetCDF variable's units attribute)"
        )
    if factor != 1.0:
        data = np.asarray(data, dtype=np.float32) * np.float32(factor)
        warnings.warn(
            f"{path}: daily rain declared in '{unit}': converted to mm/day (x {factor:g})",
            stacklevel=3,
        )
    if any(b <= a for a, b in zip(dates, dates[1:], strict=False)):
        raise RasterError(f"{path}: rain days are not in increasing date order; sort the bands")
    if np.isnan(data).all():
        raise RasterError(f"{path}: rain stack holds no valid value")
    if np.nanmin(data) < 0:
        raise RasterError(f"{path}: negative rain values; daily rain must be >= 0 mm/day")
    if crs is None:
        raise RasterError(f"{path}: no CRS declared; assign one to the rain file")
    return RainStack(data=data, dates=tuple(dates), transform=transform, crs=crs, path=path)


RAIN_VARIABLES = ("precip", "precipitation", "rain", "pr")


def _read_rain_netcdf(path: Path) -> RainStack:
    """CF NetCDF rain through xarray: times decoded with cftime in the file's own calendar."""
    import rioxarray  # noqa: F401 (registers the .rio accessor)
    import xarray as xr

    try:
        ds = xr.open_dataset(
            path,
            decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
            decode_coords="all",
        )
    except (OSError, ValueError) as exc:
        raise RasterError(f"{path}: cannot read as NetCDF ({exc}); check the file") from None
    with ds:
        gridded = [v for v in ds.data_vars if ds[v].ndim == 3]
        named = [v for v in gridded if str(v).lower() in RAIN_VARIABLES]
        if not gridded:
            raise RasterError(f"{path}: no (time, y, x) variable; rain needs one")
        rain = ds[(named or gridded)[0]]
        time_dims = [d for d in rain.dims if d in ds.coords and _is_cftime(ds[d].values)]
        if not time_dims:
            raise RasterError(
                f"{path}: no CF time axis on {rain.name!r} (time:units 'days since ...'); add one"
            )
        time = time_dims[0]
        try:
            y_dim, x_dim = rain.rio.y_dim, rain.rio.x_dim
        except Exception:  # rioxarray's MissingSpatialDimensionError
            raise RasterError(
                f"{path}: {rain.name!r} has no x/y (or lon/lat) dimensions; name them so"
            ) from None
        rain = rain.transpose(time, y_dim, x_dim)
        if rain[y_dim].size > 1 and rain[y_dim].values[1] > rain[y_dim].values[0]:
            rain = rain.isel({y_dim: slice(None, None, -1)})  # north-up like a GeoTIFF
        crs = rain.rio.crs
        transform = _transform_of_centres(rain[x_dim].values, rain[y_dim].values, path)
        data = np.asarray(rain.values, dtype=np.float32)  # _FillValue already NaN
        unit = normalise_tag(str(rain.attrs.get("units", "")))
        dates = [_cf_date(t, path) for t in rain[time].values]
    if crs is None:
        warnings.warn(f"{path}: NetCDF without CRS, assuming EPSG:4326", stacklevel=2)
        crs = CRS.from_epsg(4326)
    else:
        crs = CRS.from_wkt(crs.to_wkt())
    return _checked_stack(data, dates, transform, crs, str(path), unit)


def _transform_of_centres(x: np.ndarray, y: np.ndarray, path: Path) -> Affine:
    """The north-up transform of a regular grid given its pixel-centre coordinates."""
    if x.size < 2 or y.size < 2:
        raise RasterError(f"{path}: the rain grid needs at least 2 x 2 pixels")
    dx = (x[-1] - x[0]) / (x.size - 1)
    dy = (y[-1] - y[0]) / (y.size - 1)
    if not (np.allclose(np.diff(x), dx) and np.allclose(np.diff(y), dy)):
        raise RasterError(f"{path}: x/y coordinates are not evenly spaced; regrid the file")
    return Affine(float(dx), 0.0, float(x[0] - dx / 2), 0.0, float(dy), float(y[0] - dy / 2))


def _is_cftime(values: np.ndarray) -> bool:
    import cftime

    return values.size > 0 and isinstance(values.flat[0], cftime.datetime)


def _cf_date(t, path: Path) -> dt.date:
    """The day of a cftime date; a day that no real calendar has (360_day's Feb 30) is refused."""
    try:
        return dt.date(t.year, t.month, t.day)
    except ValueError:
        raise RasterError(
            f"{path}: day {t.strftime('%Y-%m-%d')} of the {t.calendar} calendar is not a date of "
            "the real calendar the periods use; convert the file to a standard calendar (e.g. "
            "xarray's Dataset.convert_calendar('standard', align_on='date'))"
        ) from None


def write_rain_stack(
    path: str | Path, data: np.ndarray, dates: Sequence[dt.date], transform: Affine, crs
) -> Path:
    """Write daily rain as a GeoTIFF with one band per day described by its ISO date."""
    return write_raster(
        path,
        data,
        transform,
        crs,
        band_names=[d.isoformat() for d in dates],
        units="mm/day",
        encoding=PLAIN_GTIFF,
    )
