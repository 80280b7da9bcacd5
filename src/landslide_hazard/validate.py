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
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .baselines import OCCURRENCE_MODELS
from .config import RunConfig
from .errors import InputError
from .run import VALIDATION_DIR

ENN = "enn"
ENN_CONSTANT_DENSITY = "enn_constant_density"  # ablation: S x the training cells' mean density
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
            ok = pred is not None and obs not in (None, 0)
            value = float(pred) / float(obs) if ok else None
        else:
            value = block.get(key)
        row[column] = float(value) if value is not None else math.nan
    return row


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
    from .cube import open_cube
    from .evaluation.baselines import cell_features, fit_baselines, predict_baselines
    from .evaluation.held_out import has_observable_truth, read_truth, score_on_split
    from .evaluation.metrics import skill
    from .io.atomic import atomic_write_text
    from .predict import load_run, predict_arrays
    from .run import RunFolder, cube_path, default_run_name, find_truth_dir, runs_dir
    from .sampling.dataset import CubeReader
    from .sampling.splits import PROTOCOLS, Split
    from .training import train

    for p in protocols:
        if p not in PROTOCOLS:
            raise InputError(f"unknown protocol '{p}'; choose from {', '.join(PROTOCOLS)}")
    out_dir = Path(out_dir) if out_dir is not None else Path(cfg.output.dir) / VALIDATION_DIR
    reader = CubeReader(open_cube(cube_path(cfg)))
    static = reader.static if reader.static_in_memory else np.asarray(reader.static[:])
    features, _ = cell_features(static, reader.dynamic, reader.monsoons, reader.grid.cell_pixels)
    truth_dir = find_truth_dir(cfg)
    truth = read_truth(truth_dir, reader.grid, reader.n_periods) if truth_dir else None
    observable = (
        read_truth(truth_dir, reader.grid, reader.n_periods, observable=True)
        if truth_dir and has_observable_truth(truth_dir)
        else None
    )
    observed = np.where(reader.valid[None], reader.target, np.nan)
    occurrence = np.where(np.isfinite(observed), observed > cfg.inventory.min_density, np.nan)

    rows: list[dict[str, Any]] = []
    # protocol -> {"y": [test labels per fold], model: [test probabilities per fold]}
    reliability: dict[str, dict[str, list[np.ndarray]]] = {}
    for protocol in protocols:
        for fold in folds_for(protocol, cfg.evaluation.n_folds, max_folds):
            run_dir = runs_dir(out_dir) / default_run_name(protocol, fold)
            if not RunFolder(run_dir).metrics.is_file():
                train(cfg, protocol, fold, run_dir=run_dir, progress=progress)
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
                reader,
                run.norm,
                merge=cfg.model.lattice_merge,
                batch_size=cfg.training.batch_size,
            )
            susceptibility_maps = {ENN: enn_maps["susceptibility"]}
            # ablation: the ENN's susceptibility x one constant density, the mean observed
            # density of the positive training cells (does the density block earn its place?)
            train_obs = observed[split.train_cells]
            constant = float(np.nanmean(train_obs[train_obs > cfg.inventory.min_density]))
            ablation = {
                "susceptibility": enn_maps["susceptibility"],
                "density": np.full_like(enn_maps["density"], constant),
            }
            ablation["hazard"] = ablation["susceptibility"] * ablation["density"]
            scored[ENN_CONSTANT_DENSITY] = score_on_split(
                ablation, observed, split, cfg, reader.period_names
            )
            susceptibility_maps[ENN_CONSTANT_DENSITY] = enn_maps["susceptibility"]
            if truth is not None:
                susceptibility_maps[ORACLE] = truth["susceptibility"]
            if observable is not None:
                susceptibility_maps[OBSERVABLE_ORACLE] = observable["susceptibility"]
            train_cells = split.train_cells
            fitted = fit_baselines(
                features[train_cells], occurrence[train_cells], observed[train_cells], seed=cfg.seed
            )
            for name, (p_occ, dens) in predict_baselines(fitted, features).items():
                arrays = {"susceptibility": p_occ, "density": dens, "hazard": p_occ * dens}
                scored[name] = score_on_split(arrays, observed, split, cfg, reader.period_names)
                susceptibility_maps[name] = p_occ
            test = split.test_cells & np.isfinite(observed)
            rel = reliability.setdefault(protocol, {"y": []})
            rel["y"].append((observed[test] > cfg.inventory.min_density).astype(float))
            for name, p_map in susceptibility_maps.items():
                rel.setdefault(name, []).append(p_map[test])
            oracle_auc = scored[ORACLE]["pooled"]["occurrence"]["auc"] if ORACLE in scored else None
            observable_auc = (
                scored[OBSERVABLE_ORACLE]["pooled"]["occurrence"]["auc"]
                if OBSERVABLE_ORACLE in scored
                else None
            )
            for model, result in scored.items():
                row = {"protocol": protocol, "fold": fold, "model": model, "leaky": split.leaky}
                row.update(_pooled_row(result))
                row["n_test_cells"] = int(split.test_cells.sum())
                cal = calibrated_ece(
                    susceptibility_maps[model],
                    observed,
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
        "truth": str(truth_dir) if truth_dir else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "validation.json", json.dumps(_finite(result), indent=2))
    if truth is None:
        result["note"] = "no truth/ folder: oracle and skill not available (real data)"
    result["reliability"] = {
        protocol: {key: np.concatenate(parts) for key, parts in series.items()}
        for protocol, series in reliability.items()
    }  # in memory only (not in validation.json): the test cells' labels and probabilities
    plot_reliability(result, out_dir / "reliability.png", cfg.evaluation.ece_bins)
    return result


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
    """Mean and standard deviation over folds per (protocol, model)."""
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["protocol"], r["model"]) not in keys:
            keys.append((r["protocol"], r["model"]))
    out = []
    columns = [c for c, _, _ in TABLE_METRICS] + ["skill", "ece_calibrated", "brier_calibrated"]
    for protocol, model in keys:
        group = [r for r in rows if r["protocol"] == protocol and r["model"] == model]
        entry: dict[str, Any] = {"protocol": protocol, "model": model, "n_folds": len(group)}
        for c in columns:
            values = np.array([r[c] for r in group], dtype=float)
            finite = values[np.isfinite(values)]
            entry[c] = float(finite.mean()) if finite.size else math.nan
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


def _cell(value: float, std: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def markdown_table(summary: list[dict[str, Any]]) -> str:
    columns = [
        "auc",
        "skill",
        "pr_auc",
        "f1",
        "iou",
        "brier",
        "ece",
        "ece_calibrated",
        "hazard_mae",
        "hazard_r",
    ]
    head = "| protocol | model | folds | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for e in summary:
        proto = e["protocol"] + (" (leaky)" if e["leaky"] else "")
        cells = [_cell(e[c], e.get(f"{c}_std")) for c in columns]
        lines.append(f"| {proto} | {e['model']} | {e['n_folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(result: dict[str, Any], command: str, figure: str | None = None) -> str:
    """docs/validation.md: the table, how it was made, and a plain reading of it."""
    summary = result["summary"]
    lines = [
        "# Validation: four protocols, baselines, the oracle",
        "",
        f"Generated by `{command}` (package {result['package_version']}, "
        f"{result['created'][:10]}, config `{result['config_name']}`, seed {result['seed']}, "
        f"preset `{result['preset']}`, grid {result['grid_cells'][0]} x {result['grid_cells'][1]} "
        "cells). Do not edit by hand.",
        "",
        "Every number is pooled over the test periods and cells of a fold, then averaged over folds "
        "(± the standard deviation over folds where there are several). The class threshold for "
        "F1 and IoU is the max-F1 threshold on the fold's validation cells, never its test cells. "
        "`skill` = (AUC - 0.5) / (oracle AUC - 0.5): 1 means as good as knowing the true "
        "probabilities. `hazard_*` compare predicted E[D] (susceptibility x density) with the "
        "observed new-failure density (%) on all test cells.",
        "",
        "Protocols: **paper** = random 70/30 split of patches over both lattices (it leaks: the "
        "shifted lattice regroups training cells, so its scores are optimistic); **spatial** = "
        "held-out blocks with a buffer; **temporal** = the last periods held out; **spacetime** = "
        "held-out blocks in the last periods.",
        "",
        "`ece_calibrated`: the test cells' ECE after Platt scaling fitted on the fold's "
        "validation cells (the focal Tversky and weighted losses shift the base rate, which "
        "temperature scaling cannot undo; see `docs/uncertainty.md`).",
        "",
        markdown_table(summary),
        "",
        *(
            [
                f"![Reliability diagrams per protocol]({figure})",
                "",
                "Reliability of each model's raw probabilities on the test cells (pooled over "
                "folds). The ENN's focal Tversky loss pushes its probabilities towards 0 and 1, "
                "hence its large raw ECE; `ece_calibrated` above shows what Platt scaling fitted "
                "on validation cells recovers.",
                "",
            ]
            if figure
            else []
        ),
        "## Reading",
        "",
    ]
    by_protocol: dict[str, dict[str, dict[str, Any]]] = {}
    for e in summary:
        by_protocol.setdefault(e["protocol"], {})[e["model"]] = e
    for protocol, models in by_protocol.items():
        enn = models.get(ENN)
        baselines = {m: e for m, e in models.items() if m in BASELINE_MODELS}
        if enn is None or not baselines:
            continue
        best_name, best = max(
            baselines.items(),
            key=lambda kv: -1 if not math.isfinite(kv[1]["auc"]) else kv[1]["auc"],
        )
        diff = enn["auc"] - best["auc"]
        verdict = "beats" if diff > 0.005 else ("does not beat" if diff < -0.005 else "ties with")
        text = (
            f"- **{protocol}**: the ENN (AUC {_cell(enn['auc'], None)}) {verdict} the best "
            f"baseline, {best_name} (AUC {_cell(best['auc'], None)})"
        )
        if ORACLE in models:
            text += f"; the oracle reaches {_cell(models[ORACLE]['auc'], None)}"
            text += f", so the ENN's skill is {_cell(enn['skill'], None)}"
        text += "."
        if enn["leaky"]:
            text += " This protocol leaks training cells into the test set; do not quote it alone."
        lines.append(text)
    lines += [
        "",
        "Limits: the synthetic scenario is generated by a known, smooth process, so its skill "
        "numbers say whether the pipeline can learn such a process, not how well it will do on "
        "real terrain; the paper's own validation (its numbers in `docs/paper_reproduction.md`) "
        "corresponds to the leaky protocol.",
        "",
    ]
    return "\n".join(lines)
