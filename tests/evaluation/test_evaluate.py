"""evaluate_arrays / evaluate_files / the CLI on small synthetic maps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from affine import Affine
from typer.testing import CliRunner

from landslide_hazard.cli import app
from landslide_hazard.evaluation import MapFiles, evaluate_arrays, evaluate_files
from landslide_hazard.evaluation.evaluate import fold_labels
from landslide_hazard.evaluation.metrics import density_metrics, occurrence_metrics
from landslide_hazard.io import RasterError, write_raster

NAMES = ["Co-seismic", "Post-monsoon", "Pre-monsoon"]
TRANSFORM = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)


def _maps(seed: int = 0, shape=(3, 12, 10)):
    rng = np.random.default_rng(seed)
    latent = rng.random(shape)
    observed = np.where(latent > 0.7, rng.gamma(0.6, 1.5, shape), 0.0)
    sus = np.clip(latent + rng.normal(0, 0.15, shape), 0, 1)
    dens = np.clip(observed * 0.8 + rng.gamma(0.5, 0.3, shape), 0, None)
    observed[:, 0, :3] = np.nan  # unmapped cells
    dens[1, 5, 5] = np.nan  # a hole in one prediction only
    return observed, sus, dens


def test_periods_pooled_and_folds_match_direct_metrics():
    obs, sus, dens = _maps()
    folds = np.zeros(obs.shape[1:], dtype=int)
    folds[:, 5:] = 1
    folds[0, :] = -1  # in no fold
    res = evaluate_arrays(obs, sus, dens, period_names=NAMES, threshold=0.6, folds=folds)
    valid = np.isfinite(obs) & np.isfinite(dens)
    haz = sus * dens
    for i, p in enumerate(res["periods"]):
        m = valid[i]
        ref = occurrence_metrics((obs[i][m] > 0).astype(int), sus[i][m], threshold=0.6)
        assert p["name"] == NAMES[i]
        for key in ("auc", "pr_auc", "f1", "iou", "brier", "n"):
            assert p["occurrence"][key] == pytest.approx(ref[key])
        assert p["hazard"]["all"]["mae"] == pytest.approx(np.mean(np.abs(haz[i][m] - obs[i][m])))
    pooled = res["pooled"]
    assert pooled["occurrence"]["n"] == valid.sum() == res["n_valid_cells"]
    ref_d = density_metrics(obs[valid], dens[valid])
    assert pooled["density"]["positive"]["pearson_r"] == pytest.approx(
        ref_d["positive"]["pearson_r"]
    )
    assert res["hazard_source"] == "susceptibility x density"
    assert [f["fold"] for f in res["folds"]] == [0, 1]
    m1 = valid & (folds == 1)[None]
    ref1 = occurrence_metrics((obs[m1] > 0).astype(int), sus[m1], threshold=0.6)
    assert res["folds"][1]["occurrence"]["auc"] == pytest.approx(ref1["auc"])
    assert (
        res["folds"][0]["occurrence"]["n"] + res["folds"][1]["occurrence"]["n"]
        == (valid & (folds >= 0)[None]).sum()
    )


def test_default_threshold_is_pooled_max_f1_and_min_density():
    obs, sus, _ = _maps(1)
    res = evaluate_arrays(obs, sus, min_density=0.5)
    valid = np.isfinite(obs)
    ref = occurrence_metrics((obs[valid] > 0.5).astype(int), sus[valid])
    assert res["threshold"] == pytest.approx(ref["threshold"])
    assert res["pooled"]["occurrence"]["f1"] == pytest.approx(ref["f1"])
    assert "optimistic" in res["threshold_source"]
    assert res["pooled"]["density"] is None and res["hazard_source"] is None


def test_all_negative_period_and_given_hazard():
    obs, sus, dens = _maps(2)
    obs[2] = np.where(np.isfinite(obs[2]), 0.0, np.nan)
    hazard = np.full(obs.shape, 0.1)
    res = evaluate_arrays(obs, sus, dens, hazard=hazard, threshold=0.5)
    last = res["periods"][2]
    assert math.isnan(last["occurrence"]["auc"]) and last["occurrence"]["notes"]
    assert last["density"]["positive"]["n"] == 0
    assert res["hazard_source"] == "given"
    assert res["pooled"]["hazard"]["all"]["mae"] == pytest.approx(
        np.nanmean(np.abs(0.1 - obs[np.isfinite(obs) & np.isfinite(dens)]))
    )


def test_shape_errors_are_clear():
    obs, sus, dens = _maps()
    with pytest.raises(ValueError, match="density: shape"):
        evaluate_arrays(obs, sus, dens[:, :5])
    with pytest.raises(ValueError, match="period names"):
        evaluate_arrays(obs, sus, period_names=["a"])
    with pytest.raises(ValueError, match="folds: shape"):
        evaluate_arrays(obs, sus, folds=np.zeros((2, 2)))


def _write(tmp_path, **extra):
    obs, sus, dens = _maps()
    paths = {}
    for key, arr in {"observed": obs, "susceptibility": sus, "density": dens}.items():
        paths[key] = write_raster(tmp_path / f"{key}.tif", arr, TRANSFORM, "EPSG:32645", NAMES)
    return paths, (obs, sus, dens)


def test_evaluate_files_writes_strict_json_with_inputs(tmp_path):
    paths, (obs, sus, dens) = _write(tmp_path)
    folds = np.zeros(obs.shape[1:])
    folds[:, 5:] = 1
    paths["folds"] = write_raster(
        tmp_path / "folds.tif", folds, TRANSFORM, "EPSG:32645", ["role: 0 train, 1 test"]
    )
    res = evaluate_files(
        MapFiles(**paths), threshold=0.5, out_dir=tmp_path / "ev", show_table=False
    )
    text = (tmp_path / "ev" / "metrics.json").read_text()
    data = json.loads(text)  # strict JSON: NaN written as null
    assert "NaN" not in text
    assert data["inputs"]["observed"] == str((tmp_path / "observed.tif").resolve())
    assert data["inputs"]["hazard"] is None and data["period_names"] == NAMES
    assert data["grid"]["shape"] == [12, 10] and len(data["folds"]) == 2
    assert [f["label"] for f in data["folds"]] == ["train", "test"]
    direct = evaluate_arrays(obs, sus, dens, period_names=NAMES, threshold=0.5)
    assert data["pooled"]["density"]["all"]["mae"] == pytest.approx(
        direct["pooled"]["density"]["all"]["mae"], rel=1e-6
    )
    assert res["pooled"]["occurrence"]["n"] == data["pooled"]["occurrence"]["n"]


def test_evaluate_files_names_but_does_not_score_an_uncertainty_map(tmp_path):
    paths, (obs, sus, dens) = _write(tmp_path)
    spread = write_raster(tmp_path / "u.tif", 0.1 * sus, TRANSFORM, "EPSG:32645", NAMES)
    res = evaluate_files(
        MapFiles(**paths, uncertainty=spread), out_dir=tmp_path / "ev", show_table=False
    )
    assert res["inputs"]["uncertainty"] == str(spread.resolve())
    plain = evaluate_files(MapFiles(**paths), out_dir=tmp_path / "ev2", show_table=False)
    assert res["pooled"] == plain["pooled"] and plain["inputs"]["uncertainty"] is None
    shifted = write_raster(
        tmp_path / "u_tr.tif", sus, TRANSFORM @ Affine.translation(1, 0), "EPSG:32645", NAMES
    )
    with pytest.raises(RasterError, match="u_tr.tif: transform"):
        evaluate_files(
            MapFiles(**paths, uncertainty=shifted), out_dir=tmp_path / "x", show_table=False
        )


def test_evaluate_files_rejects_mismatched_rasters(tmp_path):
    paths, (obs, sus, dens) = _write(tmp_path)
    bad_crs = write_raster(tmp_path / "s_crs.tif", sus, TRANSFORM, "EPSG:32644", NAMES)
    with pytest.raises(RasterError, match="s_crs.tif: CRS"):
        evaluate_files(
            MapFiles(paths["observed"], bad_crs), out_dir=tmp_path / "x", show_table=False
        )
    shifted = write_raster(
        tmp_path / "s_tr.tif", sus, TRANSFORM @ Affine.translation(1, 0), "EPSG:32645", NAMES
    )
    with pytest.raises(RasterError, match="s_tr.tif: transform"):
        evaluate_files(
            MapFiles(paths["observed"], shifted), out_dir=tmp_path / "x", show_table=False
        )
    renamed = write_raster(tmp_path / "s_nm.tif", sus, TRANSFORM, "EPSG:32645", ["a", "b", "c"])
    with pytest.raises(RasterError, match="band names differ"):
        evaluate_files(
            MapFiles(paths["observed"], renamed), out_dir=tmp_path / "x", show_table=False
        )
    two = write_raster(tmp_path / "s_2.tif", sus[:2], TRANSFORM, "EPSG:32645", NAMES[:2])
    with pytest.raises(RasterError, match="2 bands"):
        evaluate_files(MapFiles(paths["observed"], two), out_dir=tmp_path / "x", show_table=False)
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_cli_evaluate(tmp_path):
    paths, _ = _write(tmp_path)
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--observed",
            str(paths["observed"]),
            "--susceptibility",
            str(paths["susceptibility"]),
            "--density",
            str(paths["density"]),
            "--threshold",
            "0.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["threshold"] == 0.5
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--observed",
            str(tmp_path / "missing.tif"),
            "--susceptibility",
            str(paths["susceptibility"]),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "missing.tif" in result.output


def test_fold_labels_from_the_band_description():
    assert fold_labels("role: 0 train, 1 val, 2 test") == {0: "train", 1: "val", 2: "test"}
    assert fold_labels("0=north 1=south") == {0: "north", 1: "south"}
    assert fold_labels("fold id") == {} and fold_labels(None) == {}
