"""The synthetic scenario's cell rate model (docs/synthetic.md).

Its coefficients (:class:`RateModel`), the random streams every stage of the generator draws
from, the calibration of each period's rates and area laws to the real Gorkha table
(:func:`calibrate_rates`), and the observable oracle (:func:`observable_truth`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .calibration import REAL_GORKHA_TABLE, calibrate_area_scale, calibrate_intercept
from .landslides import AreaLaw, saturating_rate, truncated_inverse_gamma_mean, truth_from_rates
from .noise import gaussian_field
from .spec import ScenarioSpec


@dataclass(frozen=True)
class RateModel:
    """Coefficients of the cell log-rate (see docs/synthetic.md).

    lambda_ct = max_rate (1 - exp(-raw_ct / max_rate)),
    ln raw_ct = beta0_t + b_pga(t) ln(PGA_c / 0.25 g) + b_rain ln(1 + R_ct)
                + sd_latent Z_c + sd_latent_period Z_ct + ln S_c,
    b_pga(t) = b_pga_coseismic for the co-seismic period, else
               b_pga_coseismic * legacy_fraction * exp(-(m_t - 1) / legacy_decay_monsoons),
    S_c = mean over the cell's pixels of exp(eta_s) (terrain.landslide_log_weight).

    reactivation > 0 adds the optional legacy process (:mod:`.legacy`): failed ground fails
    again, ln raw_ct += reactivation ln(1 + M_ct / reactivation_scale_pct), M_ct the cell's
    decaying record of new failures (% of the cell) before t.
    """

    b_pga_coseismic: float = 2.0
    legacy_fraction: float = 0.5
    legacy_decay_monsoons: float = 1.5
    b_rain: float = 0.8
    sd_latent: float = 0.5
    corr_latent_km: float = 6.0
    sd_latent_period: float = 0.3
    corr_latent_period_km: float = 3.0
    area_rho: float = 1.3
    sd_log_area_scale: float = 0.5  # per cell and period: theta_ct = theta_t exp(sd z_ct)
    area_lo_m2: float = 5.0
    area_hi_frac: float = 0.15  # upper bound of one landslide, fraction of the cell area
    max_rate: float = 15.0  # lambda saturates at this many landslides per cell and period
    baseline_prevalence: float = 0.12
    baseline_mean_area_m2: float = 2500.0
    reactivation: float = 0.0  # 0: no legacy process (synth --legacy-process: 1.0)
    reactivation_scale_pct: float = 1.0
    reactivation_memory_periods: float = 1.5

    def b_pga(self, monsoons: int, coseismic: bool) -> float:
        if coseismic:
            return self.b_pga_coseismic
        return (
            self.b_pga_coseismic
            * self.legacy_fraction
            * math.exp(-(max(monsoons, 1) - 1) / self.legacy_decay_monsoons)
        )


RATE_MODEL = RateModel()
LEGACY_RATE_MODEL = RateModel(reactivation=1.0)  # synth --legacy-process
RIVER_STREAM, SHAKE_STREAM, RAIN_STREAM, LATENT_STREAM, CELL_STREAM, AREA_STREAM = range(1, 7)
ORACLE_STREAM = 7  # the observable oracle's latent draws (never used by the scenario itself)
OBSERVABLE_DRAWS = 128


def stream_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream ``keys`` of scenario ``seed`` (independent of every other stream)."""
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True)
class Calibration:
    """Each period's calibrated log-rate intercept and area-law scale, and the area bounds."""

    intercepts: list[float]
    thetas: list[float]  # m2, inverse-gamma scale of landslide areas
    cell_area_m2: float
    area_hi_m2: float


@dataclass(frozen=True)
class Covariates:
    """What drives the cell rates, on the cell grid: the mean static weight S_c, the larger
    PGA of the events (g), each period's maximum daily rain (mm/day, (period, y, x)), and the
    monsoons ended since the mainshock at each period's end."""

    static_weight: np.ndarray
    pga_max_g: np.ndarray
    rain_max: np.ndarray
    monsoons: list[int]


@dataclass(frozen=True)
class CellRates:
    """The calibrated rates per period and cell (``rates``, (period, y, x)), the latent fields
    and log-rate terms behind them, the per-cell area scales and the baseline inventory's law."""

    latent: np.ndarray  # Z_c
    latent_t: np.ndarray  # Z_ct, (period, y, x)
    log_base: np.ndarray  # ln raw_ct without the intercept, (period, y, x)
    calibration: Calibration
    rates: np.ndarray
    theta_cells: np.ndarray  # m2, (period, y, x)
    mean_areas: np.ndarray  # m2, mean landslide area per cell and period
    base_rate: np.ndarray
    base_law: AreaLaw

    def observable_log(self, rm: RateModel = RATE_MODEL) -> np.ndarray:
        """The log-rate without the intercepts and the latent terms (what inputs can show)."""
        return self.log_base - rm.sd_latent * self.latent - rm.sd_latent_period * self.latent_t


def _latent_fields(
    spec: ScenarioSpec, seed: int, n_t: int, rm: RateModel
) -> tuple[np.ndarray, np.ndarray]:
    cell_km = spec.grid.cell_size_m / 1000.0
    latent = gaussian_field(
        spec.shape_cells, rm.corr_latent_km / cell_km, stream_rng(seed, LATENT_STREAM, 0)
    )
    latent_t = gaussian_field(
        spec.shape_cells,
        rm.corr_latent_period_km / cell_km,
        stream_rng(seed, LATENT_STREAM, 1),
        n=n_t,
    )
    return latent, latent_t


def _baseline_law(
    base_log: np.ndarray,
    cell_area: float,
    area_hi: float,
    on_valid: Callable[[np.ndarray], np.ndarray],
    rm: RateModel,
) -> tuple[np.ndarray, AreaLaw]:
    """The baseline inventory's rates (static terms only) and area law, calibrated to the
    baseline prevalence and mean landslide area."""
    base_shift = float(on_valid(base_log).max())
    base_b0 = calibrate_intercept(
        np.exp(on_valid(base_log) - base_shift), rm.baseline_prevalence, rm.max_rate
    )
    base_rate = saturating_rate(np.exp(base_b0 - base_shift + base_log), rm.max_rate)
    base_rate_mean = float(on_valid(base_rate).mean())
    base_theta = calibrate_area_scale(
        on_valid(base_rate),
        np.ones(1),
        rm.baseline_mean_area_m2 * base_rate_mean * 100.0 / cell_area,
        cell_area,
        rm.area_rho,
        rm.area_lo_m2,
        area_hi,
    )
    return base_rate, AreaLaw(rm.area_rho, base_theta, rm.area_lo_m2, area_hi)


def calibrate_rates(
    covariates: Covariates,
    spec: ScenarioSpec,
    seed: int,
    valid: np.ndarray | None,
    rm: RateModel = RATE_MODEL,
) -> CellRates:
    """Latent fields, covariate terms, and per-period intercepts and area scales calibrated so
    that the expected prevalence and mean density equal the real Gorkha table's (over the
    ``valid`` cells; all when None). Cells outside ``valid`` get rate 0."""

    def on_valid(a: np.ndarray) -> np.ndarray:
        return a if valid is None else a[..., valid]

    names = spec.period_names
    n_t = len(names)
    latent, latent_t = _latent_fields(spec, seed, n_t, rm)
    log_base = np.empty((n_t, *spec.shape_cells))
    for t in range(n_t):
        log_base[t] = (
            rm.b_pga(covariates.monsoons[t], coseismic=t == 0) * np.log(covariates.pga_max_g / 0.25)
            + rm.b_rain * np.log1p(covariates.rain_max[t])
            + rm.sd_latent * latent
            + rm.sd_latent_period * latent_t[t]
            + np.log(covariates.static_weight)
        )
    cell_area = spec.grid.cell_area_m2
    area_hi = rm.area_hi_frac * cell_area
    scale_mult = np.exp(
        rm.sd_log_area_scale * stream_rng(seed, AREA_STREAM).standard_normal(log_base.shape)
    )
    intercepts, thetas = [], []
    rates = np.empty_like(log_base)
    for t, name in enumerate(names):
        target = REAL_GORKHA_TABLE[name]
        shift = float(on_valid(log_base[t]).max())
        b0 = (
            calibrate_intercept(
                np.exp(on_valid(log_base[t]) - shift),
                target.prevalence_pct / 100.0,
                rm.max_rate,
            )
            - shift
        )
        rates[t] = saturating_rate(np.exp(b0 + log_base[t]), rm.max_rate)
        thetas.append(
            calibrate_area_scale(
                on_valid(rates[t]),
                on_valid(scale_mult[t]),
                target.mean,
                cell_area,
                rm.area_rho,
                rm.area_lo_m2,
                area_hi,
            )
        )
        intercepts.append(b0)
    theta_cells = np.array(thetas)[:, None, None] * scale_mult  # (period, y, x), m2
    base_log = rm.sd_latent * latent + np.log(covariates.static_weight)
    base_rate, base_law = _baseline_law(base_log, cell_area, area_hi, on_valid, rm)
    if valid is not None:  # no landslide on cells with nodata (their log-rate is NaN)
        rates[:, ~valid] = 0.0
        base_rate[~valid] = 0.0
    return CellRates(
        latent=latent,
        latent_t=latent_t,
        log_base=log_base,
        calibration=Calibration(intercepts, thetas, cell_area, area_hi),
        rates=rates,
        theta_cells=theta_cells,
        mean_areas=truncated_inverse_gamma_mean(rm.area_rho, theta_cells, rm.area_lo_m2, area_hi),
        base_rate=base_rate,
        base_law=base_law,
    )


def observable_truth(
    observable_log: np.ndarray,
    calibration: Calibration,
    cell_km: float,
    seed: int,
    rm: RateModel = RATE_MODEL,
    draws: int = OBSERVABLE_DRAWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observable oracle: the truth's (P, E[D | D > 0], E[D]) averaged over the latent fields.

    No input shows the latent fields (the static ``Z_c``, the per-period ``Z_ct``, the per-cell
    area scale), so the best any model can do from the inputs is the truth's expectation over
    them given everything observable (``observable_log``: the log-rate without the latent terms,
    (period, cy, cx); ``cell_km``: the cell size). Monte Carlo over ``draws`` independent draws
    from the generator's own laws (its own random stream, so the scenario is unchanged).
    E[D | D > 0] = E[D] / P.
    """
    n_t = observable_log.shape[0]
    shape_cells = observable_log.shape[1:]
    p_sum = np.zeros(observable_log.shape)
    e_sum = np.zeros(observable_log.shape)
    theta_t = np.asarray(calibration.thetas, dtype=float)[:, None, None]
    b0 = np.asarray(calibration.intercepts, dtype=float)[:, None, None]
    for m in range(draws):
        rng = stream_rng(seed, ORACLE_STREAM, m)
        latent = gaussian_field(shape_cells, rm.corr_latent_km / cell_km, rng)
        latent_t = gaussian_field(shape_cells, rm.corr_latent_period_km / cell_km, rng, n=n_t)
        log_rate = b0 + observable_log + rm.sd_latent * latent + rm.sd_latent_period * latent_t
        rates = saturating_rate(np.exp(log_rate), rm.max_rate)
        scale = np.exp(rm.sd_log_area_scale * rng.standard_normal(observable_log.shape))
        areas = truncated_inverse_gamma_mean(
            rm.area_rho, theta_t * scale, rm.area_lo_m2, calibration.area_hi_m2
        )
        p, _, expected = truth_from_rates(rates, areas, calibration.cell_area_m2)
        p_sum += p
        e_sum += expected
    p_obs, e_obs = p_sum / draws, e_sum / draws
    with np.errstate(invalid="ignore", divide="ignore"):
        d_obs = np.where(p_obs > 0, e_obs / p_obs, np.nan)
    return p_obs, d_obs, e_obs
