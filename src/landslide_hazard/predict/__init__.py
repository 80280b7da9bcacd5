"""The predict stage: wall-to-wall maps of a trained run, and what-if trigger scenarios.

:func:`predict` is the file edge: it loads ``RUN/model.pt`` (checking bands, units and grid
against the cube; :mod:`.loading`), runs :func:`predict_arrays` over the cube (:mod:`.core`)
and writes COGs, ``cells.gpkg``, a QGIS style and a STAC Item (:mod:`.stac`) to ``RUN/maps/``
(:mod:`.maps`), replacing the folder as a whole. With a scenario YAML
(:mod:`.scenario`) the triggers are replaced and the maps go to ``RUN/scenarios/<name>/``.
:mod:`.uncertainty`: MC dropout, deep ensembles, reliability diagrams, std maps;
:mod:`.mc`: the maps and their MC-dropout spread with each batch's inputs built once.
"""

from .core import QUANTITIES, Inference, default_input_threads, predict_arrays
from .loading import LoadedRun, check_model_grid, load_model_file, load_run
from .maps import (
    HAZARD_CLASS_NODATA,
    MAP_DESCRIPTIONS,
    QUANTITY_UNITS,
    STAC_ITEM_FILE,
    ExtraLayers,
    MapLabels,
    UncertaintyLayer,
    hazard_class_colours,
    hazard_class_names,
    hazard_class_qml,
    hazard_classes,
    write_cells_gpkg,
    write_maps,
)
from .mc import MCPasses, predict_with_mc_dropout
from .scenario import ScenarioSpec, applicability, load_scenario, scenario_triggers
from .stage import mc_uncertainty, predict

__all__ = [
    "HAZARD_CLASS_NODATA",
    "MAP_DESCRIPTIONS",
    "QUANTITIES",
    "QUANTITY_UNITS",
    "STAC_ITEM_FILE",
    "UncertaintyLayer",
    "ExtraLayers",
    "MapLabels",
    "LoadedRun",
    "MCPasses",
    "ScenarioSpec",
    "applicability",
    "check_model_grid",
    "default_input_threads",
    "hazard_class_colours",
    "hazard_class_names",
    "hazard_class_qml",
    "hazard_classes",
    "load_model_file",
    "load_run",
    "load_scenario",
    "mc_uncertainty",
    "predict",
    "predict_arrays",
    "predict_with_mc_dropout",
    "Inference",
    "scenario_triggers",
    "write_cells_gpkg",
    "write_maps",
]
