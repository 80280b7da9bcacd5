"""File I/O at the pipeline's edges: rasters, vectors, atomic writes."""

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .rasters import (
    PLAIN_GTIFF,
    RainStack,
    RasterEncoding,
    RasterError,
    RasterInfo,
    RasterTags,
    check_grid,
    raster_info,
    read_on_grid,
    read_rain_stack,
    read_raster,
    resample_array,
    write_rain_stack,
    write_raster,
)

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "RainStack",
    "RasterError",
    "RasterInfo",
    "check_grid",
    "raster_info",
    "read_on_grid",
    "read_rain_stack",
    "read_raster",
    "resample_array",
    "write_rain_stack",
    "write_raster",
    "PLAIN_GTIFF",
    "RasterEncoding",
    "RasterTags",
]
