"""CLI streams: results on stdout, progress / logs / hints on stderr, nothing wrapped when piped;
``evaluate --json``. Run as subprocesses so that stdout and stderr are real, separate pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from affine import Affine
from sklearn.metrics import roc_auc_score

from landslide_hazard.io import write_raster

TRANSFORM = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "landslide_hazard", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _maps(tmp_path):
    rng = np.random.default_rng(5)
    shape = (2, 12, 14)
    observed = np.where(rng.random(shape) > 0.7, rng.gamma(0.6, 1.5, shape), 0.0)
    observed[:, 0, :3] = np.nan
    sus = np.clip(0.3 * (observed > 0) + rng.random(shape) * 0.7, 0, 1)
    dens = rng.gamma(0.5, 0.4, shape)
    names = ["first period", "second period"]
    paths = {
        k: write_raster(tmp_path / f"{k}.tif", a, TRANSFORM, "EPSG:32645", names)
        for k, a in {"observed": observed, "susceptibility": sus, "density": dens}.items()
    }
    return paths, observed, sus


def test_evaluate_json_on_stdout_matches_sklearn(tmp_path):
    paths, observed, sus = _maps(tmp_path)
    out = tmp_path / ("an-output-folder-with-a-name-longer-than-the-eighty-columns-of-a-pipe" * 2)
    proc = _cli(
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
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)  # stdout is the JSON and nothing else
    assert table["metrics_json"] == str(out / "metrics.json")
    assert table["threshold"] == 0.5
    rows = {r["period"]: r for r in table["rows"]}
    assert list(rows) == ["first period", "second period", "pooled"]
    ok = np.isfinite(observed) & np.isfinite(sus)
    want = roc_auc_score((observed[ok] > 0).astype(int), sus[ok])
    assert rows["pooled"]["auc"] == pytest_approx(want)
    first = roc_auc_score((observed[0][ok[0]] > 0).astype(int), sus[0][ok[0]])
    assert rows["first period"]["auc"] == pytest_approx(first)
    assert rows["pooled"]["n"] == int(ok.sum())
    assert {"density_all_mae", "hazard_all_pearson_r"} <= set(rows["pooled"])  # hazard = S x D
    assert proc.stderr == ""  # no table, no notes on these data

    plain = _cli(
        "evaluate",
        "--observed",
        str(paths["observed"]),
        "--susceptibility",
        str(paths["susceptibility"]),
        "--out",
        str(out),
    )
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[-1] == f"wrote {out / 'metrics.json'}"  # one line although > 80 columns
    assert any("pooled" in line and "AUC" not in line for line in lines)  # the table's row
    assert max(len(line) for line in lines[:-1]) > 80  # the table is not squeezed to 80


def test_synth_progress_and_hint_on_stderr_result_on_stdout(tmp_path):
    out = tmp_path / ("scenario-folder-with-a-long-name-to-pass-the-eighty-column-limit" * 2)
    proc = _cli("synth", "--size", "tiny", "--seed", "3", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {out}\n"
    hint = f"next: `landslide-hazard prepare {out / 'config.yaml'}`"
    assert any(line.endswith(hint) for line in proc.stderr.splitlines()), proc.stderr


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=1e-9, abs=1e-12)
