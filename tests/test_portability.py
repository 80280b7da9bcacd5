"""Run folders safe to share: paths relative to the run folder (the output folder moves and
still predicts), ``predict --cube``, maps replaced as a set, leftovers of killed runs removed,
and the report's Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from landslide_hazard.errors import MissingFileError
from landslide_hazard.predict import predict
from landslide_hazard.run import RunFolder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained one epoch per stage on a small random cube, in <base>/out."""
    from landslide_hazard.config import load_config
    from landslide_hazard.testing import make_cube, one_epoch_config
    from landslide_hazard.training import train

    base = tmp_path_factory.mktemp("portable")
    cube = make_cube(base / "out" / "cube.zarr", shape_cells=(8, 8), k=4, n=4, n_periods=3)
    data = one_epoch_config(cube, inventories="inv/", inputs="inputs/")
    data["output"]["run_name"] = "shared"
    (base / "config.yaml").write_text(yaml.safe_dump(data))
    run = train(load_config(base / "config.yaml"), progress=False)
    return base, run


def test_run_folder_stores_paths_relative_to_itself(trained):
    base, run = trained
    folder = RunFolder(run)
    text = folder.config.read_text()
    assert str(base) not in text and "/tmp" not in text
    cfg = yaml.safe_load(text)
    assert cfg["output"]["dir"] == os.path.join("..", "..")
    assert cfg["inputs"]["dem"] == os.path.join("..", "..", "..", "inputs", "dem.tif")
    payload = torch.load(folder.model, weights_only=True)
    assert payload["cube_path"] == os.path.join("..", "..", "cube.zarr")
    assert str(base) not in folder.metrics.read_text()


def test_moved_output_folder_still_predicts_and_cube_elsewhere(trained, tmp_path):
    base, run = trained
    moved = tmp_path / "elsewhere" / "copy-of-out"
    shutil.copytree(base / "out", moved)  # the original is gone for this test's purposes
    cube_kept = tmp_path / "cubes" / "gorkha.zarr"
    out = predict(moved / "runs" / run.name, progress=False)
    assert out == moved / "runs" / run.name / "maps" and (out / "hazard.tif").is_file()

    cube_kept.parent.mkdir()
    shutil.move(moved / "cube.zarr", cube_kept)
    os.rename(base / "out" / "cube.zarr", base / "out" / "cube.zarr.away")  # no way back
    try:
        with pytest.raises(MissingFileError, match="--cube"):
            predict(moved / "runs" / run.name, progress=False)
        out = predict(moved / "runs" / run.name, progress=False, cube=cube_kept)
        assert (out / "susceptibility.tif").is_file()
    finally:
        os.rename(base / "out" / "cube.zarr.away", base / "out" / "cube.zarr")


def test_maps_are_replaced_as_a_set_and_leftovers_removed(trained, tmp_path, monkeypatch):
    from landslide_hazard.io import rasters

    base, run = trained
    out = tmp_path / "out"
    shutil.copytree(base / "out", out)
    run = out / "runs" / run.name
    maps = predict(run, progress=False)
    before = {p.name: p.read_bytes() for p in maps.iterdir()}
    assert {"susceptibility.tif", "hazard.tif", "density.tif"} <= before.keys()

    real = rasters.write_raster

    def fail_on_hazard(path, *args, **kwargs):  # the second map of the set fails
        if str(path).endswith("hazard.tif"):
            raise OSError(28, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr("landslide_hazard.io.write_raster", fail_on_hazard)
    monkeypatch.setattr(rasters, "write_raster", fail_on_hazard)
    with pytest.raises(OSError, match="no space left"):
        predict(run, progress=False)
    after = {p.name: p.read_bytes() for p in maps.iterdir()}
    assert after == before  # never a new susceptibility beside an old hazard
    assert not list(run.glob(".maps.*"))  # the failed set's temporary is gone
    monkeypatch.undo()

    # a predict killed with -9 leaves its temporary folder; the next run removes it
    stale = run / ".maps.k1ll3d.tmp"
    stale.mkdir()
    (stale / "susceptibility.tif").write_bytes(b"half")
    with pytest.warns(UserWarning, match="interrupted predict"):
        predict(run, progress=False)
    assert not stale.exists() and (maps / "hazard.tif").is_file()


def test_report_carries_a_content_security_policy(tmp_path):
    from affine import Affine

    from landslide_hazard.evaluation import MapFiles, evaluate_files
    from landslide_hazard.io import write_raster
    from landslide_hazard.report import build_report

    rng = np.random.default_rng(0)
    t = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)
    names = ["<script>alert(1)</script>", "P1"]
    obs = write_raster(
        tmp_path / "obs.tif", rng.exponential(1, (2, 4, 5)), t, "EPSG:32645", band_names=names
    )
    sus = write_raster(
        tmp_path / "sus.tif", rng.random((2, 4, 5)), t, "EPSG:32645", band_names=names
    )
    evaluate_files(MapFiles(obs, sus), out_dir=tmp_path / "eval", show_table=False)
    page = build_report(tmp_path / "eval").read_text()
    head = page.split("</head>")[0]
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', head)
    assert csp, "no CSP meta tag in <head>"
    policy = dict(
        (d.split()[0], d.split()[1:]) for d in (p.strip() for p in csp.group(1).split(";")) if d
    )
    assert policy["default-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]  # scripts only by hash
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1  # the viewer; the JSON data block is not executed
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert policy["script-src"] == [f"'sha256-{digest}'"]
    assert "<script>alert(1)</script>" not in page.replace(scripts[0], "")


def test_moved_output_folder_still_resumes(trained, tmp_path):
    """The whole project folder copied elsewhere: train finds its finished run (the checkpoint's
    config check does not depend on where the folder lies) instead of refusing it."""
    from landslide_hazard.config import load_config
    from landslide_hazard.training import train

    base, run = trained
    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    again = train(load_config(moved / "config.yaml"), progress=False)
    assert again == moved / "out" / "runs" / run.name
    old = torch.load(RunFolder(run).model, weights_only=True)["state_dict"]
    new = torch.load(RunFolder(again).model, weights_only=True)["state_dict"]
    assert all(torch.equal(old[k], new[k]) for k in old)
