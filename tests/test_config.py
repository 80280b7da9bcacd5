"""Config: round trip, path resolution, and errors that name the field and the fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from landslide_hazard.cli import app
from landslide_hazard.config import RunConfig, defaults_yaml, load_config, save_config
from landslide_hazard.errors import ConfigError


def _minimal(tmp_path: Path) -> dict:
    return {
        "name": "t",
        "seed": 3,
        "grid": {"origin": [1000.0, 5000.0], "shape_cells": [4, 6], "cell_pixels": 8},
        "baseline": {"name": "pre", "date": "2014-12-01", "inventory": "inv/pre.gpkg"},
        "periods": [
            {"name": "a", "date": "2015-06-01", "inventory": "inv/a.gpkg"},
            {"name": "b", "date": "2015-11-01", "inventory": "inv/b.gpkg"},
        ],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
    }


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_resolves_paths_relative_to_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, _minimal(tmp_path)))
    assert cfg.inputs.dem == (tmp_path / "dem.tif").resolve()
    assert cfg.periods[1].inventory == (tmp_path / "inv/b.gpkg").resolve()
    assert cfg.periods[0].date == dt.date(2015, 6, 1)
    grid = cfg.study_grid()
    assert grid.fine_shape == (32, 48)
    assert grid.cell_size_m == pytest.approx(250.0)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(_write(tmp_path, _minimal(tmp_path)))
    out = tmp_path / "sub" / "resolved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert isinstance(again, RunConfig)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["grid"].pop("origin"), "grid.origin"),
        (lambda d: d["grid"].update(pixel_size_m=-1), "grid.pixel_size_m"),
        (lambda d: d["grid"].update(patch_cells=3), "patch_cells must be even"),
        (lambda d: d.update(trainig={}), "unknown field"),
        (lambda d: d["periods"][1].update(date="2015-01-01"), "dates out of order"),
        (lambda d: d["periods"][1].update(name="a"), "names must be unique"),
        (lambda d: d.update(training={"batch_size": 0}), "training.batch_size"),
        (lambda d: d.update(monsoon={"start": "13-01"}), "MM-DD"),
    ],
)
def test_invalid_config_names_field_and_fix(tmp_path, mutate, needle):
    data = _minimal(tmp_path)
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert needle in message


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_defaults_are_valid_and_complete():
    text = defaults_yaml()
    data = yaml.safe_load(text)
    RunConfig.model_validate(data)  # the printed defaults are themselves a valid config
    for section in ("grid", "inventory", "monsoon", "model", "training", "evaluation", "output"):
        assert section in data
    assert data["training"]["batch_size"] == 16
    assert data["training"]["tversky_alpha"] == 0.3


def test_cli_show_defaults_and_check(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["config", "--show-defaults"])
    assert result.exit_code == 0
    assert "lr_susceptibility" in result.output
    good = _write(tmp_path, _minimal(tmp_path))
    assert runner.invoke(app, ["config", "--check", str(good)]).exit_code == 0
    data = _minimal(tmp_path)
    data["grid"]["shape_cells"] = "big"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["config", "--check", str(bad)])
    assert result.exit_code == 2


def test_default_model_and_the_paper_presets_recipe(tmp_path):
    """No model section: the project's default model; preset paper: the published recipe for
    every field the config leaves unset, and a wide path refused (it has no logit)."""
    data = _minimal(tmp_path)
    cfg = RunConfig.model_validate(data)
    assert (cfg.model.preset, cfg.model.wide, cfg.training.loss) == ("tiny", "pixel", "bce")
    assert cfg.training.bce_pos_weight == 1.0 and cfg.training.calibration == "platt"
    paper = RunConfig.model_validate(data | {"model": {"preset": "paper"}})
    assert (paper.model.wide, paper.training.loss, paper.training.bce_pos_weight) == (
        "none",
        "focal_tversky",
        5.0,
    )
    own = RunConfig.model_validate(
        data | {"model": {"preset": "paper"}, "training": {"loss": "bce"}}
    )
    assert (own.training.loss, own.training.bce_pos_weight) == ("bce", 5.0)
    again = RunConfig.model_validate(own.model_dump())  # a saved run config reloads unchanged
    assert again.training == own.training and again.model == own.model
    with pytest.raises(ValueError, match="no logit"):
        RunConfig.model_validate(data | {"model": {"preset": "paper", "wide": "linear"}})
