"""A STAC Item describing one folder of maps (``stac-item.json``), for catalogues and QGIS.

The Item (STAC 1.x, written with pystac) lies inside the folder it describes, so that the
folder's atomic replacement covers it and the folder can move: every asset href is relative
(``./hazard.tif``). It carries

* the footprint of the study grid in WGS 84 (``geometry``, ``bbox``: the grid's outline,
  densified before reprojection so that a curved outline stays inside the box);
* the time span of the periods: ``start_datetime`` = the first period's start (the baseline
  inventory's date), ``end_datetime`` = the end of the last period's end date, ``datetime`` null;
  the periods themselves as ``landslide_hazard:periods``;
* the projection extension: ``proj:code`` (EPSG code, when the CRS has one), ``proj:wkt2``,
  ``proj:shape`` (rows, columns of cells), ``proj:transform`` (the cell grid's affine) and
  ``proj:bbox`` (the grid's bounds in its CRS);
* one asset per file: COGs (``image/tiff; application=geotiff; profile=cloud-optimized``), the
  GeoPackage and the QGIS style.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..cube import PeriodInfo
    from .maps import UncertaintyLayer

PROPERTY_PREFIX = "landslide_hazard:"
QML_MEDIA_TYPE = "application/xml"  # QGIS's .qml is XML; no registered media type exists
_OUTLINE_POINTS = 21  # per edge of the grid's outline before reprojection to WGS 84


def period_datetimes(periods: Sequence[PeriodInfo]) -> tuple[datetime, datetime]:
    """(start_datetime, end_datetime) of a run's periods, UTC: 00:00 of the first period's start
    date and 23:59:59 of the last period's end date (the end date is inclusive)."""
    if not periods:
        raise ValueError("a STAC Item needs at least one period")
    start = datetime.combine(
        datetime.fromisoformat(periods[0].start).date(), time(0, 0), timezone.utc
    )
    end = datetime.combine(
        datetime.fromisoformat(periods[-1].end).date(), time(23, 59, 59), timezone.utc
    )
    return start, end


def wgs84_footprint(grid) -> tuple[dict[str, Any], list[float]]:
    """The grid's outline as a GeoJSON polygon in WGS 84 (lon, lat) and its bbox."""
    from rasterio.warp import transform as warp_transform

    x_min, y_min, x_max, y_max = grid.bounds
    t = np.linspace(0.0, 1.0, _OUTLINE_POINTS)[:-1]
    xs = np.concatenate(
        [x_min + t * (x_max - x_min), np.full_like(t, x_max), x_max - t * (x_max - x_min)]
        + [np.full_like(t, x_min)]
    )
    ys = np.concatenate(
        [np.full_like(t, y_min), y_min + t * (y_max - y_min), np.full_like(t, y_max)]
        + [y_max - t * (y_max - y_min)]
    )
    lon, lat = warp_transform(grid.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _asset(path: Path, name: str) -> Any:
    import pystac

    from .maps import MAP_DESCRIPTIONS

    suffix = path.suffix.lower()
    media: str  # a pystac.MediaType (a str enum) or a media type pystac does not list
    if suffix == ".tif":
        media, roles = pystac.MediaType.COG, ["data"]
        description = MAP_DESCRIPTIONS.get(name, name)
        if name == "uncertainty":
            description = "predictive standard deviation per cell and period (epistemic)"
    elif suffix == ".gpkg":
        media, roles = pystac.MediaType.GEOPACKAGE, ["data"]
        description = (
            "cell polygons: layer cells (a column per quantity and period) and layer "
            "cells_by_period (a row per cell and period)"
        )
    else:
        media, roles = QML_MEDIA_TYPE, ["metadata"]
        description = "QGIS layer style of hazard_class.tif (paletted, class names)"
    return pystac.Asset(
        href=f"./{path.name}",
        title=path.name,
        description=description,
        media_type=media,
        roles=roles,
    )


def write_stac_item(
    path: Path,
    item_id: str,
    written: Mapping[str, Path],
    grid,
    periods: Sequence[PeriodInfo],
    properties: Mapping[str, str] | None = None,
    uncertainty: UncertaintyLayer | None = None,
) -> Path:
    """Write the STAC Item of the files ``written`` (all in ``path``'s folder), atomically."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.crs import CRS

    from ..io import atomic_write_text

    geometry, bbox = wgs84_footprint(grid)
    start, end = period_datetimes(periods)
    props: dict[str, Any] = {
        "start_datetime": start.isoformat().replace("+00:00", "Z"),
        "end_datetime": end.isoformat().replace("+00:00", "Z"),
        "title": f"landslide hazard maps: {item_id}",
        "description": (
            "Per-period maps of new-landslide susceptibility, area density and hazard on a "
            f"{grid.cell_size_m:g} m cell grid (landslide-hazard predict); one band per period"
        ),
        f"{PROPERTY_PREFIX}periods": [
            {"name": p.name, "start": p.start, "end": p.end} for p in periods
        ],
    }
    for key, value in (properties or {}).items():
        props[f"{PROPERTY_PREFIX}{key}"] = value
    if uncertainty is not None and uncertainty.method:
        props[f"{PROPERTY_PREFIX}uncertainty_method"] = uncertainty.method
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties=props,
    )
    crs = CRS.from_user_input(grid.crs)
    epsg = crs.to_epsg()
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=f"EPSG:{epsg}" if epsg is not None else None,
        wkt2=crs.to_wkt(),
        shape=list(grid.cell_shape),
        transform=list(grid.cell_transform)[:6],
        bbox=list(grid.bounds),
    )
    for name, file in written.items():
        item.add_asset(name, _asset(Path(file), name))
    atomic_write_text(path, json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return path
