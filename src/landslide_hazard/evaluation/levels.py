"""The per-period levels of the calibrated maps (``training.calibrate``; the ENN's maps and,
in ``validate``, the baselines' get the same): a logit shift per period on the susceptibility,
a blend of the density maps toward a constant, and a level factor per period on the density,
with the common level for a period without its own (a forecast: a scenario's new period).

Split from ``evaluation.calibration``, which holds the generic calibrators (Platt, isotonic,
temperature) that these build on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.special import logit as scipy_logit

from .calibration import LOGIT_EPS

# Prior sd (logit units) of a period's level shift (level_shift): a period's hundreds of
# training and validation cells outweigh it; a period with a handful is drawn towards no shift.
# Also the sd of the periods' log density levels around their common one (density_levels).
LEVEL_PRIOR_SD = 0.5


def level_shift(z: Any, y: Any, prior_sd: float = LEVEL_PRIOR_SD) -> float:
    """The additive logit shift ``d`` of one group of cells (one period's training and
    validation cells, ``training.calibrate``): the maximum a posteriori fit of
    ``sigmoid(z + d)`` to 0/1 labels ``y`` under a Normal(0, ``prior_sd``) prior on ``d``.

    With many cells it is the maximum-likelihood shift, where the mean of ``sigmoid(z + d)``
    equals the observed frequency; a group of a few cells is drawn towards 0 (no shift). The
    objective is concave in ``d``, so Newton's method converges from 0. ``prior_sd`` inf: the
    plain maximum-likelihood shift (both classes needed).
    """
    zz = np.asarray(z, dtype="float64").ravel()
    yy = np.asarray(y, dtype="float64").ravel()
    keep = np.isfinite(zz) & np.isfinite(yy)
    zz, yy = zz[keep], yy[keep]
    precision = 0.0 if math.isinf(prior_sd) else 1.0 / prior_sd**2
    if zz.size == 0 or (precision == 0.0 and (yy.min() == yy.max())):
        raise ValueError(
            "a level shift needs cells of both classes (or a finite prior); give the period's "
            "cells with occurrences and non-occurrences"
        )
    d = 0.0
    for _ in range(100):
        q = expit(zz + d)
        grad = float(np.sum(yy - q)) - precision * d
        hess = float(np.sum(q * (1.0 - q))) + precision
        step = grad / hess
        d += float(np.clip(step, -2.0, 2.0))  # damped: safe far from the optimum
        if abs(step) < 1e-12:
            break
    return d


def positive_mean_density(observed: np.ndarray, cells: np.ndarray, min_density: float) -> float:
    """The mean observed density of ``cells`` (bool, the shape of ``observed``) with new
    failures (density > ``min_density``): the constant density of ``validate``'s ablation and
    of the density blend. NaN when there is no such cell."""
    values = observed[cells]
    values = values[np.isfinite(values) & (values > min_density)]
    return float(np.mean(values)) if values.size else math.nan


def density_blend_weight(observed: Any, predicted: Any, constant: float) -> float:
    """The weight ``w`` in [0, 1] of the blend ``constant + w (predicted - constant)`` that
    minimises the squared error against ``observed`` (densities of positive validation cells).

    The least-squares slope of ``observed - constant`` on ``predicted - constant`` through the
    origin, clipped to [0, 1]: 1 keeps the density model as it is, 0 replaces it by the constant
    (the mean density of the positive training cells), which it does where its predictions do
    not follow the observed ones at all. Non-finite pairs are dropped; no pair, or predictions
    all equal to the constant, give 1 (nothing to fit: the model is left as it is).
    """
    y = np.asarray(observed, dtype="float64").ravel()
    d = np.asarray(predicted, dtype="float64").ravel()
    keep = np.isfinite(y) & np.isfinite(d)
    dy, dd = y[keep] - constant, d[keep] - constant
    denominator = float(np.sum(dd * dd))
    if dd.size == 0 or denominator == 0.0:
        return 1.0
    return float(np.clip(np.sum(dy * dd) / denominator, 0.0, 1.0))


@dataclass(frozen=True)
class DensityLevels:
    """The density maps' level factors (:func:`density_levels`): ``factors`` by period index,
    for the periods with positive cells; ``common`` for a period without its own (a forecast:
    a scenario's new period), the level the periods share."""

    factors: dict[int, float]
    common: float


def density_levels(
    observed: Any, predicted: Any, period: Any, prior_sd: float = LEVEL_PRIOR_SD
) -> DensityLevels:
    """The factors setting each period's density maps to its level (``training.calibrate``),
    from the positive cells' observed and predicted densities and each cell's period index.

    Densities are heavy-tailed, so a period's level is estimated on the log scale,
    ``g_t = mean(ln y) - mean(ln d)``, and made a ratio of means by one conversion pooled over
    the periods, ``c = sum_t n_t (ln(mean y / mean d) - g_t) / sum_t n_t`` (one shape in every
    period, differing in scale, as landslide areas do: far less noise than each period's ratio
    of means; docs/decisions.md, "The density level on the log scale"): ``x_t = g_t + c``, with
    variance ``v_t = (var ln y + var ln d) / n_t``.

    The periods' levels are taken as draws around a common one, ``x_t ~ Normal(mu, s^2)`` with
    ``s`` = ``prior_sd`` (a random effect): ``mu`` is their precision-weighted mean (weights
    ``1 / (v_t + s^2)``; equal weights when ``s`` is inf) and ``ln f_t = mu + (x_t - mu) s^2 /
    (s^2 + v_t)``, the posterior mean, so a period with few cells is drawn towards the common
    level, not towards 1: the maps' level need not be the observed one in any period (the
    density stages fit a conditional median, and the blend moves it). ``common = exp(mu)``:
    what a forecast period gets (docs/decisions.md, "A forecast period's density level").
    Non-finite or non-positive pairs are dropped; a period with fewer than two gets the common
    level; no period with two: all 1.
    """
    y = np.asarray(observed, dtype="float64").ravel()
    d = np.asarray(predicted, dtype="float64").ravel()
    t = np.asarray(period).ravel()
    keep = np.isfinite(y) & np.isfinite(d) & (y > 0) & (d > 0)
    periods = [int(k) for k in np.unique(t)]
    fits: dict[int, tuple[float, float, float, int]] = {}
    for k in periods:
        cells = keep & (t == k)
        n = int(cells.sum())
        if n < 2:
            continue
        ly, ld = np.log(y[cells]), np.log(d[cells])
        means = math.log(y[cells].mean() / d[cells].mean())
        fits[k] = (ly.mean() - ld.mean(), means, (ly.var(ddof=1) + ld.var(ddof=1)) / n, n)
    if not fits:
        return DensityLevels({k: 1.0 for k in periods}, 1.0)
    n_all = sum(f[3] for f in fits.values())
    conversion = sum(f[3] * (f[1] - f[0]) for f in fits.values()) / n_all
    x = {k: f[0] + conversion for k, f in fits.items()}
    s2 = prior_sd**2
    weight = {k: 1.0 if math.isinf(s2) else 1.0 / (fits[k][2] + s2) for k in fits}
    mu = sum(weight[k] * x[k] for k in fits) / sum(weight.values())
    factors = {k: math.exp(mu) for k in periods}
    for k, (_, _, variance, _) in fits.items():
        pull = 1.0 if math.isinf(s2) else s2 / (s2 + variance)
        factors[k] = math.exp(mu + (x[k] - mu) * pull)
    return DensityLevels(factors, math.exp(mu))


def by_period(
    values: dict[str, float], period_names: list[str], default: float, n_maps: int | None = None
) -> np.ndarray:
    """The per-period values stored by period name (logit shifts, density factors) as an array
    in the order of ``period_names``, ``default`` for a period without one (a forecast).
    ``n_maps`` given: the number of maps they are for, checked against the names."""
    if n_maps is not None and len(period_names) != n_maps:
        raise ValueError(f"{len(period_names)} period names for {n_maps} maps")
    return np.array([values.get(name, default) for name in period_names], dtype=np.float64)


def _per_period(values: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def calibrated_probability(
    p: Any, slope: float, intercept: float, shifts: np.ndarray | None = None
) -> np.ndarray:
    """``sigmoid(slope logit(p) + intercept + shift_t)`` of (P, ...) maps as float32: the stored
    Platt scaling and per-period logit shifts (``shifts``, one per map, None: none) that
    ``training.calibrate`` fits, for the ENN's maps and, in ``validate``, the baselines'."""
    # scipy's logit, as the maps have always been calibrated (this module's ``logit`` differs
    # from it in the last bits)
    z = slope * scipy_logit(np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1 - LOGIT_EPS))
    z = z + intercept
    if shifts is not None:
        z = z + _per_period(shifts, z.ndim)
    return np.asarray(expit(z)).astype(np.float32)


def calibrated_density(
    d: Any, blend: tuple[float, float] | None = None, factors: np.ndarray | None = None
) -> np.ndarray:
    """Density maps (P, ...) blended toward a constant, ``constant + weight (d - constant)``
    (``blend`` = (weight, constant), None: none), then times each map's level factor
    (``factors``, None: none), as float32 (``training.calibrate``)."""
    out = np.asarray(d, dtype=np.float64)
    if blend is not None:
        weight, constant = blend
        out = constant + weight * (out - constant)
    if factors is not None:
        out = out * _per_period(factors, out.ndim)
    return out.astype(np.float32)
