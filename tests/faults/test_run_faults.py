"""Faults met by ``train``, ``predict`` (run folders, model files, what-if scenarios, full disks)
and ``evaluate``: one ``error:`` line each, before the long work unless the fault can only
happen during it (a disk filling up). One case per check."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

G = 9.80665
CASES: list = []
#: The same check met through another command: run, not counted as distinct.
VARIANTS: list = []


def case(check: str, *needles: str, late: bool = False, variant_of: str | None = None):
    def register(fn):
        param = pytest.param(fn, list(needles), late, id=check)
        (CASES if variant_of is None else VARIANTS).append(param)
        return fn

    return register


def _run(env) -> Path:
    return env.run


def _cfg(env) -> Path:
    return env.root / "config.yaml"


def predict_args(env) -> list:
    return ["predict", env.run, "--no-progress"]


def _scenario(env, data) -> list:
    path = env.root / "what-if.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return [*predict_args(env), "--scenario", path]


# ---- train -----------------------------------------------------------------------------------
@case("train:no-cube", "cube.zarr", "no cube here", "landslide-hazard prepare")
def _(env):
    import shutil

    shutil.rmtree(env.root / "out" / "cube.zarr")
    return ["train", _cfg(env), "--no-progress"]


@case("train:protocol", "unknown protocol 'leave-one-out'", "spatial")
def _(env):
    return ["train", _cfg(env), "--protocol", "leave-one-out", "--no-progress"]


@case("train:resume-other-config", "holds a checkpoint of a different config", "output.run_name")
def _(env):
    data = yaml.safe_load(_cfg(env).read_text())
    data["training"]["lr_susceptibility"] = 0.5
    _cfg(env).write_text(yaml.safe_dump(data))
    return ["train", _cfg(env), "--no-progress"]


@case(
    "train:unwritable",
    "run folder",
    "fresh",
    "permission denied",
    "output.dir",
    variant_of="output:unwritable",
)
def _(env):
    data = yaml.safe_load(_cfg(env).read_text())
    data["output"]["run_name"] = "fresh"
    _cfg(env).write_text(yaml.safe_dump(data))
    runs = str(env.root / "out" / "runs")
    env.os_error_on(
        "tempfile.mkstemp", errno.EACCES, lambda *a, **k: str(k.get("dir", "")).startswith(runs)
    )
    return ["train", _cfg(env), "--no-progress"]


@case("train:disk-full", "checkpoints", "no space left on the disk", "free some space", late=True)
def _(env):
    data = yaml.safe_load(_cfg(env).read_text())
    data["output"]["run_name"] = "fresh"
    _cfg(env).write_text(yaml.safe_dump(data))
    env.os_error_on("pathlib.Path.write_bytes", errno.ENOSPC, lambda p, *a: p.suffix == ".tmp")
    return ["train", _cfg(env), "--no-progress"]


# ---- the run folder and model.pt -------------------------------------------------------------
@case("model:truncated", "model.pt", "not a readable model file", "train the run again")
def _(env):
    data = (_run(env) / "model.pt").read_bytes()
    (_run(env) / "model.pt").write_bytes(data[: len(data) // 3])
    return predict_args(env)


@case("model:foreign", "model.pt", "not a landslide-hazard model file", "landslide-hazard train")
def _(env):
    torch.save({"weights": torch.zeros(3)}, _run(env) / "model.pt")
    return predict_args(env)


@case("model:other-bands", "model.pt", "trained on bands", "retrain")
def _(env):
    payload = torch.load(_run(env) / "model.pt", weights_only=True)
    payload["bands"] = ["elevation", "ndvi"]
    torch.save(payload, _run(env) / "model.pt")
    return predict_args(env)


@case("model:weights-do-not-fit", "model.pt", "weights do not fit", "train the run again")
def _(env):
    payload = torch.load(_run(env) / "model.pt", weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.ndim == 4)
    payload["state_dict"][key] = torch.zeros(3, 3, 3, 3)
    torch.save(payload, _run(env) / "model.pt")
    return predict_args(env)


@case("model:missing", "model.pt", "no model here", "landslide-hazard train")
def _(env):
    (_run(env) / "model.pt").unlink()
    return predict_args(env)


@case("run:not-a-run-folder", "not a run folder", "config.yaml", "<output>/runs/<name>")
def _(env):
    return ["predict", env.root / "out", "--no-progress"]


@case("run:cube-missing", "the run's cube is missing", "cube.zarr", "prepare")
def _(env):
    import shutil

    cube = env.root / "out" / "cube.zarr"
    shutil.rmtree(cube)
    payload = torch.load(_run(env) / "model.pt", weights_only=True)
    payload["cube_path_absolute"] = str(cube)  # trained here: no copy of the cube anywhere
    torch.save(payload, _run(env) / "model.pt")
    return predict_args(env)


@case(
    "predict:unwritable",
    "run folder",
    "permission denied",
    "output.dir",
    variant_of="output:unwritable",
)
def _(env):
    run = str(env.run)
    env.os_error_on("tempfile.mkstemp", errno.EACCES, lambda *a, **k: str(k.get("dir", "")) == run)
    return predict_args(env)


@case("predict:disk-full", "maps", "no space left on the disk", "free some space", late=True)
def _(env):

    env.os_error_on("rasterio.shutil.copy", errno.ENOSPC)
    env.notes["after"] = lambda: (
        not (env.run / "maps").exists() and not list(env.run.glob(".maps.*"))
    )
    return predict_args(env)


# ---- what-if scenarios -----------------------------------------------------------------------
@case("scenario:wrong-type", "what-if.yaml", "invalid scenario", "monsoons_since_eq", "number")
def _(env):
    return _scenario(env, {"name": "dry", "monsoons_since_eq": "lots"})


@case("scenario:missing-key", "what-if.yaml", "earthquakes.0.pga", "add it")
def _(env):
    return _scenario(env, {"name": "quake", "earthquakes": [{"date": "2015-02-01"}]})


@case("scenario:name-escapes", "what-if.yaml", "scenario name '..'", "not a plain folder name")
def _(env):
    return _scenario(env, {"name": "..", "monsoons_since_eq": 1})


@case("scenario:changes-nothing", "what-if.yaml", "the scenario changes nothing")
def _(env):
    return _scenario(env, {"name": "same"})


@case("scenario:unknown-period", "what-if.yaml", "['monsoon 2099'] not in the cube's periods")
def _(env):
    return _scenario(env, {"name": "x", "periods": ["monsoon 2099"], "monsoons_since_eq": 1})


@case("scenario:unknown-band", "what-if.yaml", "'ndvi' is not a dynamic band")
def _(env):
    return _scenario(env, {"name": "x", "rasters": {"ndvi": "ndvi.tif"}})


@case("scenario:not-yaml", "what-if.yaml", "not valid yaml", "fix the syntax")
def _(env):
    return _scenario(env, "name: [unclosed\n")


@case("scenario:not-a-mapping", "what-if.yaml", "a scenario is a mapping")
def _(env):
    return _scenario(env, "- a\n- list\n")


@case("scenario:file-missing", "nope.yaml", "scenario file not found")
def _(env):
    return [*predict_args(env), "--scenario", env.root / "nope.yaml"]


# ---- evaluate --------------------------------------------------------------------------------
def _maps(env, **change):
    """observed.tif and susceptibility.tif (2 periods, 4 x 5 cells); ``change`` replaces
    one of them: name -> (array, transform or None)."""
    from affine import Affine

    from landslide_hazard.io import write_raster

    rng = np.random.default_rng(0)
    t = Affine(1000.0, 0, 300000.0, 0, -1000.0, 3100000.0)
    maps = {
        "observed": rng.exponential(1.0, (2, 4, 5)) * (rng.random((2, 4, 5)) < 0.4),
        "susceptibility": rng.random((2, 4, 5)),
    }
    transforms = dict.fromkeys(maps, t)
    for name, (arr, tr) in change.items():
        maps[name] = arr
        transforms[name] = tr or t
    paths = {}
    for name, arr in maps.items():
        arr = np.asarray(arr, dtype="float32")
        bands = [f"P{i}" for i in range(arr.shape[0])] if arr.ndim == 3 else None
        paths[name] = write_raster(
            env.root / f"{name}.tif", arr, transforms[name], "EPSG:32645", band_names=bands
        )
    args = ["evaluate", "--out", env.root / "eval"]
    for name in ("observed", "susceptibility", "folds"):
        if name in paths:
            args += [f"--{name}", paths[name]]
    return args


@case("evaluate:value-range", "observed.tif", "observed values span [-3", "[0, 100]", "nodata")
def _(env):
    obs = np.ones((2, 4, 5))
    obs[0, 0, 0] = -3
    return _maps(env, observed=(obs, None))


@case("evaluate:grid-differs", "susceptibility.tif", "transform", "differs from", "align")
def _(env):
    from affine import Affine

    shifted = Affine(1000.0, 0, 301000.0, 0, -1000.0, 3100000.0)
    return _maps(env, susceptibility=(np.full((2, 4, 5), 0.5), shifted))


@case("evaluate:bands-differ", "susceptibility.tif", "band")
def _(env):
    return _maps(env, susceptibility=(np.full((3, 4, 5), 0.5), None))


@case("evaluate:folds-bands", "folds.tif", "a folds raster needs one band, not 2")
def _(env):
    return _maps(env, folds=(np.ones((2, 4, 5)), None))


@pytest.mark.parametrize(("setup", "needles", "late"), CASES + VARIANTS)
def test_run_fault(run_env, check, setup, needles, late):
    args = setup(run_env)
    if not late:
        run_env.block_long_work()
    check(args, "error", needles)
    after = run_env.notes.get("after")
    assert after is None or after()


def test_densities_above_100_percent_are_refused_too(run_env, check):
    """The other side of evaluate:value-range (the same check, not counted twice)."""
    obs = np.ones((2, 4, 5))
    obs[1, 2, 2] = 140.0
    check(_maps(run_env, observed=(obs, None)), "error", ["observed values span", "140"])


def test_checks_are_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) == 25
