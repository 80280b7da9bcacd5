"""The synthetic scenario's file names (relative to its folder) and its ready ``config.yaml``."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..run import TRUTH_DIR
from .spec import BASELINE_DATE, BASELINE_NAME, EARTHQUAKES, ScenarioSpec, slug

#: The files a user brings, as the scenario writes them (relative to the scenario folder).
INPUTS_DIR = "inputs"
DEM_FILE = f"{INPUTS_DIR}/dem.tif"
RAIN_FILE = f"{INPUTS_DIR}/rain.tif"
RIVERS_FILE = f"{INPUTS_DIR}/rivers.gpkg"
INVENTORIES_DIR = f"{INPUTS_DIR}/inventories"
#: Sizes, seed, calibration and per-period statistics of the scenario.
SUMMARY_FILE = "summary.json"


def inventory_file(name: str) -> str:
    """The cumulative inventory of the period (or baseline) ``name``."""
    return f"{INVENTORIES_DIR}/{slug(name)}.gpkg"


def pga_file(event: str) -> str:
    """PGA (g) of the earthquake ``event``."""
    return f"{INPUTS_DIR}/pga_{event}.tif"


def sigma_file(event: str) -> str:
    """Sigma of ln PGA of the earthquake ``event``."""
    return f"{INPUTS_DIR}/sigma_{event}.tif"


_EPOCHS = {
    # (susceptibility, density on log1p, density, fine-tune, patience); see docs/training.md
    "tiny": (3, 2, 2, 1, 3),
    # the susceptibility stage: up to 30 epochs (~2 s each on the demo), patience 5, so that the
    # wide path converges (docs/models.md, "The default model")
    "demo": (30, 4, 4, 2, 5),
    "regional": (30, 4, 4, 2, 5),
}


#: A scenario on a user's DEM with at most this many cells trains with the demo's CPU-sized
#: epochs (the demo has 2,304 cells; Langtang 924).
DEM_SHORT_RUN_CELLS = 4096


def scenario_config(
    spec: ScenarioSpec, seed: int, names: list[str], name: str | None = None
) -> RunConfig:
    """The RunConfig of a scenario written by :func:`generate_scenario` (paths relative to OUT).

    Training defaults are CPU-sized for ``tiny`` and ``demo`` (the ``tiny`` preset, dropout 0.3:
    without it the susceptibility net overfits the training blocks after one epoch; measured in
    docs/training.md), and for a ``dem`` scenario of at most ``DEM_SHORT_RUN_CELLS`` cells as for
    ``demo``. Spatial blocks are a quarter of the domain's side (2-16 km); ``tiny``
    (16 x 16 cells, 4-cell patches) uses a 1-cell buffer around test blocks, else no patch
    would lie wholly in the training blocks for some folds. ``name``: default
    ``synthetic-<size>``.
    """
    n_cells = spec.shape_cells[0] * spec.shape_cells[1]
    epochs_as = "demo" if spec.size == "dem" and n_cells <= DEM_SHORT_RUN_CELLS else spec.size
    sus, dlog, dens, fine, patience = _EPOCHS.get(epochs_as, (60, 20, 20, 5, 10))
    short_runs = ("tiny", "demo", "regional")
    domain_km = min(spec.shape_cells) * spec.grid.cell_size_m / 1000.0
    block_km = float(min(16.0, max(2.0, domain_km / 4)))
    data: dict[str, Any] = {
        "name": name or f"synthetic-{spec.size}",
        "seed": seed,
        "grid": {
            "crs": spec.crs,
            "origin": list(spec.origin),
            "pixel_size_m": spec.pixel_size_m,
            "cell_pixels": spec.cell_pixels,
            "shape_cells": list(spec.shape_cells),
            "patch_cells": spec.patch_cells,
        },
        "baseline": {
            "name": BASELINE_NAME,
            "date": BASELINE_DATE.isoformat(),
            "inventory": inventory_file(BASELINE_NAME),
        },
        "periods": [
            {"name": name, "date": date.isoformat(), "inventory": inventory_file(name)}
            for name, date in spec.periods
        ],
        "inputs": {
            "dem": DEM_FILE,
            "rain": RAIN_FILE,
            "earthquakes": [
                {
                    "name": e.name,
                    "date": e.date.isoformat(),
                    "pga": pga_file(e.name),
                    "pga_unit": "g",
                    "sigma_ln_pga": sigma_file(e.name),
                }
                for e in EARTHQUAKES
            ],
            "rivers": {"path": RIVERS_FILE},
        },
        "model": {"preset": "tiny", "dropout": 0.3},
        "training": {
            "max_epochs_susceptibility": sus,
            "max_epochs_density_log": dlog,
            "max_epochs_density": dens,
            "max_epochs_finetune": fine,
            "patience": patience,
            # The paper code's 1e-4 barely moves the density block in the few epochs a CPU
            # demo affords (held-out hazard r ~0); 1e-3 lowered both density stages'
            # validation losses on demo seed 0 (docs/training.md).
            **({"lr_density": 1e-3} if epochs_as in short_runs else {}),
        },
        "evaluation": {
            "block_km": block_km,
            "n_folds": 4 if spec.size == "tiny" else 5,
            "buffer_cells": 1 if spec.size == "tiny" else None,
            "temporal_test_periods": 2,
        },
        "output": {"dir": "out"},
    }
    data["evaluation"]["truth_dir"] = TRUTH_DIR
    return RunConfig.model_validate(data)
