"""The report's inputs: ``metrics.json`` and the map GeoTIFFs it names, read onto one grid.

Input contract: ``directory/metrics.json`` whose ``inputs`` entry names the ``observed``,
``susceptibility`` and optionally ``density``, ``hazard``, ``folds`` and ``uncertainty`` GeoTIFFs
(one band per period, band descriptions = period names). Relative paths are resolved against
the directory; a file that moved with the folder is also looked for in ``directory`` and
``directory/maps``. A run folder (no ``inputs``) is read from ``RUN/maps``. An evaluation whose
``run`` entry names a run folder (``evaluate --run``, the demo) shows that run's held-out and
oracle scores as ``report RUN`` does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.evaluate import evaluate_arrays
from ..run import MAPS_DIR, METRICS_FILE, UNCERTAINTY_MAP, map_file

OPTIONAL_MAPS = ("density", "hazard", "uncertainty", "folds")
#: What a run's metrics.json adds to the report: its held-out block and these keys.
RUN_KEYS = (
    "protocol",
    "fold",
    "leaky",
    "oracle_auc",
    "skill_pooled",
    "truth_dir",
    "calibration",
)


@dataclass
class ReportInputs:
    """Everything the report draws: maps (period, y, x) on one grid plus the metrics."""

    directory: Path
    metrics: dict[str, Any]
    names: list[str]
    transform: tuple[float, ...]
    crs_name: str
    observed: np.ndarray
    susceptibility: np.ndarray
    density: np.ndarray | None = None
    hazard: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    folds: np.ndarray | None = None
    hazard_source: str | None = None
    metrics_source: str = METRICS_FILE
    paths: dict[str, str] = field(default_factory=dict)
    uncertainty_meta: dict[str, str] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        t = self.metrics.get("threshold")
        return float(t) if t is not None and math.isfinite(float(t)) else 0.5

    @property
    def min_density(self) -> float:
        return float(self.metrics.get("min_density") or 0.0)

    @property
    def synthetic(self) -> bool:
        """Whether the maps come from a synthetic scenario (its run was scored against the
        scenario's known truth: an oracle AUC or a truth folder in the metrics)."""
        m = self.metrics
        return m.get("oracle_auc") is not None or bool(m.get("truth_dir"))

    @property
    def uncertainty_label(self) -> str:
        """What the uncertainty layer is and its unit, from the GeoTIFF's tags, e.g.
        "std of the susceptibility (probability)"."""
        meta = self.uncertainty_meta
        if meta.get("statistic") == "standard deviation" and meta.get("quantity"):
            what = f"std of the {meta['quantity']}"
        else:
            what = meta.get("description") or "uncertainty"
        unit = meta.get("units")
        return f"{what} ({unit})" if unit else f"{what} (unit not given in the file)"


def resolve_input(directory: Path, key: str, value: str) -> Path:
    from ..io import RasterError

    p = Path(value)
    candidates = [
        p if p.is_absolute() else directory / p,
        directory / p.name,
        directory / MAPS_DIR / p.name,
    ]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise RasterError(
        f"{directory / METRICS_FILE}: inputs.{key} = {value} not found (also looked in "
        f"{directory} and {directory / 'maps'}); fix the path in metrics.json or re-run evaluate"
    )


def _read_metrics(directory: Path) -> dict[str, Any]:
    from ..io import RasterError

    mfile = directory / METRICS_FILE
    if not mfile.exists():
        raise RasterError(
            f"{mfile}: not found; run `landslide-hazard evaluate ... --out {directory}` first"
        )
    try:
        return json.loads(mfile.read_text())
    except json.JSONDecodeError as exc:
        raise RasterError(f"{mfile}: not valid JSON ({exc}); re-run evaluate") from None


def _input_paths(directory: Path, metrics: dict[str, Any]) -> tuple[dict[str, str], dict]:
    """(the inputs entry, key -> resolved path) of the maps the report reads."""
    from ..io import RasterError

    mfile = directory / METRICS_FILE
    inputs = dict(metrics.get("inputs") or {})
    if not (inputs.get("observed") and inputs.get("susceptibility")):
        # a run folder: predict writes its maps (observed included) to RUN/maps/
        found = {
            k: f"{MAPS_DIR}/{map_file(k)}"
            for k in ("observed", "susceptibility", "density", "hazard", UNCERTAINTY_MAP)
            if (directory / MAPS_DIR / map_file(k)).exists()
        }
        inputs = {**found, **{k: v for k, v in inputs.items() if v}}
    for key in ("observed", "susceptibility"):
        if not inputs.get(key):
            raise RasterError(
                f"{mfile}: the 'inputs' entry names no {key} GeoTIFF and "
                f"{directory / 'maps'} holds no {key}.tif; the report needs observed and "
                "susceptibility maps (run `predict` on the run, or `evaluate ... --out` to name "
                "them)"
            )
    paths = {
        k: resolve_input(directory, k, v)
        for k, v in inputs.items()
        if k in ("observed", "susceptibility", *OPTIONAL_MAPS) and v
    }
    return inputs, paths


def _uncertainty_meta(path: Path) -> dict[str, str]:
    """The uncertainty GeoTIFF's own account of itself: quantity, statistic, method, units."""
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
        units = ds.units[0] if ds.units else None
    meta = {k: tags[k] for k in ("quantity", "statistic", "method", "description") if k in tags}
    if units:
        meta["units"] = units
    return meta


def run_scores(run_metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's held-out block and protocol, fold and oracle keys (empty if it has none)."""
    if not (isinstance(run_metrics.get("model"), dict) and "pooled" in run_metrics["model"]):
        return {}
    return {"held_out": run_metrics["model"], **{k: run_metrics.get(k) for k in RUN_KEYS}}


def _linked_run_scores(directory: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The scores of the run an evaluation names in its ``run`` entry (relative to the folder)."""
    if not metrics.get("run"):
        return {}
    run_metrics = directory / metrics["run"] / METRICS_FILE
    if not run_metrics.is_file():
        return {}
    return run_scores(json.loads(run_metrics.read_text()))


def load_report_inputs(directory: str | Path) -> ReportInputs:
    """Read metrics.json and the rasters it names; check they share one grid."""
    from ..evaluation.evaluate import check_bands, check_same_grid
    from ..io import raster_info, read_raster

    directory = Path(directory)
    metrics = _read_metrics(directory)
    inputs, paths = _input_paths(directory, metrics)
    infos = {k: raster_info(p) for k, p in paths.items()}
    ref = infos["observed"]
    for key, info in infos.items():
        if key != "observed":
            check_same_grid(ref, info, key)
            if key != "folds":
                check_bands(ref, info, key)
    arrays = {k: read_raster(p, dtype="float64")[0] for k, p in paths.items() if k != "folds"}
    for k, a in arrays.items():
        if a.ndim == 2:
            arrays[k] = a[None]
    names = [d or f"period {i + 1}" for i, d in enumerate(ref.descriptions)]
    folds = read_raster(paths["folds"], bands=1)[0] if "folds" in paths else None
    hazard = arrays.get("hazard")
    hazard_source = "given" if hazard is not None else None
    if hazard is None and "density" in arrays:
        hazard = arrays["susceptibility"] * arrays["density"]
        hazard_source = "susceptibility x density"
    data = ReportInputs(
        directory=directory,
        metrics=metrics,
        names=names,
        transform=tuple(ref.transform)[:6],
        crs_name=ref.crs.to_string() if ref.crs is not None else "unknown CRS",
        observed=arrays["observed"],
        susceptibility=arrays["susceptibility"],
        density=arrays.get("density"),
        hazard=hazard,
        uncertainty=arrays.get("uncertainty"),
        folds=folds,
        hazard_source=hazard_source,
        paths={k: str(p) for k, p in paths.items()},
        uncertainty_meta=_uncertainty_meta(paths["uncertainty"]) if "uncertainty" in paths else {},
    )
    if _is_evaluation(metrics, names):
        data.metrics = {**metrics, **_linked_run_scores(directory, metrics)}
        return data
    data.metrics = {
        **evaluate_arrays(
            data.observed,
            data.susceptibility,
            data.density,
            arrays.get("hazard"),
            period_names=names,
            threshold=metrics.get("threshold"),
            folds=folds,
            min_density=float(metrics.get("min_density") or 0.0),
        ),
        "inputs": inputs,
        **run_scores(metrics),  # a run's scores on its test cells
    }
    data.metrics_source = (
        "computed by the report from the maps, on every cell with data (metrics.json holds "
        "no per-period metrics for these maps)"
    )
    return data


def _is_evaluation(metrics: dict[str, Any], names: list[str]) -> bool:
    periods = metrics.get("periods")
    return (
        isinstance(periods, list)
        and [p.get("name") for p in periods] == names
        and isinstance(metrics.get("pooled"), dict)
        and "occurrence" in metrics["pooled"]
    )
