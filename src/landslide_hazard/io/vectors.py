"""Vector I/O at the edge of the pipeline: polygons and lines via pyogrio, as shapely 2 arrays.

No geopandas: geometries come back as a numpy array of shapely geometries plus the CRS, which is
all the science needs. Errors name the file, the problem and the fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.crs import CRS

from ..errors import InputError

VECTOR_SUFFIXES: tuple[str, ...] = (".gpkg", ".geojson", ".json", ".shp", ".fgb")
_DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".shp": "ESRI Shapefile",
}


class VectorError(InputError):
    """A vector input that cannot be used as given; the message names the file and the fix."""


@dataclass(frozen=True)
class VectorData:
    """Geometries of one layer: ``geometries`` is an object array of shapely geometries."""

    geometries: np.ndarray
    crs: CRS | None
    path: str
    layer: str | None = None

    def __len__(self) -> int:
        return len(self.geometries)


def is_vector_path(path: str | Path) -> bool:
    """True if the file name looks like a vector dataset we read (by suffix)."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


@dataclass(frozen=True)
class VectorInfo:
    """What a vector layer declares, read without its geometries."""

    path: str
    crs: CRS | None
    geometry_type: str | None
    features: int
    bounds: tuple[float, float, float, float] | None


def _bounds(values: Any) -> tuple[float, float, float, float]:
    x_min, y_min, x_max, y_max = (float(v) for v in values)
    return x_min, y_min, x_max, y_max


def vector_info(path: str | Path, layer: str | int | None = None) -> VectorInfo:
    """CRS, geometry type, feature count and bounds of a layer (cheap: no geometry is read)."""
    path = Path(path)
    if not path.exists():
        raise VectorError(f"{path}: file not found; check the path in your config")
    try:
        meta = pyogrio.read_info(
            path, layer=layer, force_feature_count=True, force_total_bounds=True
        )
    except (DataSourceError, DataLayerError) as exc:
        raise VectorError(
            f"{path}: cannot be read as vector data ({exc}); use a GeoPackage or GeoJSON file"
        ) from None
    crs_text = meta.get("crs")
    bounds = meta.get("total_bounds")
    return VectorInfo(
        path=str(path),
        crs=CRS.from_user_input(crs_text) if crs_text else None,
        geometry_type=meta.get("geometry_type"),
        features=int(meta.get("features") or 0),
        bounds=_bounds(bounds) if bounds is not None and meta.get("features") else None,
    )


def read_vectors(path: str | Path, layer: str | int | None = None) -> VectorData:
    """Read every geometry of a layer (default: the first) with its CRS.

    Null geometries are dropped. The CRS is ``None`` when the file declares none.
    """
    path = Path(path)
    if not path.exists():
        raise VectorError(f"{path}: file not found; check the path in your config")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, columns=[])
    except (DataSourceError, DataLayerError) as exc:
        raise VectorError(
            f"{path}: cannot be read as vector data ({exc}); use a GeoPackage or GeoJSON file"
        ) from None
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    geoms = np.asarray(geoms, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)] if len(geoms) else geoms
    crs_text = meta.get("crs")
    crs = CRS.from_user_input(crs_text) if crs_text else None
    layer_name = meta.get("layer_name") if isinstance(meta, dict) else None
    return VectorData(geometries=geoms, crs=crs, path=str(path), layer=layer_name)


def check_vector_crs(
    vec: VectorData | VectorInfo, crs: str | CRS, what: str = "vector data"
) -> None:
    """Raise a VectorError unless ``vec`` declares exactly the CRS ``crs``."""
    want = CRS.from_user_input(crs)
    if vec.crs is None:
        raise VectorError(
            f"{vec.path}: {what} declares no CRS; assign {want.to_string()} "
            f"(ogr2ogr -a_srs {want.to_string()} out.gpkg {Path(vec.path).name})"
        )
    if CRS.from_user_input(vec.crs) != want:
        raise VectorError(
            f"{vec.path}: {what} CRS {vec.crs.to_string()} differs from the study grid "
            f"{want.to_string()}; reproject it (ogr2ogr -t_srs {want.to_string()} out.gpkg "
            f"{Path(vec.path).name})"
        )


def polygonal_parts(vec: VectorData, what: str = "inventory") -> np.ndarray:
    """The valid polygons of ``vec`` as an array of single Polygons (multi-parts exploded).

    Invalid rings are repaired with ``shapely.make_valid``; non-polygonal geometries are an error
    (a line or point inventory has no area).
    """
    geoms = vec.geometries
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    kinds = shapely.get_type_id(geoms)
    bad = ~np.isin(kinds, (3, 6))  # Polygon, MultiPolygon
    if bad.any():
        names = sorted({g.geom_type for g in geoms[bad]})
        raise VectorError(
            f"{vec.path}: {what} holds {int(bad.sum())} non-polygon geometries ({', '.join(names)}); "
            "landslide inventories and masks must be polygons (areas)"
        )
    parts = shapely.get_parts(shapely.make_valid(geoms))
    # make_valid may return collections (a bow-tie -> polygons plus collapsed lines): keep areas.
    while len(parts) and (shapely.get_type_id(parts) == 7).any():
        parts = shapely.get_parts(parts)
    keep = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
    return parts[keep]


def write_vectors(
    path: str | Path,
    geometries: Sequence | np.ndarray,
    crs: str | CRS,
    fields: dict[str, np.ndarray] | None = None,
    layer: str | None = None,
) -> Path:
    """Write geometries (and optional attribute columns) atomically; driver from the suffix.

    Polygons and multipolygons mixed in one layer are written as MultiPolygon.
    """
    path = Path(path)
    return write_vector_layers(path, crs, {layer or path.stem: (geometries, fields or {})})


def write_vector_layers(
    path: str | Path,
    crs: str | CRS,
    layers: dict[str, tuple[Sequence | np.ndarray, dict[str, np.ndarray]]],
) -> Path:
    """Write several layers (name -> (geometries, attribute columns)) into one file, atomically.

    The driver comes from the suffix and must hold several layers (GeoPackage) when more than
    one is given. Polygons and multipolygons mixed in one layer are written as MultiPolygon.
    """
    path = Path(path)
    driver = _DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise VectorError(f"{path}: unknown vector suffix; use one of {sorted(_DRIVERS)}")
    if len(layers) > 1 and driver != "GPKG":
        raise VectorError(f"{path}: {len(layers)} layers need a GeoPackage (.gpkg), not {driver}")
    # GDAL wants the real suffix (GPKG warns otherwise): write inside a temporary sibling
    # folder, then rename the file into place, so no reader ever sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        for name, (geometries, fields) in layers.items():
            geoms, geometry_type = _uniform_geometries(geometries)
            pyogrio.raw.write(
                tmp,
                shapely.to_wkb(geoms),
                [np.asarray(v) for v in fields.values()],
                list(fields),
                layer=name,
                driver=driver,
                geometry_type=geometry_type,
                crs=CRS.from_user_input(crs).to_wkt(),
            )
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _uniform_geometries(geometries: Sequence | np.ndarray) -> tuple[np.ndarray, str]:
    """The geometries (polygons promoted to multipolygons when mixed) and their layer type."""
    geoms = np.asarray(geometries, dtype=object)
    type_ids = set(shapely.get_type_id(geoms).tolist()) if len(geoms) else {3}
    if type_ids <= {3, 6} and len(type_ids) == 2:
        geoms = np.where(shapely.get_type_id(geoms) == 3, _as_multi(geoms), geoms)
        type_ids = {6}
    geometry_type = (
        _GEOMETRY_TYPES.get(type_ids.pop(), "Unknown") if len(type_ids) == 1 else "Unknown"
    )
    return geoms, geometry_type


_GEOMETRY_TYPES = {
    0: "Point",
    1: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
}


def _as_multi(geoms: np.ndarray) -> np.ndarray:
    out = np.empty(len(geoms), dtype=object)
    for i, g in enumerate(geoms):
        out[i] = shapely.MultiPolygon([g]) if shapely.get_type_id(g) == 3 else g
    return out
