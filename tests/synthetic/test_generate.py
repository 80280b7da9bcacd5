"""The tiny scenario end to end: files, config, determinism, tiling, truth vs inventories."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from scipy.special import gammaincinv

from landslide_hazard.config import load_config
from landslide_hazard.io import read_rain_stack, read_raster
from landslide_hazard.synthetic import generate_scenario, get_spec
from landslide_hazard.synthetic.calibration import REAL_GORKHA_TABLE
from landslide_hazard.synthetic.spec import BASELINE_DATE, SIZES

TRUTH = ("p_occurrence", "density_given_occurrence", "expected_density", "new_density")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tiny") / "scenario"
    return out, generate_scenario("tiny", 0, out, progress=False)


def _polygons(path: Path) -> tuple[np.ndarray, np.ndarray]:
    meta, _, geom, fields = pyogrio.raw.read(path)
    ids = fields[list(meta["fields"]).index("landslide_id")]
    order = np.argsort(ids)
    return ids[order], shapely.from_wkb(geom[order])


def _same_scenario(a: Path, b: Path) -> None:
    for tif in sorted(a.rglob("*.tif")):
        x, _ = read_raster(tif)
        y, _ = read_raster(b / tif.relative_to(a))
        assert np.array_equal(x, y, equal_nan=True), tif.name
    for gpkg in sorted(a.rglob("*.gpkg")):
        if gpkg.name == "rivers.gpkg":
            continue
        ids_a, geo_a = _polygons(gpkg)
        ids_b, geo_b = _polygons(b / gpkg.relative_to(a))
        assert np.array_equal(ids_a, ids_b)
        assert all(shapely.equals_exact(geo_a, geo_b, tolerance=0.0))
    assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()


def test_files_open_on_the_right_grids(tiny):
    out, summary = tiny
    spec = get_spec("tiny")
    with rasterio.open(out / "inputs" / "dem.tif") as ds:
        assert ds.crs.to_epsg() == 32645
        assert (ds.height, ds.width) == spec.grid.fine_shape == (128, 128)
        assert ds.transform.a == 125.0 and (ds.transform.c, ds.transform.f) == spec.origin
        dem = ds.read(1)
    assert np.isfinite(dem).all() and 500 < dem.min() < dem.max() < 9000
    assert summary["mean_slope_deg"] == pytest.approx(30.0, abs=4.0)
    for kind in ("pga", "sigma"):
        for event in ("mainshock", "aftershock"):
            with rasterio.open(out / "inputs" / f"{kind}_{event}.tif") as ds:
                assert ds.crs.to_epsg() == 32645 and ds.transform.a == 1000.0
                b = ds.bounds
                x0, y0, x1, y1 = spec.grid.bounds
                assert b.left < x0 and b.right > x1 and b.bottom < y0 and b.top > y1
                values = ds.read(1)
            assert np.isfinite(values).all() and (values > 0).all()
            if kind == "pga":
                assert 0.02 < values.mean() < 2.0  # g
            else:
                assert values.max() <= 0.21 * np.log(10) + 1e-6
    stack = read_rain_stack(out / "inputs" / "rain.tif")
    assert stack.crs.to_epsg() == 32645 and abs(stack.transform.a) == 5000.0
    assert stack.dates[0] == BASELINE_DATE + dt.timedelta(days=1)
    cfg = load_config(out / "config.yaml")
    prev = cfg.baseline.date
    for period in cfg.periods:
        idx = stack.days_in(prev, period.date)  # raises if a day is missing
        assert len(idx) == (period.date - prev).days
        prev = period.date
    monsoon = stack.data[[d.month in (7, 8) for d in stack.dates]].mean()
    dry = stack.data[[d.month in (12, 1, 2) for d in stack.dates]].mean()
    assert monsoon > 4 * dry
    rivers = pyogrio.read_info(out / "inputs" / "rivers.gpkg")
    assert rivers["geometry_type"] == "LineString" and rivers["crs"] == "EPSG:32645"
    for name in TRUTH:
        data, info = read_raster(out / "truth" / f"{name}.tif")
        assert data.shape == (4, 16, 16) and info.crs.to_epsg() == 32645
        assert info.descriptions == tuple(cfg.period_names)
        assert info.transform.a == 1000.0


def test_config_loads_and_points_at_the_files(tiny):
    out, _ = tiny
    cfg = load_config(out / "config.yaml")
    assert cfg.grid.shape_cells == (16, 16) and cfg.grid.cell_pixels == 8
    assert cfg.grid.patch_cells == 4 and cfg.model.preset == "tiny"
    assert cfg.period_names == [
        "Co-seismic 2015",
        "Post-monsoon 2015",
        "Pre-monsoon 2016",
        "Post-monsoon 2016",
    ]
    assert cfg.baseline.date == BASELINE_DATE
    assert [e.date for e in cfg.inputs.earthquakes] == [dt.date(2015, 4, 25), dt.date(2015, 5, 12)]
    assert all(e.pga_unit == "g" and e.sigma_ln_pga.is_file() for e in cfg.inputs.earthquakes)
    for path in [cfg.inputs.dem, cfg.inputs.rain, cfg.inputs.rivers.path, cfg.baseline.inventory]:
        assert path.is_file()
    assert all(p.inventory.is_file() for p in cfg.periods)
    assert cfg.training.max_epochs_susceptibility <= 5
    assert cfg.output.dir == (out / "out").resolve()


def test_same_seed_same_files_other_seed_differs(tiny, tmp_path):
    out, summary = tiny
    again = generate_scenario("tiny", 0, tmp_path / "again", progress=False)
    _same_scenario(out, tmp_path / "again")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file()
    )
    for rel in files:
        if rel.name != "summary.json":  # holds timings
            assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    strip = lambda s: {k: v for k, v in s.items() if k != "timings_s"}  # noqa: E731
    assert json.loads(json.dumps(strip(summary))) == json.loads(json.dumps(strip(again)))
    other = generate_scenario("tiny", 1, tmp_path / "other", progress=False)
    assert other["periods"] != summary["periods"]


def test_tiled_generation_equals_one_tile(tiny, tmp_path):
    """The large-size code path: 4 tiles of 8 x 8 cells give the files of one 16 x 16 tile."""
    out, _ = tiny
    spec = get_spec("tiny").with_(tile_cells=8)
    generate_scenario("tiny", 0, tmp_path / "tiled", progress=False, spec=spec)
    _same_scenario(out, tmp_path / "tiled")


def test_large_and_gorkha_sizes():
    large = SIZES["large"]
    x0, y0, x1, y1 = large.grid.bounds
    assert (x1 - x0) * (y1 - y0) / 1e6 >= 100_000
    assert large.grid.fine_shape[0] // (large.tile_cells * large.cell_pixels) >= 10  # tiled
    g = SIZES["gorkha"]
    assert g.shape_cells == (196, 220) and g.grid.cell_size_m == 1000.0 and g.n_periods == 8
    with pytest.raises(ValueError, match="unknown scenario size"):
        get_spec("huge")


def test_bad_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="non-negative integer"):
        generate_scenario("tiny", -1, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def _cell_areas(polys, spec) -> np.ndarray:
    """Exact polygon area per cell (m2), by intersection with every cell box."""
    n_r, n_c = spec.shape_cells
    cs = spec.grid.cell_size_m
    x0, y1 = spec.origin
    out = np.zeros((n_r, n_c))
    if len(polys) == 0:
        return out
    union = shapely.union_all(polys)
    for r in range(n_r):
        for c in range(n_c):
            box = shapely.box(x0 + c * cs, y1 - (r + 1) * cs, x0 + (c + 1) * cs, y1 - r * cs)
            out[r, c] = shapely.intersection(union, box).area
    return out


def test_new_density_is_the_positive_difference_of_cumulative_inventories(tiny):
    out, summary = tiny
    spec = get_spec("tiny")
    cfg = load_config(out / "config.yaml")
    new, _ = read_raster(out / "truth" / "new_density.tif")
    prev = _cell_areas(_polygons(cfg.baseline.inventory)[1], spec)
    assert prev.sum() > 0  # old scars before the event
    for t, period in enumerate(cfg.periods):
        cum = _cell_areas(_polygons(period.inventory)[1], spec)
        assert np.all(cum >= prev - 1e-6)  # cumulative inventories only grow
        expect = np.maximum(cum - prev, 0.0) * 100.0 / spec.grid.cell_area_m2
        assert np.allclose(new[t], expect, rtol=1e-5, atol=1e-7)
        prev = cum
    assert summary["placement_area_lost_m2"] == 0.0
    positive = new[new > 0]
    assert np.mean(positive < 100 * 31.25**2 / 1e6) > 0.05  # sub-pixel landslide areas exist


def test_truth_is_consistent_and_calibrated(tiny):
    out, summary = tiny
    p, _ = read_raster(out / "truth" / "p_occurrence.tif")
    cond, _ = read_raster(out / "truth" / "density_given_occurrence.tif")
    exp, _ = read_raster(out / "truth" / "expected_density.tif")
    new, _ = read_raster(out / "truth" / "new_density.tif")
    assert np.all((p > 0) & (p < 1))
    assert np.allclose(p * cond, exp, rtol=1e-5)
    for t, (name, stats) in enumerate(summary["periods"].items()):
        real = REAL_GORKHA_TABLE[name]
        # intercepts and area scales are calibrated exactly in expectation
        assert 100 * p[t].astype(float).mean() == pytest.approx(real.prevalence_pct, rel=1e-4)
        assert exp[t].astype(float).mean() == pytest.approx(real.mean, rel=1e-4)
        assert stats["expected_prevalence_pct"] == pytest.approx(real.prevalence_pct, rel=1e-6)
    # the one realisation agrees with P: a z-score over all cells and periods
    occurred = (new > 0).astype(float)
    z = (occurred - p).sum() / np.sqrt((p * (1 - p)).sum())
    assert abs(z) < 4.0


def _draw_new_density(rate, theta, rho, lo, hi, cell_area, rng, reps):
    """Independent re-draw of the model: Poisson counts, truncated inverse-gamma areas."""
    counts = rng.poisson(np.broadcast_to(rate, (reps, *rate.shape)))
    theta_rep = np.repeat(np.broadcast_to(theta, counts.shape).ravel(), counts.ravel())
    g1, g2 = theta_rep / hi, theta_rep / lo
    from scipy.special import gammainc

    u = rng.uniform(gammainc(rho, g1), gammainc(rho, g2))
    areas = theta_rep / gammaincinv(rho, u)
    owner = np.repeat(np.arange(counts.size), counts.ravel())
    total = np.bincount(owner, weights=areas, minlength=counts.size).reshape(counts.shape)
    return total * 100.0 / cell_area


def test_truth_agrees_with_monte_carlo(tiny):
    """Re-draw the landslides 2000 times with the recorded rates; compare P and E[D] to truth."""
    out, summary = tiny
    rate, _ = read_raster(out / "truth" / "rate.tif", dtype="float64")
    theta, _ = read_raster(out / "truth" / "area_scale_m2.tif", dtype="float64")
    p_true, _ = read_raster(out / "truth" / "p_occurrence.tif", dtype="float64")
    e_true, _ = read_raster(out / "truth" / "expected_density.tif", dtype="float64")
    rm = summary["calibration"]["rate_model"]
    lo, hi = summary["calibration"]["area_bounds_m2"]
    reps = 2000
    d = _draw_new_density(rate, theta, rm["area_rho"], lo, hi, 1e6, np.random.default_rng(11), reps)
    p_mc = (d > 0).mean(axis=0)
    # per cell: binomial standard error; allow 4.5 SE (2,048 cells) plus float32 rounding
    se = np.sqrt(p_true * (1 - p_true) / reps)
    assert np.all(np.abs(p_mc - p_true) <= 4.5 * se + 1e-6)
    # E[D]: heavy tails make per-cell means noisy; compare pooled over cells per period, where
    # the standard error is estimated from the draws themselves
    e_mc = d.mean(axis=0)
    for t in range(rate.shape[0]):
        se_t = d[:, t].sum(axis=(1, 2)).std() / np.sqrt(reps)
        assert abs(e_mc[t].sum() - e_true[t].sum()) <= 4.5 * se_t
    # and the placement step keeps every drawn area (it is what the inventories hold)
    assert summary["placement_area_lost_m2"] == 0.0


def test_observable_oracle_without_latent_noise_is_the_truth():
    """With the latent fields switched off, averaging over them changes nothing."""
    import dataclasses

    from landslide_hazard.synthetic.landslides import (
        saturating_rate,
        truncated_inverse_gamma_mean,
        truth_from_rates,
    )
    from landslide_hazard.synthetic.rates import RATE_MODEL, Calibration, observable_truth

    rm = dataclasses.replace(RATE_MODEL, sd_latent=0.0, sd_latent_period=0.0, sd_log_area_scale=0.0)
    rng = np.random.default_rng(0)
    log_obs = rng.normal(0, 1, (2, 5, 6))
    intercepts, thetas = [-1.0, -2.0], [900.0, 1500.0]
    cell_area, hi = 1e6, 0.15e6
    calibration = Calibration(intercepts, thetas, cell_area, hi)
    p, d, e = observable_truth(log_obs, calibration, 1.0, 0, rm, 4)
    rates = saturating_rate(np.exp(np.array(intercepts)[:, None, None] + log_obs), rm.max_rate)
    areas = truncated_inverse_gamma_mean(
        rm.area_rho, np.array(thetas)[:, None, None], rm.area_lo_m2, hi
    )
    p_want, d_want, e_want = truth_from_rates(rates, areas, cell_area)
    np.testing.assert_allclose(p, p_want, rtol=1e-12)
    np.testing.assert_allclose(e, e_want, rtol=1e-12)
    np.testing.assert_allclose(d, d_want, rtol=1e-12)


def test_observable_oracle_is_a_smoother_truth():
    """With latent noise, P averages over it: still a probability, E[D] = P x E[D | D > 0], and
    not the noise-free P."""
    from landslide_hazard.synthetic.landslides import saturating_rate
    from landslide_hazard.synthetic.rates import RATE_MODEL, Calibration, observable_truth

    rng = np.random.default_rng(1)
    log_obs = rng.normal(0, 1, (2, 8, 8))
    calibration = Calibration([0.0, -1.0], [900.0, 900.0], 1e6, 1.5e5)
    p, d, e = observable_truth(log_obs, calibration, 1.0, 3)
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(e, p * d, rtol=1e-9)
    rates = saturating_rate(np.exp(np.array([0.0, -1.0])[:, None, None] + log_obs), 15.0)
    assert RATE_MODEL.sd_latent > 0
    assert np.mean(p) != pytest.approx(float(np.mean(-np.expm1(-rates))), abs=1e-6)
