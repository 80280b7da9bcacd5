"""The optional legacy process of the synthetic generator: failed ground reactivates.

Off by default (``RateModel.reactivation = 0``: every scenario is as before). With
``synth --legacy-process`` each cell's log-rate in period t gains a term from its own realised
history:

    L_ct = reactivation * ln(1 + M_ct / reactivation_scale_pct),
    M_ct = sum_{q < t} D_qc exp(-(t - 1 - q) / reactivation_memory_periods),

where D_qc is the new failed area of cell c in period q (% of the cell, from the drawn landslide
areas). Recently and extensively failed cells fail again more often; the memory fades over a
few periods (the post-seismic decay of the regional rate is the rate model's own ``b_pga``
decay). Each period's intercept is calibrated again with L included, so the expected
prevalence still matches the real Gorkha table and the legacy moves probability towards failed
ground instead of adding landslides.

Periods are generated in order: the counts and areas of period t are drawn (stream
``LEGACY_STREAM``) before period t + 1's rates exist. The truth (rates, P, E[D]) is that of the
realised history, and the observable oracle includes L (the legacy bands show the history).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .calibration import REAL_GORKHA_TABLE, calibrate_intercept
from .landslides import AreaLaw, saturating_rate
from .rates import CellRates, RateModel, stream_rng
from .spec import ScenarioSpec

LEGACY_STREAM = 8

#: Per period, the drawn landslide areas (m2) of each cell that has any: {(row, col): areas}.
DrawnAreas = list[dict[tuple[int, int], np.ndarray]]


def legacy_term(memory_pct: np.ndarray, rm: RateModel) -> np.ndarray:
    """L = reactivation * ln(1 + M / scale): the log-rate added for a cell's history M (%)."""
    return rm.reactivation * np.log1p(np.asarray(memory_pct) / rm.reactivation_scale_pct)


def apply_legacy_process(
    cr: CellRates,
    spec: ScenarioSpec,
    seed: int,
    valid: np.ndarray | None,
    rm: RateModel,
) -> tuple[CellRates, DrawnAreas]:
    """The rates of every period given the realised history, and the drawn areas per period.

    Returns ``cr`` with ``log_base`` (L added), ``rates`` and the calibration's intercepts
    replaced, and the landslide areas drawn for each period and cell (placed later, cell by
    cell, by the generator's landslide pass).
    """
    cal = cr.calibration
    mask = np.ones(cr.rates.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    decay = float(np.exp(-1.0 / rm.reactivation_memory_periods))
    memory = np.zeros(cr.rates.shape[1:])
    log_base = cr.log_base.copy()
    rates = np.zeros_like(cr.rates)
    intercepts: list[float] = []
    drawn: DrawnAreas = []
    for t, name in enumerate(spec.period_names):
        log_base[t] = cr.log_base[t] + legacy_term(memory, rm)
        shift = float(log_base[t][mask].max())
        b0 = (
            calibrate_intercept(
                np.exp(log_base[t][mask] - shift),
                REAL_GORKHA_TABLE[name].prevalence_pct / 100.0,
                rm.max_rate,
            )
            - shift
        )
        intercepts.append(b0)
        rates[t] = np.where(mask, saturating_rate(np.exp(b0 + log_base[t]), rm.max_rate), 0.0)
        rng = stream_rng(seed, LEGACY_STREAM, t)
        counts = rng.poisson(rates[t])
        areas: dict[tuple[int, int], np.ndarray] = {}
        density = np.zeros_like(memory)
        for r, c in zip(*np.nonzero(counts), strict=True):
            law = AreaLaw(
                rm.area_rho, float(cr.theta_cells[t, r, c]), rm.area_lo_m2, cal.area_hi_m2
            )
            a = law.sample(int(counts[r, c]), rng)
            areas[(int(r), int(c))] = a
            density[r, c] = a.sum() * 100.0 / cal.cell_area_m2
        drawn.append(areas)
        memory = memory * decay + density
    out = dataclasses.replace(
        cr,
        log_base=log_base,
        rates=rates,
        calibration=dataclasses.replace(cal, intercepts=intercepts),
    )
    return out, drawn
