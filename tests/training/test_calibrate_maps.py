"""The model-free calibration the ENN's maps and, in ``validate``, the baselines' get."""

from types import SimpleNamespace

import numpy as np
import pytest

from landslide_hazard.training.calibrate import apply_map_calibration, fit_map_calibration


def _scenario(seed=0, shape=(3, 60, 60)):
    """Maps whose level is off by period (probabilities and densities), a split with training,
    validation and test cells in every period, and observations drawn from the true maps."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.5, 1.0, shape)
    p_true = 1 / (1 + np.exp(-z))
    occurs = rng.random(shape) < p_true
    d_true = np.exp(rng.normal(0.0, 0.3, shape)) * np.array([3.0, 1.0, 0.5])[:, None, None]
    observed = np.where(occurs, d_true * rng.lognormal(-0.18, 0.6, shape), 0.0)
    # the model ranks well but misses each period's level: logits off by +-1, densities x2 / x0.5
    p_model = 1 / (1 + np.exp(-(z + np.array([1.0, -1.0, 0.5])[:, None, None])))
    d_model = d_true * np.array([0.5, 2.0, 1.0])[:, None, None]
    cols = np.arange(shape[2])[None, None, :].repeat(shape[1], 1).repeat(shape[0], 0)
    split = SimpleNamespace(train_cells=cols < 30, val_cells=(cols >= 30) & (cols < 45))
    return p_model, d_model, observed, split, cols >= 45


def test_map_calibration_sets_each_periods_levels_from_training_and_validation_cells():
    p, d, observed, split, test = _scenario()
    names = ["a", "b", "c"]
    report = fit_map_calibration(p, d, observed, split, names, 0.0, 10)
    assert report["slope"] is not None and sorted(report["period_shifts"]) == names
    pc, dc = apply_map_calibration(report, p, d, names)
    fit = split.train_cells | split.val_cells
    for t in range(3):
        prevalence = float((observed[t][fit[t]] > 0).mean())
        assert pc[t][fit[t]].mean() == pytest.approx(prevalence, abs=0.01)  # 2,700 cells
        positive = fit[t] & (observed[t] > 0)
        mean_obs = observed[t][positive].mean()
        assert dc[t][positive].mean() == pytest.approx(mean_obs, rel=0.1)  # drawn a bit to 1
        # held-out cells: the levels carry over (they were drawn from the same maps)
        held = test[t] & (observed[t] > 0)
        assert dc[t][held].mean() == pytest.approx(observed[t][held].mean(), rel=0.25)
    # the raw densities were off by x0.5 / x2: the fitted factors undo most of it
    factors = report["period_density_factors"]
    assert factors["a"] > 1.6 and factors["b"] < 0.6
    # test cells never enter the fit
    spoilt = observed.copy()
    spoilt[np.broadcast_to(test, spoilt.shape)] = 99.0
    again = fit_map_calibration(p, d, spoilt, split, names, 0.0, 10)
    assert again["period_shifts"] == report["period_shifts"]
    assert again["period_density_factors"] == report["period_density_factors"]


def test_map_calibration_leaves_the_maps_when_nothing_can_be_fitted():
    p, d, observed, split, _ = _scenario()
    no_events = np.where(split.val_cells, 0.0, observed)  # one class on validation cells
    report = fit_map_calibration(p, d, no_events, split, ["a", "b", "c"], 0.0, 10)
    assert report["slope"] is None and "single class" in report["note"]
    pc, dc = apply_map_calibration(report, p, d, ["a", "b", "c"])
    assert pc is p and dc is d
