"""Damaged raster files: a GeoTIFF cut short (an interrupted download or copy) is refused
naming the file, instead of being read as zeros or as an undated rain stack."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def gdal_io_errors() -> Iterator[list[str]]:
    """Collect the I/O errors GDAL reports as warnings while opening a file (a TIFF tag past
    the end of a truncated file is "ignored" with a warning, not an error)."""
    found: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "IO error" in text or "Read error" in text or "truncat" in text.lower():
                found.append(text.split(": ", 1)[-1] if ": " in text else text)

    logger = logging.getLogger("rasterio._env")
    handler = _Collect(level=logging.WARNING)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def check_not_truncated(ds: Any, path: Path) -> None:
    """Refuse a GeoTIFF whose pixel blocks end past the end of the file.

    GDAL opens a truncated TIFF (an interrupted download or copy) and reads the missing blocks
    as zeros or fails with "Read failed"; the band descriptions may be lost as well (a rain
    stack then looks undated). The last and first blocks of the first and last band are
    checked: the file's data end at the largest of their offsets + sizes.
    """
    if ds.driver != "GTiff":
        return
    size = path.stat().st_size
    bh, bw = ds.block_shapes[0]
    last_y, last_x = -(-ds.height // bh) - 1, -(-ds.width // bw) - 1
    end = 0
    for band in {1, ds.count}:
        for y, x in {(0, 0), (last_y, last_x)}:
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
            length = ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
            if offset and length and int(offset) > 0:  # offset 0: a sparse (empty) block
                end = max(end, int(offset) + int(length))
    if end > size:
        from .rasters import RasterError

        raise RasterError(
            f"{path}: the file is truncated or damaged: its pixel data run to byte {end:,} but "
            f"the file holds {size:,} bytes (an interrupted download or copy?); copy or export "
            "it again"
        )
