"""Next-period forecasts on the real Gorkha record from the landslide legacy alone (issue 15).

The real record (``realdata.load_gorkha``) holds 8 periods of observed new-failure density per
1 km cell and no predictors. What it can test is whether a cell's own history forecasts its next
period. For every period t >= :data:`FIRST_FORECAST_PERIOD` (1-based) models are trained on the
cells x periods before t only (rolling origin) and forecast period t:

- ``logistic_regression`` and ``gradient_boosting``: the project's per-cell baselines
  (``baselines.fit_baselines``) on the four legacy features (:func:`legacy_features`); both share
  its gradient-boosting density regressor for E[D | D > 0];
- ``forecaster``: the project's 1 km forecaster (:class:`LegacyForecaster`), legacy features plus
  the period's position in the sequence as a decay term;
- ``forecaster_no_position``: the same without the decay term (what the position adds).

Hazard = P(occurrence) x E[D | D > 0], in % of the cell. ``landslide-hazard real-forecast``
writes ``docs/real_forecast.md`` (``real_forecast_doc.write_real_forecast``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from ..errors import InputError
from .baselines import OCCURRENCE_MODELS, fit_baselines, predict_baselines
from .metrics import (
    N_BINS_DEFAULT,
    expected_calibration_error,
    occurrence_metrics,
    pearson_r,
    roc_auc,
)

#: The legacy features of a cell and period, in :func:`legacy_features` column order. Units:
#: density in % of the 1 km cell; fraction in [0, 1]; periods since failure in periods.
LEGACY_FEATURE_NAMES: tuple[str, ...] = (
    "legacy_previous_density_pct",
    "legacy_cumulative_density_pct",
    "legacy_failed_period_fraction",
    "legacy_periods_since_failure",
)
#: The first forecast period, 1-based: period 1 has no history and period 2 only one period to
#: learn from (whose own legacy is empty), so the first model with a history to learn is for 3.
FIRST_FORECAST_PERIOD = 3
FORECASTER = "forecaster"
FORECASTER_NO_POSITION = "forecaster_no_position"
MODELS: tuple[str, ...] = (*OCCURRENCE_MODELS, FORECASTER, FORECASTER_NO_POSITION)
#: The paper's occurrence cut (its code's Keras default); only the threshold-free scores are
#: reported here, the cut just keeps ``occurrence_metrics`` from choosing one on test labels.
_CUT = 0.5


# --------------------------------------------------------------------------------------------
# features


def legacy_features(density: np.ndarray) -> np.ndarray:
    """Strictly causal legacy features of every cell and period.

    Args:
        density: (period, ...) observed new-failure density, % of the cell, periods in time
            order; NaN = no data.
    Returns:
        (period, ..., 4) float64, columns :data:`LEGACY_FEATURE_NAMES`. Period t (0-based) sees
        periods 0..t-1 only:

        - previous density: density of period t-1 (0 for the first period: nothing mapped);
        - cumulative density: sum of the densities of periods 0..t-1 (0 for the first period);
        - failed-period fraction: share of periods 0..t-1 with density > 0 (0 for the first);
        - periods since failure: t - s for the last earlier period s with density > 0; a cell
          that never failed before gets t + 1, one more than any earlier failure can give (as
          if it last failed in a period before the record), so "never" ranks as the longest ago.

        A cell with NaN in an earlier period has NaN features from the next period on.
    """
    d = np.asarray(density, dtype=np.float64)
    if d.ndim < 2:
        raise InputError(
            f"density has shape {d.shape}; expected (period, cells...) with at least one cell axis"
        )
    n_periods = d.shape[0]
    out = np.zeros((*d.shape, len(LEGACY_FEATURE_NAMES)))
    failed = np.where(np.isnan(d), np.nan, (d > 0).astype(np.float64))
    cumulative = np.zeros(d.shape[1:])
    n_failed = np.zeros(d.shape[1:])
    last_failed = np.full(d.shape[1:], -1.0)
    out[0, ..., 3] = 1.0
    for t in range(1, n_periods):
        cumulative = cumulative + d[t - 1]  # NaN propagates: no data, no legacy
        n_failed = n_failed + failed[t - 1]
        last_failed = np.where(failed[t - 1] == 1, t - 1, last_failed)
        since = np.where(last_failed >= 0, t - last_failed, t + 1.0)
        out[t, ..., 0] = d[t - 1]
        out[t, ..., 1] = cumulative
        out[t, ..., 2] = n_failed / t
        out[t, ..., 3] = np.where(np.isnan(cumulative), np.nan, since)
    return out


def period_positions(n_periods: int) -> np.ndarray:
    """The 1-based position of each period in the sequence since the earthquake, (period,)."""
    return np.arange(1, n_periods + 1, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the project's 1 km forecaster


class LegacyForecaster:
    """Occurrence and density of the next period from a cell's legacy and the period's position.

    Design: the legacy features are put on a log scale (log1p of the two densities, log of the
    periods since failure; the fraction as is) and expanded to their degree-2 products (the
    weight of an old failure may depend on how recent the last one was), standardised;
    ``log(position)`` enters additively, a power-law decay of the odds (occurrence) and of the
    mean (density) with the period number. Additive means the position shifts a period's level
    but never reorders its cells. Occurrence: L2 logistic regression (C = 1). Density
    E[D | D > 0]: Poisson GLM (log link) on the positive training cells, so the mean is
    positive and on the scale of D. Deterministic (no random state).

    ``use_position=False`` drops the decay term (an ablation).
    """

    def __init__(self, use_position: bool = True) -> None:
        self.use_position = use_position

    def _design(self, legacy: np.ndarray, position: np.ndarray, fit: bool) -> np.ndarray:
        legacy = np.asarray(legacy, dtype=np.float64)
        logs = np.stack(
            [
                np.log1p(legacy[:, 0]),
                np.log1p(legacy[:, 1]),
                legacy[:, 2],
                np.log(legacy[:, 3]),
            ],
            axis=1,
        )
        if fit:
            self._poly = PolynomialFeatures(2, include_bias=False)
            self._scale = StandardScaler()
            x = self._scale.fit_transform(self._poly.fit_transform(logs))
        else:
            x = self._scale.transform(self._poly.transform(logs))
        if self.use_position:
            x = np.concatenate([x, np.log(np.asarray(position, dtype=np.float64))[:, None]], 1)
        return x

    def fit(
        self,
        legacy: np.ndarray,
        position: np.ndarray,
        occurrence: np.ndarray,
        density: np.ndarray,
    ) -> LegacyForecaster:
        """Fit on training rows: legacy (n, 4), position (n,), occurrence (n,) 0/1, density (n,) %."""
        y = np.asarray(occurrence).astype(bool)
        if y.all() or not y.any():
            raise InputError(
                "the training cells hold only one class (all or no new failures); the "
                "forecaster needs both"
            )
        x = self._design(legacy, position, fit=True)
        self._occurrence = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
        self._density = PoissonRegressor(alpha=1e-4, max_iter=1000).fit(
            x[y], np.asarray(density, dtype=np.float64)[y]
        )
        return self

    def predict(self, legacy: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(occurrence), E[D | D > 0] in %) for rows legacy (n, 4), position (n,)."""
        x = self._design(legacy, position, fit=False)
        return self._occurrence.predict_proba(x)[:, 1], self._density.predict(x)


# --------------------------------------------------------------------------------------------
# rolling origin


def _check_record(density: np.ndarray) -> np.ndarray:
    d = np.asarray(density, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"density has shape {d.shape}; expected (period, cell)")
    if d.shape[0] < FIRST_FORECAST_PERIOD:
        raise InputError(
            f"the record holds {d.shape[0]} periods; a rolling forecast needs at least "
            f"{FIRST_FORECAST_PERIOD} (two to learn from, one to forecast)"
        )
    if np.isnan(d).any():
        raise InputError(
            "density holds NaN; pass only the cells with data in every period (GorkhaData.valid)"
        )
    if (d < 0).any():
        raise InputError("density holds negative values; new-failure density is >= 0 (% of cell)")
    return d


def forecast_period(density: np.ndarray, t: int, seed: int = 0) -> dict[str, tuple[Any, Any]]:
    """Forecasts of period ``t`` (0-based) by every model, trained on periods 0..t-1 only.

    density: (period, cell), % of the cell, no NaN. Only ``density[:t]`` is read. Returns
    {model: (P(occurrence), E[D | D > 0] %)}, each (cell,).
    """
    past = np.asarray(density, dtype=np.float64)[:t]
    # Features of period t use periods < t only, so the record up to t-1 plus an empty
    # placeholder for t gives them without touching period t.
    features = legacy_features(np.concatenate([past, np.zeros_like(past[:1])]))
    position = period_positions(t + 1)
    n_cells = past.shape[1]
    x_train = features[:t].reshape(-1, len(LEGACY_FEATURE_NAMES))
    pos_train = np.repeat(position[:t], n_cells)
    occ_train = (past > 0).reshape(-1)
    dens_train = past.reshape(-1)
    pos_test = np.full(n_cells, position[t])
    baselines = fit_baselines(x_train, occ_train, dens_train, seed=seed)
    out: dict[str, tuple[Any, Any]] = dict(predict_baselines(baselines, features[t]))
    for name, use_position in ((FORECASTER, True), (FORECASTER_NO_POSITION, False)):
        model = LegacyForecaster(use_position).fit(x_train, pos_train, occ_train, dens_train)
        out[name] = model.predict(features[t], pos_test)
    return out


def shift_to_level(p: np.ndarray, level: float) -> np.ndarray:
    """Probabilities with every logit shifted by one constant so that their mean is ``level``
    (0 < level < 1): the forecast as it would be had the period's level been known. Ranking is
    unchanged. Bisection on the shift, to 1e-10 in the mean."""
    if not 0 < level < 1:
        raise InputError(f"level {level} must lie strictly between 0 and 1")
    logit = np.log(np.clip(p, 1e-12, 1 - 1e-12)) - np.log1p(-np.clip(p, 1e-12, 1 - 1e-12))
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 1 / (1 + np.exp(-(logit + (lo + hi) / 2)))


def score_forecast(observed: np.ndarray, p: np.ndarray, e_density: np.ndarray) -> dict[str, float]:
    """AUC (and its standard error), PR-AUC, Brier, ECE (``metrics``), mean predicted vs
    observed occurrence, hazard r, and the diagnostic ``ece_level_known``: the ECE of
    :func:`shift_to_level` at the observed prevalence (what is left when the level is known;
    it reads the period's labels, so it is not a forecast score)."""
    y = np.asarray(observed) > 0
    occ = occurrence_metrics(y, p, threshold=_CUT, n_bins=N_BINS_DEFAULT)
    rate = float(np.mean(y))
    level_known = (
        expected_calibration_error(y, shift_to_level(np.asarray(p), rate), N_BINS_DEFAULT)
        if 0 < rate < 1
        else math.nan
    )
    hazard = np.asarray(p) * np.asarray(e_density)
    return {
        "auc": occ["auc"],
        "auc_se": auc_standard_error(occ["auc"], occ["n_positive"], occ["n"] - occ["n_positive"]),
        "pr_auc": occ["pr_auc"],
        "brier": occ["brier"],
        "ece": occ["ece"],
        "ece_level_known": level_known,
        "mean_predicted": float(np.mean(p)),
        "observed_rate": float(np.mean(y)),
        "hazard_r": pearson_r(observed, hazard),
        "mean_hazard": float(np.mean(hazard)),
        "mean_density": float(np.mean(observed)),
    }


def rolling_forecast(
    density: np.ndarray, period_names: Sequence[str], seed: int = 0
) -> dict[str, Any]:
    """Rolling-origin forecasts of periods FIRST_FORECAST_PERIOD.. (1-based) with their scores.

    density: (period, cell), % of the cell, no NaN. Returns {"periods": [{"index" (0-based),
    "name", "scores": {model: score_forecast(...)}, "history_fraction_auc"}], "pooled": {model:
    scores of all forecast cells}, "reliability": {"y": labels, model: probabilities}}.
    """
    d = _check_record(density)
    if len(period_names) != d.shape[0]:
        raise InputError(f"{len(period_names)} period names for {d.shape[0]} periods")
    features = legacy_features(d)
    periods = []
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in MODELS}
    pooled_e: dict[str, list[np.ndarray]] = {m: [] for m in MODELS}
    for t in range(FIRST_FORECAST_PERIOD - 1, d.shape[0]):
        forecasts = forecast_period(d, t, seed=seed)
        scores = {m: score_forecast(d[t], *forecasts[m]) for m in MODELS}
        for m in MODELS:
            pooled[m].append(forecasts[m][0])
            pooled_e[m].append(forecasts[m][1])
        periods.append(
            {
                "index": t,
                "name": period_names[t],
                "scores": scores,
                "history_fraction_auc": roc_auc(d[t] > 0, features[t, :, 2]),
            }
        )
    observed = d[FIRST_FORECAST_PERIOD - 1 :].reshape(-1)
    return {
        "periods": periods,
        "pooled": {
            m: score_forecast(observed, np.concatenate(pooled[m]), np.concatenate(pooled_e[m]))
            for m in MODELS
        },
        "reliability": {"y": observed > 0, **{m: np.concatenate(pooled[m]) for m in MODELS}},
    }


def paper_scores(
    observed: np.ndarray, susceptibility: np.ndarray, predicted_density: np.ndarray
) -> list[dict[str, float]]:
    """The paper's own (in-sample) scores per period, (period, cell) arrays, same definitions."""
    return [
        score_forecast(observed[t], susceptibility[t], predicted_density[t])
        for t in range(observed.shape[0])
    ]


# --------------------------------------------------------------------------------------------
# the report


def real_forecast_report(data_dir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Load the real record (``realdata.load_gorkha``), forecast, and score the paper beside it."""
    from ..realdata import load_gorkha

    g = load_gorkha(data_dir)
    valid = g.valid
    observed = g.observed_density[:, valid].astype(np.float64)
    result = rolling_forecast(observed, g.period_names, seed=seed)
    result["paper"] = paper_scores(
        observed,
        g.predicted_susceptibility[:, valid].astype(np.float64),
        g.predicted_density[:, valid].astype(np.float64),
    )
    result["n_cells"] = int(valid.sum())
    result["period_names"] = list(g.period_names)
    result["prevalence"] = [float(np.mean(observed[t] > 0)) for t in range(observed.shape[0])]
    result["seed"] = seed
    return result


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from its value and class counts; NaN
    when the AUC is undefined (one class)."""
    if not math.isfinite(auc) or n_positive < 1 or n_negative < 1:
        return math.nan
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (
        auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)
    ) / (n_positive * n_negative)
    return math.sqrt(var)
