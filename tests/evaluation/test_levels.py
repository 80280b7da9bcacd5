"""The maps' per-period levels (evaluation.levels): the logit shift against a brute-force
minimum and the score equation, the density blend against brute-force least squares, the
density levels by hand and against an independent heavy-tailed simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from landslide_hazard.evaluation.calibration import binary_nll
from landslide_hazard.evaluation.levels import (
    DensityLevels,
    density_blend_weight,
    density_levels,
    level_shift,
)


def test_level_shift_recovers_a_known_shift_and_solves_the_score_equation():
    from scipy.optimize import brentq

    rng = np.random.default_rng(11)
    z = rng.normal(-1.5, 1.0, 20_000)
    y = (rng.random(z.size) < expit(z + 0.7)).astype(float)  # the period sits 0.7 higher
    d_ml = level_shift(z, y, prior_sd=math.inf)
    assert d_ml == pytest.approx(0.7, abs=0.05)
    # the maximum-likelihood shift is the root of mean(sigmoid(z + d)) = mean(y)
    root = brentq(lambda d: expit(z + d).mean() - y.mean(), -5, 5, xtol=1e-12)
    assert d_ml == pytest.approx(root, abs=1e-8)
    # with hundreds of cells the prior barely moves it
    assert level_shift(z, y) == pytest.approx(d_ml, abs=0.01)


def test_level_shift_map_matches_a_brute_force_minimum_and_shrinks_small_groups():
    from scipy.optimize import minimize_scalar

    z = np.array([-2.0, -1.0, -1.5, 0.2, -0.4])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    sd = 0.5

    def objective(d):
        return binary_nll(y, z + d) * y.size + d**2 / (2 * sd**2)

    ref = minimize_scalar(objective, bounds=(-10, 10), method="bounded", options={"xatol": 1e-12})
    d_map = level_shift(z, y, prior_sd=sd)
    assert d_map == pytest.approx(ref.x, abs=1e-6)
    assert 0 < d_map < level_shift(z, y, prior_sd=math.inf)  # drawn towards no shift


def test_level_shift_errors():

    with pytest.raises(ValueError, match="both classes"):
        level_shift(np.zeros(4), np.ones(4), prior_sd=math.inf)
    assert level_shift(np.zeros(4), np.ones(4)) > 0  # a finite prior copes with one class


def test_density_blend_weight_least_squares_and_its_bounds():
    rng = np.random.default_rng(3)
    d = rng.gamma(2.0, 1.0, 400)
    c = 1.5
    # observed = c + 0.4 (d - c) exactly: the weight is 0.4
    assert density_blend_weight(c + 0.4 * (d - c), d, c) == pytest.approx(0.4, abs=1e-12)
    # with noise: the brute-force minimiser of the squared error over [0, 1]
    y = c + 0.6 * (d - c) + rng.normal(0, 1.0, d.size)
    grid = np.linspace(0, 1, 100001)
    sse = [np.sum((y - c - w * (d - c)) ** 2) for w in grid]
    assert density_blend_weight(y, d, c) == pytest.approx(grid[int(np.argmin(sse))], abs=1e-5)
    # predictions that run against the observed ones: the constant (0); steeper: the model (1)
    assert density_blend_weight(c - (d - c), d, c) == 0.0
    assert density_blend_weight(c + 3 * (d - c), d, c) == 1.0
    # nothing to fit: the model as it is; non-finite pairs are dropped
    assert density_blend_weight([], [], c) == 1.0
    assert density_blend_weight([2.0, 3.0], [c, c], c) == 1.0
    y_nan = np.append(c + 0.4 * (d - c), np.nan)
    assert density_blend_weight(y_nan, np.append(d, 5.0), c) == pytest.approx(0.4)


def test_density_levels_by_hand():
    # one period of two cells: geometric means 2 sqrt(2) and sqrt(2), ratio 2; means 3 and 1.5,
    # ratio 2, so no conversion; one period: it is its own common level, whatever the prior
    got = density_levels([2.0, 4.0], [1.0, 2.0], [0, 0])
    assert got.factors == {0: pytest.approx(2.0, rel=1e-12)}
    assert got.common == pytest.approx(2.0, rel=1e-12)
    # two periods, y = (2, 4) and (8, 16) over d = (1, 2): log levels x = ln 2 and ln 8, the
    # ratios of means the same (no conversion), v = (var ln y + var ln d) / 2 = ln(2)^2 / 2 in
    # both, so equal weights, mu = ln 4, and each drawn towards it by s^2 / (s^2 + v)
    y, d, t = [2.0, 4.0, 8.0, 16.0], [1.0, 2.0, 1.0, 2.0], [0, 0, 1, 1]
    two = density_levels(y, d, t)
    v, s2 = math.log(2.0) ** 2 / 2, 0.25
    mu = math.log(4.0)
    for k, x in ((0, math.log(2.0)), (1, math.log(8.0))):
        assert two.factors[k] == pytest.approx(math.exp(mu + (x - mu) * s2 / (s2 + v)), rel=1e-9)
    assert two.common == pytest.approx(4.0, rel=1e-9)
    plain = density_levels(y, d, t, prior_sd=math.inf)
    assert plain.factors == {0: pytest.approx(2.0), 1: pytest.approx(8.0)}
    # a period with fewer than two pairs gets the common level; none with two: all 1
    three = density_levels(y + [5.0], d + [1.0], t + [2])
    assert three.factors[2] == pytest.approx(three.common) == pytest.approx(two.common)
    assert density_levels([3.0, 1.0], [1.0, 1.0], [0, 1]) == DensityLevels({0: 1.0, 1: 1.0}, 1.0)
    assert density_levels([2.0, 4.0], [0.0, 0.0], [3, 3]) == DensityLevels({3: 1.0}, 1.0)
    # non-finite and non-positive pairs dropped
    nan = density_levels([2.0, 4.0, np.nan, 5.0], [1.0, 2.0, 7.0, -1.0], [0, 0, 0, 0])
    assert nan.factors[0] == pytest.approx(2.0, rel=1e-12)


def test_the_common_level_is_the_precision_weighted_mean():
    """A period of many cells weighs more in the common level than one of a few; the weights
    are 1 / (v_t + s^2), checked against a direct computation on random data."""
    rng = np.random.default_rng(5)
    sizes, levels = (400, 12, 60), (1.0, 6.0, 2.5)
    t = np.repeat(np.arange(3), sizes)
    y = np.exp(rng.normal(0.0, 1.0, t.size)) * np.take(levels, t)
    d = np.exp(rng.normal(0.0, 0.3, t.size))
    got = density_levels(y, d, t, prior_sd=0.5)
    g = [np.log(y[t == k]).mean() - np.log(d[t == k]).mean() for k in range(3)]
    m = [math.log(y[t == k].mean() / d[t == k].mean()) for k in range(3)]
    v = [
        (np.log(y[t == k]).var(ddof=1) + np.log(d[t == k]).var(ddof=1)) / n
        for k, n in enumerate(sizes)
    ]
    c = sum(n * (m[k] - g[k]) for k, n in enumerate(sizes)) / sum(sizes)
    w = [1.0 / (vk + 0.25) for vk in v]
    mu = sum(wk * (gk + c) for wk, gk in zip(w, g, strict=True)) / sum(w)
    assert got.common == pytest.approx(math.exp(mu), rel=1e-9)
    for k in range(3):
        want = mu + (g[k] + c - mu) * 0.25 / (0.25 + v[k])
        assert got.factors[k] == pytest.approx(math.exp(want), rel=1e-9)


def test_density_levels_follow_each_periods_scale():
    """Periods whose densities are one sample scaled: the factors are those scales times one
    ratio of means, exactly (with a constant map and no prior)."""
    base = np.random.default_rng(3).pareto(1.5, 300) + 0.1
    scales = np.array([0.5, 2.0, 7.0])
    y = np.concatenate([s * base for s in scales])
    t = np.repeat([0, 1, 2], base.size)
    got = density_levels(y, np.ones_like(y), t, prior_sd=math.inf).factors
    np.testing.assert_allclose([got[k] for k in range(3)], scales * base.mean(), rtol=1e-10)


def test_the_log_scale_level_is_less_noisy_than_the_ratio_of_means():
    """Heavy-tailed densities (1 + Pareto, shape 1.3: infinite variance), eight periods of 150
    cells at levels 1x to 8x: over 300 draws the log-scale factors scatter less around the truth
    than the plain ratios of means, and far less in how the periods compare with each other (an
    independent simulation)."""
    rng = np.random.default_rng(11)
    truth = np.arange(1.0, 9.0)
    n, shape = 150, 1.3
    mean = shape / (shape - 1.0)  # of 1 + Pareto(shape)
    t = np.repeat(np.arange(truth.size), n)
    ours, plain = [], []
    for _ in range(300):
        y = (1.0 + rng.pareto(shape, t.size)) * truth[t]
        f = density_levels(y, np.ones_like(y), t, prior_sd=math.inf).factors
        ours.append(np.log([f[k] for k in range(truth.size)] / (truth * mean)))
        plain.append(np.log([y[t == k].mean() for k in range(truth.size)] / (truth * mean)))
    ours, plain = np.array(ours), np.array(plain)
    rms = lambda e: float(np.sqrt(np.mean(e**2)))  # noqa: E731
    assert rms(ours) < 0.8 * rms(plain)
    between = lambda e: e - e.mean(axis=1, keepdims=True)  # noqa: E731
    assert rms(between(ours)) < 0.6 * rms(between(plain))


def test_a_forecast_period_gets_the_levels_the_periods_share():
    """A model whose density maps are each cell's conditional median (what an absolute-error
    loss fits) sits below the mean in every period alike (lognormal sizes, sigma 1: the mean is
    e^0.5 = 1.65 times the median). Eight periods with levels scattered around one common level
    fix the factors; on a ninth period the factor had none of (a forecast), the common level
    brings the mean hazard within 20 % of the observed one in most draws, where the old default
    (no factor) left it at about 0.6x (an independent simulation)."""
    rng = np.random.default_rng(21)
    ratios_common, ratios_none = [], []
    for _ in range(200):
        levels = np.exp(rng.normal(0.0, 0.3, 9))  # the ninth is the forecast period
        t = np.repeat(np.arange(9), 150)
        median = np.exp(rng.normal(0.0, 0.5, t.size)) * levels[t]  # the map (d)
        y = median * np.exp(rng.normal(0.0, 1.0, t.size))
        fitted = t < 8
        got = density_levels(y[fitted], median[fitted], t[fitted])
        assert 8 not in got.factors
        future = t == 8
        ratios_common.append(got.common * median[future].mean() / y[future].mean())
        ratios_none.append(median[future].mean() / y[future].mean())
    common, none = np.array(ratios_common), np.array(ratios_none)
    assert np.median(np.abs(common - 1.0)) < 0.2 and np.median(none) < 0.7
    assert np.mean(np.abs(common - 1.0)) < 0.5 * np.mean(np.abs(none - 1.0))
