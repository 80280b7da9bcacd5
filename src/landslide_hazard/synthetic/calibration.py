"""Calibration of the synthetic scenario to the real Gorkha table, and the comparison table.

The per-period intercepts make the expected prevalence equal the real one, and the per-period
area scales make the expected mean density equal the real one (both exactly, in expectation,
over all cells of the scenario). The positive median, p99 and max are not fitted: they follow
from the area law and the spread of the rates, and the table shows how close they come.

Run ``python -m landslide_hazard.synthetic.calibration --size demo --seed 0`` to print the
generated-vs-real table (it generates the scenario in a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from .landslides import saturating_rate, truncated_inverse_gamma_mean


@dataclass(frozen=True)
class PeriodStats:
    """Statistics of a new-density map (% of cell), over its non-NaN cells."""

    prevalence_pct: float
    positive_median: float
    positive_p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


# From ../shared/data/gorkha2015/README.md (computed from observed_area_density.tif; the test of
# realdata.py recomputes it from the file). Columns: prevalence %, positive median %, positive
# p99 %, max %, mean % over all cells.
REAL_GORKHA_TABLE: dict[str, PeriodStats] = {
    "Co-seismic 2015": PeriodStats(21.5, 0.70, 17.5, 55.2, 0.430),
    "Post-monsoon 2015": PeriodStats(17.7, 0.41, 12.2, 35.2, 0.214),
    "Pre-monsoon 2016": PeriodStats(14.2, 0.19, 3.9, 12.4, 0.067),
    "Post-monsoon 2016": PeriodStats(10.7, 0.18, 5.5, 25.5, 0.052),
    "Pre-monsoon 2017": PeriodStats(19.7, 0.26, 6.1, 36.1, 0.137),
    "Post-monsoon 2017": PeriodStats(9.3, 0.19, 5.9, 43.6, 0.054),
    "Pre-monsoon 2018": PeriodStats(19.2, 0.29, 6.8, 18.3, 0.142),
    "Post-monsoon 2018": PeriodStats(14.2, 0.16, 5.9, 26.1, 0.074),
}


def period_statistics(density_pct: np.ndarray) -> PeriodStats:
    """Prevalence (% of cells with density > 0) and density statistics, NaN cells ignored."""
    v = np.asarray(density_pct, dtype=float).ravel()
    v = v[~np.isnan(v)]
    pos = v[v > 0]
    if pos.size == 0:
        return PeriodStats(0.0, 0.0, 0.0, 0.0, float(v.mean()) if v.size else float("nan"))
    return PeriodStats(
        prevalence_pct=100.0 * pos.size / v.size,
        positive_median=float(np.median(pos)),
        positive_p99=float(np.percentile(pos, 99)),
        max=float(pos.max()),
        mean=float(v.mean()),
    )


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    NaN when only one class is present.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibrate_intercept(
    base_rate: np.ndarray, prevalence: float, max_rate: float | None = None
) -> float:
    """beta0 with mean(1 - exp(-lambda)) = ``prevalence`` (a fraction in (0, 1)), where
    lambda = exp(beta0) * base_rate, saturated at ``max_rate`` if given
    (:func:`~landslide_hazard.synthetic.landslides.saturating_rate`)."""
    base = np.asarray(base_rate, dtype=float).ravel()
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")

    def excess(b0: float) -> float:
        rate = np.exp(b0) * base
        if max_rate is not None:
            rate = saturating_rate(rate, max_rate)
        return float(np.mean(-np.expm1(-rate))) - prevalence

    if excess(40.0) <= 0:
        raise ValueError(
            f"prevalence {prevalence:.3f} is unreachable: only {np.mean(base > 0):.3f} of the "
            "cells have a positive rate"
        )
    return float(brentq(excess, -60.0, 40.0, xtol=1e-12))


def calibrate_area_scale(
    rates: np.ndarray,
    scale_multipliers: np.ndarray,
    target_mean_density_pct: float,
    cell_area_m2: float,
    rho: float,
    lo_m2: float,
    hi_m2: float,
) -> float:
    """The inverse-gamma scale theta (m2) giving the target mean new density over the cells.

    Cell c's landslide areas follow the truncated law with scale ``theta * scale_multipliers[c]``,
    so its expected density is ``rates[c] * mean_c * 100 / cell_area``; the mean of that over
    the cells is set to ``target_mean_density_pct``. theta is searched in [lo, hi] (which keeps
    the incomplete-gamma bounds well inside (0, 1)).
    """
    rates = np.asarray(rates, dtype=float).ravel()
    mult = np.asarray(scale_multipliers, dtype=float).ravel()
    target_area = target_mean_density_pct / 100.0 * cell_area_m2  # m2 of new failure per cell

    def excess(log_theta: float) -> float:
        means = truncated_inverse_gamma_mean(rho, np.exp(log_theta) * mult, lo_m2, hi_m2)
        return float(np.mean(rates * means)) - target_area

    lo_t, hi_t = np.log(lo_m2), np.log(hi_m2)
    if excess(hi_t) < 0 or excess(lo_t) > 0:
        raise ValueError(
            f"target mean density {target_mean_density_pct:.4g} % is not reachable with an "
            f"inverse-gamma scale in [{lo_m2}, {hi_m2}] m2 at these rates; widen the area bounds"
        )
    return float(np.exp(brentq(excess, lo_t, hi_t, xtol=1e-12)))


def comparison_table(summary: dict) -> str:
    """Markdown table: generated vs real statistics per period, from a scenario summary."""
    cols = ("prevalence_pct", "positive_median", "positive_p99", "max", "mean")
    heads = ("prevalence %", "pos. median %", "pos. p99 %", "max %", "mean %")
    lines = [
        "| period | " + " | ".join(f"{h} gen / real" for h in heads) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, stats in summary["periods"].items():
        gen = stats["generated"]
        real = REAL_GORKHA_TABLE[name].as_dict()
        cells = [f"{gen[c]:.3g} / {real[c]:.3g}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the scenario here")
    args = parser.parse_args(argv)
    from .generate import generate_scenario

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "scenario"
        summary = generate_scenario(args.size, args.seed, out, progress=False)
    print(
        f"Generated (`--size {args.size} --seed {args.seed}`, {summary['n_cells']} cells) vs "
        "real Gorkha (21,360 cells), per period:\n"
    )
    print(comparison_table(summary))
    below = [
        s["fraction_of_positive_below_one_reference_pixel"] for s in summary["periods"].values()
    ]
    print(
        f"\nPositive cells with less new area than one 31.25 m pixel (< 0.098 %): "
        f"{100 * min(below):.0f}-{100 * max(below):.0f} % per period (real: 15-39 %, 27 % overall)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
