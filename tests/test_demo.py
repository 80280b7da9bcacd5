"""The demo pipeline end to end on the tiny scenario; a re-run reuses every stage."""

from __future__ import annotations

import json

import pytest
import rasterio

from landslide_hazard.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out, size="tiny", seed=1, progress=False)
    run = out / "runs" / "spatial-fold0"
    for name in ("susceptibility", "density", "hazard", "observed"):
        with rasterio.open(run / "maps" / f"{name}.tif") as ds:
            assert ds.crs is not None and ds.crs.to_epsg() == 32645
    # the split's roles belong to the evaluation, not to predict's folder (which it replaces)
    with rasterio.open(run / "evaluation" / "roles.tif") as ds:
        assert ds.crs.to_epsg() == 32645
    report = run / "evaluation" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    # the tiny config trains with dropout, so the demo maps MC-dropout uncertainty too
    with rasterio.open(run / "maps" / "uncertainty.tif") as ds:
        spread = ds.read()
        assert ds.count == 4 and list(ds.descriptions) == metrics_periods(run)
    assert (spread[spread == spread] >= 0).all() and (spread[spread == spread] > 0).any()
    inputs = json.loads((run / "evaluation" / "metrics.json").read_text())["inputs"]
    assert inputs["uncertainty"].endswith("uncertainty.tif")
    assert "Predictive uncertainty" in report.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert first["held_out_auc"] == pytest.approx(metrics["held_out_auc"])
    assert 0.5 < first["oracle_auc"] <= 1.0
    assert set(first["timings_s"]) and len(first["timings_s"]) == 6
    again = run_demo(out, size="tiny", seed=1, progress=False)
    assert again["timings_s"] == {}  # every stage reused
    assert again["report"] == first["report"]


def metrics_periods(run):
    with rasterio.open(run / "maps" / "hazard.tif") as ds:
        return list(ds.descriptions)
