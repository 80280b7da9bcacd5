"""A RunConfig over a small random cube, for the training tests (no input files needed)."""

from __future__ import annotations

import pytest

from landslide_hazard.testing import grid_config, make_cube


def make_config(tmp_path, cube_kw=None, **training):
    """A RunConfig whose output dir holds a tiny random cube (inputs are never read)."""
    from landslide_hazard.config import parse_config

    cube_kw = {"shape_cells": (12, 12), "k": 4, "n": 4, "n_periods": 4, **(cube_kw or {})}
    out = tmp_path / "out"
    cube = make_cube(out / "cube.zarr", **cube_kw)
    g = cube.grid
    n_p = cube_kw["n_periods"]
    data = {
        "seed": 3,
        "grid": grid_config(g),
        "baseline": {"name": "base", "date": "2015-01-01", "inventory": "b.gpkg"},
        "periods": [
            {"name": p.name, "date": f"2015-{i + 2:02d}-01", "inventory": f"p{i}.gpkg"}
            for i, p in enumerate(cube.meta.periods[:n_p])
        ],
        "inputs": {"dem": "dem.tif", "rain": "rain.tif"},
        "model": {"preset": "tiny"},
        "training": {
            "batch_size": 4,
            "max_epochs_susceptibility": 2,
            "max_epochs_density_log": 1,
            "max_epochs_density": 1,
            "max_epochs_finetune": 1,
            "patience": 5,
            "device": "cpu",
            **training,
        },
        "evaluation": {"protocol": "spatial", "block_km": 3.0, "n_folds": 3, "buffer_cells": 1},
        "output": {"dir": str(out)},
    }
    return parse_config(data, tmp_path)


@pytest.fixture(scope="session")
def config_factory():
    """make_config(tmp_path, cube_kw=None, **training) -> RunConfig with a tiny cube."""
    return make_config


@pytest.fixture
def susceptibility_val_losses(monkeypatch):
    """set(values): the susceptibility stage's validation losses become ``values`` in turn (the
    other stages' stay real), to drive early stopping by hand."""
    from landslide_hazard.training import fit as fit_module

    real = fit_module.eval_loss

    def set_losses(values):
        losses = iter(values)

        def fake(model, stage, *args, **kwargs):
            if stage.name == "susceptibility":
                return next(losses)
            return real(model, stage, *args, **kwargs)

        monkeypatch.setattr(fit_module, "eval_loss", fake)

    return set_losses
