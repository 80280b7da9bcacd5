"""Config faults: ``config --check`` refuses each with one error line naming the field and the
fix, before any data is read (one case per validator)."""

from __future__ import annotations

import pytest


def _set(*path_and_value):
    *keys, value = path_and_value

    def change(data):
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value

    return change


def _delete(*keys):
    def change(data):
        node = data
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return change


def _swap_period_dates(data):
    data["periods"][0]["date"], data["periods"][1]["date"] = (
        data["periods"][1]["date"],
        data["periods"][0]["date"],
    )


def _duplicate_period_name(data):
    data["periods"][1]["name"] = data["periods"][0]["name"]


# (check, change of the config dict, words the message must hold)
CASES = [
    (
        "config:device",
        _set("training", "device", "gpu0"),
        ["training.device", "unknown device 'gpu0'", "auto", "cpu", "cuda:N"],
    ),
    (
        "config:crs-geographic",
        _set("grid", "crs", "EPSG:4326"),
        ["grid.crs", "not a projected crs in metres", "utm"],
    ),
    (
        "config:crs-unknown",
        _set("grid", "crs", "EPSG:99999999"),
        ["grid.crs", "not a crs", "epsg code"],
    ),
    (
        "config:breaks-order",
        _set("output", "hazard_class_breaks", [1.0, 0.1]),
        ["hazard_class_breaks", "strictly increasing"],
    ),
    (
        "config:breaks-range",
        _set("output", "hazard_class_breaks", [-1.0, 0.5]),
        ["hazard_class_breaks", "> 0"],
    ),
    (
        "config:patch-larger-than-grid",
        _set("grid", "patch_cells", 32),
        ["patch_cells = 32", "larger than the grid (16 x 16", "lower grid.patch_cells"],
    ),
    ("config:patch-odd", _set("grid", "patch_cells", 3), ["patch_cells", "even"]),
    (
        "config:run-name-escape",
        _set("output", "run_name", "../../elsewhere"),
        ["output.run_name", "not a plain folder name", "inside its parent"],
    ),
    (
        "config:run-name-absolute",
        _set("output", "run_name", "/tmp/x"),
        ["output.run_name", "not a plain folder name"],
    ),
    (
        "config:unknown-field",
        _set("training", "epochs", 5),
        ["training.epochs", "unknown field", "spelling"],
    ),
    (
        "config:missing-field",
        _delete("grid", "origin"),
        ["grid.origin", "add this field", "--show-defaults"],
    ),
    ("config:wrong-type", _set("grid", "shape_cells", "sixteen"), ["grid.shape_cells", "tuple"]),
    ("config:dates-order", _swap_period_dates, ["out of order", "time order"]),
    ("config:period-names", _duplicate_period_name, ["period names must be unique"]),
    ("config:monsoon-date", _set("monsoon", "start", "June"), ["monsoon.start", "mm-dd"]),
    (
        "config:paper-wide",
        lambda d: (_set("model", "preset", "paper")(d), _set("model", "wide", "pixel")(d)),
        ["model.wide", "paper preset", "wide: none"],
    ),
    (
        "config:negative-value",
        _set("training", "batch_size", 0),
        ["training.batch_size", "greater than or equal to 1"],
    ),
]


#: The same check as another case (run, not counted as distinct).
VARIANTS = {"config:run-name-absolute": "config:run-name-escape"}


@pytest.mark.parametrize(("change", "needles"), [pytest.param(c, n, id=k) for k, c, n in CASES])
def test_config_fault(env, check, change, needles):
    path = env.edit_config(change)
    check(["config", "--check", path], "error", [str(path), "invalid config", *needles])


def test_config_file_faults(env, check, tmp_path):
    """The file itself: missing, not YAML, not a mapping (three checks of load_config)."""
    check(["config", "--check", tmp_path / "nope.yaml"], "error", ["nope.yaml", "not found"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    check(["config", "--check", bad], "error", ["bad.yaml", "not valid yaml", "fix the syntax"])
    bad.write_text("- just\n- a list\n")
    check(["config", "--check", bad], "error", ["bad.yaml", "mapping of config sections"])


CHECKS = [k for k, _, _ in CASES if k not in VARIANTS] + [
    "config:file-missing",
    "config:not-yaml",
    "config:not-mapping",
]


def test_checks_are_distinct():
    assert len(CHECKS) == len(set(CHECKS)) == 19
