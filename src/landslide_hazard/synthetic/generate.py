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

The fine grid is generated tile by tile (two passes: rates need every cell before the
intercepts are calibrated), so memory is bounded by a tile plus cell-grid arrays.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import rasterio
import shapely
from rasterio.windows import Window
from scipy.ndimage import map_coordinates

from ..config import RunConfig, save_config
from ..errors import InputError
from ..io import atomic_path, atomic_write_text, write_rain_stack, write_raster
from ..run import CONFIG_FILE, TRUTH_DIR, TRUTH_FILES
from .calibration import (
    REAL_GORKHA_TABLE,
    calibrate_area_scale,
    calibrate_intercept,
    period_statistics,
    rank_auc,
)
from .dem import dem_terrain, rain_elevation, read_dem_scenario
from .landslides import (
    AreaLaw,
    CellPlacer,
    draw_counts_and_areas,
    saturating_rate,
    truncated_inverse_gamma_mean,
    truth_from_rates,
)
from .noise import gaussian_field
from .rain import daily_rain, rain_grid
from .shaking import shaking_fields, shaking_grid
from .spec import (
    BASELINE_DATE,
    BASELINE_NAME,
    EARTHQUAKES,
    ScenarioSpec,
    get_spec,
    monsoons_ended,
    slug,
)
from .terrain import (
    landslide_log_weight,
    make_river_network,
    relief_scale_for_mean_slope,
    smooth_elevation,
    terrain_window,
)


@dataclass(frozen=True)
class RateModel:
    """Coefficients of the cell log-rate (see docs/synthetic.md).

    lambda_ct = max_rate (1 - exp(-raw_ct / max_rate)),
    ln raw_ct = beta0_t + b_pga(t) ln(PGA_c / 0.25 g) + b_rain ln(1 + R_ct)
                + sd_latent Z_c + sd_latent_period Z_ct + ln S_c,
    b_pga(t) = b_pga_coseismic for the co-seismic period, else
               b_pga_coseismic * legacy_fraction * exp(-(m_t - 1) / legacy_decay_monsoons),
    S_c = mean over the cell's pixels of exp(eta_s) (terrain.landslide_log_weight).
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

    def b_pga(self, monsoons: int, coseismic: bool) -> float:
        if coseismic:
            return self.b_pga_coseismic
        return (
            self.b_pga_coseismic
            * self.legacy_fraction
            * math.exp(-(max(monsoons, 1) - 1) / self.legacy_decay_monsoons)
        )


RATE_MODEL = RateModel()
# One 31.25 m pixel (the paper's grid): 27 % of real positive cells hold less new area than this.
SUBPIXEL_M2 = 31.25**2
RIVER_STREAM, SHAKE_STREAM, RAIN_STREAM, LATENT_STREAM, CELL_STREAM, AREA_STREAM = range(1, 7)
ORACLE_STREAM = 7  # the observable oracle's latent draws (never used by the scenario itself)
OBSERVABLE_DRAWS = 128


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def observable_truth(
    observable_log: np.ndarray,
    intercepts: list[float],
    thetas: list[float],
    shape_cells: tuple[int, int],
    cell_km: float,
    cell_area_m2: float,
    area_hi_m2: float,
    seed: int,
    rm: RateModel = RATE_MODEL,
    draws: int = OBSERVABLE_DRAWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observable oracle: the truth's (P, E[D | D > 0], E[D]) averaged over the latent fields.

    No input shows the latent fields (the static ``Z_c``, the per-period ``Z_ct``, the per-cell
    area scale), so the best any model can do from the inputs is the truth's expectation over
    them given everything observable (``observable_log``: the log-rate without the latent terms,
    (period, cy, cx)). Monte Carlo over ``draws`` independent draws from the generator's own
    laws (its own random stream, so the scenario is unchanged). E[D | D > 0] = E[D] / P.
    """
    n_t = observable_log.shape[0]
    p_sum = np.zeros(observable_log.shape)
    e_sum = np.zeros(observable_log.shape)
    theta_t = np.asarray(thetas, dtype=float)[:, None, None]
    b0 = np.asarray(intercepts, dtype=float)[:, None, None]
    for m in range(draws):
        rng = _rng(seed, ORACLE_STREAM, m)
        latent = gaussian_field(shape_cells, rm.corr_latent_km / cell_km, rng)
        latent_t = gaussian_field(shape_cells, rm.corr_latent_period_km / cell_km, rng, n=n_t)
        log_rate = b0 + observable_log + rm.sd_latent * latent + rm.sd_latent_period * latent_t
        rates = saturating_rate(np.exp(log_rate), rm.max_rate)
        scale = np.exp(rm.sd_log_area_scale * rng.standard_normal(observable_log.shape))
        areas = truncated_inverse_gamma_mean(
            rm.area_rho, theta_t * scale, rm.area_lo_m2, area_hi_m2
        )
        p, _, expected = truth_from_rates(rates, areas, cell_area_m2)
        p_sum += p
        e_sum += expected
    p_obs, e_obs = p_sum / draws, e_sum / draws
    with np.errstate(invalid="ignore", divide="ignore"):
        d_obs = np.where(p_obs > 0, e_obs / p_obs, np.nan)
    return p_obs, d_obs, e_obs


def _tiles(spec: ScenarioSpec):
    """Cell-grid tiles (row slice, col slice), row-major."""
    n_r, n_c = spec.shape_cells
    t = spec.tile_cells
    for r0 in range(0, n_r, t):
        for c0 in range(0, n_c, t):
            yield slice(r0, min(r0 + t, n_r)), slice(c0, min(c0 + t, n_c))


def _cell_centres(spec: ScenarioSpec) -> tuple[np.ndarray, np.ndarray]:
    n_r, n_c = spec.shape_cells
    x = spec.origin[0] + (np.arange(n_c) + 0.5) * spec.grid.cell_size_m
    y = spec.origin[1] - (np.arange(n_r) + 0.5) * spec.grid.cell_size_m
    return np.meshgrid(x, y)


def _sample_bilinear(
    field: np.ndarray, x_min: float, y_max: float, pixel_m: float, x, y
) -> np.ndarray:
    """Bilinear value of a pixel-centred grid at map coordinates (x, y)."""
    col = (x - x_min) / pixel_m - 0.5
    row = (y_max - y) / pixel_m - 0.5
    return map_coordinates(field, [row, col], order=1, mode="nearest")


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    r, c = a.shape
    return a.reshape(r // k, k, c // k, k).mean(axis=(1, 3))


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    )


class _TiledWriter:
    """A float32 GeoTIFF written window by window (tiled, deflate), atomically."""

    def __init__(
        self, stack: contextlib.ExitStack, path: Path, spec: ScenarioSpec, name: str, unit: str
    ):
        tile_px = spec.tile_cells * spec.cell_pixels
        block = math.gcd(tile_px, 256)
        if block % 16:
            raise ValueError(f"tile of {tile_px} px cannot be written in 16-multiple blocks")
        tmp = stack.enter_context(atomic_path(path))
        height, width = spec.grid.fine_shape
        x0, y1 = spec.origin
        self.ds = stack.enter_context(
            rasterio.open(
                tmp,
                "w",
                driver="GTiff",
                height=height,
                width=width,
                count=1,
                dtype="float32",
                crs=spec.crs,
                transform=rasterio.Affine(spec.pixel_size_m, 0, x0, 0, -spec.pixel_size_m, y1),
                nodata=float("nan"),
                tiled=True,
                blockxsize=block,
                blockysize=block,
                compress="deflate",
                predictor=3,
                BIGTIFF="IF_SAFER",
            )
        )
        self.ds.set_band_description(1, name)
        self.ds.set_band_unit(1, unit)

    def write(self, data: np.ndarray, row0: int, col0: int) -> None:
        self.ds.write(
            data.astype(np.float32)[None], window=Window(col0, row0, data.shape[1], data.shape[0])
        )


@contextlib.contextmanager
def _atomic_gpkg(path: Path):
    """Yield a temporary ``.gpkg`` path (GDAL wants the extension); rename onto ``path`` on success."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def _gpkg_timestamp(date: dt.date):
    """Stamp GeoPackage metadata with ``date`` instead of now, so the same seed gives the same
    bytes (GDAL's OGR_CURRENT_DATE); the previous setting is restored."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": f"{date.isoformat()}T00:00:00.000Z"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


class _PolygonWriter:
    """A GeoPackage polygon layer written in batches (bounded memory), renamed into place."""

    BATCH = 50_000

    def __init__(self, stack: contextlib.ExitStack, path: Path, crs: str, date: dt.date):
        self.tmp = stack.enter_context(_atomic_gpkg(path))
        self.crs = crs
        self.date = date
        self.created = False
        self._buf: tuple[list, list, list] = ([], [], [])

    def add(self, polygons: list, ids: list[int], periods: list[str]) -> None:
        self._buf[0].extend(polygons)
        self._buf[1].extend(ids)
        self._buf[2].extend(periods)
        if len(self._buf[0]) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        polygons, ids, periods = self._buf
        if not polygons and self.created:
            return
        with _gpkg_timestamp(self.date):
            pyogrio.raw.write(
                self.tmp,
                np.array(shapely.to_wkb(polygons) if polygons else [], dtype=object),
                [
                    np.asarray(ids, dtype=np.int64),
                    np.array(periods, dtype=object),
                    np.asarray(shapely.area(polygons) if polygons else [], dtype=np.float64),
                ],
                ["landslide_id", "period", "area_m2"],
                layer="landslides",
                driver="GPKG",
                geometry_type="Polygon",
                crs=self.crs,
                append=self.created,
            )
        self.created = True
        self._buf = ([], [], [])


def generate_scenario(
    size: str,
    seed: int,
    out: Path,
    progress: bool = True,
    spec: ScenarioSpec | None = None,
    *,
    dem: str | Path | None = None,
) -> dict:
    """Generate the synthetic scenario ``size`` from ``seed`` into ``out``; return the summary.

    ``spec`` overrides the named size's geometry (tests use it to exercise the tiled path on a
    small grid). ``dem``: a DEM file (projected CRS in metres) to use as the terrain instead of
    the procedural one; it sets the grid (:mod:`.dem`), and ``size`` and ``spec`` are ignored.
    The same seed and spec (or DEM) give the same files.
    """
    started = time.perf_counter()
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    source = read_dem_scenario(dem) if dem is not None else None
    spec = source.spec if source is not None else (spec or get_spec(size))
    # Cells the pipeline will use: all of them, or those of a real DEM free of nodata.
    valid = source.valid_cells if source is not None else None

    def on_valid(a: np.ndarray) -> np.ndarray:
        """``a``'s valid cells (the trailing two axes); ``a`` itself when every cell is."""
        return a if valid is None else a[..., valid]

    out = Path(out)
    inputs = out / "inputs"
    (inputs / "inventories").mkdir(parents=True, exist_ok=True)
    (out / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    rm = RATE_MODEL
    k = spec.cell_pixels
    n_r, n_c = spec.shape_cells
    periods = spec.periods
    n_t = len(periods)
    names = [name for name, _ in periods]
    bounds = spec.grid.bounds
    terrain_key = seed * 16 + 5
    timings: dict[str, float] = {}

    if source is None:
        # Rivers and relief scale.
        network = make_river_network(bounds, _rng(seed, RIVER_STREAM), spec.pixel_size_m / 2)
        scale = relief_scale_for_mean_slope(
            network, spec.origin, spec.pixel_size_m, spec.grid.fine_shape, terrain_key
        )
        river_lines, river_kinds = network.geometries(), network.kinds
        valid_pixels = spec.grid.fine_shape[0] * spec.grid.fine_shape[1]

        def terrain(rs: slice, cs: slice):
            return terrain_window(
                network,
                spec.origin,
                spec.pixel_size_m,
                slice(rs.start * k, rs.stop * k),
                slice(cs.start * k, cs.stop * k),
                terrain_key,
                scale,
            )
    else:
        scale = None
        real = dem_terrain(source.elevation_m, spec.pixel_size_m, spec.grid.fine_transform)
        river_lines, river_kinds = list(real.river_lines), real.river_kinds
        valid_pixels = int(np.isfinite(source.elevation_m).sum())

        def terrain(rs: slice, cs: slice):
            return real.window(slice(rs.start * k, rs.stop * k), slice(cs.start * k, cs.stop * k))

    tiles = list(_tiles(spec))
    static_weight = np.zeros(spec.shape_cells)
    slope_sum = 0.0
    with _progress(progress) as bar:
        # Pass 1: the DEM and each cell's mean static rate weight S_c.
        task = bar.add_task("terrain", total=len(tiles)) if bar else None
        with contextlib.ExitStack() as stack:
            dem = _TiledWriter(stack, inputs / "dem.tif", spec, "elevation", "m")
            for rs, cs in tiles:
                tw = terrain(rs, cs)
                dem.write(tw.elevation_m, rs.start * k, cs.start * k)
                static_weight[rs, cs] = _block_mean(np.exp(landslide_log_weight(tw)), k)
                slope_sum += float(np.nansum(tw.slope_deg))
                if bar:
                    bar.advance(task)
        timings["terrain_s"] = time.perf_counter() - started

        # Shaking: per event PGA (g) and sigma of ln PGA on a ~1 km grid offset from ours.
        xc, yc = _cell_centres(spec)
        srng = _rng(seed, SHAKE_STREAM)
        sgrid = shaking_grid(bounds, srng)
        area_km2 = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1]) / 1e6
        n_sta = max(1, round(area_km2 / 4000.0))
        stations = np.column_stack(
            [srng.uniform(bounds[0], bounds[2], n_sta), srng.uniform(bounds[1], bounds[3], n_sta)]
        )
        shake_transform = rasterio.Affine(
            sgrid.pixel_m, 0, sgrid.x_min, 0, -sgrid.pixel_m, sgrid.y_max
        )
        pga_cells = []
        for i, event in enumerate(EARTHQUAKES):
            residual = gaussian_field(
                sgrid.shape, 15000.0 / sgrid.pixel_m, _rng(seed, SHAKE_STREAM, i + 1)
            )
            pga, sigma = shaking_fields(event, bounds, sgrid, residual, stations)
            pga = pga.astype(np.float32)
            write_raster(
                inputs / f"pga_{event.name}.tif",
                pga,
                shake_transform,
                spec.crs,
                band_names=["pga"],
                units="g",
            )
            write_raster(
                inputs / f"sigma_{event.name}.tif",
                sigma.astype(np.float32),
                shake_transform,
                spec.crs,
                band_names=["sigma_ln_pga"],
                units="1",
            )
            pga_cells.append(
                _sample_bilinear(pga.astype(float), sgrid.x_min, sgrid.y_max, sgrid.pixel_m, xc, yc)
            )
        pga_max_g = np.max(pga_cells, axis=0)

        # Rain: every day from the baseline date + 1 to the last inventory date.
        rrng = _rng(seed, RAIN_STREAM)
        rgrid = rain_grid(bounds, rrng)
        n_days = (periods[-1][1] - BASELINE_DATE).days
        dates = [BASELINE_DATE + dt.timedelta(days=i + 1) for i in range(n_days)]
        rx, ry = rgrid.centres()
        if source is None:
            rain_elev = smooth_elevation(rx, ry, terrain_key, scale)
        else:
            rain_elev = rain_elevation(
                source.elevation_m, k, spec.origin, spec.grid.cell_size_m, rx, ry
            )
        rain = daily_rain(rgrid, dates, rain_elev, rrng)
        rain_transform = rasterio.Affine(
            rgrid.pixel_m, 0, rgrid.x_min, 0, -rgrid.pixel_m, rgrid.y_max
        )
        write_rain_stack(inputs / "rain.tif", rain, dates, rain_transform, spec.crs)
        rain_max = np.empty((n_t, n_r, n_c))
        prev = BASELINE_DATE
        for t, (_, date) in enumerate(periods):
            days = slice((prev - BASELINE_DATE).days, (date - BASELINE_DATE).days)
            rain_max[t] = _sample_bilinear(
                rain[days].max(axis=0).astype(float),
                rgrid.x_min,
                rgrid.y_max,
                rgrid.pixel_m,
                xc,
                yc,
            )
            prev = date
        del rain
        timings["triggers_s"] = time.perf_counter() - started - timings["terrain_s"]

        # Rates: latent fields, covariate terms, calibrated intercepts and area laws.
        cell_km = spec.grid.cell_size_m / 1000.0
        latent = gaussian_field(
            spec.shape_cells, rm.corr_latent_km / cell_km, _rng(seed, LATENT_STREAM, 0)
        )
        latent_t = gaussian_field(
            spec.shape_cells,
            rm.corr_latent_period_km / cell_km,
            _rng(seed, LATENT_STREAM, 1),
            n=n_t,
        )
        mainshock = EARTHQUAKES[0].date
        monsoons = [monsoons_ended(mainshock, date) for _, date in periods]
        log_base = np.empty((n_t, n_r, n_c))
        for t in range(n_t):
            log_base[t] = (
                rm.b_pga(monsoons[t], coseismic=t == 0) * np.log(pga_max_g / 0.25)
                + rm.b_rain * np.log1p(rain_max[t])
                + rm.sd_latent * latent
                + rm.sd_latent_period * latent_t[t]
                + np.log(static_weight)
            )
        cell_area = spec.grid.cell_area_m2
        area_hi = rm.area_hi_frac * cell_area
        scale_mult = np.exp(
            rm.sd_log_area_scale * _rng(seed, AREA_STREAM).standard_normal(log_base.shape)
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
        base_log = rm.sd_latent * latent + np.log(static_weight)
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
        base_law = AreaLaw(rm.area_rho, base_theta, rm.area_lo_m2, area_hi)
        if valid is not None:  # no landslide on cells with nodata (their log-rate is NaN)
            rates[:, ~valid] = 0.0
            base_rate[~valid] = 0.0
        mean_areas = truncated_inverse_gamma_mean(rm.area_rho, theta_cells, rm.area_lo_m2, area_hi)
        p_occ, d_given, d_expected = truth_from_rates(rates, mean_areas, cell_area)

        # Pass 2: landslide polygons, cell by cell, tile by tile.
        new_density = np.zeros((n_t, n_r, n_c))
        lost_m2 = 0.0
        n_landslides = np.zeros(n_t + 1, dtype=np.int64)
        subpixel = np.zeros(n_t, dtype=np.int64)
        inv_paths = [inputs / "inventories" / f"{slug(BASELINE_NAME)}.gpkg"] + [
            inputs / "inventories" / f"{slug(name)}.gpkg" for name in names
        ]
        labels = [BASELINE_NAME, *names]
        task = bar.add_task("landslides", total=len(tiles)) if bar else None
        with contextlib.ExitStack() as stack:
            inv_dates = [BASELINE_DATE, *(date for _, date in periods)]
            writers = [
                _PolygonWriter(stack, path, spec.crs, date)
                for path, date in zip(inv_paths, inv_dates, strict=True)
            ]
            for rs, cs in tiles:
                tw = None
                found: list[
                    tuple[int, object, int]
                ] = []  # (period index, polygon, id); 0 = baseline
                for r in range(rs.start, rs.stop):
                    for c in range(cs.start, cs.stop):
                        if valid is not None and not valid[r, c]:
                            continue
                        crng = _rng(seed, CELL_STREAM, r, c)
                        cell_laws = [
                            AreaLaw(rm.area_rho, float(th), rm.area_lo_m2, area_hi)
                            for th in theta_cells[:, r, c]
                        ]
                        draws = draw_counts_and_areas(
                            np.concatenate([[base_rate[r, c]], rates[:, r, c]]),
                            [base_law, *cell_laws],
                            crng,
                        )
                        if not any(len(a) for a in draws):
                            continue
                        if tw is None:
                            tw = terrain(rs, cs)
                            log_w = landslide_log_weight(tw)
                        lr, lc = (r - rs.start) * k, (c - cs.start) * k
                        x0 = spec.origin[0] + c * spec.grid.cell_size_m
                        y1 = spec.origin[1] - r * spec.grid.cell_size_m
                        w = log_w[lr : lr + k, lc : lc + k]
                        placer = CellPlacer(
                            (x0, y1 - spec.grid.cell_size_m, x0 + spec.grid.cell_size_m, y1),
                            spec.pixel_size_m,
                            np.exp(w - w.max()),
                            tw.downslope_rad[lr : lr + k, lc : lc + k],
                            [],
                        )
                        for i, areas in enumerate(draws):
                            if not len(areas):
                                continue
                            polys = placer.place(areas, crng)
                            # ids depend on the cell, not on the tiling: (cell, inventory, rank)
                            first = ((r * n_c + c) * (n_t + 1) + i) * 1_000_000
                            found.extend((i, p, first + j) for j, p in enumerate(polys))
                            if i:
                                new_area = float(shapely.area(polys).sum()) if polys else 0.0
                                new_density[i - 1, r, c] = new_area * 100.0 / cell_area
                                subpixel[i - 1] += 0 < new_area < SUBPIXEL_M2
                        lost_m2 += placer.lost_m2
                for date_index, writer in enumerate(writers):
                    chosen = [(i, p, j) for i, p, j in found if i <= date_index]
                    polys = [p for _, p, _ in chosen]
                    writer.add(polys, [j for _, _, j in chosen], [labels[i] for i, _, _ in chosen])
                for i, _, _ in found:
                    n_landslides[i] += 1
                if bar:
                    bar.advance(task)
            for writer in writers:
                writer.flush()
        timings["landslides_s"] = time.perf_counter() - started - sum(timings.values())

    # Rivers, truth, config, summary.
    with _atomic_gpkg(inputs / "rivers.gpkg") as tmp, _gpkg_timestamp(BASELINE_DATE):
        pyogrio.raw.write(
            tmp,
            np.array(shapely.to_wkb(river_lines), dtype=object),
            [np.array(river_kinds, dtype=object)],
            ["kind"],
            layer="rivers",
            driver="GPKG",
            geometry_type="LineString",
            crs=spec.crs,
        )
    cell_transform = spec.grid.cell_transform
    # What skill is attainable: the oracle ranks cells by the truth P; the "observable" score
    # drops the latent fields (no predictor can see them), and the observable oracle averages
    # the truth over them.
    observable = log_base - rm.sd_latent * latent - rm.sd_latent_period * latent_t
    p_obs, d_obs, e_obs = observable_truth(
        observable, intercepts, thetas, spec.shape_cells, cell_km, cell_area, area_hi, seed, rm
    )
    if valid is not None:  # no truth where the pipeline has no valid cell
        p_occ, d_given, d_expected, new_density, rates, theta_cells, p_obs, d_obs, e_obs = (
            np.where(valid, a, np.nan)
            for a in (
                p_occ,
                d_given,
                d_expected,
                new_density,
                rates,
                theta_cells,
                p_obs,
                d_obs,
                e_obs,
            )
        )
    truth = {
        "susceptibility": (p_occ, "1"),
        "density": (d_given, "% of cell area"),
        "hazard": (d_expected, "% of cell area"),
        "new_density": (new_density, "% of cell area"),
        # The generator's parameters per cell and period, so the truth can be re-derived.
        "rate": (rates, "expected number of new landslides"),
        "area_scale_m2": (theta_cells, "m2 (inverse-gamma scale of landslide areas)"),
        # the observable oracle: the truth averaged over the unobservable latent fields
        "observable_susceptibility": (p_obs, "1"),
        "observable_density": (d_obs, "% of cell area"),
        "observable_hazard": (e_obs, "% of cell area"),
    }
    for key, (arr, unit) in truth.items():
        write_raster(
            out / TRUTH_DIR / TRUTH_FILES[key],
            arr.astype(np.float32),
            cell_transform,
            spec.crs,
            band_names=names,
            units=unit,
        )

    config = scenario_config(
        spec, seed, names, name=None if source is None else f"synthetic-dem-{source.path.stem}"
    )
    save_config(config, out / CONFIG_FILE)

    occurred = new_density > 0
    per_period = {}
    for t, name in enumerate(names):
        per_period[name] = {
            "generated": period_statistics(new_density[t].astype(np.float32)).as_dict(),
            "expected_prevalence_pct": float(100.0 * on_valid(p_occ[t]).mean()),
            "expected_mean": float(on_valid(d_expected[t]).mean()),
            "real": REAL_GORKHA_TABLE[name].as_dict(),
            "fraction_of_positive_below_one_reference_pixel": float(
                subpixel[t] / max((new_density[t] > 0).sum(), 1)
            ),
            "n_landslides": int(n_landslides[t + 1]),
            "monsoons_since_eq": monsoons[t],
            "oracle_auc": rank_auc(on_valid(p_occ[t]), on_valid(occurred[t])),
            "observable_auc": rank_auc(on_valid(observable[t]), on_valid(occurred[t])),
            "observable_oracle_auc": rank_auc(on_valid(p_obs[t]), on_valid(occurred[t])),
        }
    summary = {
        "size": spec.size,
        "seed": seed,
        "spec": {
            **asdict(spec),
            "origin": list(spec.origin),
            "shape_cells": list(spec.shape_cells),
        },
        "n_cells": n_r * n_c,
        **({} if source is None else {"n_valid_cells": int(valid.sum()), "dem": source.summary()}),
        "fine_shape": list(spec.grid.fine_shape),
        "mean_slope_deg": slope_sum / valid_pixels,
        "relief_scale": scale,
        "n_rivers": len(river_lines),
        "n_baseline_landslides": int(n_landslides[0]),
        "placement_area_lost_m2": lost_m2,
        "oracle_auc_pooled": rank_auc(on_valid(p_occ), on_valid(occurred)),
        "observable_auc_pooled": rank_auc(
            on_valid(np.stack([intercepts[t] + observable[t] for t in range(n_t)])),
            on_valid(occurred),
        ),
        "observable_oracle_auc_pooled": rank_auc(on_valid(p_obs), on_valid(occurred)),
        "periods": per_period,
        "calibration": {
            "rate_model": asdict(rm),
            "intercepts": intercepts,
            "area_theta_m2": thetas,
            "area_bounds_m2": [rm.area_lo_m2, area_hi],
            "mean_area_m2": [
                float(np.mean(on_valid(rates[t] * mean_areas[t])) / np.mean(on_valid(rates[t])))
                for t in range(n_t)
            ],
            "baseline_area_law": asdict(base_law),
        },
        "shaking_grid": {
            "x_min": sgrid.x_min,
            "y_max": sgrid.y_max,
            "pixel_m": sgrid.pixel_m,
            "shape": list(sgrid.shape),
            "stations": stations.tolist(),
        },
        "rain_grid": {
            "x_min": rgrid.x_min,
            "y_max": rgrid.y_max,
            "pixel_m": rgrid.pixel_m,
            "shape": list(rgrid.shape),
            "n_days": n_days,
        },
        "timings_s": {**timings, "total_s": time.perf_counter() - started},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


_EPOCHS = {
    # (susceptibility, density on log1p, density, fine-tune, patience); see docs/training.md
    "tiny": (3, 2, 2, 1, 3),
    # the susceptibility stage: up to 30 epochs (~2 s each on the demo), patience 5, so that the
    # wide path converges (docs/models.md, "The default model")
    "demo": (30, 4, 4, 2, 5),
    "regional": (30, 4, 4, 2, 5),
}


#: A scenario on a user's DEM with at most this many cells trains with the demo's CPU-sized
#: epochs (the demo has 2,304 cells; Langtang 924).
DEM_SHORT_RUN_CELLS = 4096


def scenario_config(
    spec: ScenarioSpec, seed: int, names: list[str], name: str | None = None
) -> RunConfig:
    """The RunConfig of a scenario written by :func:`generate_scenario` (paths relative to OUT).

    Training defaults are CPU-sized for ``tiny`` and ``demo`` (the ``tiny`` preset, dropout 0.3:
    without it the susceptibility net overfits the training blocks after one epoch; measured in
    docs/training.md), and for a ``dem`` scenario of at most ``DEM_SHORT_RUN_CELLS`` cells as for
    ``demo``. Spatial blocks are a quarter of the domain's side (2-16 km); ``tiny``
    (16 x 16 cells, 4-cell patches) uses a 1-cell buffer around test blocks, else no patch
    would lie wholly in the training blocks for some folds. ``name``: default
    ``synthetic-<size>``.
    """
    inv = "inputs/inventories"
    n_cells = spec.shape_cells[0] * spec.shape_cells[1]
    epochs_as = "demo" if spec.size == "dem" and n_cells <= DEM_SHORT_RUN_CELLS else spec.size
    sus, dlog, dens, fine, patience = _EPOCHS.get(epochs_as, (60, 20, 20, 5, 10))
    short_runs = ("tiny", "demo", "regional")
    domain_km = min(spec.shape_cells) * spec.grid.cell_size_m / 1000.0
    block_km = float(min(16.0, max(2.0, domain_km / 4)))
    data = {
        "name": name or f"synthetic-{spec.size}",
        "seed": seed,
        "grid": {
            "crs": spec.crs,
            "origin": list(spec.origin),
            "pixel_size_m": spec.pixel_size_m,
            "cell_pixels": spec.cell_pixels,
            "shape_cells": list(spec.shape_cells),
            "patch_cells": spec.patch_cells,
        },
        "baseline": {
            "name": BASELINE_NAME,
            "date": BASELINE_DATE.isoformat(),
            "inventory": f"{inv}/{slug(BASELINE_NAME)}.gpkg",
        },
        "periods": [
            {"name": name, "date": date.isoformat(), "inventory": f"{inv}/{slug(name)}.gpkg"}
            for name, date in spec.periods
        ],
        "inputs": {
            "dem": "inputs/dem.tif",
            "rain": "inputs/rain.tif",
            "earthquakes": [
                {
                    "name": e.name,
                    "date": e.date.isoformat(),
                    "pga": f"inputs/pga_{e.name}.tif",
                    "pga_unit": "g",
                    "sigma_ln_pga": f"inputs/sigma_{e.name}.tif",
                }
                for e in EARTHQUAKES
            ],
            "rivers": {"path": "inputs/rivers.gpkg"},
        },
        "model": {"preset": "tiny", "dropout": 0.3},
        "training": {
            "max_epochs_susceptibility": sus,
            "max_epochs_density_log": dlog,
            "max_epochs_density": dens,
            "max_epochs_finetune": fine,
            "patience": patience,
            # The paper code's 1e-4 barely moves the density block in the few epochs a CPU
            # demo affords (held-out hazard r ~0); 1e-3 lowered both density stages'
            # validation losses on demo seed 0 (docs/training.md).
            **({"lr_density": 1e-3} if epochs_as in short_runs else {}),
        },
        "evaluation": {
            "block_km": block_km,
            "n_folds": 4 if spec.size == "tiny" else 5,
            "buffer_cells": 1 if spec.size == "tiny" else None,
            "temporal_test_periods": 2,
        },
        "output": {"dir": "out"},
    }
    data["evaluation"]["truth_dir"] = TRUTH_DIR
    return RunConfig.model_validate(data)
