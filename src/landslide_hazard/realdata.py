"""Loader for the real Gorkha 2015 data (``<shared>/data/gorkha2015``, see :func:`shared_dir`).

Three GeoTIFFs on the paper's 1 km lattice, 8 bands (periods) each, NaN outside the 21,360
cells covered by the paper's validation patches; see that folder's README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from .io import RasterError, read_raster

#: The environment variable naming the shared folder (paper, data) of a checkout.
ENV_VAR = "LANDSLIDE_HAZARD_SHARED"
#: The shared folder when ENV_VAR is unset, relative to the current working directory (a
#: checkout's root sits beside ``shared/``).
DEFAULT_SHARED = Path("..") / "shared"
OBSERVED_FILE = "observed_area_density.tif"
SUSCEPTIBILITY_FILE = "paper_predicted_susceptibility.tif"
DENSITY_FILE = "paper_predicted_area_density.tif"


@dataclass(frozen=True)
class GorkhaData:
    """The real Gorkha arrays, each (period, y, x) float32 with NaN where there is no data.

    observed_density: newly failed area density (% of the 1 km cell);
    predicted_susceptibility: the paper's P(occurrence); predicted_density: the paper's
    density (%). ``transform`` and ``crs`` place the cell grid; ``path`` is the folder read.
    """

    observed_density: np.ndarray
    predicted_susceptibility: np.ndarray
    predicted_density: np.ndarray
    period_names: tuple[str, ...]
    transform: Affine
    crs: CRS
    path: Path

    @property
    def valid(self) -> np.ndarray:
        """(y, x) mask of the cells that carry data in every period."""
        return ~np.isnan(self.observed_density).any(axis=0)


def shared_dir() -> Path:
    """The shared folder (``paper/``, ``data/``): ``$LANDSLIDE_HAZARD_SHARED`` if set, else
    ``../shared`` relative to the current working directory (run from a checkout's root).

    The one rule for finding shared data; it never looks at where the package is installed."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_SHARED


def default_gorkha_dir() -> Path:
    """``<shared>/data/gorkha2015`` (:func:`shared_dir`)."""
    return shared_dir() / "data" / "gorkha2015"


def load_gorkha(path: str | Path | None = None) -> GorkhaData:
    """Read the three Gorkha rasters; raise a :class:`RasterError` naming the fix if absent."""
    folder = Path(path) if path is not None else default_gorkha_dir()
    missing = [
        name
        for name in (OBSERVED_FILE, SUSCEPTIBILITY_FILE, DENSITY_FILE)
        if not (folder / name).is_file()
    ]
    if missing:
        raise RasterError(
            f"{folder}: the Gorkha 2015 data is not there (missing {', '.join(missing)}); "
            f"pass its folder, or set {ENV_VAR} to the shared folder whose data/gorkha2015 "
            f"holds {OBSERVED_FILE}, {SUSCEPTIBILITY_FILE} and {DENSITY_FILE}"
        )
    observed, info = read_raster(folder / OBSERVED_FILE)
    arrays = [observed]
    for name in (SUSCEPTIBILITY_FILE, DENSITY_FILE):
        data, other = read_raster(folder / name)
        if other.shape != info.shape or other.count != info.count:
            raise RasterError(
                f"{folder / name}: {other.count} bands of {other.shape} differ from "
                f"{OBSERVED_FILE} ({info.count} bands of {info.shape}); use the files as shipped"
            )
        if not other.transform.almost_equals(info.transform) or other.crs != info.crs:
            raise RasterError(
                f"{folder / name}: grid differs from {OBSERVED_FILE}; use the files as shipped"
            )
        arrays.append(data)
    names = tuple(d or f"period {i + 1}" for i, d in enumerate(info.descriptions))
    return GorkhaData(
        observed_density=arrays[0],
        predicted_susceptibility=arrays[1],
        predicted_density=arrays[2],
        period_names=names,
        transform=info.transform,
        crs=info.crs,
        path=folder,
    )
