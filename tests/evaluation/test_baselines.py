"""Per-cell baselines: features against hand-computed statistics, models against an oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from landslide_hazard.bands import DYNAMIC_NAMES, STATIC_NAMES
from landslide_hazard.evaluation.baselines import (
    _nan_percentiles,
    cell_feature_names,
    cell_features,
    cell_statistics,
    fit_baselines,
    predict_baselines,
)


def test_cell_statistics_hand_computed():
    band = np.array(
        [
            [1.0, 2.0, 5.0, 5.0],
            [3.0, 4.0, 5.0, np.nan],
        ]
    )
    stats = cell_statistics(band, 2)
    assert stats.shape == (1, 2, 4)
    # cell 0: 1 2 3 4 -> mean 2.5, std sqrt(1.25), p10 = 1 + 0.3 * 1, p90 = 3 + 0.7 * 1
    np.testing.assert_allclose(stats[0, 0], [2.5, np.sqrt(1.25), 1.3, 3.7])
    # cell 1: 5 5 5 (NaN ignored)
    np.testing.assert_allclose(stats[0, 1], [5.0, 0.0, 5.0, 5.0])


def test_cell_statistics_match_numpy_nan_functions():
    rng = np.random.default_rng(0)
    k = 4
    band = rng.normal(100, 30, (3 * k, 5 * k))
    band[rng.uniform(size=band.shape) < 0.2] = np.nan
    band[0:k, 0:k] = np.nan  # an empty cell
    stats = cell_statistics(band, k)
    for cy in range(3):
        for cx in range(5):
            block = band[cy * k : (cy + 1) * k, cx * k : (cx + 1) * k].ravel()
            if cy == 0 and cx == 0:
                assert np.all(np.isnan(stats[cy, cx]))
                continue
            expected = [
                np.nanmean(block),
                np.nanstd(block),
                np.nanpercentile(block, 10),
                np.nanpercentile(block, 90),
            ]
            np.testing.assert_allclose(stats[cy, cx], expected, rtol=1e-12)


def test_nan_percentiles_match_numpy():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(7, 13))
    values[rng.uniform(size=values.shape) < 0.3] = np.nan
    values[2, :12] = np.nan  # a single finite value
    values[2, 12] = 0.25
    ours = _nan_percentiles(values, (0, 10, 37.5, 90, 100))
    expected = np.nanpercentile(values, [0, 10, 37.5, 90, 100], axis=-1).T
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_cell_features_layout():
    rng = np.random.default_rng(1)
    k, cy, cx, periods = 2, 2, 3, 3
    static = rng.normal(size=(len(STATIC_NAMES), cy * k, cx * k))
    dynamic = rng.normal(size=(periods, len(DYNAMIC_NAMES), cy, cx))
    monsoons = np.array([0, 1, 1])
    features, names = cell_features(static, dynamic, monsoons, k)
    assert names == cell_feature_names()
    assert features.shape == (periods, cy, cx, len(names)) == (3, 2, 3, 8 * 4 + 4 + 1)
    col = names.index("slope_p90")
    block = static[1, 2:4, 4:6].ravel()
    expected = np.percentile(block, 90)
    np.testing.assert_allclose(features[:, 1, 2, col], expected)
    col = names.index("twi_std")
    np.testing.assert_allclose(features[2, 0, 1, col], np.std(static[6, 0:2, 2:4]))
    np.testing.assert_array_equal(features[:, 1, 0, names.index("pga_max")], dynamic[:, 2, 1, 0])
    np.testing.assert_array_equal(features[:, 0, 0, -1], monsoons)
    assert names[-1] == "monsoons_since_eq"


def test_cell_features_reject_mismatched_grids():
    static = np.zeros((len(STATIC_NAMES), 6, 6))
    dynamic = np.zeros((2, len(DYNAMIC_NAMES), 2, 2))
    with pytest.raises(ValueError, match="same grid"):
        cell_features(static, dynamic, np.zeros(2), 2)
    with pytest.raises(ValueError, match="monsoons"):
        cell_features(static, np.zeros((2, 4, 3, 3)), np.zeros(3), 2)
    with pytest.raises(ValueError, match="static has shape"):
        cell_features(static[:3], dynamic, np.zeros(2), 3)


def _synthetic_table(n: int, seed: int):
    """Occurrence is logistic in feature 0 only; E[D | D > 0] = exp(0.5 + 0.4 x1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    p_true = 1 / (1 + np.exp(-(-2.0 + 1.5 * x[:, 0])))
    occ = rng.uniform(size=n) < p_true
    mean_d = np.exp(0.5 + 0.4 * x[:, 1])
    density = np.where(occ, rng.gamma(4.0, mean_d / 4.0), 0.0)
    return x, occ, density, p_true, mean_d


def test_logistic_regression_recovers_a_logistic_occurrence():
    x, occ, density, _, _ = _synthetic_table(20_000, seed=0)
    xt, occ_t, _, p_t, mean_d_t = _synthetic_table(20_000, seed=1)
    models = fit_baselines(x, occ, density, seed=0)
    preds = predict_baselines(models, xt)
    oracle_auc = roc_auc_score(occ_t, p_t)
    for name in ("logistic_regression", "gradient_boosting"):
        p, dens = preds[name]
        assert p.shape == dens.shape == (20_000,)
        auc = roc_auc_score(occ_t, p)
        assert auc == pytest.approx(oracle_auc, abs=0.01 if name == "logistic_regression" else 0.02)
    # the logistic model is the truth's family: its probabilities match the true ones
    p_lr = preds["logistic_regression"][0]
    assert np.max(np.abs(p_lr - p_t)) < 0.05
    scaler = models["logistic_regression"].named_steps["standardscaler"]
    coef = models["logistic_regression"].named_steps["logisticregression"].coef_[0] / scaler.scale_
    assert coef[0] == pytest.approx(1.5, rel=0.08)
    assert np.all(np.abs(coef[1:]) < 0.1)
    # density given occurrence: close to the true conditional mean, positive
    dens = preds["logistic_regression"][1]
    assert np.all(dens > 0)
    assert spearmanr(dens, mean_d_t).statistic > 0.9
    assert np.median(np.abs(dens - mean_d_t) / mean_d_t) < 0.1


def test_predict_keeps_the_cube_shape_and_nan_cells():
    x, occ, density, _, _ = _synthetic_table(3_000, seed=2)
    models = fit_baselines(x.reshape(3, 10, 100, 4), occ.reshape(3, 10, 100), density, seed=3)
    grid = np.random.default_rng(4).normal(size=(2, 5, 6, 4))
    grid[1, 2, 3] = np.nan
    grid[0, 0, 0, 2] = np.nan  # partially missing: imputed / handled natively
    preds = predict_baselines(models, grid)
    for p, dens in preds.values():
        assert p.shape == dens.shape == (2, 5, 6)
        assert np.isnan(p[1, 2, 3]) and np.isnan(dens[1, 2, 3])
        assert np.isfinite(p[0, 0, 0]) and np.isfinite(dens[0, 0, 0])
        assert np.all((p[np.isfinite(p)] >= 0) & (p[np.isfinite(p)] <= 1))
    with pytest.raises(ValueError, match="columns"):
        predict_baselines(models, grid[..., :3])


def test_fit_is_deterministic_and_checks_its_inputs():
    x, occ, density, _, _ = _synthetic_table(2_000, seed=6)
    a = predict_baselines(fit_baselines(x, occ, density, seed=1), x)
    b = predict_baselines(fit_baselines(x, occ, density, seed=1), x)
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0])
        np.testing.assert_array_equal(a[name][1], b[name][1])
    with pytest.raises(ValueError, match="one class"):
        fit_baselines(x, np.zeros(2_000), density)
    with pytest.raises(ValueError, match="same cells"):
        fit_baselines(x, occ[:10], density)
