"""Per-cell baselines: summary features of each cell into scikit-learn models (DESIGN section 5).

The ENN reads each cell's 32 x 32 pixels; the traditional alternative (paper Sect. 6.1: "summary
statistics such as the mean and standard deviation") summarises them. Here:

- ``cell_features``: mean, std, p10 and p90 of every static band over each cell, plus the cell's
  dynamic bands and the monsoon count of the period -> a (period, cy, cx, n_features) table;
- ``fit_baselines``: a standardised logistic regression and a histogram gradient-boosting
  classifier for occurrence, and a gradient-boosting regressor for the density of positive cells,
  E[D | D > 0] (Poisson loss: a positive conditional-mean estimate);
- ``predict_baselines``: per model, (P(occurrence), E[D | D > 0]); hazard = their product.

Pure numpy / scikit-learn; cells whose features are all NaN (outside the study mask) predict NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..bands import DYNAMIC_NAMES, SCALAR_NAMES, STATIC_NAMES

CELL_STATISTICS: tuple[str, ...] = ("mean", "std", "p10", "p90")
OCCURRENCE_MODELS: tuple[str, ...] = ("logistic_regression", "gradient_boosting")
DENSITY_MODEL = "density_gradient_boosting"

_CELL_ROWS_PER_CHUNK = 16  # bounds memory: one chunk holds 16 x cx x k*k float64 values


def cell_feature_names(
    static_names: Sequence[str] = STATIC_NAMES,
    dynamic_names: Sequence[str] = DYNAMIC_NAMES,
) -> list[str]:
    """Names of the ``cell_features`` columns, in order: ``<band>_<stat>``, dynamic, monsoons."""
    names = [f"{band}_{stat}" for band in static_names for stat in CELL_STATISTICS]
    return names + list(dynamic_names) + list(SCALAR_NAMES)


def _nan_percentiles(values: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """NaN-ignoring percentiles along the last axis, numpy's default 'linear' method.

    Vectorised (np.nanpercentile loops in Python over rows that hold NaN). Rows with no finite
    value give NaN. Returns shape values.shape[:-1] + (len(percentiles),).
    """
    ordered = np.sort(values, axis=-1)  # NaN sorts to the end
    n_valid = np.isfinite(values).sum(axis=-1)
    out = np.full(values.shape[:-1] + (len(percentiles),), np.nan)
    has = n_valid > 0
    last = np.maximum(n_valid - 1, 0)
    for i, q in enumerate(percentiles):
        pos = last * (q / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        a = np.take_along_axis(ordered, lo[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(ordered, hi[..., None], axis=-1)[..., 0]
        frac = pos - lo
        out[..., i] = np.where(has, a + frac * (b - a), np.nan)
    return out


def cell_statistics(band: np.ndarray, cell_pixels: int) -> np.ndarray:
    """Mean, std (population, ddof 0), p10, p90 of one fine-grid band over each cell, NaN ignored.

    band: (cy*k, cx*k) in the band's unit. Returns (cy, cx, 4) float64 in the same unit; cells
    with no finite pixel are NaN.
    """
    k = cell_pixels
    h, w = band.shape
    if h % k or w % k:
        raise ValueError(
            f"a fine band of {h} x {w} px is not a whole number of {k}-px cells; "
            "crop or pad the static bands to the cell grid"
        )
    cy, cx = h // k, w // k
    out = np.empty((cy, cx, len(CELL_STATISTICS)))
    for r0 in range(0, cy, _CELL_ROWS_PER_CHUNK):
        r1 = min(cy, r0 + _CELL_ROWS_PER_CHUNK)
        blocks = np.asarray(band[r0 * k : r1 * k], dtype=np.float64)
        blocks = blocks.reshape(r1 - r0, k, cx, k).transpose(0, 2, 1, 3).reshape(r1 - r0, cx, k * k)
        finite = np.isfinite(blocks)
        n = finite.sum(axis=-1)
        safe_n = np.maximum(n, 1)
        mean = np.where(finite, blocks, 0.0).sum(axis=-1) / safe_n
        var = np.where(finite, (blocks - mean[..., None]) ** 2, 0.0).sum(axis=-1) / safe_n
        empty = n == 0
        out[r0:r1, :, 0] = np.where(empty, np.nan, mean)
        out[r0:r1, :, 1] = np.where(empty, np.nan, np.sqrt(var))
        out[r0:r1, :, 2:] = _nan_percentiles(blocks, (10.0, 90.0))
    return out


def cell_features(
    static: np.ndarray,
    dynamic: np.ndarray,
    monsoons: np.ndarray,
    cell_pixels: int,
    static_names: Sequence[str] = STATIC_NAMES,
    dynamic_names: Sequence[str] = DYNAMIC_NAMES,
) -> tuple[np.ndarray, list[str]]:
    """The per-cell feature table of every period.

    Args:
        static: (band, cy*k, cx*k) fine-grid static predictors (cube ``static``), NaN = no data.
        dynamic: (period, band, cy, cx) cell-grid trigger predictors (cube ``dynamic``).
        monsoons: (period,) monsoon seasons since the earthquake.
        cell_pixels: k, fine pixels per cell side.
    Returns:
        features (period, cy, cx, n_features) float64 and the feature names
        (``cell_feature_names``): 4 statistics per static band, the dynamic bands, the monsoons.
    """
    static = np.asarray(static)
    dynamic = np.asarray(dynamic)
    monsoons = np.asarray(monsoons, dtype=np.float64)
    if static.ndim != 3 or static.shape[0] != len(static_names):
        raise ValueError(
            f"static has shape {static.shape}; expected ({len(static_names)}, y, x) "
            f"for bands {list(static_names)}"
        )
    if dynamic.ndim != 4 or dynamic.shape[1] != len(dynamic_names):
        raise ValueError(
            f"dynamic has shape {dynamic.shape}; expected (period, {len(dynamic_names)}, cy, cx) "
            f"for bands {list(dynamic_names)}"
        )
    n_periods, _, cy, cx = dynamic.shape
    k = cell_pixels
    if static.shape[1:] != (cy * k, cx * k):
        raise ValueError(
            f"static is {static.shape[1]} x {static.shape[2]} px but the dynamic cell grid is "
            f"{cy} x {cx} cells of {k} px ({cy * k} x {cx * k} px); they must cover the same grid"
        )
    if monsoons.shape != (n_periods,):
        raise ValueError(f"monsoons has shape {monsoons.shape}; expected ({n_periods},)")
    names = cell_feature_names(static_names, dynamic_names)
    static_feats = np.concatenate([cell_statistics(band, k) for band in static], axis=-1)
    features = np.empty((n_periods, cy, cx, len(names)))
    n_static = static_feats.shape[-1]
    features[..., :n_static] = static_feats[None]
    features[..., n_static : n_static + dynamic.shape[1]] = np.moveaxis(dynamic, 1, -1)
    features[..., -1] = monsoons[:, None, None]
    return features, names


def _as_table(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim < 2:
        raise ValueError(f"features must be (..., n_features), got shape {features.shape}")
    return features.reshape(-1, features.shape[-1])


def fit_baselines(
    features_train: np.ndarray,
    y_occurrence_train: np.ndarray,
    density_train: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the occurrence classifiers and the density-given-occurrence regressor.

    Args:
        features_train: (..., n_features) training cells (e.g. from ``cell_features``).
        y_occurrence_train: (...) occurrence 0/1 (bool or float; NaN rows are skipped).
        density_train: (...) new failed density, % of cell area; only cells with occurrence and
            a finite density > 0 train the regressor, which estimates E[D | D > 0].
        seed: random state of the gradient-boosting models (their early-stopping split).
    Returns:
        {"logistic_regression": pipeline, "gradient_boosting": classifier,
        "density_gradient_boosting": regressor, "n_features": int}.
    """
    x = _as_table(features_train)
    occ = np.asarray(y_occurrence_train, dtype=np.float64).reshape(-1)
    dens = np.asarray(density_train, dtype=np.float64).reshape(-1)
    if occ.size != x.shape[0] or dens.size != x.shape[0]:
        raise ValueError(
            f"{x.shape[0]} feature rows but {occ.size} occurrence and {dens.size} density values; "
            "pass arrays over the same cells"
        )
    rows = np.isfinite(occ) & ~np.all(np.isnan(x), axis=1)
    y = occ[rows] > 0.5
    if y.all() or not y.any():
        raise ValueError(
            "the training cells hold only one class (all or no landslides); "
            "a baseline needs both occurrences and non-occurrences"
        )
    positive = rows & (occ > 0.5) & np.isfinite(dens) & (dens > 0)
    if positive.sum() < 2:
        raise ValueError(
            f"only {int(positive.sum())} training cells have a positive density; "
            "the density baseline needs at least 2"
        )
    logistic = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    )
    logistic.fit(x[rows], y)
    boosting = HistGradientBoostingClassifier(early_stopping=True, random_state=seed)
    boosting.fit(x[rows], y)
    density = HistGradientBoostingRegressor(loss="poisson", early_stopping=True, random_state=seed)
    density.fit(x[positive], dens[positive])
    return {
        "logistic_regression": logistic,
        "gradient_boosting": boosting,
        DENSITY_MODEL: density,
        "n_features": x.shape[1],
    }


def predict_baselines(
    models: dict[str, Any], features: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per occurrence model: (P(occurrence), E[D | D > 0] in % of the cell), each features.shape[:-1].

    Both models share the density regressor; their hazard is ``p * density``. Rows whose features
    are all NaN give NaN.
    """
    features = np.asarray(features, dtype=np.float64)
    x = _as_table(features)
    if x.shape[1] != models["n_features"]:
        raise ValueError(
            f"features have {x.shape[1]} columns but the baselines were fitted on "
            f"{models['n_features']}; build them with the same bands"
        )
    shape = features.shape[:-1]
    rows = ~np.all(np.isnan(x), axis=1)
    density = np.full(x.shape[0], np.nan)
    if rows.any():
        density[rows] = models[DENSITY_MODEL].predict(x[rows])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in OCCURRENCE_MODELS:
        model: Pipeline | HistGradientBoostingClassifier = models[name]
        p = np.full(x.shape[0], np.nan)
        if rows.any():
            p[rows] = model.predict_proba(x[rows])[:, 1]
        out[name] = (p.reshape(shape), density.reshape(shape).copy())
    return out
