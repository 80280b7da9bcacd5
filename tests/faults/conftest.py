"""The fault suite's harness: break a copy of the tiny scenario (or a small trained run), run
the CLI in this process, and check the outcome class and the message.

Outcome classes:

- ``error``: exit code 2, stderr starts with ``error:``, no traceback anywhere, and (for
  ``prepare`` / ``train`` / ``predict``) the long work was never reached: the functions that do
  it are replaced by ones that fail the test if called;
- ``warn``: exit code 0 (the input was repaired) and a ``warning:`` line on stderr.

Every case names the check it exercises (``check``); the suite asserts that the checks are
distinct, so the count of cases is the count of different code paths.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from typer.testing import CliRunner

from landslide_hazard.cli import app


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


class LongWorkReached(AssertionError):
    """Raised by the stand-ins of the long work: the fault was caught too late."""


@dataclass
class FaultEnv:
    """A private copy of the tiny scenario plus the tools to break it."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    run: Path | None = None  # a trained run's folder (cases that need one)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def edit_config(self, change) -> Path:
        """Apply ``change(dict)`` to the config YAML (in place) and return its path."""
        data = yaml.safe_load(self.config.read_text())
        change(data)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.config

    def rewrite_raster(
        self,
        path: Path,
        data: np.ndarray | None = None,
        *,
        units: list[str | None] | str | None = "keep",
        descriptions: list[str | None] | None = None,
        **profile: Any,
    ) -> Path:
        """Write ``path`` again with new values / band count / tags (plain GTiff)."""
        with rasterio.open(path) as ds:
            old = ds.read()
            prof = ds.profile
            old_units = list(ds.units)
            old_desc = list(ds.descriptions)
        arr = old if data is None else np.asarray(data)
        arr = arr[None] if arr.ndim == 2 else arr
        prof.update(driver="GTiff", count=arr.shape[0], dtype=str(arr.dtype))
        prof.pop("blockxsize", None)
        prof.pop("blockysize", None)
        prof.update(tiled=False)
        prof.update(profile)
        if units == "keep":
            units = old_units[: arr.shape[0]] + [old_units[-1]] * (arr.shape[0] - len(old_units))
        elif isinstance(units, str) or units is None:
            units = [units] * arr.shape[0]
        if descriptions is None and arr.shape[0] == len(old_desc):
            descriptions = old_desc
        path.unlink()
        with rasterio.open(path, "w", **prof) as ds:
            ds.write(arr)
            for i in range(arr.shape[0]):
                if units[i] is not None:
                    ds.set_band_unit(i + 1, units[i])
                if descriptions is not None and descriptions[i] is not None:
                    ds.set_band_description(i + 1, descriptions[i])
        return path

    def read(self, path: Path) -> np.ndarray:
        with rasterio.open(path) as ds:
            return ds.read()

    def block_long_work(self) -> None:
        """Make prepare's, train's and predict's long work fail the test if it is reached."""

        def reached(*args, **kwargs):
            raise LongWorkReached("the fault was reported only after the long work began")

        mp = self.monkeypatch
        mp.setattr("landslide_hazard.prepare.stage.compute_dynamic", reached)
        mp.setattr("landslide_hazard.prepare.stage._write_static", reached)
        mp.setattr("landslide_hazard.training.loop.fit", reached)
        mp.setattr("landslide_hazard.predict.stage.predict_arrays", reached)

    def os_error_on(self, target: str, code: int, when=lambda *a, **k: True) -> None:
        """Replace ``target`` (a dotted attribute) by a function raising OSError(code) when
        ``when(*args)`` holds, else calling the original: a full disk or a refused folder."""
        module, _, name = target.rpartition(".")
        import importlib

        owner: Any
        try:
            owner = importlib.import_module(module)
        except ModuleNotFoundError:
            mod, _, cls = module.rpartition(".")
            owner = getattr(importlib.import_module(mod), cls)
        original = getattr(owner, name)

        def failing(*args, **kwargs):
            if when(*args, **kwargs):
                name = args[0] if args else kwargs.get("dir")
                raise OSError(code, os.strerror(code), None if name is None else str(name))
            return original(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, failing)


@pytest.fixture
def env(tiny_scenario, tmp_path, monkeypatch) -> FaultEnv:
    root = tmp_path / "scn"
    shutil.copytree(tiny_scenario, root, ignore=shutil.ignore_patterns("out"))
    return FaultEnv(root, monkeypatch)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).lower()


def invoke(args: list[str]):
    return _runner().invoke(app, [str(a) for a in args])


@pytest.fixture
def check():
    """``check(args, outcome, needles)``: run the CLI with ``args`` and assert the outcome."""

    def run(args: list[Any], outcome: str, needles: list[str]) -> str:
        return expect(invoke([str(a) for a in args]), outcome, needles)

    return run


def expect(result, outcome: str, needles: list[str]) -> str:
    """Assert the outcome class and that every needle (case-insensitive) is in the message."""
    stderr = result.stderr or ""
    everything = stderr + (result.stdout or "")
    assert "Traceback" not in everything, everything
    assert not isinstance(result.exception, LongWorkReached), "fault reported too late"
    text = _flat(stderr)
    if outcome == "error":
        assert result.exit_code == 2, (result.exit_code, everything, result.exception)
        assert stderr.startswith("error:"), stderr
        assert "unexpected" not in text.split("\n")[0], stderr
    elif outcome == "warn":
        assert result.exit_code == 0, (result.exit_code, everything, result.exception)
        assert "warning:" in text, stderr
    else:  # pragma: no cover
        raise ValueError(outcome)
    missing = [n for n in needles if _flat(str(n)) not in text]
    assert not missing, f"message lacks {missing}: {stderr}"
    return stderr


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run trained (one epoch per stage) on a small random cube; read-only, copy it."""
    from landslide_hazard.config import load_config
    from landslide_hazard.testing import make_cube, one_epoch_config
    from landslide_hazard.training import train

    base = tmp_path_factory.mktemp("faults_run")
    cube = make_cube(base / "out" / "cube.zarr", shape_cells=(8, 8), k=4, n=4, n_periods=3)
    data = one_epoch_config(cube)
    data["model"] = {"preset": "tiny", "dropout": 0.2}
    data["training"]["calibration"] = "none"
    (base / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return train(load_config(base / "config.yaml"), progress=False)


@pytest.fixture
def run_env(trained_run, tmp_path, monkeypatch) -> FaultEnv:
    """A private copy of the trained run's output folder (cube and run)."""
    out = trained_run.parent.parent
    root = tmp_path / "base"
    shutil.copytree(out.parent, root)
    return FaultEnv(root, monkeypatch, run=root / "out" / "runs" / trained_run.name)
