"""The validation table as Markdown: per protocol and model, per seed, and a plain reading of
who wins (``landslide-hazard validate --markdown``; docs/validation.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .validate import ABLATIONS, BASELINE_MODELS, ENN, OBSERVABLE_ORACLE, ORACLE


def _cell(value: float | None, std: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


TABLE_COLUMNS: tuple[str, ...] = (
    "auc",
    "skill",
    "skill_observable",
    "pr_auc",
    "f1",
    "brier",
    "ece",
    "hazard_mae",
    "hazard_r",
    "density_r_pos",
    "hazard_ratio",
    "hazard_ratio_dev",
)


def markdown_table(summary: list[dict[str, Any]]) -> str:
    head = "| protocol | model | runs | " + " | ".join(TABLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(TABLE_COLUMNS))]
    for e in summary:
        proto = e["protocol"] + (" (leaky)" if e["leaky"] else "")
        cells = [_cell(e.get(c, math.nan), e.get(f"{c}_std")) for c in TABLE_COLUMNS]
        lines.append(f"| {proto} | {e['model']} | {e['n_folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(rows: list[dict[str, Any]], scenario: str) -> str:
    """AUC and hazard r of the ENN and the best baseline per protocol and seed (mean over
    folds), so the spread between seeds is visible."""
    seeds = sorted({r["seed"] for r in rows if r.get("scenario") == scenario})
    protocols = list(dict.fromkeys(r["protocol"] for r in rows if r.get("scenario") == scenario))
    lines = [
        "| protocol | seed | enn auc | best baseline auc | enn hazard_r | best baseline hazard_r |",
        "|---|---|---|---|---|---|",
    ]
    for protocol in protocols:
        for seed in seeds:
            group = [
                r
                for r in rows
                if r.get("scenario") == scenario and r["protocol"] == protocol and r["seed"] == seed
            ]
            means = {m: _mean_of(group, m) for m in {r["model"] for r in group}}
            if ENN not in means:
                continue
            base = [means[m] for m in BASELINE_MODELS if m in means]
            best_auc = max((b["auc"] for b in base), default=math.nan)
            best_r = max((b["hazard_r"] for b in base), default=math.nan)
            lines.append(
                f"| {protocol} | {seed} | {_cell(means[ENN]['auc'], None)} | "
                f"{_cell(best_auc, None)} | {_cell(means[ENN]['hazard_r'], None)} | "
                f"{_cell(best_r, None)} |"
            )
    return "\n".join(lines)


def _mean_of(group: list[dict[str, Any]], model: str) -> dict[str, float]:
    values = [r for r in group if r["model"] == model]
    return {k: float(np.nanmean([r[k] for r in values])) for k in ("auc", "hazard_r")}


def _verdict(enn: float, best: float) -> str:
    diff = enn - best
    return "beats" if diff > 0.005 else ("does not beat" if diff < -0.005 else "ties with")


def paired_difference(
    rows: list[dict[str, Any]], protocol: str, baseline: str, metric: str
) -> tuple[float, float, int, int] | None:
    """ENN minus ``baseline`` on ``metric``, paired by run (scenario, seed, fold) under
    ``protocol``: (mean, standard error, runs where the ENN is ahead, runs). None without
    a pair. The standard error is that of a mean over runs (sd / sqrt(n); nan for one run)."""
    by_run: dict[tuple[Any, Any, Any], dict[str, float]] = {}
    for r in rows:
        if r["protocol"] == protocol and r["model"] in (ENN, baseline):
            by_run.setdefault((r.get("scenario"), r["seed"], r["fold"]), {})[r["model"]] = r[metric]
    diffs = np.array(
        [
            v[ENN] - v[baseline]
            for v in by_run.values()
            if ENN in v and baseline in v and math.isfinite(v[ENN]) and math.isfinite(v[baseline])
        ]
    )
    if diffs.size == 0:
        return None
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else math.nan
    return float(diffs.mean()), se, int((diffs > 0).sum()), int(diffs.size)


def _paired_text(rows: list[dict[str, Any]], protocol: str, baseline: str, metric: str) -> str:
    paired = paired_difference(rows, protocol, baseline, metric)
    if paired is None or paired[3] < 2:
        return ""
    mean, se, ahead, n = paired
    return f" (paired over {n} runs: {mean:+.3f} ± {se:.3f} s.e., the ENN ahead in {ahead})"


def _reading(summary: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> list[str]:
    """One line per protocol; with the per-run ``rows``, the ENN's differences from the best
    baselines paired by run, so a tie within the noise reads as one."""
    rows = rows or []
    lines = []
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
        best_r_name, best_r = max(
            baselines.items(),
            key=lambda kv: -1 if not math.isfinite(kv[1]["hazard_r"]) else kv[1]["hazard_r"],
        )
        text = (
            f"- **{protocol}**: the ENN (AUC {_cell(enn['auc'], None)}) "
            f"{_verdict(enn['auc'], best['auc'])} the best baseline, {best_name} "
            f"(AUC {_cell(best['auc'], None)})"
            + _paired_text(rows, protocol, best_name, "auc")
            + f"; on hazard r the ENN ({_cell(enn['hazard_r'], None)}) "
            f"{_verdict(enn['hazard_r'], best_r['hazard_r'])} "
            f"{best_r_name} ({_cell(best_r['hazard_r'], None)})"
            + _paired_text(rows, protocol, best_r_name, "hazard_r")
        )
        if OBSERVABLE_ORACLE in models:
            obs = models[OBSERVABLE_ORACLE]
            text += (
                f"; the observable oracle reaches AUC {_cell(obs['auc'], None)}, so the ENN's "
                f"skill against it is {_cell(enn['skill_observable'], None)}"
            )
        elif ORACLE in models:
            text += f"; the oracle reaches {_cell(models[ORACLE]['auc'], None)}"
            text += f", so the ENN's skill is {_cell(enn['skill'], None)}"
        text += "."
        if enn["leaky"]:
            text += " This protocol leaks training cells into the test set; do not quote it alone."
        lines.append(text)
    return lines


def pooled_calibration_table(reliability: dict[str, dict[str, np.ndarray]]) -> str:
    """ECE and mean probability against the observed frequency on every held-out cell-period of
    every run pooled together (per protocol and model): the per-run ECE above is biased upwards
    by the few cells of one fold, this pools them, as the reliability diagrams do."""
    from .evaluation.metrics import expected_calibration_error

    lines = [
        "Calibration pooled over every held-out cell-period of every run above, all configs "
        "together (the reliability diagrams' data; the constant-density ablations have the "
        "network's probabilities):",
        "",
        "| protocol | model | cell-periods | observed frequency | mean probability | pooled ece |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, series in reliability.items():
        y = np.asarray(series["y"], dtype=float)
        for name, p in series.items():
            if name == "y" or name in ABLATIONS:
                continue
            p = np.asarray(p, dtype=float)
            ok = np.isfinite(p) & np.isfinite(y)
            ece = expected_calibration_error(y[ok], p[ok]) if ok.any() else math.nan
            lines.append(
                f"| {protocol} | {name} | {int(ok.sum())} | {_cell(float(y[ok].mean()), None)} "
                f"| {_cell(float(p[ok].mean()), None)} | {_cell(ece, None)} |"
            )
    return "\n".join(lines)


def render_markdown(result: dict[str, Any], command: str, figure: str | None = None) -> str:
    """docs/validation.md: the tables, how they were made, and a plain reading of them."""
    summary = result["summary"]
    scenarios = result.get("scenarios") or {
        result["config_name"]: {"grid_cells": result["grid_cells"], "seeds": [result["seed"]]}
    }
    lines = [
        "# Validation: protocols, baselines, the oracles",
        "",
        f"Generated by `{command}` (package {result['package_version']}, "
        f"{result['created'][:10]}, preset `{result['preset']}`). Do not edit by hand.",
        "",
        "Every number is pooled over the test periods and cells of a fold, then averaged over the "
        "runs (folds x seeds; ± their standard deviation where there are several). The class "
        "threshold for F1 is the max-F1 threshold on the fold's validation cells, never its test "
        "cells. `skill` = (AUC - 0.5) / (oracle AUC - 0.5): 1 means as good as knowing the true "
        "probabilities; `skill_observable` uses the **observable oracle** instead, the truth "
        "averaged over the generator's latent fields that no input shows (the learnable "
        "ceiling). `hazard_*` compare predicted E[D] (susceptibility x density) with the "
        "observed new-failure density (%) on all test cells; `density_r_pos` is the Pearson r of "
        "predicted and observed density on the positive test cells; `hazard_ratio` the mean "
        "predicted E[D] over the mean observed one, pooled over the test periods, and "
        "`hazard_ratio_dev` the mean over test periods of |that ratio in the period - 1|. "
        "`enn_constant_density` is an ablation: the "
        "ENN's susceptibility times one constant density (the mean of the positive training "
        "cells); `enn_period_density` the same with one constant per period (the mean of its "
        "positive training and validation cells, the level the ENN's density maps are set to; "
        "a forecast period has none and keeps the single constant). The ENN's maps are the "
        "calibrated ones `predict` writes (Platt scaling fitted on the fold's validation cells "
        "and stored in the model, plus a logit shift and a density level per period fitted on "
        "its training and validation cells; test periods of the temporal protocols have "
        "neither, so no shift and the density level the periods share). The per-cell "
        "baselines get the same calibration, fitted the same "
        "way on the same cells (`training.calibrate.fit_map_calibration`), so that no model is "
        "credited with what any of them gains from each period's level.",
        "",
        "Protocols: **paper** = random 70/30 split of patches over both lattices (it leaks: the "
        "shifted lattice regroups training cells, so its scores are optimistic); **spatial** = "
        "held-out blocks with a buffer; **temporal** = the last periods held out; **spacetime** = "
        "held-out blocks in the last periods.",
        "",
    ]
    for scenario, info in scenarios.items():
        part = [e for e in summary if e.get("scenario", scenario) == scenario]
        seeds = info["seeds"]
        grid = info["grid_cells"]
        lines += [
            f"## {scenario} ({grid[0]} x {grid[1]} cells; seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(str(x) for x in seeds)})",
            "",
            markdown_table(part),
            "",
        ]
        if len(seeds) > 1:
            lines += [per_seed_table(result["rows"], scenario), ""]
        part_rows = [r for r in result["rows"] if r.get("scenario", scenario) == scenario]
        lines += ["Reading:", "", *_reading(part, part_rows), ""]
    if result.get("reliability"):
        lines += [pooled_calibration_table(result["reliability"]), ""]
    if figure:
        lines += [
            f"![Reliability diagrams per protocol]({figure})",
            "",
            "Reliability on the test cells (pooled over runs) of each model's probabilities as "
            "scored above.",
            "",
        ]
    lines += [
        "Limits: the synthetic scenarios are generated by a known, smooth process, so their "
        "skill numbers say whether the pipeline can learn such a process, not how well it will "
        "do on real terrain; the paper's own validation (its numbers in "
        "`docs/paper_reproduction.md`) corresponds to the leaky protocol.",
        "",
    ]
    return "\n".join(lines)
