"""The prepare stage: validate every input, derive the predictors and targets, write the cube.

:func:`prepare` (:mod:`.stage`) turns a :class:`~landslide_hazard.config.RunConfig` into
``<output.dir>/cube.zarr`` (the contract in :mod:`landslide_hazard.cube`):

1. **Validate** every input before any long work (:mod:`.inputs`); each error names the file,
   the problem and the fix (:class:`PrepareError`).
2. ``valid_cells``: cells whose k x k fine pixels are all valid DEM pixels inside the study mask.
3. ``target_density``: new failed area density per period (:mod:`.targets`, through
   :mod:`landslide_hazard.inventory`).
4. ``dynamic`` and ``monsoons_since_eq``: trigger statistics per period on the cell grid
   (:mod:`.dynamic`; the what-if scenarios of predict use the same derivation).
5. ``static``: global passes on the whole fine grid, then tile by tile into the Zarr chunks, in
   this process or on a dask.distributed cluster (:mod:`.static`; ``docs/scale.md``).

Dynamic bands and targets are NaN outside ``valid_cells``; static bands are NaN outside the
valid DEM and the study mask. The cube is written atomically and resumably (:mod:`.stage`).
"""

from .dynamic import compute_dynamic, period_windows, rain_bands, shaking_bands
from .inputs import (
    PrepareError,
    ValidatedInputs,
    file_provenance,
    input_paths,
    period_infos,
    validate_inputs,
)
from .stage import PROGRESS_FILE, prepare
from .static import (
    DEFAULT_TILE_PX,
    StaticScratch,
    compute_static_tile,
    global_passes,
    static_tile,
    static_tiles,
    write_static_tile,
)
from .targets import compute_targets

__all__ = [
    "DEFAULT_TILE_PX",
    "PROGRESS_FILE",
    "PrepareError",
    "StaticScratch",
    "ValidatedInputs",
    "compute_dynamic",
    "compute_static_tile",
    "compute_targets",
    "file_provenance",
    "global_passes",
    "input_paths",
    "period_infos",
    "period_windows",
    "rain_bands",
    "shaking_bands",
    "prepare",
    "static_tile",
    "static_tiles",
    "validate_inputs",
    "write_static_tile",
]
