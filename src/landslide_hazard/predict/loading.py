"""Loading a trained run for prediction: ``model.pt`` rebuilt and checked against the cube."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bands import UNITS, dynamic_names_of
from ..errors import InputError, MissingFileError, RunFolderError
from ..models.enn import ENN
from ..run import (
    RunFolder,
    check_run_folder,
    cube_path,
    enn_arguments_of,
    read_model_payload,
    reason_of,
)
from ..sampling.normalisation import Normalisation


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Any  # RunConfig
    model: ENN
    norm: Normalisation
    meta: dict[str, Any]

    @property
    def dynamic_bands(self) -> tuple[str, ...]:
        """The cell-grid bands the model reads (the triggers, and the legacy if trained so)."""
        return dynamic_names_of(tuple(self.norm.names))


def load_model_file(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[ENN, Normalisation, dict]:
    """Rebuild the ENN saved in ``model.pt``; returns (model, normalisation, metadata)."""
    from ..models import build_enn

    path = Path(path)
    meta = read_model_payload(path)
    bands = tuple(meta.get("bands", ()))
    try:
        dynamic_names_of(bands)
    except ValueError as exc:
        raise RunFolderError(
            f"{path}: trained on bands {list(bands)}, neither the 13 inputs of this package nor "
            "its 16 with the landslide legacy; retrain the run with this version"
        ) from exc
    units = meta.get("units", {})
    for b in bands:
        if units.get(b) != UNITS[b]:
            raise RunFolderError(
                f"{path}: band '{b}' was in {units.get(b)!r}, the cube holds {UNITS[b]!r}; retrain"
            )
    model = build_enn(**enn_arguments_of(meta))
    try:
        model.load_state_dict(meta["state_dict"])
    except RuntimeError as exc:
        raise RunFolderError(
            f"{path}: its weights do not fit the {meta['preset']} preset ({reason_of(exc)}); the file is "
            "damaged or foreign; train the run again"
        ) from exc
    model.to(device)
    model.period_shifts = {str(k): float(v) for k, v in meta.get("period_shifts", {}).items()}
    blend = [float(v) for v in meta.get("density_blend") or []]
    model.density_blend = (blend[0], blend[1]) if len(blend) == 2 else None
    model.period_density_factors = {
        str(k): float(v) for k, v in (meta.get("period_density_factors") or {}).items()
    }
    model.density_level = float(meta.get("density_level", 1.0))  # 1: files written before it
    norm = Normalisation.from_dict(meta["normalisation"])
    norm.check_bands(bands, str(path))
    return model, norm, meta


def check_model_grid(meta: dict, grid, what: str) -> None:
    """Raise if the cube's cell size, k or n differ from what the model was trained on."""
    for key in ("cell_pixels", "patch_cells"):
        if int(meta[key]) != int(getattr(grid, key)):
            raise InputError(
                f"{what}: {key} = {getattr(grid, key)} but the model was trained with "
                f"{meta[key]}; prepare the cube with the run's grid settings"
            )
    trained = float(meta["grid"]["pixel_size_m"])
    if not np.isclose(trained, grid.pixel_size_m, rtol=1e-6):
        raise InputError(
            f"{what}: pixel size {grid.pixel_size_m} m but the model was trained on {trained} m; "
            "prepare the cube on the run's pixel size"
        )


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    from ..config import load_config

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    check_run_folder(folder)
    cfg = load_config(folder.config)
    model, norm, meta = load_model_file(folder.model, device)
    return LoadedRun(run_dir, cfg, model, norm, meta)


def _cube_of(run: LoadedRun, cube: str | Path | None = None):
    """The run's cube: ``cube`` if given (``predict --cube``), else ``output.dir/cube.zarr`` of
    the run's config (relative to the run folder), else the path model.pt recorded (relative
    to the run folder in files of this version), else the absolute path it recorded."""
    from ..cube import open_cube

    if cube is not None:
        given = Path(cube)
        if not given.exists():
            raise MissingFileError(f"{given}: no cube here (predict --cube); give a cube.zarr")
        candidates = [given]
    else:
        candidates = [cube_path(run.cfg)]
        if run.meta.get("cube_path"):
            recorded = Path(run.meta["cube_path"])
            candidates.append(recorded if recorded.is_absolute() else run.run_dir / recorded)
        if run.meta.get("cube_path_absolute"):  # a run folder moved without its output folder
            candidates.append(Path(run.meta["cube_path_absolute"]))
    for c in candidates:
        if c.exists():
            opened = open_cube(c)
            check_model_grid(run.meta, opened.grid, str(c))
            return opened
    raise MissingFileError(
        f"{run.run_dir}: the run's cube is missing ({candidates[0]}); pass the cube's path "
        "with `predict RUN --cube PATH`, or run `landslide-hazard prepare` with the run's "
        "config.yaml"
    )
