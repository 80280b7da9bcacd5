"""synth -> prepare -> train -> predict on the tiny synthetic scenario, through the CLI."""

import json

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner


@pytest.mark.slow
def test_tiny_scenario_train_and_predict_cli(tmp_path):
    from landslide_hazard.cli import app
    from landslide_hazard.config import load_config
    from landslide_hazard.prepare import prepare
    from landslide_hazard.synthetic import generate_scenario

    scen = tmp_path / "scen"
    generate_scenario("tiny", 2, scen, progress=False)
    cfg = load_config(scen / "config.yaml")
    prepare(cfg, progress=False)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            str(scen / "config.yaml"),
            "--protocol",
            "spatial",
            "--fold",
            "1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "held-out AUC" in res.output and "oracle AUC" in res.output
    run = cfg.output.dir / "runs" / "spatial-fold1"
    metrics = json.loads((run / "metrics.json").read_text())
    # the synthetic truth is found and the oracle beats chance on the held-out cells
    assert metrics["oracle_auc"] > 0.6
    assert np.isfinite(metrics["skill_pooled"])
    res = runner.invoke(app, ["predict", str(run), "--no-progress"])
    assert res.exit_code == 0, res.output
    with rasterio.open(run / "maps" / "hazard.tif") as ds:
        assert list(ds.descriptions) == cfg.period_names
        h = ds.read()
    assert np.isfinite(h).any() and np.nanmin(h) >= 0
    # the run stores a Platt calibration fitted on its validation cells; --raw skips it
    cal = metrics["calibration"]
    assert cal["kind"] == "platt" and np.isfinite(cal["slope"]) and cal["n_cells"] > 0
    res = runner.invoke(app, ["predict", str(run), "--no-progress", "--raw"])
    assert res.exit_code == 0, res.output
    with (
        rasterio.open(run / "maps" / "susceptibility.tif") as a,
        rasterio.open(run / "maps-raw" / "susceptibility.tif") as b,
    ):
        calibrated, raw = a.read(), b.read()
    ok = np.isfinite(raw)
    assert ok.any() and not np.allclose(calibrated[ok], raw[ok])
    # the written map is exactly the stored Platt scaling of the raw one plus each period's
    # shift (fitted on its validation cells; every period has some under spatial)
    assert sorted(cal["period_shifts"]) == sorted(cfg.period_names)
    shift = np.array([cal["period_shifts"][name] for name in cfg.period_names])[:, None, None]
    q = np.clip(raw.astype(np.float64), 1e-7, 1 - 1e-7)
    z = cal["slope"] * np.log(q / (1 - q)) + cal["intercept"] + shift
    want = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(calibrated[ok], want[ok], rtol=1e-4, atol=1e-6)
    res = runner.invoke(app, ["predict", str(tmp_path / "nope"), "--no-progress"])
    assert res.exit_code == 2 and "not a run folder" in " ".join(res.output.split())
