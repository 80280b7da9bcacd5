"""The evaluate stage: score susceptibility / density / hazard maps against observed density.

:func:`evaluate_arrays` is the science (arrays in, a dict out); :func:`evaluate_files` is the
edge: it reads the GeoTIFFs, checks they share one grid, writes ``metrics.json`` atomically and
prints a table.

Layout of the result (``metrics.json``)::

    {"period_names": [...], "threshold": t, "threshold_source": "...", "min_density": 0.0,
     "periods": [{"name": ..., "occurrence": {...}, "density": {...}, "hazard": {...}}, ...],
     "pooled": {"occurrence": ..., "density": ..., "hazard": ...},
     "folds": [{"fold": k, "occurrence": ..., ...}, ...],
     "hazard_source": "given" | "susceptibility x density" | null,
     "inputs": {"observed": "/abs/O.tif", ...}, "grid": {...}}

``density``/``hazard`` hold :func:`~.metrics.density_metrics` blocks (``all`` and ``positive``
cells). Pooled = the concatenation over periods and cells. NaN metrics become ``null`` in JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..run import METRICS_FILE
from .metrics import best_f1_threshold, density_metrics, occurrence_metrics


def _as_stack(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype="float64")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name}: expected a (period, y, x) array, got shape {arr.shape}")
    return arr


def _score_cells(
    obs: np.ndarray,
    sus: np.ndarray,
    dens: np.ndarray | None,
    haz: np.ndarray | None,
    threshold: float,
    threshold_source: str,
    min_density: float,
) -> dict[str, Any]:
    y = (obs > min_density).astype("float64")
    # threshold may be NaN (no positive anywhere): occurrence_metrics then reports NaN classes
    out: dict[str, Any] = {"occurrence": occurrence_metrics(y, sus, threshold=threshold)}
    out["occurrence"]["threshold_source"] = threshold_source
    out["density"] = density_metrics(obs, dens) if dens is not None else None
    out["hazard"] = density_metrics(obs, haz) if haz is not None else None
    return out


def _score_inputs(
    observed: Any, susceptibility: Any, density: Any | None, hazard: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str | None]:
    """The maps as (P, H, W) float stacks of one shape, the hazard S x D when only the density
    is given, and where the hazard came from (None: no hazard)."""
    obs = _as_stack(observed, "observed")
    sus = _as_stack(susceptibility, "susceptibility")
    dens = _as_stack(density, "density") if density is not None else None
    haz = _as_stack(hazard, "hazard") if hazard is not None else None
    named = {"observed": obs, "susceptibility": sus, "density": dens, "hazard": haz}
    for name, arr in named.items():
        if arr is not None and arr.shape != obs.shape:
            raise InputError(
                f"{name}: shape {arr.shape} differs from observed {obs.shape}; every input needs "
                "the same (period, y, x) grid"
            )
    if haz is not None:
        return obs, sus, dens, haz, "given"
    if dens is not None:
        return obs, sus, dens, sus * dens, "susceptibility x density"
    return obs, sus, dens, None, None


def _fold_ids(folds: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) int64 fold id per cell, -1 where NaN (in no fold)."""
    fold_arr = np.asarray(folds, dtype="float64")
    if fold_arr.shape != shape:
        raise InputError(
            f"folds: shape {fold_arr.shape} differs from the map shape {shape}; "
            "give one fold id per cell"
        )
    fold_ids = np.where(np.isfinite(fold_arr), fold_arr, -1)
    if np.any(fold_ids != np.round(fold_ids)):
        raise InputError("folds: fold ids must be integers (negative = in no fold)")
    return fold_ids.astype("int64")


def evaluate_arrays(
    observed: Any,
    susceptibility: Any,
    density: Any | None = None,
    hazard: Any | None = None,
    period_names: Sequence[str] | None = None,
    threshold: float | None = None,
    folds: Any | None = None,
    min_density: float = 0.0,
) -> dict[str, Any]:
    """Score maps per period, pooled over periods and cells, and per fold.

    observed : (P, H, W) observed new-failure density, % of cell area (NaN = no data).
    susceptibility : (P, H, W) probability of occurrence (0-1).
    density : (P, H, W) predicted density, %, optional.
    hazard : (P, H, W) predicted expected density, %; if None and ``density`` is given it is
        ``susceptibility x density``.
    threshold : class threshold on susceptibility; None = the max-F1 threshold on the pooled
        data given here (optimistic: pass a validation threshold when scoring test data). One
        threshold serves every period and fold.
    folds : (H, W) integer fold id per cell; negative (or NaN) = in no fold.
    min_density : occurrence = observed > min_density (%).

    A cell-period is used only where every given input is finite.
    """
    obs, sus, dens, haz, hazard_source = _score_inputs(observed, susceptibility, density, hazard)
    n_periods = obs.shape[0]
    if period_names is None:
        period_names = [f"period {i + 1}" for i in range(n_periods)]
    period_names = [str(p) for p in period_names]
    if len(period_names) != n_periods:
        raise InputError(f"{len(period_names)} period names for {n_periods} periods")

    valid = np.ones(obs.shape, dtype=bool)
    for arr in (obs, sus, dens, haz):
        if arr is not None:
            valid &= np.isfinite(arr)

    def cells(arr: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
        return None if arr is None else arr[mask]

    pooled_obs = obs[valid]
    pooled_sus = sus[valid]
    if threshold is None:
        thr = best_f1_threshold((pooled_obs > min_density).astype("float64"), pooled_sus)
        threshold_source = "max-F1 on these data, pooled (optimistic)"
    else:
        thr = float(threshold)
        threshold_source = "given"

    result: dict[str, Any] = {
        "period_names": period_names,
        "threshold": thr,
        "threshold_source": threshold_source,
        "min_density": float(min_density),
        "hazard_source": hazard_source,
        "n_valid_cells": int(valid.sum()),
    }
    periods = []
    for i, name in enumerate(period_names):
        m = valid[i]
        block = _score_cells(
            obs[i][m],
            sus[i][m],
            cells(dens[i] if dens is not None else None, m),
            cells(haz[i] if haz is not None else None, m),
            thr,
            threshold_source,
            min_density,
        )
        periods.append({"name": name, **block})
    result["periods"] = periods
    result["pooled"] = _score_cells(
        pooled_obs,
        pooled_sus,
        cells(dens, valid),
        cells(haz, valid),
        thr,
        threshold_source,
        min_density,
    )

    fold_blocks: list[dict[str, Any]] = []
    if folds is not None:
        fold_ids = _fold_ids(folds, obs.shape[1:])
        for k in np.unique(fold_ids[fold_ids >= 0]):
            m = valid & (fold_ids == k)[None]
            block = _score_cells(
                obs[m], sus[m], cells(dens, m), cells(haz, m), thr, threshold_source, min_density
            )
            fold_blocks.append({"fold": int(k), **block})
    result["folds"] = fold_blocks
    return result


# --------------------------------------------------------------------------------------------
# file edge


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars/arrays -> Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def metrics_to_json(result: dict[str, Any]) -> str:
    """Serialise an evaluation dict as strict JSON (NaN -> null)."""
    return json.dumps(_jsonable(result), indent=2, allow_nan=False)


def check_same_grid(ref, info, what: str) -> None:
    from ..io import RasterError

    if info.crs is None or ref.crs is None:
        missing = info.path if info.crs is None else ref.path
        raise RasterError(f"{missing}: no CRS declared; assign the study CRS to the file")
    if info.crs != ref.crs:
        raise RasterError(
            f"{info.path}: CRS {info.crs.to_string()} differs from {ref.path} "
            f"({ref.crs.to_string()}); write the {what} map on the observed grid"
        )
    if info.shape != ref.shape:
        raise RasterError(
            f"{info.path}: shape {info.shape} differs from {ref.path} {ref.shape}; "
            f"the {what} map must cover the same cells"
        )
    tol = 1e-6 * max(abs(ref.transform.a), 1.0)
    if not info.transform.almost_equals(ref.transform, precision=tol):
        raise RasterError(
            f"{info.path}: transform {tuple(info.transform)[:6]} differs from {ref.path} "
            f"{tuple(ref.transform)[:6]}; align the {what} map with the observed grid"
        )


def check_bands(ref, info, what: str) -> None:
    from ..io import RasterError

    if info.count != ref.count:
        raise RasterError(
            f"{info.path}: {info.count} bands but {ref.path} has {ref.count}; the {what} map "
            "needs one band per period"
        )
    if all(d for d in ref.descriptions) and all(d for d in info.descriptions):
        if tuple(info.descriptions) != tuple(ref.descriptions):
            diff = [
                f"band {i + 1}: {a!r} vs {b!r}"
                for i, (a, b) in enumerate(zip(info.descriptions, ref.descriptions, strict=True))
                if a != b
            ]
            raise RasterError(
                f"{info.path}: band names differ from {ref.path} ({'; '.join(diff[:3])}); the "
                f"{what} bands must be the same periods in the same order"
            )


@dataclass(frozen=True)
class MapFiles:
    """The GeoTIFFs :func:`evaluate_files` reads, one band per period on one grid: the observed
    density and the susceptibility, optionally the density and hazard, a folds raster (one
    band: fold id per cell), and an uncertainty map (checked and named, not scored)."""

    observed: str | Path
    susceptibility: str | Path
    density: str | Path | None = None
    hazard: str | Path | None = None
    folds: str | Path | None = None
    uncertainty: str | Path | None = None

    def paths(self) -> dict[str, Path | None]:
        return {
            f.name: None if getattr(self, f.name) is None else Path(getattr(self, f.name))
            for f in fields(self)
        }


#: The range of each scored map's values and what they are.
VALUE_RANGES = {
    "observed": (0.0, 100.0, "a density in % of the cell area"),
    "susceptibility": (0.0, 1.0, "a probability"),
    "density": (0.0, 100.0, "a density in % of the cell area"),
    "hazard": (0.0, 100.0, "a density in % of the cell area"),
}


def check_value_range(data, path, key: str) -> None:
    """Refuse a map with values outside its quantity's range (a negative or > 100 % density,
    a probability above 1): scores computed from it would mean nothing."""
    from ..io import RasterError

    lo, hi, what = VALUE_RANGES[key]
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return
    low, high = float(finite.min()), float(finite.max())
    if low < lo or high > hi:
        bad = int(((finite < lo) | (finite > hi)).sum())
        raise RasterError(
            f"{path}: {key} values span [{low:g}, {high:g}] on {bad} cell(s) outside "
            f"[{lo:g}, {hi:g}], the range of {what}; is it in another unit (a fraction for a "
            "percentage, x 100), or does its nodata value lack its tag? fix the file (gdal_edit.py "
            "-a_nodata VALUE)"
        )


def evaluate_files(
    maps: MapFiles,
    out_dir: str | Path = ".",
    threshold: float | None = None,
    min_density: float = 0.0,
    show_table: bool = True,
    run: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate map GeoTIFFs (one band per period) and write ``out_dir/metrics.json``.

    The rasters must share CRS, transform, shape, band count and band names (the period
    names); a mismatch raises a RasterError naming both files. Returns the result dict
    (also written, with an ``inputs`` entry of absolute paths and a ``grid`` entry).
    ``maps.uncertainty`` (e.g. predict's ``uncertainty.tif``) is not scored: it is checked and
    named in ``inputs`` so that the report draws it. ``run``: the run folder the maps came
    from, recorded (relative to ``out_dir``) so that the report shows its held-out and oracle
    scores beside these.
    """
    from .. import __version__
    from ..io import RasterError, atomic_write_text, raster_info, read_raster

    paths = maps.paths()
    from ..io.atomic import ensure_writable_dir

    ensure_writable_dir(Path(out_dir), "evaluate --out folder")
    infos = {k: raster_info(p) for k, p in paths.items() if p is not None}
    ref = infos["observed"]
    for key, info in infos.items():
        if key == "observed":
            continue
        check_same_grid(ref, info, key)
        if key != "folds":
            check_bands(ref, info, key)
    if "folds" in infos and infos["folds"].count != 1:
        raise RasterError(
            f"{paths['folds']}: a folds raster needs one band, not {infos['folds'].count}"
        )

    scored = ("observed", "susceptibility", "density", "hazard")
    arrays = {k: read_raster(p)[0] for k, p in paths.items() if p is not None and k in scored}
    fold_arr = read_raster(paths["folds"], bands=1)[0] if paths["folds"] is not None else None
    for key, data in arrays.items():
        check_value_range(data, paths[key], key)
    names = [d if d else f"period {i + 1}" for i, d in enumerate(ref.descriptions)]
    result = evaluate_arrays(
        arrays["observed"],
        arrays["susceptibility"],
        arrays.get("density"),
        arrays.get("hazard"),
        period_names=names,
        threshold=threshold,
        folds=fold_arr,
        min_density=min_density,
    )
    if fold_arr is not None:
        labels = fold_labels(infos["folds"].descriptions[0])
        for block in result["folds"]:
            if block["fold"] in labels:
                block["label"] = labels[block["fold"]]
    result["inputs"] = {k: (str(p.resolve()) if p is not None else None) for k, p in paths.items()}
    result["grid"] = {
        "crs": ref.crs.to_wkt() if ref.crs is not None else None,
        "crs_name": ref.crs.to_string() if ref.crs is not None else None,
        "transform": list(tuple(ref.transform)[:6]),
        "shape": list(ref.shape),
    }
    result["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    result["version"] = __version__
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if run is not None:
        if not (Path(run) / METRICS_FILE).is_file():
            raise RasterError(
                f"{run}: not a trained run folder (no {METRICS_FILE}); pass the folder that "
                "train wrote (<output.dir>/runs/<name>)"
            )
        result["run"] = os.path.relpath(Path(run).resolve(), out.resolve())
    atomic_write_text(out / METRICS_FILE, metrics_to_json(result))
    if show_table:
        print_metrics_table(result)
    return result


def fold_labels(description: str | None) -> dict[int, str]:
    """Names of fold ids from a folds band description such as "role: 0 train, 1 val, 2 test".

    Every "<integer> <word>" pair counts; no pair gives an empty dict.
    """
    if not description:
        return {}
    return {
        int(k): name
        for k, name in re.findall(r"(?<![\w.])(\d+)\s*[:=]?\s*([A-Za-z][\w-]*)", description)
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


#: The table's columns: (heading, section of a period block, subset, metric); subset None for
#: the occurrence scores. metrics_table_rows and metrics_table both read it.
TABLE_COLUMNS: tuple[tuple[str, str, str | None, str], ...] = (
    ("n", "occurrence", None, "n"),
    ("prev.", "occurrence", None, "prevalence"),
    ("AUC", "occurrence", None, "auc"),
    ("PR-AUC", "occurrence", None, "pr_auc"),
    ("F1", "occurrence", None, "f1"),
    ("IoU", "occurrence", None, "iou"),
    ("soft F1", "occurrence", None, "soft_f1"),
    ("Brier", "occurrence", None, "brier"),
    ("ECE", "occurrence", None, "ece"),
    ("D MAE %", "density", "all", "mae"),
    ("D r", "density", "all", "pearson_r"),
    ("D+ MAE %", "density", "positive", "mae"),
    ("D+ r", "density", "positive", "pearson_r"),
    ("H MAE %", "hazard", "all", "mae"),
    ("H r", "hazard", "all", "pearson_r"),
)


def _json_key(section: str, subset: str | None, metric: str) -> str:
    return metric if subset is None else f"{section}_{subset}_{metric}"


def metrics_table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table as data: one dict per period plus the pooled one (``period`` = "pooled"),
    keys ``n``, ``auc``, ... and ``density_all_mae``, ``hazard_all_pearson_r``, ...; None
    where a metric is undefined or its map was not given. ``evaluate --json`` prints these."""
    rows = []
    for name, block in [(p["name"], p) for p in result["periods"]] + [("pooled", result["pooled"])]:
        row: dict[str, Any] = {"period": name}
        for _, section, subset, metric in TABLE_COLUMNS:
            part = block.get(section) or {}
            value = (part if subset is None else part.get(subset) or {}).get(metric)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            if result["pooled"].get(section) is not None:
                row[_json_key(section, subset, metric)] = value
        rows.append(row)
    return rows


def metrics_table(result: dict[str, Any]):
    """A rich Table: one row per period plus the pooled row."""
    from rich.table import Table

    table = Table(
        title=f"landslide-hazard evaluation (threshold {_fmt(result['threshold'])}: "
        f"{result['threshold_source']})"
    )
    shown = [c for c in TABLE_COLUMNS if result["pooled"].get(c[1]) is not None]
    table.add_column("period", justify="left")
    for heading, *_ in shown:
        table.add_column(heading, justify="right")
    for row in metrics_table_rows(result):
        cells = [_fmt(row[_json_key(sec, sub, met)]) for _, sec, sub, met in shown]
        table.add_row(row["period"], *cells, style="bold" if row["period"] == "pooled" else None)
    return table


def print_metrics_table(result: dict[str, Any]) -> None:
    """Print :func:`metrics_table` on stdout (a result) and any notes on stderr."""
    from ..streams import log_console, result_console

    result_console().print(metrics_table(result))
    log = log_console()
    for p in [*result["periods"], {"name": "pooled", **result["pooled"]}]:
        for note in p["occurrence"]["notes"]:
            log.print(f"[yellow]{p['name']}:[/] {note}")
