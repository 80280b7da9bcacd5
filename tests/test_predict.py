"""predict: wall-to-wall maps, lattice merge (hand-checked), files, what-if scenarios."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
import torch
import yaml

from landslide_hazard import predict as predict_mod
from landslide_hazard.config import parse_config
from landslide_hazard.errors import ConfigError, InputError
from landslide_hazard.models import ENNOutput
from landslide_hazard.predict import Inference
from landslide_hazard.sampling.dataset import CubeReader
from landslide_hazard.sampling.normalisation import compute_normalisation
from landslide_hazard.testing import make_cube, one_epoch_config

N = 4


def _cube(path, shape=(9, 10), n_periods=3, seed=0):
    """A random cube of ``shape`` cells of 4 px, patches of N cells; periods P0, P1, ..."""
    return make_cube(path, shape_cells=shape, k=4, n=N, n_periods=n_periods, seed=seed)


class PositionModel(torch.nn.Module):
    """Ignores its input: susceptibility of cell (i, j) of a patch = (i*n + j + 1) / 32,
    density = 2, so each lattice gives a known, different value per cell."""

    def forward(self, x):
        b = x.shape[0]
        s = (torch.arange(N * N, dtype=torch.float32).reshape(N, N) + 1) / 32
        s = s.expand(b, N, N)
        d = torch.full((b, N, N), 2.0)
        return ENNOutput(s, d, s * d)


def _hand_merged(shape, merge):
    r = np.arange(shape[0])[:, None]
    c = np.arange(shape[1])[None, :]
    lat0 = ((r % N) * N + (c % N) + 1) / 32
    h = N // 2
    lat1 = (((r + h) % N) * N + ((c + h) % N) + 1) / 32
    return lat0 if merge == "lattice0" else (lat0 + lat1) / 2


@pytest.mark.parametrize("merge", ["mean", "lattice0"])
def test_lattices_merged_per_cell(tmp_path, merge):
    cube = _cube(tmp_path / "cube.zarr")
    reader = CubeReader(cube)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, 4
    )
    out = predict_mod.predict_arrays(
        PositionModel(), reader, norm, merge=merge, inference=Inference(batch_size=5)
    )
    want = _hand_merged(cube.grid.cell_shape, merge)
    for t in range(3):
        got = out["susceptibility"][t]
        np.testing.assert_allclose(got[reader.valid], want[reader.valid], rtol=1e-6)
        assert np.isnan(got[~reader.valid]).all()
        np.testing.assert_allclose(out["density"][t][reader.valid], 2.0)
        np.testing.assert_allclose(
            out["hazard"][t][reader.valid], 2 * want[reader.valid], rtol=1e-6
        )
    sub = predict_mod.predict_arrays(PositionModel(), reader, norm, periods=[1], merge=merge)
    assert np.isnan(sub["hazard"][0]).all() and np.isfinite(sub["hazard"][1][reader.valid]).all()


def _config(tmp_path, cube):
    data = one_epoch_config(cube, batch_size=4, block_km=3.0)
    data["model"] = {"preset": "tiny"}
    data["output"] = {"dir": str(tmp_path / "out"), "hazard_class_breaks": [0.1, 0.2, 0.3]}
    return parse_config(data, tmp_path)


@pytest.fixture
def trained_run(tmp_path):
    from landslide_hazard.training import train

    cube = _cube(tmp_path / "out" / "cube.zarr")
    cfg = _config(tmp_path, cube)
    return train(cfg, progress=False), cube


def test_predict_writes_cogs_and_gpkg(trained_run, monkeypatch):
    run, cube = trained_run
    real_load = predict_mod.load_model_file

    def load_position_model(path, device="cpu"):
        _, norm, meta = real_load(path, device)
        return PositionModel(), norm, meta

    monkeypatch.setattr(predict_mod.loading, "load_model_file", load_position_model)
    maps = predict_mod.predict(run, progress=False)
    assert maps == run / "maps"
    g = cube.grid
    names = cube.meta.period_names
    valid = cube.valid_cells
    want = _hand_merged(g.cell_shape, "mean")
    for name in ("susceptibility", "density", "hazard", "observed", "hazard_class"):
        with rasterio.open(maps / f"{name}.tif") as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert ds.crs.to_epsg() == 32645
            assert ds.transform.almost_equals(g.cell_transform)
            assert list(ds.descriptions) == names
            for b, period in enumerate(cube.meta.periods, start=1):
                band = ds.tags(b)
                assert band["period"] == period.name
                assert (band["period_start"], band["period_end"]) == (period.start, period.end)
                assert band["units"] == ds.units[b - 1]
            data = ds.read()
        if name == "hazard_class":
            assert data.dtype == np.uint8
            assert (data[:, ~valid] == predict_mod.HAZARD_CLASS_NODATA).all()
        else:
            assert np.isnan(data[:, ~valid]).all()
        if name == "susceptibility":
            np.testing.assert_allclose(
                data[:, valid], np.broadcast_to(want[valid], (3, valid.sum())), rtol=1e-6
            )
        if name == "observed":
            np.testing.assert_array_equal(
                data[:, valid], np.asarray(cube.target_density[:])[:, valid]
            )
        if name == "hazard_class":
            np.testing.assert_array_equal(
                data[:, valid], np.digitize(2 * want[valid], [0.1, 0.2, 0.3])[None].repeat(3, 0)
            )
    import pyogrio

    meta, _, geoms, fields = pyogrio.raw.read(maps / "cells.gpkg", layer="cells")
    assert len(geoms) == valid.sum()
    cols = list(meta["fields"])
    assert "hazard_p0" in cols and "susceptibility_p2" in cols
    row, col = fields[cols.index("cell_row")], fields[cols.index("cell_col")]
    np.testing.assert_allclose(fields[cols.index("susceptibility_p1")], want[row, col], rtol=1e-6)
    # the long layer: a row per cell and period, the same values, the period's dates
    meta, _, geoms, fields = pyogrio.raw.read(maps / "cells.gpkg", layer="cells_by_period")
    cols = list(meta["fields"])
    assert len(geoms) == 3 * valid.sum()
    period = fields[cols.index("period")]
    assert sorted(set(period)) == names
    p1 = period == names[1]
    row, col = fields[cols.index("cell_row")][p1], fields[cols.index("cell_col")][p1]
    np.testing.assert_allclose(fields[cols.index("susceptibility")][p1], want[row, col], rtol=1e-6)
    start = fields[cols.index("period_start")][p1]
    assert (start == np.datetime64(cube.meta.periods[1].start)).all()
    assert "susceptibility_std" not in cols  # no MC dropout asked for
    # the folder holds exactly what the STAC Item lists (and the Item itself)
    item = json.loads((maps / "stac-item.json").read_text())
    listed = {a["href"] for a in item["assets"].values()}
    assert {f"./{f.name}" for f in maps.iterdir()} == listed | {"./stac-item.json"}


def test_predict_real_model_and_scenario(trained_run, tmp_path):
    from landslide_hazard.bands import ANOMALY_NAMES, DYNAMIC_NAMES, MODEL_LEGACY_NAMES
    from landslide_hazard.io import write_raster

    run, cube = trained_run
    # a temporal run of the tiny preset reads the rain anomalies and the (stationary) legacy
    # bands (predictors.trigger_anomalies and predictors.legacy: auto)
    assert (
        predict_mod.load_run(run).dynamic_bands
        == DYNAMIC_NAMES + ANOMALY_NAMES + MODEL_LEGACY_NAMES
    )
    maps = predict_mod.predict(run, progress=False)
    with rasterio.open(maps / "susceptibility.tif") as ds:
        s = ds.read()
    assert np.all((s[:, cube.valid_cells] >= 0) & (s[:, cube.valid_cells] <= 1))
    g = cube.grid
    norm = predict_mod.load_run(run).norm
    rain = np.full(g.cell_shape, 5.0, dtype="float32")
    # just above the training range of rain_max: outside it, but too few cells to move the
    # period's mean (and so the other cells' anomalies) out of the anomaly's range
    rain[0, 5:] = norm.maximum[norm.names.index("rain_max")] + 1.0
    write_raster(tmp_path / "rain_max.tif", rain, g.cell_transform, g.crs)
    write_raster(
        tmp_path / "five.tif", np.full(g.cell_shape, 5.0, "float32"), g.cell_transform, g.crs
    )
    # every trigger inside the training range but the storm cells; period 2's monsoon count (2)
    # is outside the range of the training periods (0, 1), so it is set to 1
    rasters = {
        "rain_max": "rain_max.tif",
        "rain_ci95": "five.tif",
        "pga_max": "five.tif",
        "pga_std": "five.tif",
    }
    spec = {"name": "storm", "periods": ["P2"], "rasters": rasters, "monsoons_since_eq": 1}
    (tmp_path / "storm.yaml").write_text(yaml.safe_dump(spec))
    with pytest.warns(UserWarning, match="outside the training range"):
        out = predict_mod.predict(run, scenario=tmp_path / "storm.yaml", progress=False)
    assert out == run / "scenarios" / "storm"
    with rasterio.open(out / "applicability.tif") as ds:
        app = ds.read(1)
        assert list(ds.descriptions) == ["P2"]
    valid = cube.valid_cells
    # by hand from the run's training ranges: the storm cells' rain is outside; the rain
    # anomaly of every cell is checked against its own range too (the other bands are 5.0 or,
    # for rain_ci95's anomaly, 0.0, inside theirs)

    def inside(name, v):
        i = norm.names.index(name)
        return (v >= norm.minimum[i]) & (v <= norm.maximum[i])

    want = inside("rain_max", rain) & inside("rain_max_anomaly", rain - rain[valid].mean())
    assert not want[0, 5:].any() and want[valid].sum() == valid.sum() - valid[0, 5:].sum()
    np.testing.assert_array_equal(app[valid], want[valid].astype(float))
    # a storm of 1e4 mm/day on the same cells lifts the period's mean so far that every cell's
    # anomaly leaves its range: the whole map extrapolates
    storm = rain.copy()
    storm[0, 5:] = 1e4
    wide = inside("rain_max", storm) & inside("rain_max_anomaly", storm - storm[valid].mean())
    assert not wide[valid].any()
    assert np.isnan(app[~valid]).all()
    with rasterio.open(out / "hazard.tif") as ds:
        assert ds.count == 1
    with pytest.raises(ValueError, match="not in the cube's periods"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"name": "x", "periods": ["nope"], "monsoons_since_eq": 1}))
        predict_mod.predict(run, scenario=bad, progress=False)


def test_hazard_classes():
    h = np.array([np.nan, 0.0, 0.01, 0.05, 0.1, 5.0])
    got = predict_mod.hazard_classes(h, [0.01, 0.1, 1.0])
    np.testing.assert_array_equal(got[1:], [0, 1, 1, 2, 3])
    assert np.isnan(got[0])
    with pytest.raises(ValueError):
        predict_mod.hazard_classes(h, [0.1, 0.01])


def test_hazard_class_cog_metadata(tmp_path):
    """The classed map: uint8, nodata 255, a colour table, class names and breaks, period tags
    on every band; a valid COG whose overviews keep classes (nearest, not averaged)."""
    from landslide_hazard.cube import PeriodInfo
    from landslide_hazard.grid import StudyGrid

    # 600 x 600 cells: large enough for the COG driver to build overviews
    grid = StudyGrid("EPSG:32645", 500000.0, 3100000.0, 10.0, 10, 600, 600)
    cy, cx = grid.cell_shape
    rng = np.random.default_rng(0)
    hazard = rng.uniform(0, 2, (2, cy, cx)).astype(np.float32)
    hazard[:, :3, :3] = np.nan
    arrays = {"susceptibility": hazard / 2, "density": hazard, "hazard": hazard}
    periods = [
        PeriodInfo("co-seismic 2015", "2015-04-24", "2015-06-15"),
        PeriodInfo("monsoon 2015", "2015-06-15", "2015-11-30"),
    ]
    breaks = [0.01, 0.1, 1.0]
    written = predict_mod.write_maps(
        tmp_path,
        arrays,
        grid,
        periods,
        breaks,
        predict_mod.ExtraLayers(observed=hazard),
        predict_mod.MapLabels({"run": "r"}),
    )
    names = predict_mod.hazard_class_names(breaks)
    assert names == [
        "E[D] < 0.01 % of cell area",
        "0.01 <= E[D] < 0.1 % of cell area",
        "0.1 <= E[D] < 1 % of cell area",
        "E[D] >= 1 % of cell area",
    ]
    with rasterio.open(written["hazard_class"]) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1), "a COG this size has overviews"
        assert ds.dtypes == ("uint8", "uint8")
        assert ds.nodata == 255
        cmap = ds.colormap(1)
        assert cmap[0] == (255, 255, 178, 255)  # light yellow
        assert cmap[3] == (189, 0, 38, 255)  # dark red
        reds = [cmap[i][1] for i in range(4)]
        assert reds == sorted(reds, reverse=True)  # darker with each class
        assert cmap[255][3] == 0  # nodata transparent
        for tags in (ds.tags(), ds.tags(1), ds.tags(2)):
            assert json.loads(tags["class_names"]) == names
            assert tags["hazard_class_breaks"] == "0.01,0.1,1"
        assert ds.tags()["run"] == "r"
        assert ds.tags(2)["period"] == "monsoon 2015"
        assert ds.tags(2)["period_start"] == "2015-06-15"
        assert ds.tags(2)["period_end"] == "2015-11-30"
        assert ds.tags(1)["units"] == "class"
        data = ds.read()
        overview = ds.read(1, out_shape=(cy // 4, cx // 4))
    finite = np.isfinite(hazard)
    np.testing.assert_array_equal(data[finite], np.digitize(hazard[finite], breaks))
    assert (data[~finite] == 255).all()
    assert set(np.unique(overview)) <= {0, 1, 2, 3, 255}
    for name in ("susceptibility", "density", "hazard", "observed"):
        with rasterio.open(written[name]) as ds:
            assert ds.dtypes[0] == "float32"
            assert [ds.tags(b)["period"] for b in (1, 2)] == [p.name for p in periods]
            assert ds.tags(1)["period_start"] == "2015-04-24"
            assert ds.tags(1)["units"] == predict_mod.QUANTITY_UNITS.get(name, ds.units[0])
    import pyogrio

    meta, _, _, fields = pyogrio.raw.read(written["cells"], layer="cells")
    col = list(meta["fields"]).index("hazard_class_co_seismic_2015")
    assert np.isnan(fields[col]).sum() == 0  # the GPKG keeps valid cells only, as floats
    with pytest.raises(ValueError, match="at most 254"):
        predict_mod.hazard_class_colours(300)


def test_scenario_triggers_from_rain_stack_and_earthquakes(tmp_path):
    import datetime as dt

    from landslide_hazard.io import write_rain_stack, write_raster

    cube = _cube(tmp_path / "cube.zarr")
    g = cube.grid
    days = [dt.date(2015, 1, 2) + dt.timedelta(days=i) for i in range(95)]
    rng = np.random.default_rng(3)
    rain = rng.gamma(1.0, 10.0, size=(len(days), *g.cell_shape)).astype("float32")
    write_rain_stack(tmp_path / "rain.tif", rain, days, g.cell_transform, g.crs)
    pga_g = np.full(g.cell_shape, 0.5, dtype="float32")
    pga_g[3, 4] = 0.8
    write_raster(tmp_path / "pga.tif", pga_g, g.cell_transform, g.crs)
    write_raster(tmp_path / "late.tif", pga_g * 3, g.cell_transform, g.crs)
    spec = {
        "name": "wet",
        "periods": ["P1", "P2"],
        "rain": "rain.tif",
        "earthquakes": [
            {"name": "m", "date": "2015-01-15", "pga": "pga.tif", "pga_unit": "g"},
            {"name": "late", "date": "2015-03-15", "pga": "late.tif", "pga_unit": "g"},
        ],
    }
    (tmp_path / "wet.yaml").write_text(yaml.safe_dump(spec))
    s = predict_mod.load_scenario(tmp_path / "wet.yaml", cube.meta.period_names)
    dynamic, monsoons = predict_mod.scenario_triggers(s, cube)
    original = np.asarray(cube.dynamic[:])
    np.testing.assert_array_equal(dynamic[0], original[0])  # P0 untouched
    np.testing.assert_array_equal(monsoons, cube.monsoons_since_eq)
    for t in (1, 2):
        info = cube.meta.periods[t]
        start, end = dt.date.fromisoformat(info.start), dt.date.fromisoformat(info.end)
        sel = np.array([start < d <= end for d in days])
        want_max = rain[sel].max(axis=0)
        lo, hi = np.percentile(rain[sel].astype("float64"), [2.5, 97.5], axis=0)
        np.testing.assert_allclose(dynamic[t, 0], want_max, rtol=1e-5)
        np.testing.assert_allclose(dynamic[t, 1], hi - lo, rtol=1e-4, atol=1e-4)
    # P1 ends 2015-03-01: only the first event; P2 ends 2015-04-01: the late one is the max
    np.testing.assert_allclose(dynamic[1, 2], pga_g * 9.80665, rtol=1e-5)
    np.testing.assert_allclose(dynamic[2, 2], 3 * pga_g * 9.80665, rtol=1e-5)
    # no sigma rasters: the std over the events of ln PGA (ln 3 apart -> ln(3) / 2)
    np.testing.assert_allclose(dynamic[2, 3], np.log(3.0) / 2, rtol=1e-4)


def test_zarr_backed_and_threaded_prediction_equal_in_memory(tmp_path):
    cube = _cube(tmp_path / "cube.zarr")
    mem = CubeReader(cube)
    lazy = CubeReader(cube, memory_budget_bytes=0)
    assert not lazy.static_in_memory
    norm = compute_normalisation(mem.static, mem.dynamic, mem.monsoons, mem.label_mask, 4)
    torch.manual_seed(0)
    from landslide_hazard.models import build_enn

    model = build_enn("tiny", patch_cells=N, cell_pixels=4)
    a = predict_mod.predict_arrays(model, mem, norm, inference=Inference(batch_size=7))
    b = predict_mod.predict_arrays(model, lazy, norm, inference=Inference(batch_size=7))
    c = predict_mod.predict_arrays(
        model, lazy, norm, inference=Inference(batch_size=3, input_threads=2)
    )
    for q in predict_mod.QUANTITIES:
        np.testing.assert_array_equal(a[q], b[q])
        np.testing.assert_allclose(c[q], a[q], rtol=1e-6, atol=1e-7)  # other batches, threads
    assert lazy._row_cache is None  # released after the pass


def test_stored_calibration_applies_to_the_merged_maps(tmp_path):
    """Platt scaling stored in the ENN maps the merged raw susceptibility exactly, and the
    hazard is the calibrated susceptibility x density; use_calibration off gives the raw maps."""
    from scipy.special import expit, logit

    from landslide_hazard.models import build_enn

    reader = CubeReader(_cube(tmp_path / "cube.zarr"))
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, 4
    )
    torch.manual_seed(0)
    model = build_enn("tiny", patch_cells=N, cell_pixels=4)
    raw = predict_mod.predict_arrays(model, reader, norm, inference=Inference(batch_size=7))
    model.set_calibration(0.7, -0.4)
    cal = predict_mod.predict_arrays(model, reader, norm, inference=Inference(batch_size=7))
    ok = np.isfinite(raw["susceptibility"])
    assert ok.any()
    p = np.clip(raw["susceptibility"][ok].astype(np.float64), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(cal["susceptibility"][ok], expit(0.7 * logit(p) - 0.4), rtol=1e-5)
    np.testing.assert_array_equal(cal["density"], raw["density"])
    np.testing.assert_allclose(cal["hazard"], cal["susceptibility"] * raw["density"], rtol=1e-6)
    model.use_calibration = False
    again = predict_mod.predict_arrays(model, reader, norm, inference=Inference(batch_size=7))
    for q in predict_mod.QUANTITIES:
        np.testing.assert_array_equal(again[q], raw[q])


def test_mc_dropout_uncertainty_map(tmp_path):
    from landslide_hazard.io import read_raster
    from landslide_hazard.training import train

    cube = _cube(tmp_path / "out" / "cube.zarr")
    cfg = _config(tmp_path, cube)
    no_dropout_run = train(cfg, progress=False)
    with pytest.raises(ValueError, match="model.dropout = 0"):
        predict_mod.predict(no_dropout_run, progress=False, mc_samples=3)

    cfg = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"dropout": 0.3}),
            "output": cfg.output.model_copy(update={"run_name": "with-dropout"}),
        }
    )
    run = train(cfg, progress=False)
    out = predict_mod.predict(run, progress=False, mc_samples=4)
    std, info = read_raster(out / "uncertainty.tif")
    sus, _ = read_raster(out / "susceptibility.tif")
    assert info.descriptions == tuple(cube.meta.period_names)
    assert std.shape == sus.shape
    # NaN exactly where the maps are NaN, a positive spread elsewhere (dropout is active)
    np.testing.assert_array_equal(np.isnan(std), np.isnan(sus))
    assert np.nanmin(std) >= 0 and np.nanmax(std) > 0
    # the GPKG's uncertainty columns hold the same std (wide and long layers)
    import pyogrio

    meta, _, _, fields = pyogrio.raw.read(out / "cells.gpkg", layer="cells")
    cols = list(meta["fields"])
    row, col = fields[cols.index("cell_row")], fields[cols.index("cell_col")]
    np.testing.assert_allclose(fields[cols.index("susceptibility_std_p1")], std[1][row, col])
    meta, _, _, fields = pyogrio.raw.read(out / "cells.gpkg", layer="cells_by_period")
    cols = list(meta["fields"])
    last = fields[cols.index("period")] == "P2"
    row, col = fields[cols.index("cell_row")][last], fields[cols.index("cell_col")][last]
    np.testing.assert_allclose(fields[cols.index("susceptibility_std")][last], std[2][row, col])
    item = json.loads((out / "stac-item.json").read_text())
    assert item["assets"]["uncertainty"]["href"] == "./uncertainty.tif"
    assert item["properties"]["landslide_hazard:uncertainty_method"].startswith("MC dropout, 4")
    # seeded: the same run gives the same map
    again, _ = read_raster(
        predict_mod.predict(run, progress=False, mc_samples=4) / "uncertainty.tif"
    )
    np.testing.assert_array_equal(again, std)


def test_consecutive_distributed_predictions_on_one_client(tmp_path):
    """Several predictions in a row on one client, each scattering the same normalisation and
    triggers: each call's shared data has keys of its own, so one call's clean-up cannot cancel
    what the next needs (with content-hashed keys, about half of such calls failed with "lost
    dependencies")."""
    from distributed import Client, LocalCluster

    from landslide_hazard.models import build_enn

    cube = _cube(tmp_path / "cube.zarr", shape=(9, 9))
    reader = CubeReader(cube, memory_budget_bytes=0)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, 4
    )
    torch.manual_seed(0)
    model = build_enn("tiny", patch_cells=N, cell_pixels=4)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        outs = [
            predict_mod.predict_arrays(
                model,
                reader,
                norm,
                periods=[t % 2],
                inference=Inference(batch_size=5),
                client=client,
            )
            for t in range(8)
        ]
    for t, out in enumerate(outs):
        assert np.isfinite(out["hazard"][t % 2][reader.valid]).all()


def test_distributed_prediction_equals_in_process(tmp_path):
    """Rows of patches on a LocalCluster (2 workers, threads) give the in-process arrays; the
    workers read the static rows from Zarr themselves."""
    from distributed import Client, LocalCluster

    from landslide_hazard.models import build_enn

    cube = _cube(tmp_path / "cube.zarr", shape=(13, 11))
    reader = CubeReader(cube)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, 4
    )
    torch.manual_seed(0)
    model = build_enn("tiny", patch_cells=N, cell_pixels=4)
    local = predict_mod.predict_arrays(
        model, reader, norm, periods=[0, 2], inference=Inference(batch_size=5)
    )
    lean = CubeReader(cube, memory_budget_bytes=0)  # the main process holds no fine raster
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        remote = predict_mod.predict_arrays(
            model, lean, norm, periods=[0, 2], inference=Inference(batch_size=5), client=client
        )
        # what-if triggers: the overriding arrays travel to the workers (scattered), not the cube's
        storm = reader.dynamic * 3.0
        what_if = CubeReader(cube, memory_budget_bytes=0, dynamic=storm)
        remote_storm = predict_mod.predict_arrays(
            model, what_if, norm, periods=[1], inference=Inference(batch_size=5), client=client
        )
    local_storm = predict_mod.predict_arrays(
        model, CubeReader(cube, dynamic=storm), norm, periods=[1], inference=Inference(batch_size=5)
    )
    for q in predict_mod.QUANTITIES:
        np.testing.assert_allclose(remote[q], local[q], rtol=1e-6, atol=1e-7)
        assert np.isnan(remote[q][1]).all()  # period not asked for
        np.testing.assert_allclose(remote_storm[q], local_storm[q], rtol=1e-6, atol=1e-7)
    plain = predict_mod.predict_arrays(
        model, reader, norm, periods=[1], inference=Inference(batch_size=5)
    )
    valid = reader.valid
    assert np.isfinite(plain["hazard"][1][valid]).all()
    assert not np.allclose(remote_storm["hazard"][1][valid], plain["hazard"][1][valid])
    assert model.training  # the caller's mode is kept


def test_predict_on_a_local_cluster_of_processes_writes_the_same_maps(trained_run, tmp_path):
    """`predict --scheduler local:2`: worker processes (model, normalisation and scenario
    triggers pickled to them) write the maps of the in-process run."""
    run, cube = trained_run
    serial = {}
    maps = predict_mod.predict(run, progress=False)
    for q in ("susceptibility", "density", "hazard", "observed"):
        with rasterio.open(maps / f"{q}.tif") as ds:
            serial[q] = ds.read()
    maps = predict_mod.predict(run, progress=False, scheduler="local:2")
    for q, want in serial.items():
        with rasterio.open(maps / f"{q}.tif") as ds:
            np.testing.assert_allclose(ds.read(), want, rtol=1e-6, atol=1e-7, err_msg=q)


def test_cli_predict_bad_scheduler_is_a_clean_error(trained_run):
    from typer.testing import CliRunner

    from landslide_hazard.cli import app

    run, _ = trained_run
    result = CliRunner().invoke(
        app, ["predict", str(run), "--no-progress", "--scheduler", "local:0"]
    )
    assert result.exit_code == 2
    assert "local:N" in result.output and "Traceback" not in result.output


def test_cpu_bf16_prediction_is_close_to_fp32(trained_run):
    """predict(cpu_bf16=True): bf16 autocast on the CPU; the maps stay within bf16 rounding."""
    run, cube = trained_run
    maps = predict_mod.predict(run, progress=False)
    with rasterio.open(maps / "susceptibility.tif") as ds:
        fp32 = ds.read()
    maps = predict_mod.predict(run, progress=False, cpu_bf16=True)
    with rasterio.open(maps / "susceptibility.tif") as ds:
        bf16 = ds.read()
    valid = cube.valid_cells
    diff = np.abs(bf16[:, valid] - fp32[:, valid])
    assert diff.max() < 0.02  # bf16 keeps 8 bits of mantissa
    assert diff.max() > 0  # it did run in bf16


def test_scenario_file_defaults_and_earthquake_config(tmp_path):
    from landslide_hazard.config import EarthquakeConfig

    path = tmp_path / "quake.yaml"
    path.write_text(yaml.safe_dump({"earthquakes": [{"date": "2015-04-25", "pga": "pga.tif"}]}))
    spec = predict_mod.load_scenario(path, ["P0", "P1"])
    assert spec.name == "quake" and spec.periods == ["P0", "P1"]
    (quake,) = spec.earthquakes
    assert isinstance(quake, EarthquakeConfig)
    assert (quake.name, quake.pga_unit) == ("event0", "g")
    assert quake.pga == (tmp_path / "pga.tif").resolve()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"monsoons_since_eq": "many"}, "monsoons_since_eq: Input should be a valid number"),
        ({"earthquakes": [{"date": "2015-04-25"}]}, "earthquakes.0.pga: Field required"),
        (
            {"earthquakes": [{"date": "2015-04-25", "pga": "p.tif", "pga_unit": "gal"}]},
            "earthquakes.0.pga_unit: Input should be 'g', '%g' or 'm/s2'",
        ),
        ({"rain": "r.tif", "rainfall": 3}, "rainfall: unknown field"),
        ({"rasters": {"rain": "r.tif"}}, "'rain' is not a dynamic band"),
        ({"name": "a/b", "rain": "r.tif"}, "must use letters, digits"),
        ({"periods": ["P1"]}, "the scenario changes nothing"),
        (["rain"], "a scenario is a mapping"),
    ],
)
def test_scenario_file_errors_are_one_line_config_errors(tmp_path, data, message):
    from landslide_hazard.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        predict_mod.load_scenario(path, ["P0", "P1"])
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")


def _small_maps(tmp_path, with_uncertainty=True):
    from landslide_hazard.cube import PeriodInfo
    from landslide_hazard.grid import StudyGrid

    grid = StudyGrid("EPSG:32645", 500000.0, 3100000.0, 100.0, 10, 6, 8)
    rng = np.random.default_rng(1)
    hazard = rng.uniform(0, 2, (2, *grid.cell_shape)).astype(np.float32)
    hazard[:, 0, 0] = np.nan
    arrays = {"susceptibility": hazard / 2, "density": hazard, "hazard": hazard}
    periods = [
        PeriodInfo("co-seismic 2015", "2015-04-24", "2015-06-15"),
        PeriodInfo("monsoon 2015", "2015-06-15", "2015-11-30"),
    ]
    spread = None
    if with_uncertainty:
        spread = predict_mod.UncertaintyLayer(hazard / 10, "susceptibility", "MC dropout, 3")
    written = predict_mod.write_maps(
        tmp_path / "maps",
        arrays,
        grid,
        periods,
        [0.01, 0.1, 1.0],
        predict_mod.ExtraLayers(observed=hazard, uncertainty=spread),
        predict_mod.MapLabels({"run": "r1"}, item_id="r1-maps"),
    )
    return written, grid, periods


def test_stac_item_reads_back_through_pystac(tmp_path):
    """The Item through pystac: relative hrefs to files that exist, the periods' date range, the
    projection extension agreeing with the files (rasterio) and a footprint from pyproj."""
    import pystac
    from pyproj import Transformer
    from pystac.extensions.projection import ProjectionExtension

    written, grid, periods = _small_maps(tmp_path)
    item = pystac.Item.from_file(str(written["stac"]))
    assert item.id == "r1-maps"
    assert item.datetime is None
    assert item.common_metadata.start_datetime.isoformat() == "2015-04-24T00:00:00+00:00"
    assert item.common_metadata.end_datetime.isoformat() == "2015-11-30T23:59:59+00:00"
    assert [p["name"] for p in item.properties["landslide_hazard:periods"]] == [
        p.name for p in periods
    ]
    assert item.properties["landslide_hazard:run"] == "r1"
    expected = {"susceptibility", "density", "hazard", "observed", "hazard_class"}
    assert set(item.assets) == expected | {"uncertainty", "cells", "style"}
    raw = json.loads(written["stac"].read_text())
    for key, asset in item.assets.items():
        assert raw["assets"][key]["href"].startswith("./")  # relative: the folder can move
        assert pystac.utils.make_absolute_href(asset.href, str(written["stac"])) == str(
            written[key].resolve()
        )
        assert written[key].is_file()
    assert item.assets["hazard"].media_type == pystac.MediaType.COG
    assert item.assets["cells"].media_type == pystac.MediaType.GEOPACKAGE
    proj = ProjectionExtension.ext(item)
    assert ProjectionExtension.has_extension(item)
    assert proj.epsg == 32645 and "UTM zone 45N" in proj.wkt2
    with rasterio.open(written["hazard"]) as ds:
        assert proj.shape == [ds.height, ds.width]
        assert rasterio.Affine(*proj.transform) == ds.transform
        assert proj.bbox == list(ds.bounds)
    # WGS 84 footprint: the grid's corners through pyproj lie inside the bbox, on the outline
    to_wgs84 = Transformer.from_crs("EPSG:32645", "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = grid.bounds
    lon, lat = to_wgs84.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    west, south, east, north = item.bbox
    assert all(west <= x <= east for x in lon) and all(south <= y <= north for y in lat)
    assert min(lon) == pytest.approx(west, abs=1e-6) and max(lat) == pytest.approx(north, abs=1e-6)
    ring = item.geometry["coordinates"][0]
    assert ring[0] == ring[-1] and [round(v, 6) for v in ring[0]] == [
        round(lon[0], 6),
        round(lat[0], 6),
    ]


def test_hazard_class_qml_is_a_paletted_style_with_the_class_entries(tmp_path):
    import xml.etree.ElementTree as ET

    written, _, _ = _small_maps(tmp_path, with_uncertainty=False)
    assert written["style"].name == "hazard_class.qml"  # QGIS loads a same-stem style itself
    root = ET.parse(written["style"]).getroot()
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    names = predict_mod.hazard_class_names([0.01, 0.1, 1.0])
    assert [e.get("label") for e in entries] == names  # "<" and ">=" escaped and read back
    assert [int(e.get("value")) for e in entries] == [0, 1, 2, 3]
    with rasterio.open(written["hazard_class"]) as ds:
        cmap = ds.colormap(1)
    for e in entries:
        rgb = tuple(int(e.get("color")[i : i + 2], 16) for i in (1, 3, 5))
        assert (*rgb, int(e.get("alpha"))) == cmap[int(e.get("value"))]
    import pyogrio

    assert [list(x) for x in pyogrio.list_layers(written["cells"])] == [
        ["cells", "Polygon"],
        ["cells_by_period", "Polygon"],
    ]


def test_cli_predict_result_on_stdout_the_rest_on_stderr_unwrapped(trained_run, tmp_path):
    """Through a real pipe (not a terminal): stdout holds the one result line, whole even for a
    path far longer than 80 columns; progress, warnings and the next-step hint go to stderr."""
    import os
    import shutil
    import subprocess
    import sys

    run, _ = trained_run
    deep = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 2) / run.name
    shutil.copytree(run, deep)
    # the config's output.dir (the cube) stays where it is: the run folder names it
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "landslide_hazard", "predict", str(deep)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {deep / 'maps'}\n"
    assert len(str(deep)) > 80
    assert f"next: `landslide-hazard report {deep}`" in proc.stderr.splitlines()
    assert "wrote" not in proc.stderr


def test_forecast_of_a_new_period_after_the_last_mapped(trained_run, tmp_path):
    """A scenario's `forecast` period: its legacy from every mapped period, its own rain, the
    last period's shaking; the cube is untouched; missing rain and name clashes refused."""
    from landslide_hazard.bands import CUBE_DYNAMIC_NAMES
    from landslide_hazard.config import load_config
    from landslide_hazard.cube import PeriodInfo
    from landslide_hazard.io import write_raster
    from landslide_hazard.predict.forecast import forecast_cube

    run, cube = trained_run
    g = cube.grid
    last = cube.meta.periods[-1]
    cfg = load_config(run / "config.yaml")
    view = forecast_cube(cube, PeriodInfo("next", last.end, "2015-12-01"), cfg)
    valid = cube.valid_cells
    targets = np.nan_to_num(np.asarray(cube.target_density[:]))
    legacy = view.dynamic[-1, 4:]
    np.testing.assert_allclose(legacy[1][valid], targets.sum(0)[valid], rtol=1e-6)  # cum
    np.testing.assert_array_equal(legacy[0][valid], targets[-1][valid])  # previous period
    np.testing.assert_array_equal(view.dynamic[-1, 2:4], cube.dynamic[-1, 2:4])  # shaking
    assert np.isnan(view.dynamic[-1, :2]).all() and np.isnan(view.target_density[-1]).all()
    assert view.meta.dynamic_bands == CUBE_DYNAMIC_NAMES and cube.dynamic.shape[0] == 3

    for name in ("rain_max", "rain_ci95"):
        write_raster(
            tmp_path / f"{name}.tif", np.full(g.cell_shape, 8.0, "float32"), g.cell_transform, g.crs
        )
    spec = {
        "name": "next-season",
        "forecast": {"name": "next", "end": "2015-12-01"},
        "rasters": {"rain_max": "rain_max.tif", "rain_ci95": "rain_ci95.tif"},
    }
    (tmp_path / "next.yaml").write_text(yaml.safe_dump(spec))
    out = predict_mod.predict(run, scenario=tmp_path / "next.yaml", progress=False)
    assert out == run / "scenarios" / "next-season"
    with rasterio.open(out / "susceptibility.tif") as ds:
        assert list(ds.descriptions) == ["next"] and ds.count == 1
        assert (ds.tags(1)["period_start"], ds.tags(1)["period_end"]) == (last.end, "2015-12-01")
        s = ds.read(1)
    assert np.isfinite(s[valid]).all() and ((s[valid] >= 0) & (s[valid] <= 1)).all()
    assert cube.dynamic.shape[0] == 3  # the cube on disk is unchanged
    # the new period has no density factor of its own: its maps get the periods' common level
    model = predict_mod.load_run(run).model
    assert "next" not in model.period_density_factors and model.density_level != 1.0
    raw = predict_mod.predict(run, scenario=tmp_path / "next.yaml", progress=False, raw=True)
    with rasterio.open(raw / "density.tif") as ds_raw, rasterio.open(out / "density.tif") as ds:
        d_raw, d = ds_raw.read(1), ds.read(1)
    blend = model.density_blend
    want = d_raw if blend is None else blend[1] + blend[0] * (d_raw - blend[1])
    np.testing.assert_allclose(d[valid], want[valid] * model.density_level, rtol=1e-5)
    # a model.pt written before the common level: the factor 1 it had then
    meta = torch.load(run / "model.pt", weights_only=False)
    del meta["density_level"]
    torch.save(meta, run / "model.pt")
    assert predict_mod.load_run(run).model.density_level == 1.0

    no_rain = {
        "name": "dry",
        "forecast": {"name": "next", "end": "2015-12-01"},
        "monsoons_since_eq": 1,
    }
    (tmp_path / "dry.yaml").write_text(yaml.safe_dump(no_rain))
    with pytest.raises(InputError, match="no rain_max, rain_ci95.*give its rain"):
        predict_mod.predict(run, scenario=tmp_path / "dry.yaml", progress=False)
    clash = {**spec, "forecast": {"name": last.name, "end": "2015-12-01"}}
    (tmp_path / "clash.yaml").write_text(yaml.safe_dump(clash))
    with pytest.raises(InputError, match="already a period"):
        predict_mod.predict(run, scenario=tmp_path / "clash.yaml", progress=False)
    both = {**spec, "periods": [last.name]}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match="remove `periods`"):
        predict_mod.predict(run, scenario=tmp_path / "both.yaml", progress=False)
