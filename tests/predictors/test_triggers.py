"""Trigger predictors: rain statistics, PGA units and statistics, monsoon counts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from landslide_hazard.io.rasters import RainStack, RasterError
from landslide_hazard.predictors.triggers import (
    G_MS2,
    PGA_FLOOR_MS2,
    monsoons_since,
    pga_stats,
    pga_to_ms2,
    rain_period_stats,
)


def _stack(n_days=40, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.gamma(0.6, 12.0, size=(n_days, 3, 4)).astype(np.float32)
    dates = tuple(dt.date(2015, 5, 1) + dt.timedelta(days=i) for i in range(n_days))
    return RainStack(data, dates, Affine(5000, 0, 0, 0, -5000, 0), CRS.from_epsg(32645), "rain.tif")


def test_rain_stats_equal_numpy_on_the_raw_stack():
    stack = _stack()
    days = stack.days_in(dt.date(2015, 5, 3), dt.date(2015, 5, 30))
    assert len(days) == 27
    rain_max, rain_ci95 = rain_period_stats(stack.data, days)
    raw = stack.data[3:30].astype(np.float64)  # 2015-05-04 .. 2015-05-30 (day 0 = 05-01)
    np.testing.assert_allclose(rain_max, raw.max(axis=0), rtol=0, atol=0)
    expected = np.percentile(raw, 97.5, axis=0) - np.percentile(raw, 2.5, axis=0)
    np.testing.assert_allclose(rain_ci95, expected, rtol=1e-6)
    assert rain_max.dtype == np.float32 and rain_max.shape == (3, 4)


def test_rain_ci95_hand_case():
    # 0, 1, ..., 40 mm: p2.5 = 1.0 and p97.5 = 39.0 with linear interpolation (index 0.025 * 40)
    daily = np.arange(41, dtype=np.float64)[:, None, None]
    rain_max, ci = rain_period_stats(daily)
    assert rain_max[0, 0] == 40.0
    assert ci[0, 0] == pytest.approx(38.0)


def test_rain_missing_day_is_a_clear_error():
    stack = _stack()
    gappy = RainStack(
        stack.data[[0, 1, 3]],
        stack.dates[:2] + stack.dates[3:4],
        stack.transform,
        stack.crs,
        "rain.tif",
    )
    with pytest.raises(RasterError, match=r"rain.tif: 1 day\(s\).*2015-05-03"):
        gappy.days_in(dt.date(2015, 4, 30), dt.date(2015, 5, 4))


def test_rain_empty_period_rejected():
    with pytest.raises(ValueError, match="at least one day"):
        rain_period_stats(np.zeros((5, 2, 2)), np.array([], dtype=int))


@pytest.mark.parametrize(("unit", "factor"), [("g", G_MS2), ("%g", G_MS2 / 100), ("m/s2", 1.0)])
def test_pga_unit_conversion(unit, factor):
    values = np.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(pga_to_ms2(values, unit), values * factor)
    assert pga_to_ms2(0.5, "g") == pytest.approx(4.903325)
    assert pga_to_ms2(50.0, "%g") == pytest.approx(4.903325)


def test_pga_unknown_unit():
    with pytest.raises(ValueError, match="unknown PGA unit 'gal'"):
        pga_to_ms2(1.0, "gal")


def test_pga_stats_take_sigma_of_the_max_event():
    a = np.array([[1.0, 4.0], [2.0, np.nan]])
    b = np.array([[3.0, 2.0], [2.5, np.nan]])
    sa = np.full((2, 2), 0.5)
    sb = np.full((2, 2), 0.7)
    pga_max, pga_std = pga_stats([a, b], [sa, sb])
    np.testing.assert_allclose(pga_max[:1], [[3.0, 4.0]])
    assert pga_max[1, 0] == 2.5
    np.testing.assert_allclose(pga_std[0], [0.7, 0.5], rtol=1e-6)
    assert np.isnan(pga_max[1, 1]) and np.isnan(pga_std[1, 1])


def test_pga_stats_without_sigma_use_std_of_ln_pga():
    a = np.array([[1.0, 4.0]])
    b = np.array([[3.0, 2.0]])
    pga_max, pga_std = pga_stats([a, b], [None, None])
    expected = np.std(np.log(np.stack([a, b])), axis=0)
    np.testing.assert_allclose(pga_std, expected, rtol=1e-6)
    # mixed: the sigma raster of the max event where it exists, else the spread over events
    _, mixed = pga_stats([a, b], [np.full((1, 2), 0.6), None])
    np.testing.assert_allclose(mixed, [[expected[0, 0], 0.6]], rtol=1e-6)
    # a zero PGA is floored before the log (no -inf)
    _, floored = pga_stats([np.zeros((1, 1)), np.ones((1, 1))])
    assert floored[0, 0] == pytest.approx(abs(np.log(PGA_FLOOR_MS2)) / 2, rel=1e-6)


def test_pga_stats_single_event_and_no_event():
    a = np.array([[1.5, 0.2]])
    pga_max, pga_std = pga_stats([a])
    np.testing.assert_allclose(pga_max, a)
    np.testing.assert_array_equal(pga_std, [[0.0, 0.0]])
    zmax, zstd = pga_stats([], shape=(2, 3))
    assert zmax.shape == (2, 3) and not zmax.any() and not zstd.any()
    with pytest.raises(ValueError, match="shape"):
        pga_stats([])


def test_monsoon_counts_for_the_gorkha_periods():
    event = dt.date(2015, 4, 25)
    ends = [
        dt.date(2015, 6, 15),
        dt.date(2015, 11, 15),
        dt.date(2016, 4, 15),
        dt.date(2016, 11, 15),
        dt.date(2017, 4, 15),
        dt.date(2017, 11, 15),
        dt.date(2018, 4, 15),
        dt.date(2018, 11, 15),
    ]
    assert [monsoons_since(event, e) for e in ends] == [0, 1, 1, 2, 2, 3, 3, 4]


def test_monsoon_count_edges():
    event = dt.date(2015, 4, 25)
    assert monsoons_since(event, dt.date(2015, 9, 30)) == 1  # ends on the period end: counts
    assert monsoons_since(event, dt.date(2015, 9, 29)) == 0  # still in progress
    assert monsoons_since(dt.date(2015, 7, 1), dt.date(2015, 10, 1)) == 1  # event mid-season
    assert monsoons_since(dt.date(2015, 9, 30), dt.date(2016, 9, 29)) == 0  # ended on the event day
    assert monsoons_since(event, dt.date(2014, 1, 1)) == 0  # period before the event
    # a season crossing New Year (Nov-Feb) ends in February
    assert monsoons_since(event, dt.date(2017, 3, 1), "11-01", "02-28") == 2
