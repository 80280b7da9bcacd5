"""Area law, polygons, placement, truth formulas and calibration against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import integrate, stats

from landslide_hazard.synthetic.calibration import (
    calibrate_area_scale,
    calibrate_intercept,
    period_statistics,
    rank_auc,
)
from landslide_hazard.synthetic.landslides import (
    AreaLaw,
    CellPlacer,
    ellipse_coords,
    saturating_rate,
    truncated_inverse_gamma_mean,
    truth_from_rates,
)


@pytest.mark.parametrize(("rho", "theta"), [(1.3, 2000.0), (1.2, 9000.0), (2.5, 500.0)])
def test_truncated_mean_matches_numerical_integral(rho, theta):
    lo, hi = 5.0, 3e5
    dist = stats.invgamma(a=rho, scale=theta)
    mass = dist.cdf(hi) - dist.cdf(lo)
    num, _ = integrate.quad(
        lambda x: x * dist.pdf(x), lo, hi, limit=500, points=[theta, 10 * theta]
    )
    assert AreaLaw(rho, theta, lo, hi).mean() == pytest.approx(num / mass, rel=1e-6)
    vec = truncated_inverse_gamma_mean(rho, np.array([theta, 2 * theta]), lo, hi)
    assert vec[0] == pytest.approx(num / mass, rel=1e-6)


def test_area_sampling_follows_the_truncated_law():
    law = AreaLaw(1.3, 2500.0, 5.0, 3e5)
    x = law.sample(20000, np.random.default_rng(1))
    assert x.min() >= 5.0 and x.max() <= 3e5
    dist = stats.invgamma(a=1.3, scale=2500.0)
    lo, hi = dist.cdf(5.0), dist.cdf(3e5)
    ks = stats.kstest(x, lambda v: (dist.cdf(v) - lo) / (hi - lo))
    assert ks.pvalue > 0.01
    assert np.allclose(law.cdf(np.array([5.0, 3e5])), [0.0, 1.0])


def test_ellipse_has_the_requested_area_and_is_valid():
    rng = np.random.default_rng(3)
    for area in (3.0, 977.0, 25000.0, 2e5):
        ring = ellipse_coords(area, (1000.0, 2000.0), rng.uniform(0, 6.3), rng)
        poly = shapely.Polygon(ring)
        assert poly.is_valid
        assert poly.area == pytest.approx(area, rel=1e-9)


def _placer(box, k=8, seed=0):
    rng = np.random.default_rng(seed)
    pixel = (box[2] - box[0]) / k
    return CellPlacer(box, pixel, rng.uniform(0.1, 1.0, (k, k)), rng.uniform(-3, 3, (k, k)), [])


def test_placement_keeps_area_inside_the_cell_without_overlaps():
    box = (0.0, 0.0, 1000.0, 1000.0)
    placer = _placer(box)
    rng = np.random.default_rng(7)
    first = placer.place(np.array([2e5, 5e4, 3000.0, 40.0]), rng)
    second = placer.place(np.array([1.5e5, 1e5, 2e4, 500.0, 0.5]), rng)  # crowded: carving
    polys = first + second
    total = sum(p.area for p in polys)
    assert total + placer.lost_m2 == pytest.approx(
        2e5 + 5e4 + 3000 + 40 + 1.5e5 + 1e5 + 2e4 + 500.5
    )
    assert placer.lost_m2 == 0.0
    cell = shapely.box(*box)
    assert all(cell.contains(p) for p in polys)
    union = shapely.union_all(polys)
    assert union.area == pytest.approx(total, rel=1e-9)  # no overlaps
    # exact area per cell, the pipeline's rasterization: all of it inside this cell
    assert shapely.intersection(union, cell).area == pytest.approx(total, rel=1e-9)


def test_truth_from_rates_hand_values():
    rate = np.array([0.0, 0.5, 2.0])
    p, cond, exp = truth_from_rates(rate, 1000.0, 1e6)
    assert np.allclose(p, [0.0, 1 - np.exp(-0.5), 1 - np.exp(-2.0)])
    assert np.allclose(exp, [0.0, 0.05, 0.2])
    assert np.isnan(cond[0]) and np.allclose(cond[1:] * p[1:], exp[1:])


def test_calibrate_intercept_closed_form_and_heterogeneous():
    base = np.full(100, 3.0)
    b0 = calibrate_intercept(base, 0.2)
    assert b0 == pytest.approx(np.log(-np.log(0.8) / 3.0), abs=1e-9)
    base = np.random.default_rng(0).lognormal(0, 1.5, 5000)
    b0 = calibrate_intercept(base, 0.15)
    assert np.mean(1 - np.exp(-np.exp(b0) * base)) == pytest.approx(0.15, abs=1e-9)
    with pytest.raises(ValueError, match="unreachable"):
        calibrate_intercept(np.r_[np.zeros(9), 1.0], 0.5)


def test_calibrate_area_scale_hits_the_mean_density():
    rng = np.random.default_rng(4)
    rates = rng.gamma(0.5, 0.6, 400)
    mult = np.exp(0.5 * rng.standard_normal(400))
    theta = calibrate_area_scale(rates, mult, 0.2, 1e6, 1.3, 5.0, 3e5)
    means = truncated_inverse_gamma_mean(1.3, theta * mult, 5.0, 3e5)
    assert np.mean(rates * means) * 100 / 1e6 == pytest.approx(0.2, rel=1e-9)
    with pytest.raises(ValueError, match="not reachable"):
        calibrate_area_scale(rates, mult, 500.0, 1e6, 1.3, 5.0, 3e5)


def test_period_statistics_by_hand():
    d = np.array([[0.0, 0.0, 1.0, np.nan], [3.0, 0.0, 0.5, 10.0]])
    s = period_statistics(d)
    pos = np.array([1.0, 3.0, 0.5, 10.0])
    assert s.prevalence_pct == pytest.approx(100 * 4 / 7)
    assert s.positive_median == pytest.approx(2.0)
    assert s.positive_p99 == pytest.approx(np.percentile(pos, 99))
    assert s.max == 10.0
    assert s.mean == pytest.approx(14.5 / 7)


def test_rank_auc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    labels = rng.random(500) < 0.2
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # with ties
    assert rank_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(rank_auc(scores, np.zeros(500, bool)))


def test_a_full_cell_loses_only_the_excess_area():
    box = (0.0, 0.0, 100.0, 100.0)  # 10,000 m2
    placer = _placer(box, k=4, seed=2)
    polys = placer.place(
        np.array([4000.0, 3000.0, 2500.0, 1500.0, 800.0]), np.random.default_rng(5)
    )
    total = sum(p.area for p in polys)
    usable = (100.0 - 2 * 0.01) ** 2  # the cell less its edge margin
    assert total == pytest.approx(usable, rel=1e-6)
    assert placer.lost_m2 == pytest.approx(11800.0 - usable, rel=1e-4)
    assert shapely.union_all(polys).area == pytest.approx(total, rel=1e-9)  # no overlaps


def test_saturating_rate():
    raw = np.array([0.0, 1e-3, 1.0, 15.0, 1e4])
    got = saturating_rate(raw, 15.0)
    assert np.allclose(got, 15.0 * (1 - np.exp(-raw / 15.0)))
    assert got[1] == pytest.approx(1e-3, rel=1e-4) and got[-1] <= 15.0
    assert np.all(np.diff(got) > 0)
    base = np.random.default_rng(3).lognormal(0, 2.0, 3000)
    b0 = calibrate_intercept(base, 0.2, max_rate=15.0)
    rate = saturating_rate(np.exp(b0) * base, 15.0)
    assert np.mean(1 - np.exp(-rate)) == pytest.approx(0.2, abs=1e-9)
