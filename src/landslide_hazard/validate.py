"""Honest validation: the four protocols x (ENN, baselines, oracle), one table (DESIGN.md sect. 5).

For every protocol and fold the ENN is trained (``training.train``) and scored on exactly its
held-out cells; the per-cell baselines (logistic regression, gradient boosting) are fitted on the
same training cells and scored on the same test cells with a threshold chosen on the same
validation cells; on synthetic scenarios the oracle (the truth's P and E[D]) is scored there too
and every model gets skill = (AUC - 0.5) / (oracle AUC - 0.5).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .bands import ANOMALY_NAMES, LEGACY_NAMES, with_anomalies
from .config import LEGACY_LEAKING_PROTOCOLS, RunConfig
from .errors import InputError
from .evaluation.baselines import OCCURRENCE_MODELS
from .run import RELIABILITY_PLOT, VALIDATION_DIR, VALIDATION_FILE, RunFolder

if TYPE_CHECKING:
    from .sampling.dataset import CubeReader
    from .sampling.splits import Split

ENN = "enn"
ENN_CONSTANT_DENSITY = "enn_constant_density"  # ablation: S x the training cells' mean density
# ablation: S x each period's mean density over its positive training and validation cells
ENN_PERIOD_DENSITY = "enn_period_density"
ABLATIONS = (ENN_CONSTANT_DENSITY, ENN_PERIOD_DENSITY)
ORACLE = "oracle"
OBSERVABLE_ORACLE = "observable_oracle"
TABLE_METRICS: tuple[tuple[str, str, str], ...] = (
    # (column, section, key) of a score_on_split result's pooled block
    ("auc", "occurrence", "auc"),
    ("pr_auc", "occurrence", "pr_auc"),
    ("f1", "occurrence", "f1"),
    ("iou", "occurrence", "iou"),
    ("brier", "occurrence", "brier"),
    ("ece", "occurrence", "ece"),
    ("hazard_mae", "hazard", "mae"),
    ("hazard_r", "hazard", "pearson_r"),
    ("density_r_pos", "density", "pearson_r"),  # on the positive cells
    ("hazard_ratio", "hazard", "mean_ratio"),  # mean predicted / mean observed E[D]
)
BASELINE_MODELS = OCCURRENCE_MODELS  # the per-cell baselines a "win" is judged against
SINGLE_FOLD_PROTOCOLS = ("paper", "temporal")
CALIBRATION_KIND = "platt"  # the losses shift the base rate, which temperature cannot undo


def folds_for(protocol: str, n_folds: int, max_folds: int | None) -> list[int]:
    """Folds run for a protocol: one for the random and temporal splits, else up to max_folds."""
    if protocol in SINGLE_FOLD_PROTOCOLS:
        return [0]
    n = n_folds if max_folds is None else max(1, min(n_folds, max_folds))
    return list(range(n))


def _pooled_row(result: dict[str, Any]) -> dict[str, float]:
    pooled = result["pooled"]
    row: dict[str, float] = {}
    for column, section, key in TABLE_METRICS:
        block = pooled.get(section) or {}
        if section != "occurrence" and isinstance(block, dict):
            block = block.get("positive" if section == "density" else "all", block)
        if not isinstance(block, dict):
            block = {}
        if key == "mean_ratio":
            pred, obs = block.get("mean_predicted"), block.get("mean_observed")
            # obs None or 0: no ratio (NaN passes, as before, and gives NaN)
            value = float(pred) / float(obs) if pred is not None and obs else None
        else:
            value = block.get(key)
        row[column] = float(value) if value is not None else math.nan
    row["hazard_ratio_dev"] = period_ratio_deviation(result)
    return row


def period_ratio_deviation(result: dict[str, Any]) -> float:
    """Mean over the scored periods of |mean predicted E[D] / mean observed - 1|: how far each
    period's mean hazard is from the observed one (issue "Skill", item 3); NaN if no period has
    an observed mean above 0."""
    devs = []
    for period in result.get("periods", []):
        block = period.get("hazard") or {}
        block = block.get("all", block)
        pred, obs = block.get("mean_predicted"), block.get("mean_observed")
        if pred is not None and obs:
            devs.append(abs(float(pred) / float(obs) - 1.0))
    return float(np.mean(devs)) if devs else math.nan


def calibrated_ece(
    susceptibility: np.ndarray, observed: np.ndarray, split: Any, min_density: float, n_bins: int
) -> dict[str, Any]:
    """Fit a calibrator on the split's validation cells; ECE and Brier on its test cells.

    Returns ``ece_calibrated`` / ``brier_calibrated`` (NaN with a note when the validation cells
    hold a single class) and the calibration report.
    """
    from .evaluation.calibration import evaluate_calibration

    def cells(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, obs = susceptibility[mask], observed[mask]
        ok = np.isfinite(p) & np.isfinite(obs)
        return p[ok], (obs[ok] > min_density).astype(float)

    p_val, y_val = cells(split.val_cells)
    p_test, y_test = cells(split.test_cells)
    try:
        _, report = evaluate_calibration(CALIBRATION_KIND, p_val, y_val, p_test, y_test, n_bins)
    except ValueError as exc:
        return {"ece_calibrated": math.nan, "brier_calibrated": math.nan, "note": str(exc)}
    after = report["test"]["after"]
    return {
        "ece_calibrated": float(after["ece"]),
        "brier_calibrated": float(after["brier"]),
        "report": report,
    }


@dataclass(frozen=True)
class _Observed:
    """What every fold is scored against: the cube, the baselines' per-cell features, the
    observed density and occurrence (NaN where unlabelled), and the synthetic truth if any."""

    reader: CubeReader  # every dynamic band of the cube (triggers and legacy)
    features: np.ndarray
    feature_names: list[str]
    observed: np.ndarray
    occurrence: np.ndarray
    truth_dir: Path | None
    truth: dict[str, np.ndarray] | None
    observable: dict[str, np.ndarray] | None
    model_readers: dict[tuple[str, ...], CubeReader] = field(default_factory=dict)

    def reader_for(self, bands: tuple[str, ...]) -> CubeReader:
        """A reader of the cell-grid bands a run's model reads (triggers, or with legacy)."""
        if bands not in self.model_readers:
            self.model_readers[bands] = self.reader.with_dynamic_bands(bands)
        return self.model_readers[bands]

    def features_for(self, bands: tuple[str, ...]) -> np.ndarray:
        """The baselines' per-cell features with the same cell-grid bands as the network."""
        optional = LEGACY_NAMES + ANOMALY_NAMES
        keep = [
            i for i, name in enumerate(self.feature_names) if name not in optional or name in bands
        ]
        return self.features[..., keep]

    @classmethod
    def load(cls, cfg: RunConfig) -> _Observed:
        from .cube import open_cube
        from .evaluation.baselines import cell_features
        from .evaluation.held_out import has_observable_truth, read_truth
        from .run import cube_path, find_truth_dir
        from .sampling.dataset import CubeReader

        cube = open_cube(cube_path(cfg))
        # every band a run may read: the cube's, with the rain anomalies
        reader = CubeReader(cube, dynamic_bands=with_anomalies(cube.meta.dynamic_bands))
        static = np.asarray(reader.static if reader.static_in_memory else reader.static[:])
        features, feature_names = cell_features(
            static,
            reader.dynamic,
            reader.monsoons,
            reader.grid.cell_pixels,
            dynamic_names=reader.dynamic_bands,
        )
        truth_dir = find_truth_dir(cfg)
        truth = read_truth(truth_dir, reader.grid, reader.n_periods) if truth_dir else None
        observable = (
            read_truth(truth_dir, reader.grid, reader.n_periods, observable=True)
            if truth_dir and has_observable_truth(truth_dir)
            else None
        )
        observed = np.where(reader.valid[None], reader.target, np.nan)
        occurrence = np.where(np.isfinite(observed), observed > cfg.inventory.min_density, np.nan)
        return cls(
            reader, features, feature_names, observed, occurrence, truth_dir, truth, observable
        )


def _score_fold(
    cfg: RunConfig, data: _Observed, run_dir: Path
) -> tuple[Split, dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The run's held-out scores, the constant-density ablations, the oracles and the baselines
    on the run's split; and each model's susceptibility map (for calibration and reliability)."""
    from .evaluation.baselines import fit_baselines, predict_baselines
    from .evaluation.held_out import score_on_split
    from .evaluation.levels import positive_mean_density
    from .predict import Inference, load_run, predict_arrays
    from .sampling.splits import Split

    observed, reader = data.observed, data.reader
    enn = json.loads(RunFolder(run_dir).metrics.read_text())
    split = Split.load(RunFolder(run_dir).splits)
    scored: dict[str, dict[str, Any]] = {ENN: enn["model"]}
    if enn.get("oracle"):
        scored[ORACLE] = enn["oracle"]
    if enn.get("observable_oracle"):
        scored[OBSERVABLE_ORACLE] = enn["observable_oracle"]
    run = load_run(run_dir)
    enn_maps = predict_arrays(
        run.model,
        data.reader_for(run.dynamic_bands),
        run.norm,
        merge=cfg.model.lattice_merge,
        inference=Inference(batch_size=cfg.training.batch_size),
    )
    susceptibility_maps = {ENN: enn_maps["susceptibility"]}
    # ablation: the ENN's susceptibility x one constant density, the mean observed
    # density of the positive training cells (does the density block earn its place?)
    constant = positive_mean_density(observed, split.train_cells, cfg.inventory.min_density)
    ablation = {
        "susceptibility": enn_maps["susceptibility"],
        "density": np.full_like(enn_maps["density"], constant),
    }
    ablation["hazard"] = ablation["susceptibility"] * ablation["density"]
    scored[ENN_CONSTANT_DENSITY] = score_on_split(
        ablation, observed, split, cfg, reader.period_names
    )
    # and one constant per period, the level the density maps are set to (training.calibrate);
    # a period without positive training or validation cells (a forecast) keeps the one above
    level_cells = split.train_cells | split.val_cells
    per_period = np.array(
        [
            positive_mean_density(observed[t], level_cells[t], cfg.inventory.min_density)
            for t in range(observed.shape[0])
        ]
    )
    per_period = np.where(np.isfinite(per_period), per_period, constant)
    by_period = {
        "susceptibility": enn_maps["susceptibility"],
        "density": np.broadcast_to(
            per_period[:, None, None].astype(enn_maps["density"].dtype), observed.shape
        ).copy(),
    }
    by_period["hazard"] = by_period["susceptibility"] * by_period["density"]
    scored[ENN_PERIOD_DENSITY] = score_on_split(
        by_period, observed, split, cfg, reader.period_names
    )
    for name in ABLATIONS:
        susceptibility_maps[name] = enn_maps["susceptibility"]
    if data.truth is not None:
        susceptibility_maps[ORACLE] = data.truth["susceptibility"]
    if data.observable is not None:
        susceptibility_maps[OBSERVABLE_ORACLE] = data.observable["susceptibility"]
    train_cells = split.train_cells
    features = data.features_for(run.dynamic_bands)
    fitted = fit_baselines(
        features[train_cells],
        data.occurrence[train_cells],
        observed[train_cells],
        seed=cfg.seed,
    )
    for name, (p_occ, dens) in predict_baselines(fitted, features).items():
        p_occ, dens = _calibrate_baseline(p_occ, dens, observed, split, cfg, reader.period_names)
        arrays = {"susceptibility": p_occ, "density": dens, "hazard": p_occ * dens}
        scored[name] = score_on_split(arrays, observed, split, cfg, reader.period_names)
        susceptibility_maps[name] = p_occ
    return split, scored, susceptibility_maps


def _calibrate_baseline(
    p_occ: np.ndarray,
    dens: np.ndarray,
    observed: np.ndarray,
    split: Any,
    cfg: RunConfig,
    period_names: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """A baseline's maps with the calibration the ENN's get, fitted the same way on the same
    cells (``training.calibrate.fit_map_calibration``): Platt scaling on the validation cells,
    a logit shift and a density level per period on the training and validation cells, the
    density blend. Without it the comparison would credit the ENN with what any model gains
    from knowing each period's level (on the demo's twelve spatial runs it lifted the
    logistic regression's pooled AUC from 0.719 to 0.727). ``training.calibration: none``
    leaves both uncalibrated."""
    from .training.calibrate import apply_map_calibration, fit_map_calibration

    if cfg.training.calibration == "none":
        return p_occ, dens
    report = fit_map_calibration(
        p_occ,
        dens,
        observed,
        split,
        period_names,
        cfg.inventory.min_density,
        cfg.evaluation.ece_bins,
    )
    return apply_map_calibration(report, p_occ, dens, period_names)


def _fold_rows(
    cfg: RunConfig,
    protocol: str,
    fold: int,
    data: _Observed,
    fold_scores: tuple[Split, dict[str, dict[str, Any]], dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """One table row per model of a fold: pooled scores, calibrated ECE, skill vs the oracles."""
    from .evaluation.metrics import skill

    split, scored, susceptibility_maps = fold_scores
    oracle_auc = scored[ORACLE]["pooled"]["occurrence"]["auc"] if ORACLE in scored else None
    observable_auc = (
        scored[OBSERVABLE_ORACLE]["pooled"]["occurrence"]["auc"]
        if OBSERVABLE_ORACLE in scored
        else None
    )
    rows = []
    for model, result in scored.items():
        row: dict[str, Any] = {
            "scenario": cfg.name,
            "seed": cfg.seed,
            "protocol": protocol,
            "fold": fold,
            "model": model,
            "leaky": split.leaky,
        }
        row.update(_pooled_row(result))
        row["n_test_cells"] = int(split.test_cells.sum())
        cal = calibrated_ece(
            susceptibility_maps[model],
            data.observed,
            split,
            cfg.inventory.min_density,
            cfg.evaluation.ece_bins,
        )
        row["ece_calibrated"] = cal["ece_calibrated"]
        row["brier_calibrated"] = cal["brier_calibrated"]
        row["skill"] = skill(row["auc"], oracle_auc) if oracle_auc is not None else math.nan
        row["skill_observable"] = (
            skill(row["auc"], observable_auc) if observable_auc is not None else math.nan
        )
        rows.append(row)
    return rows


def validate(
    cfg: RunConfig,
    protocols: Sequence[str] = ("paper", "spatial", "temporal", "spacetime"),
    max_folds: int | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every protocol (and fold) for the ENN and the baselines; return and write the table.

    Writes ``<out_dir>/validation.json`` (default ``<output.dir>/validation``); each ENN run lives
    in ``<out_dir>/runs/<protocol>-fold<k>`` and resumes if interrupted.
    """
    from .io.atomic import atomic_write_text
    from .run import default_run_name, runs_dir
    from .sampling.splits import PROTOCOLS
    from .training import train

    for p in protocols:
        if p not in PROTOCOLS:
            raise InputError(f"unknown protocol '{p}'; choose from {', '.join(PROTOCOLS)}")
    leaking = [p for p in protocols if p in LEGACY_LEAKING_PROTOCOLS]
    if cfg.predictors.legacy is True and leaking:
        raise InputError(
            f"predictors.legacy = true with protocol(s) {', '.join(leaking)}: their held-out "
            "cells would see their own earlier labels; set predictors.legacy: auto (on for "
            "temporal and spacetime only) or validate only temporal,spacetime"
        )
    out_dir = Path(out_dir) if out_dir is not None else Path(cfg.output.dir) / VALIDATION_DIR
    data = _Observed.load(cfg)
    rows: list[dict[str, Any]] = []
    # protocol -> {"y": [test labels per fold], model: [test probabilities per fold]}
    reliability: dict[str, dict[str, list[np.ndarray]]] = {}
    for protocol in protocols:
        for fold in folds_for(protocol, cfg.evaluation.n_folds, max_folds):
            run_dir = runs_dir(out_dir) / default_run_name(protocol, fold)
            if not RunFolder(run_dir).metrics.is_file():
                train(cfg, protocol, fold, run_dir=run_dir, progress=progress)
            fold_scores = _score_fold(cfg, data, run_dir)
            split, _, susceptibility_maps = fold_scores
            test = split.test_cells & np.isfinite(data.observed)
            rel = reliability.setdefault(protocol, {"y": []})
            rel["y"].append((data.observed[test] > cfg.inventory.min_density).astype(float))
            for name, p_map in susceptibility_maps.items():
                rel.setdefault(name, []).append(p_map[test])
            rows.extend(_fold_rows(cfg, protocol, fold, data, fold_scores))
    summary = summarise(rows)
    result = {
        "package_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_name": cfg.name,
        "seed": cfg.seed,
        "preset": cfg.model.preset,
        "grid_cells": list(cfg.grid.shape_cells),
        "protocols": list(protocols),
        "max_folds": max_folds,
        "rows": rows,
        "summary": summary,
        "truth": str(data.truth_dir) if data.truth_dir else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / VALIDATION_FILE, json.dumps(_finite(result), indent=2))
    if data.truth is None:
        result["note"] = "no truth/ folder: oracle and skill not available (real data)"
    result["reliability"] = {
        protocol: {key: np.concatenate(parts) for key, parts in series.items()}
        for protocol, series in reliability.items()
    }  # in memory only (not in validation.json): the test cells' labels and probabilities
    plot_reliability(result, out_dir / RELIABILITY_PLOT, cfg.evaluation.ece_bins)
    return result


def combine(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from the :func:`validate` results of several configs (seeds, scenarios): their
    rows together, summarised per (scenario, protocol, model) over folds and seeds, and the
    reliability series pooled per protocol."""
    if len(results) == 1:
        return results[0]
    rows = [row for r in results for row in r["rows"]]
    reliability: dict[str, dict[str, list[np.ndarray]]] = {}
    for r in results:
        for protocol, series in r.get("reliability", {}).items():
            pooled = reliability.setdefault(protocol, {})
            for name, values in series.items():
                pooled.setdefault(name, []).append(values)
    scenarios: dict[str, dict[str, Any]] = {}
    for r in results:
        entry = scenarios.setdefault(r["config_name"], {"grid_cells": r["grid_cells"], "seeds": []})
        entry["seeds"].append(r["seed"])
    first = results[0]
    return {
        **{k: first[k] for k in ("package_version", "created", "preset", "protocols", "max_folds")},
        "config_name": ", ".join(dict.fromkeys(r["config_name"] for r in results)),
        "seed": ", ".join(str(r["seed"]) for r in results),
        "grid_cells": first["grid_cells"],
        "scenarios": scenarios,
        "rows": rows,
        "summary": summarise(rows),
        "reliability": {
            protocol: {name: np.concatenate(parts) for name, parts in series.items()}
            for protocol, series in reliability.items()
        },
    }


def plot_reliability(result: dict[str, Any], path: Path, n_bins: int = 15) -> Path:
    """One reliability diagram per protocol (test cells pooled over folds, raw probabilities,
    every model on the same cells) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io.atomic import atomic_path
    from .predict.uncertainty import reliability_diagram

    panels = result["reliability"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (protocol, series) in zip(axes[0], panels.items(), strict=True):
        probs = {name: p for name, p in series.items() if name != "y"}
        reliability_diagram(series["y"], probs, n_bins=n_bins, ax=ax, title=protocol)
    fig.suptitle("Reliability on held-out test cells (raw probabilities, before calibration)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over folds (and seeds) per (scenario, protocol, model)."""
    keys: list[tuple[str, str, str]] = []
    for r in rows:
        key = (r.get("scenario", ""), r["protocol"], r["model"])
        if key not in keys:
            keys.append(key)
    out = []
    columns = [c for c, _, _ in TABLE_METRICS] + [
        "hazard_ratio_dev",
        "skill",
        "skill_observable",
        "ece_calibrated",
        "brier_calibrated",
    ]
    for scenario, protocol, model in keys:
        group = [
            r
            for r in rows
            if (r.get("scenario", ""), r["protocol"], r["model"]) == (scenario, protocol, model)
        ]
        entry: dict[str, Any] = {
            "scenario": scenario,
            "protocol": protocol,
            "model": model,
            "n_folds": len(group),
            "seeds": sorted({r.get("seed", 0) for r in group}),
        }
        for c in columns:
            values = np.array([r.get(c, math.nan) for r in group], dtype=float)
            finite = values[np.isfinite(values)]
            entry[c] = float(finite.mean()) if finite.size else math.nan  # NaN-free mean
            entry[f"{c}_std"] = float(finite.std()) if finite.size > 1 else math.nan
        entry["leaky"] = any(r["leaky"] for r in group)
        out.append(entry)
    return out


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
