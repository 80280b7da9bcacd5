"""Calibration: recovery of a known miscalibration, references (sklearn, brute force), JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from landslide_hazard.evaluation.calibration import (
    CALIBRATION_KINDS,
    IdentityCalibration,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    binary_nll,
    calibration_scores,
    calibrator_from_dict,
    evaluate_calibration,
    fit_calibrator,
    load_calibrator,
    logit,
    save_calibrator,
)
from landslide_hazard.evaluation.metrics import (
    expected_calibration_error,
    occurrence_metrics,
    roc_auc,
)

N = 20_000


def draws(seed: int, n: int = N, sharpen: float = 2.0, shift: float = 0.0):
    """Labels from true P = sigmoid(z); the model reports sigmoid(sharpen * z + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < expit(z)).astype("float64")
    return expit(sharpen * z + shift), y, expit(z)


@pytest.fixture(scope="module")
def overconfident():
    """Validation and held-out test draws of a model reporting sigmoid(2 logit(p))."""
    return draws(1), draws(2)


def test_temperature_recovers_t2_and_ece_below_target(overconfident):
    (p_val, y_val, _), (p_test, y_test, p_true_test) = overconfident
    cal = TemperatureScaling().fit(p_val, y_val)
    assert cal.temperature == pytest.approx(2.0, abs=0.1)
    assert cal.nll_after < cal.nll_before
    ece_before = expected_calibration_error(y_test, p_test)
    ece_after = expected_calibration_error(y_test, cal.transform(p_test))
    assert ece_before > 0.06  # the miscalibration is real
    assert ece_after < 0.03  # the target, on held-out draws
    # the truth itself scores about the same: we are at the sampling-noise floor
    assert ece_after < expected_calibration_error(y_test, p_true_test) + 0.01


def test_temperature_recovers_underconfidence():
    p, y, _ = draws(3, sharpen=0.5)
    assert TemperatureScaling().fit(p, y).temperature == pytest.approx(0.5, abs=0.03)


def test_temperature_is_the_nll_minimum_of_a_brute_force_grid(overconfident):
    p, y, _ = draws(7, n=4000)
    cal = TemperatureScaling().fit(p, y)
    grid = np.linspace(1.0, 3.0, 801)
    nll = [binary_nll(y, logit(p) / t) for t in grid]
    assert cal.temperature == pytest.approx(grid[int(np.argmin(nll))], abs=3e-3)
    assert cal.nll_after <= min(nll) + 1e-12


def test_platt_matches_sklearn_unregularised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    p, y, _ = draws(4, n=5000, sharpen=1.5, shift=1.2)
    cal = PlattScaling().fit(p, y)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
    ref.fit(logit(p)[:, None], y)
    assert cal.slope == pytest.approx(ref.coef_[0, 0], abs=1e-4)
    assert cal.intercept == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_platt_fixes_a_base_rate_shift_that_temperature_cannot():
    # a class-weighted loss (positives x5) shifts every logit by +ln 5
    (p_val, y_val, _), (p_test, y_test, _) = draws(5, shift=math.log(5), sharpen=1.0), draws(6)
    p_test = expit(logit(p_test) / 2 + math.log(5))  # same model on held-out draws
    platt = PlattScaling().fit(p_val, y_val)
    assert platt.slope == pytest.approx(1.0, abs=0.06)
    assert platt.intercept == pytest.approx(-math.log(5), abs=0.08)
    temp = TemperatureScaling().fit(p_val, y_val)
    ece_platt = expected_calibration_error(y_test, platt.transform(p_test))
    ece_temp = expected_calibration_error(y_test, temp.transform(p_test))
    assert ece_platt < 0.03 < ece_temp


def test_isotonic_is_monotone_matches_sklearn_and_reduces_ece(overconfident):
    from sklearn.isotonic import IsotonicRegression

    (p_val, y_val, _), (p_test, y_test, _) = overconfident
    cal = IsotonicCalibration().fit(p_val, y_val)
    grid = np.linspace(0, 1, 5001)
    out = cal.transform(grid)
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() <= 1
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p_val, y_val)
    np.testing.assert_allclose(cal.transform(p_test), ref.predict(p_test), atol=1e-12)
    ece_before = expected_calibration_error(y_test, p_test)
    ece_after = expected_calibration_error(y_test, cal.transform(p_test))
    assert ece_after < 0.03 < ece_before


@pytest.mark.parametrize("kind", CALIBRATION_KINDS)
def test_json_round_trip(kind, overconfident, tmp_path):
    p, y, _ = overconfident[0]
    cal = fit_calibrator(kind, p, y)
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["kind"] == kind and d["n_fit"] == p.size and d["n_positive_fit"] == int(y.sum())
    again = calibrator_from_dict(d)
    assert type(again) is type(cal)
    probe = np.linspace(0, 1, 1001)
    np.testing.assert_array_equal(again.transform(probe), cal.transform(probe))
    path = save_calibrator(tmp_path / "calibration.json", cal)
    np.testing.assert_array_equal(load_calibrator(path).transform(probe), cal.transform(probe))


def test_nan_safe_fit_and_transform(overconfident):
    p, y, _ = overconfident[0]
    p_nan, y_nan = p.copy(), y.copy()
    p_nan[::7] = np.nan
    y_nan[3::11] = np.nan
    keep = np.isfinite(p_nan) & np.isfinite(y_nan)
    for kind in ("temperature", "platt", "isotonic"):
        a = fit_calibrator(kind, p_nan, y_nan)
        b = fit_calibrator(kind, p[keep], y[keep])
        assert a.to_dict() == b.to_dict()
    # a (period, y, x) map keeps its shape and its NaN cells
    maps = p[:24].reshape(2, 3, 4).copy()
    maps[0, 1, 2] = np.nan
    out = TemperatureScaling(2.0).fit(p, y).transform(maps)
    assert out.shape == maps.shape
    assert np.isnan(out[0, 1, 2]) and np.isfinite(np.delete(out.ravel(), 6)).all()


def test_saturated_probabilities_stay_finite():
    cal = TemperatureScaling()
    cal.fit(np.array([0.0, 1.0, 0.2, 0.9, 0.6]), np.array([0, 1, 0, 1, 0]))
    out = cal.transform(np.array([0.0, 1.0, 0.5]))
    assert np.isfinite(out).all()
    assert out[2] == pytest.approx(0.5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        fit_calibrator("temperature", [0.2, 1.7], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        fit_calibrator("platt", [0.2, 0.7], [0, 2])
    with pytest.raises(ValueError, match="both occurrences and non-occurrences"):
        fit_calibrator("isotonic", [0.2, 0.7, 0.1], [0, 0, 0])
    with pytest.raises(ValueError, match="no validation cell"):
        fit_calibrator("temperature", [np.nan, 0.3], [1, np.nan])
    with pytest.raises(ValueError, match="one of none, temperature, platt, isotonic"):
        fit_calibrator("beta", [0.2, 0.7], [0, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform([0.3])
    with pytest.raises(ValueError, match="kind 'platt' given to TemperatureScaling"):
        TemperatureScaling.from_dict({"kind": "platt", "slope": 1.0, "intercept": 0.0})


def test_identity_accepts_one_class_and_changes_nothing():
    cal = fit_calibrator("none", [0.1, 0.4, np.nan], [0, 0, 1])
    assert isinstance(cal, IdentityCalibration)
    np.testing.assert_array_equal(cal.transform([0.1, np.nan, 1.0]), [0.1, np.nan, 1.0])


@settings(max_examples=40, deadline=None)
@given(
    t=st.floats(0.05, 20.0),
    a=st.floats(0.05, 5.0),
    b=st.floats(-5.0, 5.0),
    p=st.lists(st.floats(1e-6, 1 - 1e-6), min_size=2, max_size=50),
)
def test_parametric_calibrators_keep_the_ranking(t, a, b, p):
    p = np.array(p)
    y = (np.arange(p.size) % 2).astype(float)
    for cal in (TemperatureScaling(t), PlattScaling(a, b)):
        out = cal.transform(p)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(out[order]) >= -1e-15)
        if np.unique(out).size == np.unique(p).size:
            assert roc_auc(y, out) == pytest.approx(roc_auc(y, p))
    assert TemperatureScaling(t).transform(np.array([0.5]))[0] == pytest.approx(0.5)


def test_evaluate_calibration_report_matches_the_metrics_module(overconfident):
    (p_val, y_val, _), (p_test, y_test, _) = overconfident
    p_test = p_test.copy()
    p_test[:10] = np.nan
    cal, report = evaluate_calibration("temperature", p_val, y_val, p_test, y_test)
    json.dumps(report)  # JSON-ready
    assert report["calibrator"] == cal.to_dict()
    before, after = report["test"]["before"], report["test"]["after"]
    ref = occurrence_metrics(y_test, p_test, threshold=0.5)
    assert before["n"] == ref["n"] == N - 10
    for key in ("ece", "brier", "auc"):
        assert before[key] == pytest.approx(ref[key], rel=1e-12)
    ref_after = occurrence_metrics(y_test, cal.transform(p_test), threshold=0.5)
    assert after["ece"] == pytest.approx(ref_after["ece"], rel=1e-12)
    assert after["ece"] < 0.03 < before["ece"]
    assert after["brier"] < before["brier"] and after["nll"] < before["nll"]
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-12)  # ranking kept
    assert abs(after["mean_predicted"] - after["prevalence"]) < 0.01
    assert report["validation"]["after"]["nll"] == pytest.approx(cal.nll_after, rel=1e-9)
    # a hand case: p = (0.2, 0.8), y = (0, 1) -> Brier 0.04, NLL -ln 0.8
    s = calibration_scores([0, 1], [0.2, 0.8])
    assert s["brier"] == pytest.approx(0.04) and s["nll"] == pytest.approx(-math.log(0.8))
