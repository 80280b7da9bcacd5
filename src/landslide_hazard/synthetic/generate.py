"""Write a synthetic scenario: the files a real user brings, plus the truth.

Layout of ``OUT``::

    config.yaml                       a valid RunConfig, paths relative to OUT
    inputs/dem.tif                    fine grid, m
    inputs/rain.tif                   daily rain, mm/day, ~5 km pixels, one band per ISO date
    inputs/pga_<event>.tif            PGA (g) on a ~1 km grid offset from the study grid
    inputs/sigma_<event>.tif          sigma of ln PGA
    inputs/rivers.gpkg                river lines
    inputs/inventories/<slug>.gpkg    cumulative landslide polygons per inventory date
    truth/p_occurrence.tif            P(new density > 0), cell grid, one band per period
    truth/density_given_occurrence.tif  E[D | D > 0], % of cell
    truth/expected_density.tif        E[D], % of cell
    truth/new_density.tif             the realised new failed density, % of cell
    truth/rate.tif, area_scale_m2.tif the Poisson rate and area-law scale behind the truth
    summary.json                      sizes, seed, calibration, per-period statistics

File names: :mod:`.config`; the rate model and its calibration: :mod:`.rates`; the writers:
:mod:`.writers`.

The fine grid is generated tile by tile (two passes: rates need every cell before the
intercepts are calibrated), so memory is bounded by a tile plus cell-grid arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from ..config import save_config
from ..errors import InputError
from ..io import atomic_write_text, write_raster
from ..run import CONFIG_FILE, TRUTH_DIR, TRUTH_FILES
from .calibration import REAL_GORKHA_TABLE, period_statistics, rank_auc
from .config import (
    DEM_FILE,
    INVENTORIES_DIR,
    RIVERS_FILE,
    SUMMARY_FILE,
    inventory_file,
    scenario_config,
)
from .dem import DemScenarioInput, read_dem_scenario
from .landslides import AreaLaw, CellPlacer, draw_counts_and_areas, truth_from_rates
from .legacy import DrawnAreas, apply_legacy_process
from .rates import (
    CELL_STREAM,
    LEGACY_RATE_MODEL,
    RATE_MODEL,
    CellRates,
    Covariates,
    RateModel,
    calibrate_rates,
    observable_truth,
    stream_rng,
)
from .sources import (
    RainCells,
    ShakingCells,
    TerrainSource,
    dem_terrain_source,
    procedural_terrain,
    write_rain,
    write_shaking,
)
from .spec import (
    BASELINE_DATE,
    BASELINE_NAME,
    EARTHQUAKES,
    ScenarioSpec,
    get_spec,
    monsoons_ended,
)
from .terrain import (
    TerrainWindow,
    landslide_log_weight,
)
from .writers import PolygonWriter, TiledWriter, write_rivers

# One 31.25 m pixel (the paper's grid): 27 % of real positive cells hold less new area than this.
SUBPIXEL_M2 = 31.25**2


@dataclass(frozen=True)
class _Scenario:
    """What every stage reads: the geometry, the seed, the folder and the cells in use."""

    spec: ScenarioSpec
    seed: int
    out: Path
    # The cells the pipeline will use: those of a real DEM free of nodata; None: all of them.
    valid: np.ndarray | None
    rm: RateModel = RATE_MODEL  # LEGACY_RATE_MODEL with --legacy-process
    # the legacy process's landslide areas, drawn period by period (None: drawn cell by cell)
    drawn: DrawnAreas | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.spec.periods]

    def on_valid(self, a: np.ndarray) -> np.ndarray:
        """``a``'s valid cells (the trailing two axes); ``a`` itself when every cell is."""
        return a if self.valid is None else a[..., self.valid]


def _tiles(spec: ScenarioSpec):
    """Cell-grid tiles (row slice, col slice), row-major."""
    n_r, n_c = spec.shape_cells
    t = spec.tile_cells
    for r0 in range(0, n_r, t):
        for c0 in range(0, n_c, t):
            yield slice(r0, min(r0 + t, n_r)), slice(c0, min(c0 + t, n_c))


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    r, c = a.shape
    return a.reshape(r // k, k, c // k, k).mean(axis=(1, 3))


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..streams import log_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
        console=log_console(),
    )


def _terrain_pass(scn: _Scenario, terrain: TerrainSource, bar: Any) -> tuple[np.ndarray, float]:
    """Pass 1: write the DEM tile by tile; return each cell's mean static rate weight S_c and
    the sum of the fine slopes (deg)."""
    spec = scn.spec
    k = spec.cell_pixels
    tiles = list(_tiles(spec))
    static_weight = np.zeros(spec.shape_cells)
    slope_sum = 0.0
    task = bar.add_task("terrain", total=len(tiles)) if bar else None
    with contextlib.ExitStack() as stack:
        dem = TiledWriter(stack, scn.out / DEM_FILE, spec, "elevation", "m")
        for rs, cs in tiles:
            tw = terrain.window(rs, cs)
            dem.write(tw.elevation_m, rs.start * k, cs.start * k)
            static_weight[rs, cs] = _block_mean(np.exp(landslide_log_weight(tw)), k)
            slope_sum += float(np.nansum(tw.slope_deg))
            if bar:
                bar.advance(task)
    return static_weight, slope_sum


@dataclass
class _Landslides:
    """The realised landslides of pass 2."""

    new_density: np.ndarray  # new failed area per period and cell, % of cell, (period, y, x)
    n_landslides: np.ndarray  # per inventory; 0 = baseline
    subpixel: np.ndarray  # per period: cells whose new area is under one reference pixel
    lost_m2: float = 0.0  # area the placer could not fit into its cell


class _TileTerrain:
    """A tile's fine terrain and landslide log-weight, computed when a cell first needs them."""

    def __init__(self, terrain: TerrainSource, rows: slice, cols: slice):
        self.terrain, self.rows, self.cols = terrain, rows, cols
        self._fields: tuple[TerrainWindow, np.ndarray] | None = None

    def fields(self) -> tuple[TerrainWindow, np.ndarray]:
        if self._fields is None:
            tw = self.terrain.window(self.rows, self.cols)
            self._fields = tw, landslide_log_weight(tw)
        return self._fields


# (inventory index, polygon, landslide id); inventory 0 is the baseline
_Found = tuple[int, Any, int]


def _cell_landslides(
    scn: _Scenario, cr: CellRates, tile: _TileTerrain, r: int, c: int, acc: _Landslides
) -> list[_Found]:
    """Draw and place cell (r, c)'s landslides of the baseline and every period (the cell's own
    random stream); record its new density in ``acc``."""
    spec, rm = scn.spec, scn.rm
    k, cell_m = spec.cell_pixels, spec.grid.cell_size_m
    n_c, n_t = spec.shape_cells[1], len(spec.periods)
    area_hi, cell_area = cr.calibration.area_hi_m2, cr.calibration.cell_area_m2
    crng = stream_rng(scn.seed, CELL_STREAM, r, c)
    cell_laws = [
        AreaLaw(rm.area_rho, float(th), rm.area_lo_m2, area_hi) for th in cr.theta_cells[:, r, c]
    ]
    if scn.drawn is None:
        draws = draw_counts_and_areas(
            np.concatenate([[cr.base_rate[r, c]], cr.rates[:, r, c]]),
            [cr.base_law, *cell_laws],
            crng,
        )
    else:  # the legacy process drew the periods' areas in period order
        draws = draw_counts_and_areas(np.array([cr.base_rate[r, c]]), [cr.base_law], crng)
        draws += [period.get((r, c), np.zeros(0)) for period in scn.drawn]
    if not any(len(a) for a in draws):
        return []
    tw, log_w = tile.fields()
    lr, lc = (r - tile.rows.start) * k, (c - tile.cols.start) * k
    x0 = spec.origin[0] + c * cell_m
    y1 = spec.origin[1] - r * cell_m
    w = log_w[lr : lr + k, lc : lc + k]
    placer = CellPlacer(
        (x0, y1 - cell_m, x0 + cell_m, y1),
        spec.pixel_size_m,
        np.exp(w - w.max()),
        tw.downslope_rad[lr : lr + k, lc : lc + k],
        [],
    )
    found: list[_Found] = []
    for i, areas in enumerate(draws):
        if not len(areas):
            continue
        polys = placer.place(areas, crng)
        # ids depend on the cell, not on the tiling: (cell, inventory, rank)
        first = ((r * n_c + c) * (n_t + 1) + i) * 1_000_000
        found.extend((i, p, first + j) for j, p in enumerate(polys))
        if i:
            new_area = float(shapely.area(polys).sum()) if polys else 0.0
            acc.new_density[i - 1, r, c] = new_area * 100.0 / cell_area
            acc.subpixel[i - 1] += 0 < new_area < SUBPIXEL_M2
    acc.lost_m2 += placer.lost_m2
    return found


def _landslide_pass(scn: _Scenario, terrain: TerrainSource, cr: CellRates, bar: Any) -> _Landslides:
    """Pass 2: landslide polygons, cell by cell, tile by tile, into the cumulative inventories."""
    spec = scn.spec
    n_t = len(spec.periods)
    tiles = list(_tiles(spec))
    acc = _Landslides(
        new_density=np.zeros((n_t, *spec.shape_cells)),
        n_landslides=np.zeros(n_t + 1, dtype=np.int64),
        subpixel=np.zeros(n_t, dtype=np.int64),
    )
    labels = [BASELINE_NAME, *scn.names]
    inv_dates = [BASELINE_DATE, *(date for _, date in spec.periods)]
    task = bar.add_task("landslides", total=len(tiles)) if bar else None
    with contextlib.ExitStack() as stack:
        writers = [
            PolygonWriter(stack, scn.out / inventory_file(label), spec.crs, date)
            for label, date in zip(labels, inv_dates, strict=True)
        ]
        for rs, cs in tiles:
            tile = _TileTerrain(terrain, rs, cs)
            found: list[_Found] = []
            for r in range(rs.start, rs.stop):
                for c in range(cs.start, cs.stop):
                    if scn.valid is None or scn.valid[r, c]:
                        found.extend(_cell_landslides(scn, cr, tile, r, c, acc))
            for date_index, writer in enumerate(writers):
                chosen = [(i, p, j) for i, p, j in found if i <= date_index]
                polys = [p for _, p, _ in chosen]
                writer.add(polys, [j for _, _, j in chosen], [labels[i] for i, _, _ in chosen])
            for i, _, _ in found:
                acc.n_landslides[i] += 1
            if bar:
                bar.advance(task)
        for writer in writers:
            writer.flush()
    return acc


#: Units of the truth layers (names: run.TRUTH_FILES).
_TRUTH_UNITS = {
    "susceptibility": "1",
    "density": "% of cell area",
    "hazard": "% of cell area",
    "new_density": "% of cell area",
    # The generator's parameters per cell and period, so the truth can be re-derived.
    "rate": "expected number of new landslides",
    "area_scale_m2": "m2 (inverse-gamma scale of landslide areas)",
    # the observable oracle: the truth averaged over the unobservable latent fields
    "observable_susceptibility": "1",
    "observable_density": "% of cell area",
    "observable_hazard": "% of cell area",
}


@dataclass(frozen=True)
class _Truth:
    """The truth layers, (period, y, x), named as in run.TRUTH_FILES."""

    susceptibility: np.ndarray  # P(new density > 0)
    density: np.ndarray  # E[D | D > 0]
    hazard: np.ndarray  # E[D]
    new_density: np.ndarray
    rate: np.ndarray
    area_scale_m2: np.ndarray
    observable_susceptibility: np.ndarray
    observable_density: np.ndarray
    observable_hazard: np.ndarray


def _truth(scn: _Scenario, cr: CellRates, landslides: _Landslides) -> _Truth:
    """The truth from the rates and the realised landslides, and the observable oracle (what
    skill is attainable: it averages the truth over the latent fields no predictor can see);
    NaN where the pipeline has no valid cell."""
    p_occ, d_given, d_expected = truth_from_rates(
        cr.rates, cr.mean_areas, cr.calibration.cell_area_m2
    )
    p_obs, d_obs, e_obs = observable_truth(
        cr.observable_log(scn.rm),
        cr.calibration,
        scn.spec.grid.cell_size_m / 1000.0,
        scn.seed,
        scn.rm,
    )
    truth = _Truth(
        p_occ,
        d_given,
        d_expected,
        landslides.new_density,
        cr.rates,
        cr.theta_cells,
        p_obs,
        d_obs,
        e_obs,
    )
    if scn.valid is None:
        return truth
    return _Truth(*(np.where(scn.valid, getattr(truth, f.name), np.nan) for f in fields(truth)))


def _write_truth(scn: _Scenario, truth: _Truth) -> None:
    for key, unit in _TRUTH_UNITS.items():
        write_raster(
            scn.out / TRUTH_DIR / TRUTH_FILES[key],
            getattr(truth, key).astype(np.float32),
            scn.spec.grid.cell_transform,
            scn.spec.crs,
            band_names=scn.names,
            units=unit,
        )


@dataclass(frozen=True)
class _Outcome:
    """What the stages produced, as the summary reports it."""

    terrain: TerrainSource
    slope_sum_deg: float
    shaking: ShakingCells
    rain: RainCells
    covariates: Covariates
    rates: CellRates
    landslides: _Landslides
    truth: _Truth


def _period_summaries(scn: _Scenario, o: _Outcome) -> dict[str, dict]:
    on_valid, truth = scn.on_valid, o.truth
    occurred = truth.new_density > 0
    observable = o.rates.observable_log(scn.rm)
    per_period = {}
    for t, name in enumerate(scn.names):
        per_period[name] = {
            "generated": period_statistics(truth.new_density[t].astype(np.float32)).as_dict(),
            "expected_prevalence_pct": float(100.0 * on_valid(truth.susceptibility[t]).mean()),
            "expected_mean": float(on_valid(truth.hazard[t]).mean()),
            "real": REAL_GORKHA_TABLE[name].as_dict(),
            "fraction_of_positive_below_one_reference_pixel": float(
                o.landslides.subpixel[t] / max((truth.new_density[t] > 0).sum(), 1)
            ),
            "n_landslides": int(o.landslides.n_landslides[t + 1]),
            "monsoons_since_eq": o.covariates.monsoons[t],
            "oracle_auc": rank_auc(on_valid(truth.susceptibility[t]), on_valid(occurred[t])),
            "observable_auc": rank_auc(on_valid(observable[t]), on_valid(occurred[t])),
            "observable_oracle_auc": rank_auc(
                on_valid(truth.observable_susceptibility[t]), on_valid(occurred[t])
            ),
            # the record alone: the cell's summed new density of the earlier periods
            "legacy_auc": (
                rank_auc(on_valid(truth.new_density[:t].sum(axis=0)), on_valid(occurred[t]))
                if t
                else None
            ),
        }
    return per_period


def _summary(scn: _Scenario, source: DemScenarioInput | None, o: _Outcome) -> dict[str, Any]:
    """Sizes, seed, calibration, per-period statistics and attainable skill (oracle AUCs)."""
    spec, on_valid, truth, rm = scn.spec, scn.on_valid, o.truth, scn.rm
    cal, rates = o.rates.calibration, o.rates.rates
    occurred = truth.new_density > 0
    observable = o.rates.observable_log(rm)
    n_t = len(scn.names)
    return {
        "size": spec.size,
        "seed": scn.seed,
        "spec": {
            **asdict(spec),
            "origin": list(spec.origin),
            "shape_cells": list(spec.shape_cells),
        },
        "n_cells": spec.shape_cells[0] * spec.shape_cells[1],
        **(
            {}
            if source is None
            else {"n_valid_cells": int(source.valid_cells.sum()), "dem": source.summary()}
        ),
        "fine_shape": list(spec.grid.fine_shape),
        "mean_slope_deg": o.slope_sum_deg / o.terrain.valid_pixels,
        "relief_scale": o.terrain.relief_scale,
        "n_rivers": len(o.terrain.river_lines),
        "n_baseline_landslides": int(o.landslides.n_landslides[0]),
        "placement_area_lost_m2": o.landslides.lost_m2,
        "oracle_auc_pooled": rank_auc(on_valid(truth.susceptibility), on_valid(occurred)),
        "observable_auc_pooled": rank_auc(
            on_valid(np.stack([cal.intercepts[t] + observable[t] for t in range(n_t)])),
            on_valid(occurred),
        ),
        "observable_oracle_auc_pooled": rank_auc(
            on_valid(truth.observable_susceptibility), on_valid(occurred)
        ),
        "periods": _period_summaries(scn, o),
        "calibration": {
            "rate_model": asdict(rm),
            "intercepts": cal.intercepts,
            "area_theta_m2": cal.thetas,
            "area_bounds_m2": [rm.area_lo_m2, cal.area_hi_m2],
            "mean_area_m2": [
                float(
                    np.mean(on_valid(rates[t] * o.rates.mean_areas[t]))
                    / np.mean(on_valid(rates[t]))
                )
                for t in range(n_t)
            ],
            "baseline_area_law": asdict(o.rates.base_law),
        },
        "shaking_grid": {
            "x_min": o.shaking.grid.x_min,
            "y_max": o.shaking.grid.y_max,
            "pixel_m": o.shaking.grid.pixel_m,
            "shape": list(o.shaking.grid.shape),
            "stations": o.shaking.stations.tolist(),
        },
        "rain_grid": {
            "x_min": o.rain.grid.x_min,
            "y_max": o.rain.grid.y_max,
            "pixel_m": o.rain.grid.pixel_m,
            "shape": list(o.rain.grid.shape),
            "n_days": o.rain.n_days,
        },
    }


def generate_scenario(
    size: str,
    seed: int,
    out: Path,
    progress: bool = True,
    spec: ScenarioSpec | None = None,
    *,
    dem: str | Path | None = None,
    legacy_process: bool = False,
) -> dict:
    """Generate the synthetic scenario ``size`` from ``seed`` into ``out``; return the summary.

    ``spec`` overrides the named size's geometry (tests use it to exercise the tiled path on a
    small grid). ``dem``: a DEM file (projected CRS in metres) to use as the terrain instead of
    the procedural one; it sets the grid (:mod:`.dem`), and ``size`` and ``spec`` are ignored.
    ``legacy_process``: failed ground reactivates (:mod:`.legacy`); the config is named
    ``synthetic-<size>-legacy``.
    The same seed and spec (or DEM) give the same files.

    Stages: terrain (pass 1: the DEM and each cell's static weight), triggers (shaking, rain),
    rates calibrated to the real table (:func:`.rates.calibrate_rates`), landslides (pass 2:
    the inventories), then rivers, truth, config and summary.
    """
    started = time.perf_counter()
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    source = read_dem_scenario(dem) if dem is not None else None
    spec = source.spec if source is not None else (spec or get_spec(size))
    scn = _Scenario(
        spec,
        seed,
        Path(out),
        source.valid_cells if source is not None else None,
        LEGACY_RATE_MODEL if legacy_process else RATE_MODEL,
    )
    (scn.out / INVENTORIES_DIR).mkdir(parents=True, exist_ok=True)
    (scn.out / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    terrain = procedural_terrain(spec, seed) if source is None else dem_terrain_source(source)
    timings: dict[str, float] = {}
    with _progress(progress) as bar:
        static_weight, slope_sum = _terrain_pass(scn, terrain, bar)
        timings["terrain_s"] = time.perf_counter() - started
        shaking = write_shaking(spec, seed, scn.out)
        rain = write_rain(spec, seed, scn.out, terrain)
        timings["triggers_s"] = time.perf_counter() - started - timings["terrain_s"]
        mainshock = EARTHQUAKES[0].date
        covariates = Covariates(
            static_weight,
            shaking.pga_max_g,
            rain.rain_max,
            [monsoons_ended(mainshock, date) for _, date in spec.periods],
        )
        rates = calibrate_rates(covariates, spec, seed, scn.valid, scn.rm)
        if scn.rm.reactivation > 0:
            rates, drawn = apply_legacy_process(rates, spec, seed, scn.valid, scn.rm)
            scn = dataclasses.replace(scn, drawn=drawn)
        landslides = _landslide_pass(scn, terrain, rates, bar)
        timings["landslides_s"] = time.perf_counter() - started - sum(timings.values())

    write_rivers(
        scn.out / RIVERS_FILE, terrain.river_lines, terrain.river_kinds, spec.crs, BASELINE_DATE
    )
    truth = _truth(scn, rates, landslides)
    _write_truth(scn, truth)
    name = f"synthetic-{spec.size}" if source is None else f"synthetic-dem-{source.path.stem}"
    config = scenario_config(
        spec, seed, scn.names, name=f"{name}-legacy" if legacy_process else name
    )
    save_config(config, scn.out / CONFIG_FILE)
    outcome = _Outcome(terrain, slope_sum, shaking, rain, covariates, rates, landslides, truth)
    summary = _summary(scn, source, outcome)
    summary["timings_s"] = {**timings, "total_s": time.perf_counter() - started}
    atomic_write_text(scn.out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary
