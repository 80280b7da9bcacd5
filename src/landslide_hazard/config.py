"""The YAML run configuration: one pydantic model, validated once at the boundary.

Every default lives here and is printed by ``landslide-hazard config --show-defaults``. Paths in a
config file are relative to that file; :func:`load_config` resolves them to absolute paths.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .grid import StudyGrid
from .predictors.triggers import PgaUnit


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GridConfig(_Model):
    """Study grid: fine pixels of ``pixel_size_m``, cells of ``cell_pixels`` x ``cell_pixels``."""

    crs: str = Field("EPSG:32645", description="projected CRS in metres (EPSG code or WKT)")
    origin: tuple[float, float] = Field(..., description="upper-left corner (x_min, y_max), m")
    pixel_size_m: float = Field(31.25, gt=0, description="fine pixel size p (paper ~30 m)")
    cell_pixels: int = Field(32, ge=1, description="k: fine pixels per cell side (32 -> 1 km)")
    shape_cells: tuple[int, int] = Field(..., description="cell-grid (rows, cols)")
    patch_cells: int = Field(4, ge=1, description="n: cells per patch side (paper 4)")

    @field_validator("patch_cells")
    @classmethod
    def _even_patch(cls, v: int) -> int:
        if v % 2:
            raise ValueError("patch_cells must be even so the shifted lattice sits n/2 cells off")
        return v

    @field_validator("crs")
    @classmethod
    def _projected_metres(cls, v: str) -> str:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            crs = CRS.from_user_input(v)
        except CRSError:
            raise ValueError(
                f"'{v}' is not a CRS rasterio knows; give an EPSG code such as EPSG:32645 (UTM "
                "45N) or a WKT string"
            ) from None
        units = (crs.linear_units or "").lower()
        if not crs.is_projected or units not in _METRE_NAMES:
            raise ValueError(
                f"'{v}' is not a projected CRS in metres ({'geographic, degrees' if crs.is_geographic else units or 'no unit'}); "
                "slopes, areas and distances need metres: use the UTM zone of the study area "
                "(e.g. EPSG:32645 for central Nepal)"
            )
        return v

    @model_validator(mode="after")
    def _patch_fits(self) -> GridConfig:
        rows, cols = self.shape_cells
        if rows < 1 or cols < 1:
            raise ValueError(f"shape_cells {self.shape_cells} must be positive (rows, cols)")
        if self.patch_cells > min(rows, cols):
            raise ValueError(
                f"patch_cells = {self.patch_cells} is larger than the grid ({rows} x {cols} "
                f"cells): no patch fits; lower grid.patch_cells to at most {min(rows, cols)} "
                "(even) or enlarge grid.shape_cells"
            )
        return self

    def study_grid(self) -> StudyGrid:
        return StudyGrid(
            crs=self.crs,
            x_min=self.origin[0],
            y_max=self.origin[1],
            pixel_size_m=self.pixel_size_m,
            cell_pixels=self.cell_pixels,
            n_cell_rows=self.shape_cells[0],
            n_cell_cols=self.shape_cells[1],
            patch_cells=self.patch_cells,
        )


_METRE_NAMES = ("metre", "meter", "m", "metres", "meters")


class InventoryDate(_Model):
    """An inventory mapped at ``date``: cumulative landslide area (or per period with a flag)."""

    name: str
    date: dt.date
    inventory: Path = Field(
        ..., description="polygons (.gpkg/.geojson), fine mask or cell density (.tif)"
    )
    mapped_extent: Path | None = Field(None, description="optional raster/polygon of mapped area")


class EarthquakeConfig(_Model):
    name: str
    date: dt.date
    pga: Path
    pga_unit: PgaUnit = "g"
    sigma_ln_pga: Path | None = Field(None, description="ShakeMap uncertainty, sigma of ln PGA")


class RiversConfig(_Model):
    path: Path | None = Field(
        None, description="river lines (.gpkg/.geojson) or raster mask (.tif)"
    )
    accumulation_km2: float = Field(
        1.0, gt=0, description="if no path: rivers where D8 upslope area exceeds this (km2)"
    )


class InputsConfig(_Model):
    dem: Path
    dem_nodata: float | None = Field(None, description="overrides the file's nodata value")
    rain: Path = Field(..., description="daily rain (mm/day): GeoTIFF band per day or NetCDF")
    earthquakes: list[EarthquakeConfig] = Field(default_factory=list)
    rivers: RiversConfig = Field(default_factory=RiversConfig)
    study_mask: Path | None = None


class InventoryConfig(_Model):
    kind: Literal["cumulative", "per_period"] = "cumulative"
    difference: Literal["cell", "pixel"] = Field(
        "cell", description="difference cumulative densities per cell (paper) or fine masks first"
    )
    min_density: float = Field(0.0, ge=0, description="occurrence = new density > this (%)")


class MonsoonConfig(_Model):
    start: str = Field("06-01", description="MM-DD")
    end: str = Field("09-30", description="MM-DD")

    @field_validator("start", "end")
    @classmethod
    def _mmdd(cls, v: str) -> str:
        try:
            dt.datetime.strptime(f"2001-{v}", "%Y-%m-%d")
        except ValueError as exc:
            raise ValueError(f"'{v}' is not a MM-DD date such as 06-01") from exc
        return v


class ModelConfig(_Model):
    preset: Literal["tiny", "paper", "resnet18", "resnet34"] = "tiny"
    dropout: float = Field(0.0, ge=0, lt=1)
    density_activation: Literal["softplus", "relu"] = Field(
        "softplus",
        description="output of the density block: relu as the paper's code (can die at 0 for "
        "every cell), softplus never stuck",
    )
    lattice_merge: Literal["mean", "lattice0"] = "mean"
    members: int = Field(
        1, ge=1, description="susceptibility nets in a deep ensemble (their mean probability)"
    )
    wide: Literal["none", "linear", "summary", "pixel"] = Field(
        "pixel",
        description="a per-cell term added to the susceptibility logit (wide & deep): pixel (a "
        "per-pixel MLP's log rate, log-mean-exp pooled to the cell), linear (on each band's cell "
        "mean and std), summary (mean, std, 10th and 90th percentiles, as the per-cell "
        "baselines) or none; the paper preset: none",
    )
    glm: bool = Field(
        True,
        description="a per-cell logistic regression fitted exactly on the training cells (every "
        "band's cell mean, the fine-grid bands' within-cell std) in the susceptibility's logit, "
        "joined to the network as glm_fit says. The paper preset: false",
    )
    glm_fit: Literal["stack", "start"] = Field(
        "stack",
        description="how the fitted regression joins the network: stack (the network trains "
        "alone, then the logit becomes s * (network + regression) + c, s and c fitted on the "
        "validation cells) or start (the network starts as the regression and learns its "
        "residual, the regression held fixed)",
    )


class TrainingConfig(_Model):
    batch_size: int = Field(16, ge=1)
    lr_susceptibility: float = Field(1e-3, gt=0)
    lr_density: float = Field(1e-4, gt=0)
    lr_finetune: float = Field(1e-4, gt=0)
    lr_decay_rate: float = Field(0.9, gt=0, le=1)
    lr_decay_steps: int = Field(20000, ge=1, description="code: x0.9 every 20,000 steps")
    max_epochs_susceptibility: int = Field(500, ge=0)
    max_epochs_density_log: int = Field(200, ge=0)
    max_epochs_density: int = Field(200, ge=0)
    max_epochs_finetune: int = Field(20, ge=0)
    patience: int = Field(10, ge=1)
    loss: Literal["focal_tversky", "bce"] = Field(
        "bce", description="occurrence loss; the paper preset: focal_tversky (the paper's)"
    )
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    tversky_gamma: float = 1.0
    tversky_gamma_form: Literal["power", "inverse"] = Field(
        "power", description="(1-TI)^gamma as in the code, or (1-TI)^(1/gamma) as in the text"
    )
    bce_pos_weight: float = Field(
        1.0, gt=0, description="class weight of positives; the paper preset: 5 (its 1:5)"
    )
    calibration: Literal["platt", "none"] = Field(
        "platt",
        description="after training, Platt scaling of the susceptibility fitted on the "
        "validation cells and stored in the model (predict --raw skips it)",
    )
    density_loss: Literal["mae", "gamma"] = Field(
        "mae",
        description="density stage on the original scale: mae (the paper code: the median) or "
        "gamma (Gamma deviance: the conditional mean E[D | D > 0])",
    )
    hazard_loss: Literal["mse", "mae"] = Field(
        "mse",
        description="fine-tune stage's hazard term: mse (fits E[D]) or mae (the paper code's; "
        "its median collapses the density on zero-inflated targets, docs/decisions.md)",
    )
    balance_patches: bool = False
    augment: bool = Field(
        False,
        description="draw training patches under a random flip / 90-degree rotation, the "
        "aspect bands rotated to match",
    )
    weight_decay: float = Field(0.0, ge=0, description="> 0: AdamW with this decoupled decay")
    average_epochs: float = Field(
        0.0,
        ge=0,
        description="> 0: validate, early-stop and keep an exponential moving average of the "
        "weights over about this many epochs (Polyak averaging) instead of the last step's",
    )
    stopping: Literal["loss", "calibrated"] = Field(
        "loss",
        description="what early stopping of the susceptibility stage watches on the "
        "validation cells: loss (the training loss) or calibrated (the negative "
        "log-likelihood after the Platt scaling fitted there at the end, so epochs are ranked "
        "by what the calibrated maps will score)",
    )
    lr_wide_factor: float = Field(
        10.0, gt=0, description="learning-rate factor of the susceptibility's wide path"
    )
    val_fraction: float = Field(0.3, gt=0, lt=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v.strip()):
            raise ValueError(
                f"unknown device '{v}'; use auto (a GPU when there is one), cpu, cuda, cuda:N "
                "or mps"
            )
        return v.strip()

    amp: bool = True
    channels_last: bool = Field(
        True,
        description="model and batches in the channels-last (NHWC) layout on every device: "
        "1.5-1.7x faster training on one CPU thread than NCHW (benchmarks/bench_train.py); "
        "false gives the NCHW layout (the same model, other float rounding)",
    )
    num_workers: int = Field(0, ge=0)
    hparam_search_trials: int = Field(0, ge=0, description="> 0 runs a seeded search first")


class EvaluationConfig(_Model):
    protocol: Literal["paper", "spatial", "temporal", "spacetime"] = "spatial"
    block_km: float = Field(16.0, gt=0)
    n_folds: int = Field(5, ge=2)
    test_fold: int = Field(0, ge=0)
    buffer_cells: int | None = Field(None, ge=0, description="default: patch_cells (n)")
    val_buffer_cells: int | None = Field(
        None,
        ge=0,
        description="cells left out around the validation blocks of the spatial protocols, so "
        "validation cells are as far from training cells as test cells are; default: "
        "patch_cells // 2",
    )
    temporal_test_periods: int = Field(2, ge=1)
    ece_bins: int = Field(15, ge=2)
    threshold: float | None = Field(
        None, gt=0, lt=1, description="None: the maximal-F1 threshold on validation data"
    )
    truth_dir: Path | None = Field(
        None, description="synthetic scenarios: the truth/ folder the oracle is scored from"
    )


class PredictorsConfig(_Model):
    legacy: Literal["auto"] | bool = Field(
        "auto",
        description="the landslide legacy bands (a cell's earlier new failures) as model "
        "inputs: auto = on for the temporal and spacetime protocols (forecasts), off for "
        "spatial and paper (held-out cells would see their own earlier labels) and for the "
        "paper preset; true under spatial or paper is refused",
    )
    trigger_anomalies: Literal["auto"] | bool = Field(
        "auto",
        description="each rain band's anomaly within its period (the band minus its mean over "
        "the study area in that period) as an extra model input, so that the model can tell "
        "where a period's rain falls from how much falls: auto = on but for the paper preset",
    )


#: Protocols whose held-out cells would see their own labels of earlier periods through legacy.
LEGACY_LEAKING_PROTOCOLS = ("spatial", "paper")


class OutputConfig(_Model):
    dir: Path = Path("out")
    run_name: str | None = None
    hazard_class_breaks: list[float] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0], description="E[D] (%) class breaks"
    )

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, v: str | None) -> str | None:
        from .run import check_folder_name

        return None if v is None else check_folder_name(v, "run name")

    @field_validator("hazard_class_breaks")
    @classmethod
    def _increasing_breaks(cls, v: list[float]) -> list[float]:
        import math

        if not v:
            raise ValueError("give at least one break, e.g. [0.01, 0.1, 1.0] (% of cell area)")
        if not all(math.isfinite(b) and b > 0 for b in v):
            raise ValueError(f"{v}: breaks are densities E[D] in % of cell area, finite and > 0")
        if any(hi <= lo for lo, hi in zip(v, v[1:], strict=False)):
            raise ValueError(f"{v}: breaks must be strictly increasing, e.g. [0.01, 0.1, 1.0]")
        if len(v) > 254:
            raise ValueError(f"{len(v)} breaks; hazard_class.tif holds at most 254")
        return v


# (section, field, value) the ``paper`` preset uses unless the config sets the field itself
PAPER_RECIPE: tuple[tuple[str, str, Any], ...] = (
    ("model", "wide", "none"),
    ("model", "glm", False),
    ("training", "loss", "focal_tversky"),
    ("training", "bce_pos_weight", 5.0),
)


class RuntimeConfig(_Model):
    """Where and how the run computes (not what it computes)."""

    threads: int | None = Field(
        None,
        ge=0,
        description="threads per process (torch, BLAS, numba); 0: all available cores; None: "
        "OMP_NUM_THREADS, else 1. The CLI's --threads wins (docs/performance.md)",
    )


class RunConfig(_Model):
    """A whole run: with the seed, it fully describes the results."""

    name: str = "run"
    seed: int = 0
    grid: GridConfig
    baseline: InventoryDate = Field(..., description="pre-event inventory closing period 0")
    periods: list[InventoryDate] = Field(..., min_length=1)
    inputs: InputsConfig
    inventory: InventoryConfig = Field(default_factory=InventoryConfig)
    monsoon: MonsoonConfig = Field(default_factory=MonsoonConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    predictors: PredictorsConfig = Field(default_factory=PredictorsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _preset_recipe(self) -> RunConfig:
        """The ``paper`` preset keeps the published recipe (focal Tversky loss, 1:5 class
        weights, no wide path) for every such field the config does not set itself; the other
        presets get the project's defaults (docs/models.md, "The default model")."""
        if self.model.preset != "paper":
            return self
        for section, field, value in PAPER_RECIPE:
            block = getattr(self, section)
            if field not in block.model_fields_set:
                setattr(block, field, value)
        if self.model.wide != "none":
            raise ValueError(
                f"model.wide = {self.model.wide!r} with the paper preset: its head ends in a "
                "sigmoid after batch norm (the published code), so there is no logit to add a "
                "wide path to; set model.wide: none or choose another preset"
            )
        if self.model.glm:
            raise ValueError(
                "model.glm = true with the paper preset: its head ends in a sigmoid after batch "
                "norm (the published code), so there is no logit to add a fitted regression to; "
                "set model.glm: false or choose another preset"
            )
        return self

    @model_validator(mode="after")
    def _legacy_allowed(self) -> RunConfig:
        protocol = self.evaluation.protocol
        if self.predictors.legacy is True and protocol in LEGACY_LEAKING_PROTOCOLS:
            raise ValueError(
                f"predictors.legacy = true with evaluation.protocol = {protocol}: the held-out "
                "cells of this protocol are labelled in every period, so their legacy bands "
                "would carry their own earlier labels into the test (a leak). Use legacy with "
                "the temporal or spacetime protocol (a forecast), or set predictors.legacy: auto"
            )
        return self

    @property
    def legacy(self) -> bool:
        """Whether the model reads the legacy bands (``predictors.legacy`` resolved)."""
        if self.predictors.legacy == "auto":
            return (
                self.evaluation.protocol not in LEGACY_LEAKING_PROTOCOLS
                and self.model.preset != "paper"
            )
        return bool(self.predictors.legacy)

    @property
    def trigger_anomalies(self) -> bool:
        """Whether the model reads the rain anomalies (``predictors.trigger_anomalies``
        resolved)."""
        if self.predictors.trigger_anomalies == "auto":
            return self.model.preset != "paper"
        return bool(self.predictors.trigger_anomalies)

    @property
    def model_dynamic_bands(self) -> tuple[str, ...]:
        """The cell-grid bands the model reads, in its channel order (``bands``)."""
        from .bands import model_dynamic_names

        return model_dynamic_names(self.legacy, self.trigger_anomalies)

    @model_validator(mode="after")
    def _dates_in_order(self) -> RunConfig:
        dates = [self.baseline.date] + [p.date for p in self.periods]
        names = [self.baseline.name] + [p.name for p in self.periods]
        for i in range(1, len(dates)):
            if dates[i] <= dates[i - 1]:
                raise ValueError(
                    f"inventory dates out of order: '{names[i]}' ({dates[i]}) is not after "
                    f"'{names[i - 1]}' ({dates[i - 1]}); list baseline and periods in time order"
                )
        if len(set(names)) != len(names):
            raise ValueError("period names must be unique (they name the bands of every map)")
        return self

    @property
    def period_names(self) -> list[str]:
        return [p.name for p in self.periods]

    def study_grid(self) -> StudyGrid:
        return self.grid.study_grid()

    def resolve_paths(self, base: Path) -> RunConfig:
        """Return a copy whose relative paths are made absolute against ``base``."""
        data = self.model_dump()
        resolve_relative_paths(data, base)
        return RunConfig.model_validate(data)

    def to_yaml(self, exclude: set[str] | None = None) -> str:
        """The config as YAML; ``exclude``: top-level sections to leave out."""
        return yaml.safe_dump(
            _plain(self.model_dump(mode="json", exclude=exclude)), sort_keys=False
        )


def resolve_relative_paths(obj: Any, base: Path) -> None:
    """Make every relative ``Path`` in a dumped model (dicts and lists) absolute against
    ``base``, in place."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, Path):
                obj[key] = value if value.is_absolute() else (base / value).resolve()
            else:
                resolve_relative_paths(value, base)
    elif isinstance(obj, list):
        for item in obj:
            resolve_relative_paths(item, base)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _format_errors(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        hint = ""
        if err["type"] == "missing":
            hint = " -> add this field (see `landslide-hazard config --show-defaults`)"
        elif err["type"] == "extra_forbidden":
            hint = " -> unknown field: check its spelling or remove it"
        lines.append(f"  - {loc}: {msg}{hint}")
    return "\n".join(lines)


def parse_config(data: dict, base: Path, source: str = "<config>") -> RunConfig:
    """Validate a config mapping; relative paths are resolved against ``base``."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    return cfg.resolve_paths(base)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config; fail with a message naming the field and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path of a YAML config")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return parse_config(data, path.parent.resolve(), str(path))


def relative_paths(obj: Any, base: Path) -> None:
    """Make every absolute ``Path`` in a dumped model relative to ``base`` (in place): the
    inverse of :func:`resolve_relative_paths` for a file kept in ``base``."""
    import os

    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, Path):
                obj[key] = Path(os.path.relpath(value, base)) if value.is_absolute() else value
            else:
                relative_paths(value, base)
    elif isinstance(obj, list):
        for item in obj:
            relative_paths(item, base)


def save_config(cfg: RunConfig, path: str | Path, *, portable: bool = False) -> None:
    """Write ``cfg`` as YAML; ``portable``: its paths relative to the file's folder (a run
    folder's config.yaml, so that the output folder can be moved or shared)."""
    from .io.atomic import atomic_write_text

    path = Path(path)
    if portable:
        data = cfg.model_dump()
        relative_paths(data, path.parent.resolve())
        cfg = RunConfig.model_validate(data)
    atomic_write_text(path, cfg.to_yaml())


def defaults_yaml() -> str:
    """Every default, as YAML with the required fields shown as placeholders."""
    example = {
        "grid": {"origin": [0.0, 0.0], "shape_cells": [64, 64]},
        "baseline": {"name": "pre-event", "date": "2014-12-01", "inventory": "inv/baseline.gpkg"},
        "periods": [{"name": "period-1", "date": "2015-06-01", "inventory": "inv/p1.gpkg"}],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
    }
    cfg = RunConfig.model_validate(example)
    header = (
        "# Every default of a landslide-hazard run config. Required fields (grid.origin,\n"
        "# grid.shape_cells, baseline, periods, inputs.dem, inputs.rain) show example values.\n"
        "# Paths are relative to the config file.\n"
    )
    return header + cfg.to_yaml()
