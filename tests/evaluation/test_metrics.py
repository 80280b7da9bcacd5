"""Metrics against independent references: scikit-learn, scipy and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr, spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from landslide_hazard.evaluation.metrics import (
    average_precision,
    best_f1_threshold,
    density_metrics,
    expected_calibration_error,
    occurrence_metrics,
    pr_curve_points,
    reliability_curve,
    roc_curve_points,
    skill,
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # deterministic: the same examples on every run
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def labelled_scores(draw, min_size: int = 2, max_size: int = 120):
    """Both classes present; scores with many ties (few distinct levels) or continuous."""
    n = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = rng.random(n) < draw(st.floats(0.05, 0.95))
    y[0], y[1] = True, False
    if draw(st.booleans()):
        s = rng.integers(0, draw(st.integers(1, 6)) + 1, n) / 6.0  # ties, edges 0 and 1
    else:
        s = np.clip(rng.random(n) * 0.6 + 0.4 * y, 0, 1)
    return y.astype(int), s


@SETTINGS
@given(labelled_scores())
def test_ranking_scores_match_sklearn(data):
    y, s = data
    m = occurrence_metrics(y, s, threshold=0.5)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, s), abs=1e-12)


@SETTINGS
@given(labelled_scores(), st.sampled_from([0.0, 0.2, 0.5, 0.77, 1.0]))
def test_class_scores_match_sklearn(data, t):
    y, s = data
    pred = (s >= t).astype(int)
    m = occurrence_metrics(y, s, threshold=t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pred.sum() > 0:
            assert m["precision"] == pytest.approx(precision_score(y, pred), abs=1e-12)
        else:
            assert math.isnan(m["precision"])
        assert m["recall"] == pytest.approx(recall_score(y, pred), abs=1e-12)
        assert m["f1"] == pytest.approx(f1_score(y, pred), abs=1e-12)
        assert m["iou"] == pytest.approx(jaccard_score(y, pred), abs=1e-12)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == len(y)


@SETTINGS
@given(labelled_scores())
def test_best_f1_threshold_is_the_brute_force_maximum(data):
    y, s = data
    t = best_f1_threshold(y, s)
    best = max(f1_score(y, (s >= c).astype(int)) for c in np.unique(s))
    assert t in set(np.unique(s))
    assert f1_score(y, (s >= t).astype(int)) == pytest.approx(best, abs=1e-12)
    # ties go to the highest threshold
    higher = [c for c in np.unique(s) if c > t]
    assert all(f1_score(y, (s >= c).astype(int)) < best - 1e-12 for c in higher)
    m = occurrence_metrics(y, s)
    assert m["threshold"] == t and m["f1"] == pytest.approx(best)


@SETTINGS
@given(labelled_scores(), st.integers(1, 20))
def test_reliability_and_ece_match_sklearn_binning(data, n_bins):
    y, p = data
    curve = reliability_curve(y, p, n_bins)
    used = curve["count"] > 0
    frac_ref, mean_ref = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    np.testing.assert_allclose(curve["fraction_positive"][used], frac_ref, atol=1e-12)
    np.testing.assert_allclose(curve["mean_predicted"][used], mean_ref, atol=1e-12)
    # ECE by a direct loop over the same bins
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for k in range(n_bins):
        lo, hi = edges[k], edges[k + 1]
        inb = (p > lo) & (p <= hi) if k else (p >= lo) & (p <= hi)
        if inb.any():
            ece += inb.sum() / len(p) * abs(y[inb].mean() - p[inb].mean())
    assert expected_calibration_error(y, p, n_bins) == pytest.approx(ece, abs=1e-9)


@SETTINGS
@given(st.integers(3, 150), st.integers(0, 2**31 - 1), st.booleans())
def test_density_metrics_match_scipy(n, seed, ties):
    rng = np.random.default_rng(seed)
    obs = np.where(rng.random(n) < 0.4, rng.gamma(0.5, 2.0, n), 0.0)
    pred = 0.7 * obs + rng.random(n)
    if ties:
        pred = np.round(pred, 1)
    obs[0], obs[1], obs[2] = 0.0, 1.0, 2.5
    pred[1], pred[2] = 0.3, 2.0
    d = density_metrics(obs, pred)
    assert d["all"]["mae"] == pytest.approx(np.mean(np.abs(obs - pred)), abs=1e-12)
    assert d["all"]["pearson_r"] == pytest.approx(pearsonr(obs, pred)[0], abs=1e-9)
    assert d["all"]["spearman_r"] == pytest.approx(spearmanr(obs, pred)[0], abs=1e-9)
    pos = obs > 0
    assert d["positive"]["n"] == pos.sum()
    assert d["positive"]["mae"] == pytest.approx(np.mean(np.abs(obs[pos] - pred[pos])), abs=1e-12)
    if np.ptp(pred[pos]) > 0 and pos.sum() > 1:
        assert d["positive"]["pearson_r"] == pytest.approx(
            pearsonr(obs[pos], pred[pos])[0], abs=1e-9
        )


def test_hand_computed_case():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.6, 0.1, 0.3, 0.0])
    m = occurrence_metrics(y, p, threshold=0.5)
    # predicted positive: 0.9, 0.6, 0.6 -> TP 2, FP 1, FN 1, TN 2
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["iou"] == pytest.approx(2 / 4)
    # positives 0.9, 0.6, 0.3 vs negatives 0.6, 0.1, 0.0: 7.5 of 9 pairs ordered (one tie)
    assert m["auc"] == pytest.approx(7.5 / 9)
    assert m["soft_f1"] == pytest.approx(2 * (0.9 + 0.6 + 0.3) / (2.5 + 3))
    assert m["prevalence"] == 0.5 and m["n"] == 6


def test_curves_end_points_and_auc():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    s = np.round(rng.random(300) * 0.5 + 0.5 * y, 2)
    roc = roc_curve_points(y, s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, s))
    pr = pr_curve_points(y, s)
    assert pr["recall"][-1] == 1.0 and pr["precision"][-1] == pytest.approx(y.mean())
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_nan_cells_are_dropped():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    s = rng.random(200)
    y_nan, s_nan = y.copy(), s.copy()
    y_nan[:10] = np.nan
    s_nan[5:20] = np.nan
    keep = np.isfinite(y_nan) & np.isfinite(s_nan)
    m = occurrence_metrics(y_nan, s_nan, threshold=0.5)
    ref = occurrence_metrics(y[keep], s[keep], threshold=0.5)
    assert m["n"] == keep.sum() == 180 and m["n_dropped_nan"] == 20
    for key in ("auc", "pr_auc", "f1", "iou", "brier", "ece", "soft_f1"):
        assert m[key] == pytest.approx(ref[key])
    d = density_metrics(np.where(keep, y, np.nan), s)
    assert d["all"]["n"] == 180 and d["n_dropped_nan"] == 20


def test_all_negative_period_gives_nan_with_reason():
    y = np.zeros(50)
    s = np.linspace(0, 1, 50)
    m = occurrence_metrics(y, s)
    assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["threshold"])
    assert math.isnan(m["f1"]) and m["n_positive"] == 0
    assert any("no positive" in note for note in m["notes"])
    m = occurrence_metrics(y, s, threshold=0.5)
    assert m["fp"] == 25 and m["f1"] == 0.0 and m["iou"] == 0.0 and math.isnan(m["recall"])
    d = density_metrics(y, s)
    assert d["positive"]["n"] == 0 and math.isnan(d["positive"]["mae"])
    assert d["positive"]["notes"]


def test_single_class_and_constant_predictions():
    y = np.ones(20)
    m = occurrence_metrics(y, np.linspace(0, 1, 20), threshold=0.5)
    assert math.isnan(m["auc"]) and any("no negative" in n for n in m["notes"])
    y = np.array([0, 1] * 10)
    m = occurrence_metrics(y, np.full(20, 0.3))
    assert m["auc"] == 0.5 and any("constant prediction" in n for n in m["notes"])
    assert m["threshold"] == pytest.approx(0.3) and m["recall"] == 1.0
    d = density_metrics(np.arange(20.0), np.full(20, 2.0))
    assert math.isnan(d["all"]["pearson_r"]) and math.isnan(d["all"]["spearman_r"])
    assert any("constant" in n for n in d["all"]["notes"])
    assert d["all"]["mae"] == pytest.approx(np.mean(np.abs(np.arange(20.0) - 2)))


def test_empty_and_non_probability_inputs():
    m = occurrence_metrics(np.array([np.nan]), np.array([0.5]))
    assert m["n"] == 0 and math.isnan(m["auc"]) and m["notes"]
    m = occurrence_metrics(np.array([0, 1, 1]), np.array([0.0, 3.0, 5.0]), threshold=2.0)
    assert (
        m["f1"] == 1.0
        and math.isnan(m["brier"])
        and any("not probabilities" in n for n in m["notes"])
    )
    with pytest.raises(ValueError, match="0/1"):
        occurrence_metrics(np.array([0.0, 0.5]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="same shape"):
        occurrence_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_curve(np.array([0, 1]), np.array([0.5, 1.5]))


def test_skill():
    assert skill(0.8, 0.9) == pytest.approx(0.75)
    assert skill(0.9, 0.9) == 1.0
    assert math.isnan(skill(0.8, 0.5)) and math.isnan(skill(float("nan"), 0.9))
