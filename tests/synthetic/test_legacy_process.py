"""The generator's optional legacy process (failed ground reactivates; issue 15)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from landslide_hazard.io import read_raster
from landslide_hazard.synthetic import generate_scenario, get_spec
from landslide_hazard.synthetic.calibration import REAL_GORKHA_TABLE
from landslide_hazard.synthetic.landslides import AreaLaw
from landslide_hazard.synthetic.legacy import apply_legacy_process
from landslide_hazard.synthetic.rates import (
    LEGACY_RATE_MODEL,
    RATE_MODEL,
    Calibration,
    CellRates,
)


def _flat_rates(shape=(12, 12), n_t=4, theta=2000.0):
    """Cell rates whose covariate terms are all 0: the legacy term is the only difference."""
    zeros = np.zeros((n_t, *shape))
    return CellRates(
        latent=np.zeros(shape),
        latent_t=zeros.copy(),
        log_base=zeros.copy(),
        calibration=Calibration([0.0] * n_t, [theta] * n_t, 1e6, 1.5e5),
        rates=np.full((n_t, *shape), 0.2),
        theta_cells=np.full((n_t, *shape), theta),
        mean_areas=np.full((n_t, *shape), 1000.0),
        base_rate=np.zeros(shape),
        base_law=AreaLaw(1.3, theta, 5.0, 1.5e5),
    )


def test_rates_follow_the_drawn_history_by_hand():
    spec = get_spec("tiny")
    rm = LEGACY_RATE_MODEL
    cr = _flat_rates(n_t=len(spec.period_names))
    out, drawn = apply_legacy_process(cr, spec, 0, None, rm)
    decay = np.exp(-1.0 / rm.reactivation_memory_periods)
    memory = np.zeros(cr.rates.shape[1:])
    for t, name in enumerate(spec.period_names):
        # the raw (unsaturated) rate ratio of two cells is (1 + M / scale) ** reactivation
        raw = -rm.max_rate * np.log1p(-out.rates[t] / rm.max_rate)
        want = (1.0 + memory / rm.reactivation_scale_pct) ** rm.reactivation
        np.testing.assert_allclose(raw / raw.min() / (want / want.min()), 1.0, rtol=1e-9)
        np.testing.assert_allclose(out.log_base[t], np.log(want), rtol=1e-12, atol=1e-12)
        # and the expected prevalence is still the real table's
        assert np.mean(-np.expm1(-out.rates[t])) == pytest.approx(
            REAL_GORKHA_TABLE[name].prevalence_pct / 100.0, rel=1e-9
        )
        density = np.zeros_like(memory)
        for (r, c), areas in drawn[t].items():
            density[r, c] = areas.sum() * 100.0 / 1e6
        memory = memory * decay + density
    assert len(drawn[0]) > 0 and out.calibration.intercepts != cr.calibration.intercepts


def test_no_reactivation_is_no_change():
    spec = get_spec("tiny")
    cr = _flat_rates(n_t=len(spec.period_names))
    rm = dataclasses.replace(LEGACY_RATE_MODEL, reactivation=0.0)
    out, _ = apply_legacy_process(cr, spec, 0, None, rm)
    for t in range(1, cr.rates.shape[0]):
        assert np.ptp(out.rates[t]) == 0  # every cell alike: the history changes nothing
    assert RATE_MODEL.reactivation == 0.0  # the default scenarios have no legacy process


@pytest.mark.slow
def test_a_legacy_scenario_fails_again_where_it_failed(tmp_path):
    """End to end (tiny): failed cells carry a higher true P in the next period than cells
    that did not fail, much more so than without the process; files are deterministic."""
    gaps = {}
    for legacy in (False, True):
        out = tmp_path / f"scn-{legacy}"
        summary = generate_scenario("tiny", 1, out, progress=False, legacy_process=legacy)
        p, _ = read_raster(out / "truth" / "p_occurrence.tif", dtype="float64")
        new, _ = read_raster(out / "truth" / "new_density.tif", dtype="float64")
        failed = new[:-1] > 0
        gaps[legacy] = np.mean(
            [p[t + 1][failed[t]].mean() / p[t + 1][~failed[t]].mean() for t in range(len(p) - 1)]
        )
        assert summary["calibration"]["rate_model"]["reactivation"] == (1.0 if legacy else 0.0)
    assert gaps[True] > 1.5 * gaps[False]
    assert (
        (tmp_path / "scn-True" / "config.yaml")
        .read_text()
        .startswith("name: synthetic-tiny-legacy")
    )
    again = tmp_path / "again"
    generate_scenario("tiny", 1, again, progress=False, legacy_process=True)
    a, _ = read_raster(tmp_path / "scn-True" / "truth" / "p_occurrence.tif")
    b, _ = read_raster(again / "truth" / "p_occurrence.tif")
    np.testing.assert_array_equal(a, b)
