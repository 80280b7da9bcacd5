"""The predict stage (being split into modules; see docs/architecture.md)."""

from .core import (
    QUANTITIES,
    LoadedRun,
    applicability,
    default_input_threads,
    hazard_classes,
    load_model_file,
    load_run,
    load_scenario,
    predict,
    predict_arrays,
    scenario_triggers,
    write_maps,
)

__all__ = [
    "QUANTITIES",
    "LoadedRun",
    "applicability",
    "default_input_threads",
    "hazard_classes",
    "load_model_file",
    "load_run",
    "load_scenario",
    "predict",
    "predict_arrays",
    "scenario_triggers",
    "write_maps",
]
