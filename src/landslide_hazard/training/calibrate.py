"""Calibration of a trained ENN's susceptibility, fitted on the split's validation cells.

The occurrence losses leave probabilities that need not mean what they say (the focal Tversky
loss pushes them to 0 and 1; a class-weighted BCE shifts the base rate). After training, Platt
scaling ``sigmoid(a logit(p) + b)`` is fitted on the validation cells (never the test cells) and
stored in the model itself (``ENN.set_calibration``, a buffer saved with the weights), so every
map ``predict`` writes is calibrated; ``predict --raw`` gives the network's own output.

Then each period with training or validation cells gets its own logit shift ``d_t`` on top
(``evaluation.calibration.level_shift``, a Normal(0, 0.5) prior on it; ``ENN.period_shifts``,
saved in model.pt): a network learns a period's level from a handful of period-wide values
(rain statistics, monsoon count), and on the demo it missed some periods' prevalence by a third
(docs/decisions.md). The shifts are fitted on the period's training and validation cells
together: a level is one number per period, which the few validation blocks set with the
noise of their own prevalence (it ran 0.03 above the test blocks' on the demo's folds), while
the training cells, three times as many, hold the same level (the slope, which training
cells would flatter, stays fitted on validation cells only). A period with neither (a
forecast) gets no shift.

Last, the density maps get a blend toward a constant, ``c + w (D - c)`` with ``c`` the mean
density of the positive training cells (the constant-density ablation of ``validate``) and
``w`` in [0, 1] fitted by least squares on the positive validation cells
(``evaluation.calibration.density_blend_weight``; ``ENN.density_blend``, saved in model.pt):
where the density block's predictions do not follow the observed densities of cells it never
trained on, its maps fall back toward the constant instead of adding noise to the hazard.

Then each period with positive training or validation cells gets a factor on its density maps,
the observed density of those cells over their (blended) maps, estimated on the log scale with
one conversion to a ratio of means pooled over the periods, and drawn towards the periods'
common level by a prior (``evaluation.levels.density_levels``; ``ENN.period_density_factors``,
saved in model.pt): the density stages fit a conditional median (an absolute error), and a
period's landslide sizes set its density level far more than any cell's inputs do; on the demo
the block missed some periods' mean by a factor of two (docs/decisions.md). A period without
positive cells of its own (a forecast: a scenario's new period) gets the common level
(``ENN.density_level``), the one the periods share, rather than none (docs/decisions.md, "A
forecast period's density level").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import expit

from ..config import RunConfig
from ..evaluation.calibration import PlattScaling, logit
from ..evaluation.held_out import predict_cells
from ..evaluation.levels import (
    by_period,
    calibrated_density,
    calibrated_probability,
    density_blend_weight,
    density_levels,
    level_shift,
    positive_mean_density,
)
from ..evaluation.metrics import expected_calibration_error
from ..models.enn import ENN
from ..sampling.dataset import CubeReader
from ..sampling.normalisation import Normalisation
from ..sampling.splits import Split


def fit_calibration(
    model: ENN,
    reader: CubeReader,
    norm: Normalisation,
    split: Split,
    cfg: RunConfig,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit ``training.calibration`` on the split's cells (:func:`fit_map_calibration`) and
    store it in ``model``.

    The raw maps are predicted exactly as ``predict`` does (both lattices merged). Returns a
    report: kind, slope and intercept (None when off or impossible, with a note), the number of
    validation cells and their ECE before and after, the per-period shifts, the density blend
    and the per-period density levels.
    """
    kind = cfg.training.calibration
    if kind == "none" or not hasattr(model, "set_calibration"):
        return {"kind": kind, "slope": None, "intercept": None}
    if not split.val_cells.any():
        return _uncalibrated(kind, "no validation cell: left uncalibrated")
    model.use_calibration = False
    try:
        level_cells = split.val_cells | split.train_cells
        arrays = predict_cells(model, reader, norm, level_cells, cfg, device, progress)
    finally:
        model.use_calibration = True
    observed = np.where(reader.valid[None], reader.target, np.nan)
    report = fit_map_calibration(
        arrays["susceptibility"],
        arrays["density"],
        observed,
        split,
        reader.period_names,
        cfg.inventory.min_density,
        cfg.evaluation.ece_bins,
        kind,
    )
    if report["slope"] is not None:
        model.set_calibration(report["slope"], report["intercept"])
        model.period_shifts = report["period_shifts"]
        model.density_blend = _blend_of(report)
        model.period_density_factors = report["period_density_factors"]
        model.density_level = report["density_level"]
    return report


def _uncalibrated(kind: str, note: str) -> dict[str, Any]:
    return {"kind": kind, "slope": None, "intercept": None, "note": note}


def fit_map_calibration(
    susceptibility: np.ndarray,
    density: np.ndarray,
    observed: np.ndarray,
    split: Split,
    period_names: list[str],
    min_density: float,
    bins: int,
    kind: str = "platt",
) -> dict[str, Any]:
    """The calibration of a model's raw (P, rows, cols) maps, from the split's cells: Platt
    scaling on the validation cells, a logit shift per period and then, after the density
    blend fitted on the positive validation cells, a density level per period, both on the
    training and validation cells (the module's docstring says why). Model-free: the ENN's maps
    (:func:`fit_calibration`) and, in ``validate``, the baselines' get the same. Apply it with
    :func:`apply_map_calibration`. ``slope`` None (with a note): the validation cells hold no
    scored cell or one class only, and nothing is fitted.
    """
    scored = np.isfinite(observed) & np.isfinite(susceptibility)
    cells = split.val_cells & scored
    p = susceptibility[cells].astype(np.float64)
    y = (observed[cells] > min_density).astype(np.float64)
    if y.size == 0 or y.min() == y.max():  # Platt scaling needs both classes
        note = "the validation cells hold no scored cell or a single class: left uncalibrated"
        return {**_uncalibrated(kind, note), "n_cells": int(cells.sum())}
    platt = PlattScaling()
    platt.fit(p, y)
    z_map = platt.slope * logit(susceptibility) + platt.intercept  # NaN stays NaN
    level = (split.val_cells | split.train_cells) & scored
    period_level = np.nonzero(level)[0]
    z_level, y_level = z_map[level], observed[level] > min_density
    shifts = {
        period_names[t]: level_shift(z_level[period_level == t], y_level[period_level == t])
        for t in np.unique(period_level)
    }
    z = z_map[cells]
    period = np.nonzero(cells)[0]
    shifted = z + by_period(shifts, period_names, 0.0)[period]
    report: dict[str, Any] = {
        "kind": kind,
        "slope": platt.slope,
        "intercept": platt.intercept,
        "n_cells": int(cells.sum()),
        "n_level_cells": int(level.sum()),
        "period_shifts": shifts,
        "ece_raw": float(expected_calibration_error(y, p, bins)),
        "ece_platt": float(expected_calibration_error(y, platt.transform(p), bins)),
        "ece_calibrated": float(expected_calibration_error(y, expit(shifted), bins)),
    }
    blend = _fit_density_blend(observed, density, split, min_density)
    if blend is not None:
        report["density_blend"] = blend
    blended = calibrated_density(density, _blend_of(report))  # as the maps get it
    positive = level & (observed > min_density) & np.isfinite(blended)
    period = np.nonzero(positive)[0]
    levels = density_levels(observed[positive], blended[positive], period)
    report["period_density_factors"] = {period_names[t]: f for t, f in levels.factors.items()}
    report["density_level"] = levels.common
    report["n_density_level_cells"] = int(positive.sum())
    return report


def _blend_of(report: dict[str, Any]) -> tuple[float, float] | None:
    blend = report.get("density_blend")
    return None if blend is None else (blend["weight"], blend["constant"])


def apply_map_calibration(
    report: dict[str, Any],
    susceptibility: np.ndarray,
    density: np.ndarray,
    period_names: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(susceptibility, density) maps (P, rows, cols) with a :func:`fit_map_calibration`
    report's calibration applied, as ``predict`` applies the ENN's; the maps unchanged when
    nothing was fitted."""
    if report.get("slope") is None:
        return susceptibility, density
    shifts = by_period(report["period_shifts"], period_names, 0.0)
    common = report.get("density_level", 1.0)  # absent from reports written before it
    factors = by_period(report["period_density_factors"], period_names, common)
    p = calibrated_probability(susceptibility, report["slope"], report["intercept"], shifts)
    return p, calibrated_density(density, _blend_of(report), factors)


def _fit_density_blend(
    observed: np.ndarray, density: np.ndarray, split: Split, min_density: float
) -> dict[str, Any] | None:
    """The blend of the density maps toward the positive training cells' mean density, fitted
    on the positive validation cells; None without positive cells in either."""
    constant = positive_mean_density(observed, split.train_cells, min_density)
    val = split.val_cells & np.isfinite(observed) & (observed > min_density)
    val &= np.isfinite(density)
    if not np.isfinite(constant) or not val.any():
        return None
    y, d = observed[val].astype(np.float64), density[val].astype(np.float64)
    weight = density_blend_weight(y, d, constant)
    r = float(np.corrcoef(y, d)[0, 1]) if y.size > 1 and y.std() > 0 and d.std() > 0 else None
    return {"weight": weight, "constant": constant, "n_cells": int(val.sum()), "r_val": r}
