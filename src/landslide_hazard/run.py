"""The run folder's contract: every file name of the output folder, the run name, and saving
and loading the model and the training checkpoints.

Layout (users' scripts read it; keep it stable)::

    <output.dir>/
      cube.zarr                  the predictor cube (prepare; see cube.py)
      runs/<run name>/           one trained run (train)
        config.yaml              the config the run was trained with
        normalisation.json       per-band mean / std of the training cells
        splits.npz               train_cells, val_cells, test_cells, patches, ... (sampling.Split)
        checkpoints/last.pt      resume state; checkpoints/<stage>.pt after each stage
        train.log                one line per epoch
        model.pt                 the trained ENN (ModelFile)
        metrics.json             held-out scores
        maps/*.tif, cells.gpkg   predict (map_file; uncertainty.tif with --mc-samples;
                                 hazard_class.qml, stac-item.json)
        scenarios/<name>/        predict --scenario (its maps and scenario.yaml)
        evaluation/              demo: metrics.json, roles.tif and report.html of the maps
        hparam/trial-<i>/        hyper-parameter search trials
        hparam_search.json       the search's trials and the chosen values
      .cube.zarr.partial/        an unfinished cube (prepare_progress.json: its resume state)
      validation/                validate (runs/<protocol>-fold<f>/ inside, validation.json)

A synthetic scenario (``synth``) also writes ``truth/`` with :data:`TRUTH_FILES`.

Every stage builds these paths through this module; no other module spells a file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingFileError, RunFolderError

# -- file and folder names -------------------------------------------------------------------
CUBE_NAME = "cube.zarr"
RUNS_DIR = "runs"
CONFIG_FILE = "config.yaml"
NORMALISATION_FILE = "normalisation.json"
SPLITS_FILE = "splits.npz"
CHECKPOINTS_DIR = "checkpoints"
#: The resume checkpoint inside :data:`CHECKPOINTS_DIR`.
CHECKPOINT = "last.pt"
TRAIN_LOG = "train.log"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
MAPS_DIR = "maps"
CELLS_FILE = "cells.gpkg"  # the maps as one polygon per cell
HAZARD_CLASS_STYLE_FILE = "hazard_class.qml"  # QGIS style of hazard_class.tif
STAC_ITEM_FILE = "stac-item.json"  # a STAC item of the maps
#: The MC-dropout spread map (predict --mc-samples), beside the maps.
UNCERTAINTY_MAP = "uncertainty"
#: The demo's map of each cell's role in the split (train / val / test), in evaluation/.
ROLES_MAP = "roles"
RAW_MAPS_DIR = "maps-raw"  # predict --raw: the network's own probabilities, uncalibrated
SCENARIOS_DIR = "scenarios"
SCENARIO_FILE = "scenario.yaml"  # a copy of the scenario file, beside its maps
EVALUATION_DIR = "evaluation"
REPORT_FILE = "report.html"
PREPARE_PROGRESS_FILE = "prepare_progress.json"
HPARAM_DIR = "hparam"
HPARAM_SEARCH_FILE = "hparam_search.json"
VALIDATION_DIR = "validation"
VALIDATION_FILE = "validation.json"
RELIABILITY_PLOT = "reliability.png"  # validate's reliability diagrams, beside validation.json
TRUTH_DIR = "truth"
#: The synthetic truth on the cell grid, one band per period: what each file holds -> its name.
TRUTH_FILES: dict[str, str] = {
    "susceptibility": "p_occurrence.tif",  # P(new density > 0)
    "density": "density_given_occurrence.tif",  # E[D | D > 0], % of cell
    "hazard": "expected_density.tif",  # E[D], % of cell
    # the observable oracle: the truth averaged over the latent fields no input shows
    "observable_susceptibility": "p_occurrence_observable.tif",
    "observable_density": "density_given_occurrence_observable.tif",
    "observable_hazard": "expected_density_observable.tif",
    "new_density": "new_density.tif",  # the realised new failed density, % of cell
    "rate": "rate.tif",  # the Poisson rate behind the truth
    "area_scale_m2": "area_scale_m2.tif",  # the area law's scale
}


# -- paths -----------------------------------------------------------------------------------
def map_file(quantity: str) -> str:
    """The GeoTIFF of the map ``quantity`` (``susceptibility`` -> ``susceptibility.tif``)."""
    return f"{quantity}.tif"


def check_folder_name(name: str, what: str) -> str:
    """``name`` if it is safe as one folder name inside its parent, else a ValueError.

    Names from configs and scenario files become folders (``runs/<run name>``,
    ``scenarios/<name>``); a shared file must not make a run write elsewhere: no path
    separator, no ``.`` / ``..``, no leading dot (hidden folders), no drive or control character.
    """
    bad = set("/\\:") | {chr(c) for c in range(32)}
    if (
        not name
        or name != name.strip()
        or name.startswith(".")
        or any(ch in bad for ch in name)
        or Path(name).is_absolute()
    ):
        raise ValueError(
            f"{what} {name!r} is not a plain folder name: use letters, digits, spaces, '.', "
            "'_' or '-', without '/', '\\', ':' or a leading '.' (it names a folder that must "
            "stay inside its parent)"
        )
    return name


def cube_path(cfg: Any) -> Path:
    """``<output.dir>/cube.zarr`` of a RunConfig."""
    return Path(cfg.output.dir) / CUBE_NAME


def default_run_name(protocol: str, fold: int) -> str:
    """``<protocol>-fold<fold>``: the name of a run without ``output.run_name``, and of every
    run ``validate`` trains."""
    return f"{protocol}-fold{fold}"


def run_name(cfg: Any, protocol: str, fold: int) -> str:
    """``output.run_name`` if set, else :func:`default_run_name`."""
    return cfg.output.run_name or default_run_name(protocol, fold)


def runs_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / RUNS_DIR


def run_dir_for(cfg: Any, protocol: str, fold: int) -> Path:
    """``<output.dir>/runs/<run name>``."""
    return runs_dir(cfg.output.dir) / run_name(cfg, protocol, fold)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def normalisation(self) -> Path:
        return self.path / NORMALISATION_FILE

    @property
    def splits(self) -> Path:
        return self.path / SPLITS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / CHECKPOINT

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def maps(self) -> Path:
        return self.path / MAPS_DIR

    @property
    def raw_maps(self) -> Path:
        return self.path / RAW_MAPS_DIR

    def map(self, quantity: str) -> Path:
        """``maps/<quantity>.tif``."""
        return self.maps / map_file(quantity)

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION_DIR

    def scenario(self, name: str) -> Path:
        return self.path / SCENARIOS_DIR / name

    @property
    def hparam_search(self) -> Path:
        return self.path / HPARAM_SEARCH_FILE

    def hparam_checkpoints(self, trial: int) -> Path:
        return self.path / HPARAM_DIR / f"trial-{trial}" / CHECKPOINTS_DIR


def find_truth_dir(cfg: Any) -> Path | None:
    """The synthetic truth folder of a config, or None for real data.

    The rule: ``evaluation.truth_dir`` (``synth`` writes it into the scenario's config). For
    scenario folders written before that key existed, a ``truth/`` holding
    ``p_occurrence.tif`` beside or above the DEM's folder, or beside the output folder, is used.
    """
    explicit = getattr(cfg.evaluation, "truth_dir", None)
    if explicit is not None:
        truth = Path(explicit)
        if not (truth / TRUTH_FILES["susceptibility"]).is_file():
            raise MissingFileError(
                f"evaluation.truth_dir = {truth}: no {TRUTH_FILES['susceptibility']} there; "
                "point it at the scenario's truth/ folder or remove the key"
            )
        return truth
    dem = Path(cfg.inputs.dem)
    for base in (dem.parent, dem.parent.parent, Path(cfg.output.dir).parent):
        truth = base / TRUTH_DIR
        if (truth / TRUTH_FILES["susceptibility"]).is_file():
            return truth
    return None


# -- model.pt --------------------------------------------------------------------------------
@dataclass
class ModelFile:
    """What ``model.pt`` holds: the weights and everything needed to rebuild and check them.

    Stored as a plain dict of these fields (``torch.save``), so the file format is unchanged.
    """

    state_dict: dict[str, Any]
    preset: str
    dropout: float
    density_activation: str
    bands: list[str]
    units: dict[str, str]
    normalisation: dict[str, Any]
    grid: dict[str, Any]
    cell_pixels: int
    patch_cells: int
    period_names: list[str]
    min_density: float
    lattice_merge: str
    protocol: str
    fold: int
    cube_path: str
    package_version: str
    wide: str = "none"  # the susceptibility's wide path (models.susceptibility)
    members: int = 1  # susceptibility nets in the deep ensemble
    glm: bool = False  # a fitted per-cell regression in the susceptibility logit (model.glm)
    glm_fit: str = "start"  # how it joins the network (model.glm_fit): start or stack
    # the cube's absolute path when trained: the last place looked for it (cube_path, relative
    # to the run folder, serves a moved output folder; this one a run folder moved alone)
    cube_path_absolute: str = ""
    # per-period logit shifts of the calibration, by period name (ENN.period_shifts)
    period_shifts: dict[str, float] = field(default_factory=dict)
    # [weight, constant] of the density maps' blend toward a constant (ENN.density_blend);
    # empty: none (files written before it, or a run without calibration)
    density_blend: list[float] = field(default_factory=list)
    # per-period factors on the density maps, by period name (ENN.period_density_factors)
    period_density_factors: dict[str, float] = field(default_factory=dict)
    # the density factor of a period without its own, a forecast (ENN.density_level)
    density_level: float = 1.0

    #: The keys without which a file is foreign (older files may lack the others).
    REQUIRED = frozenset(
        {"bands", "units", "preset", "patch_cells", "cell_pixels", "state_dict", "normalisation"}
    )

    def to_payload(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _torch_bytes(payload: dict[str, Any]) -> bytes:
    """``torch.save`` into memory: the file is then written by Python, whose OSError (a full
    disk, a refused folder) the CLI turns into a sentence; torch's own writer raises a
    RuntimeError without the reason."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_model(path: str | Path, model_file: ModelFile) -> None:
    """Write ``model.pt`` atomically."""

    from .io.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(_torch_bytes(model_file.to_payload()))


#: ``build_enn``'s architecture arguments beside preset and grid that ``model.pt`` records, with
#: their defaults there, which are also the value a file written before the argument existed
#: meant (the published code's: no dropout, a ReLU density head, no wide path, one network,
#: no fitted regression; a regression in a file written before ``glm_fit`` was its start).
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "dropout": 0.0,
    "density_activation": "relu",
    "wide": "none",
    "members": 1,
    "glm": False,
    "glm_fit": "start",
}


def enn_arguments(
    model_cfg: Any, grid: Any, dynamic_bands: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """``build_enn``'s keyword arguments for a config's ``model`` section on a grid
    (``dynamic_bands``: the cell-grid bands the model reads, ``RunConfig.model_dynamic_bands``;
    None: the triggers only)."""
    from .bands import DYNAMIC_NAMES, SCALAR_NAMES, STATIC_NAMES

    bands = DYNAMIC_NAMES if dynamic_bands is None else dynamic_bands
    return {
        "preset": model_cfg.preset,
        "in_channels": len(STATIC_NAMES) + len(bands) + len(SCALAR_NAMES),
        "patch_cells": grid.patch_cells,
        "cell_pixels": grid.cell_pixels,
        **{key: getattr(model_cfg, key) for key in ARCHITECTURE_DEFAULTS},
    }


def enn_arguments_of(meta: dict[str, Any]) -> dict[str, Any]:
    """``build_enn``'s keyword arguments for the model a ``model.pt`` payload holds."""
    from .bands import INPUT_NAMES

    return {
        "preset": meta["preset"],
        "in_channels": len(meta.get("bands", INPUT_NAMES)),
        "patch_cells": int(meta["patch_cells"]),
        "cell_pixels": int(meta["cell_pixels"]),
        **{key: type(old)(meta.get(key, old)) for key, old in ARCHITECTURE_DEFAULTS.items()},
    }


def save_trained_model(path, model, cfg, norm, grid, cube, cube_file) -> None:
    """Write the ``model.pt`` of a trained ENN (weights on the CPU, with what rebuilds it)."""
    from . import __version__
    from .bands import UNITS

    save_model(
        path,
        ModelFile(
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            preset=cfg.model.preset,
            **{key: getattr(cfg.model, key) for key in ARCHITECTURE_DEFAULTS},
            bands=list(norm.names),
            units={b: UNITS[b] for b in norm.names},
            normalisation=norm.to_dict(),
            grid=grid.to_dict(),
            cell_pixels=grid.cell_pixels,
            patch_cells=grid.patch_cells,
            period_names=cube.meta.period_names,
            min_density=cfg.inventory.min_density,
            lattice_merge=cfg.model.lattice_merge,
            protocol=cfg.evaluation.protocol,
            fold=cfg.evaluation.test_fold,
            # relative to the run folder: the output folder (cube and runs) can move
            cube_path=os.path.relpath(Path(cube_file).resolve(), Path(path).resolve().parent),
            cube_path_absolute=str(Path(cube_file).resolve()),
            package_version=__version__,
            period_shifts={
                str(k): float(v) for k, v in getattr(model, "period_shifts", {}).items()
            },
            density_blend=[float(v) for v in getattr(model, "density_blend", None) or ()],
            period_density_factors={
                str(k): float(v) for k, v in getattr(model, "period_density_factors", {}).items()
            },
            density_level=float(getattr(model, "density_level", 1.0)),
        ),
    )


def reason_of(exc: Exception) -> str:
    """One line for an error message: the exception's type and the first line of its text
    (torch's refusals of a pickle that is not plain data run over many lines, and end by
    suggesting ``weights_only=False``, which would let a shared file run code)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    first = text[0].split(". ")[0].rstrip(".:")  # torch's lines run on with advice
    return f"{type(exc).__name__}: {first}"


def read_model_payload(path: str | Path) -> dict[str, Any]:
    """The dict in ``model.pt``; a missing, truncated or foreign file is a RunFolderError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{path}: no model here; train the run first (landslide-hazard train)"
        )
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a foreign pickle, ...: all mean "not our file"
        raise RunFolderError(
            f"{path}: not a readable model file ({reason_of(exc)}); it is truncated "
            "or was not written by `landslide-hazard train`; train the run again"
        ) from exc
    if not isinstance(meta, dict) or not ModelFile.REQUIRED <= meta.keys():
        have = meta.keys() if isinstance(meta, dict) else set()
        raise RunFolderError(
            f"{path}: not a landslide-hazard model file (it lacks "
            f"{sorted(ModelFile.REQUIRED - have)}); train the run again with "
            "`landslide-hazard train`"
        )
    return meta


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (model, optimiser and RNG state, history)."""

    from .io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(_torch_bytes(payload))


def stage_checkpoint(checkpoints: Path, stage: str) -> Path:
    """The weights at the end of one training stage: ``checkpoints/<stage>.pt``."""
    return Path(checkpoints) / f"{stage}.pt"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; a truncated one is a RunFolderError."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunFolderError(
            f"{path}: not a readable checkpoint ({reason_of(exc)}); delete it to "
            "restart the stage, or the run folder to start over"
        ) from exc
    if not isinstance(payload, dict):
        raise RunFolderError(f"{path}: not a landslide-hazard checkpoint; delete it")
    return payload


def check_run_folder(run: RunFolder) -> None:
    """Raise unless ``run`` looks like a run folder (it holds config.yaml)."""
    if not run.config.is_file():
        raise MissingFileError(
            f"{run.path}: not a run folder (no {CONFIG_FILE}); pass RUN = "
            f"<output>/{RUNS_DIR}/<name>"
        )


__all__ = [
    "CHECKPOINT",
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "CUBE_NAME",
    "HPARAM_DIR",
    "MAPS_DIR",
    "METRICS_FILE",
    "MODEL_FILE",
    "ModelFile",
    "NORMALISATION_FILE",
    "RUNS_DIR",
    "RunFolder",
    "SCENARIOS_DIR",
    "SPLITS_FILE",
    "TRAIN_LOG",
    "TRUTH_DIR",
    "TRUTH_FILES",
    "VALIDATION_DIR",
    "check_run_folder",
    "cube_path",
    "default_run_name",
    "find_truth_dir",
    "load_checkpoint",
    "read_model_payload",
    "run_dir_for",
    "run_name",
    "runs_dir",
    "save_checkpoint",
    "save_model",
    "save_trained_model",
    "stage_checkpoint",
]
