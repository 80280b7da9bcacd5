"""The demo scenario's per-period statistics track the real Gorkha table."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.synthetic import generate_scenario
from landslide_hazard.synthetic.calibration import REAL_GORKHA_TABLE

# Stated tolerances (demo: 2,304 cells, one realisation; the real table has 21,360 cells).
# Prevalence and mean are calibrated in expectation, so only sampling noise separates them from
# the table; the median and p99 are not fitted and follow from the area law and rate spread.
PREVALENCE_REL = 0.25  # |gen / real - 1|
MEDIAN_FACTOR = 2.0  # gen / real within [1/f, f]
P99_FACTOR = 3.0
MEAN_FACTOR = 2.0
MAX_FACTOR = 12.0  # a max over 9x fewer cells is lower and noisy (seed 5: 4.6 vs 43.6)


def check_against_real(summary: dict) -> list[str]:
    problems = []
    for name, stats in summary["periods"].items():
        gen, real = stats["generated"], REAL_GORKHA_TABLE[name]
        if abs(gen["prevalence_pct"] / real.prevalence_pct - 1) > PREVALENCE_REL:
            problems.append(
                f"{name}: prevalence {gen['prevalence_pct']:.1f} vs {real.prevalence_pct}"
            )
        for key, factor in (
            ("positive_median", MEDIAN_FACTOR),
            ("positive_p99", P99_FACTOR),
            ("mean", MEAN_FACTOR),
        ):
            ratio = gen[key] / getattr(real, key)
            if not 1 / factor <= ratio <= factor:
                problems.append(f"{name}: {key} {gen[key]:.3g} vs {getattr(real, key)}")
        if not real.max / MAX_FACTOR <= gen["max"] <= 100.0:
            problems.append(f"{name}: max {gen['max']:.3g} vs {real.max}")
    sub = np.mean(
        [s["fraction_of_positive_below_one_reference_pixel"] for s in summary["periods"].values()]
    )
    if not 0.1 <= sub <= 0.5:  # real: 27 % of positive cells below one 31.25 m pixel
        problems.append(f"sub-pixel fraction {sub:.2f}")
    return problems


@pytest.mark.slow
def test_demo_tracks_the_real_table(tmp_path):
    summary = generate_scenario("demo", 0, tmp_path / "demo", progress=False)
    assert summary["n_cells"] == 48 * 48 and len(summary["periods"]) == 8
    assert check_against_real(summary) == []
    # activity rebounds in the pre-monsoon 2017 and 2018 periods, as in the real table
    prev = [s["generated"]["prevalence_pct"] for s in summary["periods"].values()]
    assert prev[4] > prev[3] and prev[6] > prev[5]
