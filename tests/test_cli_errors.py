"""The CLI's error boundary: a foreseen failure is one ``error:`` line and exit 2; a bug is one
line naming the exception with a hint to ``--debug``, which shows the traceback instead."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from landslide_hazard import cli
from landslide_hazard.cli import app
from landslide_hazard.config import parse_config, save_config
from landslide_hazard.errors import (
    ConfigError,
    InputError,
    LandslideHazardError,
    MissingFileError,
    RunFolderError,
)
from landslide_hazard.predict import load_model_file


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


def _run_folder(tmp_path):
    """A run folder with a valid config.yaml and no model.pt."""
    data = {
        "grid": {"origin": [0.0, 0.0], "shape_cells": [8, 8], "patch_cells": 4},
        "baseline": {"name": "base", "date": "2015-01-01", "inventory": "b.gpkg"},
        "periods": [{"name": "p1", "date": "2015-06-01", "inventory": "p.gpkg"}],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
        "output": {"dir": str(tmp_path / "out")},
    }
    run = tmp_path / "run"
    run.mkdir()
    save_config(parse_config(data, tmp_path), run / "config.yaml")
    return run


def test_hierarchy_keeps_the_builtin_bases():
    assert issubclass(InputError, ValueError) and issubclass(InputError, LandslideHazardError)
    assert issubclass(ConfigError, InputError)
    assert issubclass(RunFolderError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError)


def test_foreseen_error_is_one_line_exit_2(tmp_path):
    result = _runner().invoke(app, ["config", "--check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.yaml" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content",
    [b"PK\x03\x04 truncated zip", b"", b"not a torch file at all"],
    ids=["truncated", "empty", "foreign-bytes"],
)
def test_truncated_or_foreign_model_is_one_error_line(tmp_path, content):
    run = _run_folder(tmp_path)
    (run / "model.pt").write_bytes(content)
    with pytest.raises(RunFolderError, match="model.pt"):
        load_model_file(run / "model.pt")
    result = _runner().invoke(app, ["predict", str(run), "--no-progress"])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "model.pt" in lines[0]
    assert "train" in lines[0]


def test_model_file_of_another_program_is_refused(tmp_path):
    run = _run_folder(tmp_path)
    torch.save({"weights": torch.zeros(3)}, run / "model.pt")
    with pytest.raises(RunFolderError, match="not a landslide-hazard model file"):
        load_model_file(run / "model.pt")
    # a truncated copy of a real torch file
    data = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(data[: len(data) // 2])
    result = _runner().invoke(app, ["predict", str(run), "--no-progress"])
    assert result.exit_code == 2 and result.stderr.startswith("error:")


def test_unforeseen_error_is_one_line_with_a_debug_hint(monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero deep inside")

    monkeypatch.setattr("landslide_hazard.config.defaults_yaml", boom)
    result = _runner().invoke(app, ["config", "--show-defaults"])
    assert result.exit_code == cli.EXIT_BUG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ZeroDivisionError" in lines[0] and "--debug config" in lines[0]
    assert "Traceback" not in result.stderr

    debug = _runner().invoke(app, ["--debug", "config", "--show-defaults"])
    assert isinstance(debug.exception, ZeroDivisionError)  # the traceback is let through


def test_debug_shows_the_traceback_in_a_real_process():
    import subprocess
    import sys

    code = (
        "import sys; from landslide_hazard.cli import app; "
        "import landslide_hazard.config as c; "
        "c.defaults_yaml = lambda: 1 / 0; "
        "sys.argv = ['landslide-hazard'] + sys.argv[1:]; app()"
    )
    plain = subprocess.run(
        [sys.executable, "-c", code, "config", "--show-defaults"], capture_output=True, text=True
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert "--debug" in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-c", code, "--debug", "config", "--show-defaults"],
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ZeroDivisionError" in debug.stderr


@pytest.mark.parametrize("args", [["--help"], ["prepare", "--help"], ["--version"]])
def test_help_and_version_are_not_errors(args):
    """typer.Exit (raised by --help) is the normal way out, not a bug to report."""
    result = _runner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "error:" not in result.output and "error:" not in (result.stderr or "")


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a sentinel: code a shared model file could run."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.sentinel),))


def test_a_model_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    run = _run_folder(tmp_path)
    sentinel = tmp_path / "ran"
    torch.save({"bands": [], "state_dict": {}, "hook": _RunsCode(sentinel)}, run / "model.pt")
    with pytest.raises(RunFolderError, match="not a readable model file"):
        load_model_file(run / "model.pt")
    assert not sentinel.exists()
    result = _runner().invoke(app, ["predict", str(run), "--no-progress"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not sentinel.exists()


def test_calibrate_refuses_a_folder_without_a_finished_run(tmp_path):
    run = _run_folder(tmp_path)
    result = _runner().invoke(app, ["calibrate", str(run), "--no-progress"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no finished run to recalibrate" in lines[0] and str(run) in lines[0]
