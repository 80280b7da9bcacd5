"""The scenario config's evaluation defaults give a working spatial split on every fold."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.config import load_config
from landslide_hazard.io import read_raster
from landslide_hazard.sampling.splits import SplitSettings, make_split
from landslide_hazard.synthetic import get_spec
from landslide_hazard.synthetic.config import scenario_config


def _split(cfg, target, fold, buffer_cells):
    ev = cfg.evaluation
    settings = SplitSettings(
        "spatial",
        block_km=ev.block_km,
        n_folds=ev.n_folds,
        test_fold=fold,
        buffer_cells=buffer_cells,
        val_fraction=cfg.training.val_fraction,
        seed=cfg.seed,
    )
    return make_split(
        target,
        np.isfinite(target).any(axis=0),
        settings,
        patch_cells=cfg.grid.patch_cells,
        cell_size_m=cfg.grid.pixel_size_m * cfg.grid.cell_pixels,
    )


def test_tiny_seed0_spatial_split_works_on_every_fold(tiny_scenario):
    cfg = load_config(tiny_scenario / "config.yaml")
    assert cfg.evaluation.buffer_cells == 1 and cfg.model.dropout == pytest.approx(0.3)
    # the pipeline's target is exactly the truth's new density (docs/synthetic.md)
    target, _ = read_raster(tiny_scenario / "truth" / "new_density.tif")
    for fold in range(cfg.evaluation.n_folds):
        split = _split(cfg, target, fold, cfg.evaluation.buffer_cells)
        summary = split.summary()
        assert summary["n_train_patches"] > 0 and summary["n_val_patches"] > 0
        assert summary["n_test_cells"] > 0
        assert not (split.train_cells & split.test_cells).any()
    # the former default (a buffer of n = 4 cells) leaves fold 0 without validation blocks
    with pytest.raises(ValueError, match="block"):
        _split(cfg, target, 0, None)


def test_demo_defaults():
    spec = get_spec("demo")
    cfg = scenario_config(spec, 3, [])
    t = cfg.training
    assert cfg.model.preset == "tiny" and cfg.model.dropout == pytest.approx(0.3)
    assert (t.max_epochs_susceptibility, t.max_epochs_density_log, t.max_epochs_density) == (
        30,
        4,
        4,
    )
    assert (t.max_epochs_finetune, t.patience) == (2, 5)
    # the default model (docs/models.md): pixel wide path, unweighted BCE, stored calibration
    assert cfg.model.wide == "pixel" and cfg.model.members == 1
    assert (t.loss, t.bce_pos_weight, t.calibration) == ("bce", 1.0, "platt")
    assert cfg.evaluation.buffer_cells is None and cfg.evaluation.n_folds == 5
