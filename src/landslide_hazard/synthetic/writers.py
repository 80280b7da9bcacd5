"""Writers of the synthetic scenario's large files: the fine-grid GeoTIFF written tile by tile,
and GeoPackage layers written in batches, each renamed into place on success, with
reproducible bytes (the same seed gives the same files)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import rasterio
import shapely
from rasterio.windows import Window

from ..io import atomic_path
from .spec import ScenarioSpec


class TiledWriter:
    """A float32 GeoTIFF written window by window (tiled, deflate), atomically."""

    def __init__(
        self, stack: contextlib.ExitStack, path: Path, spec: ScenarioSpec, name: str, unit: str
    ):
        tile_px = spec.tile_cells * spec.cell_pixels
        block = math.gcd(tile_px, 256)
        if block % 16:
            raise ValueError(f"tile of {tile_px} px cannot be written in 16-multiple blocks")
        tmp = stack.enter_context(atomic_path(path))
        height, width = spec.grid.fine_shape
        x0, y1 = spec.origin
        self.ds = stack.enter_context(
            rasterio.open(
                tmp,
                "w",
                driver="GTiff",
                height=height,
                width=width,
                count=1,
                dtype="float32",
                crs=spec.crs,
                transform=rasterio.Affine(spec.pixel_size_m, 0, x0, 0, -spec.pixel_size_m, y1),
                nodata=float("nan"),
                tiled=True,
                blockxsize=block,
                blockysize=block,
                compress="deflate",
                predictor=3,
                BIGTIFF="IF_SAFER",
            )
        )
        self.ds.set_band_description(1, name)
        self.ds.set_band_unit(1, unit)

    def write(self, data: np.ndarray, row0: int, col0: int) -> None:
        self.ds.write(
            data.astype(np.float32)[None], window=Window(col0, row0, data.shape[1], data.shape[0])
        )


@contextlib.contextmanager
def atomic_gpkg(path: Path) -> Iterator[Path]:
    """Yield a temporary ``.gpkg`` path (GDAL wants the extension); rename onto ``path`` on success."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def gpkg_timestamp(date: dt.date) -> Iterator[None]:
    """Stamp GeoPackage metadata with ``date`` instead of now, so the same seed gives the same
    bytes (GDAL's OGR_CURRENT_DATE); the previous setting is restored."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": f"{date.isoformat()}T00:00:00.000Z"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


class PolygonWriter:
    """A GeoPackage polygon layer written in batches (bounded memory), renamed into place."""

    BATCH = 50_000

    def __init__(self, stack: contextlib.ExitStack, path: Path, crs: str, date: dt.date):
        self.tmp = stack.enter_context(atomic_gpkg(path))
        self.crs = crs
        self.date = date
        self.created = False
        self._buf: tuple[list, list, list] = ([], [], [])

    def add(self, polygons: list, ids: list[int], periods: list[str]) -> None:
        self._buf[0].extend(polygons)
        self._buf[1].extend(ids)
        self._buf[2].extend(periods)
        if len(self._buf[0]) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        polygons, ids, periods = self._buf
        if not polygons and self.created:
            return
        with gpkg_timestamp(self.date):
            pyogrio.raw.write(
                self.tmp,
                np.array(shapely.to_wkb(polygons) if polygons else [], dtype=object),
                [
                    np.asarray(ids, dtype=np.int64),
                    np.array(periods, dtype=object),
                    np.asarray(shapely.area(polygons) if polygons else [], dtype=np.float64),
                ],
                ["landslide_id", "period", "area_m2"],
                layer="landslides",
                driver="GPKG",
                geometry_type="Polygon",
                crs=self.crs,
                append=self.created,
            )
        self.created = True
        self._buf = ([], [], [])


def write_rivers(
    path: Path, lines: Sequence[shapely.LineString], kinds: Sequence[str], crs: str, date: dt.date
) -> None:
    """A GeoPackage layer ``rivers`` of ``lines`` with their ``kind``, stamped ``date``."""
    with atomic_gpkg(path) as tmp, gpkg_timestamp(date):
        pyogrio.raw.write(
            tmp,
            np.array(shapely.to_wkb(lines), dtype=object),
            [np.array(kinds, dtype=object)],
            ["kind"],
            layer="rivers",
            driver="GPKG",
            geometry_type="LineString",
            crs=crs,
        )
