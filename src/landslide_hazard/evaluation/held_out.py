"""Held-out scoring of a trained run: the model (and, on synthetic data, the oracle) scored on
exactly the split's test cells, with a class threshold chosen on validation cells only.

Training calls :func:`evaluate_run` after fitting; ``validate`` scores baselines with
:func:`score_on_split`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..errors import InputError
from ..run import TRUTH_FILES, find_truth_dir
from ..sampling.dataset import CubeReader
from ..sampling.normalisation import Normalisation
from ..sampling.splits import Split


def has_observable_truth(truth_dir: Path) -> bool:
    """Whether the scenario wrote the observable oracle (scenarios made before it did not)."""
    return (Path(truth_dir) / TRUTH_FILES["observable_susceptibility"]).is_file()


def read_truth(
    truth_dir: Path, grid, n_periods: int, observable: bool = False
) -> dict[str, np.ndarray]:
    """The synthetic truth on the cell grid: susceptibility (P), density (E[D|D>0]) and hazard
    (E[D]), each (P, cy, cx); checks the grid and the number of periods. ``observable``: the
    observable oracle instead (the truth averaged over the unobservable latent fields)."""
    from ..io import check_grid, read_raster

    out = {}
    for key in ("susceptibility", "density", "hazard"):
        name = TRUTH_FILES[f"observable_{key}" if observable else key]
        data, info = read_raster(Path(truth_dir) / name)
        check_grid(info, grid.crs, grid.cell_transform, grid.cell_shape, "cell")
        data = data[None] if data.ndim == 2 else data
        if data.shape[0] != n_periods:
            raise InputError(
                f"{Path(truth_dir) / name}: {data.shape[0]} bands for {n_periods} periods; "
                "the truth must have one band per period of the cube"
            )
        out[key] = data
    return out


def validation_threshold(
    score: np.ndarray, observed: np.ndarray, split: Split, cfg: RunConfig
) -> tuple[float, str]:
    """The class threshold: ``evaluation.threshold`` if set, else the max-F1 threshold of
    ``score`` on the split's validation cells (never test cells); NaN if they hold no positive
    or no negative."""
    from .metrics import best_f1_threshold

    if cfg.evaluation.threshold is not None:
        return float(cfg.evaluation.threshold), "evaluation.threshold"
    y = observed[split.val_cells] > cfg.inventory.min_density
    s = score[split.val_cells]
    ok = np.isfinite(s) & np.isfinite(observed[split.val_cells])
    if not (y[ok].any() and (~y[ok]).any()):
        return math.nan, "none: the validation cells hold no positive or no negative"
    return float(best_f1_threshold(y[ok].astype(float), s[ok])), "max-F1 on validation cells"


def score_on_split(
    arrays: dict[str, np.ndarray],
    observed: np.ndarray,
    split: Split,
    cfg: RunConfig,
    period_names: list[str],
) -> dict[str, Any]:
    """Score (P, cy, cx) susceptibility / density / hazard maps on exactly the split's test
    cells, per test period and pooled (``evaluation.evaluate_arrays`` layout), with the
    threshold from :func:`validation_threshold`."""
    from .evaluate import evaluate_arrays

    tp = np.flatnonzero(split.test_cells.any(axis=(1, 2)))
    test_obs = np.where(split.test_cells, observed, np.nan)[tp]
    thr, source = validation_threshold(arrays["susceptibility"], observed, split, cfg)
    result = evaluate_arrays(
        test_obs,
        arrays["susceptibility"][tp],
        arrays["density"][tp],
        arrays["hazard"][tp],
        period_names=[period_names[i] for i in tp],
        threshold=thr,
        min_density=cfg.inventory.min_density,
    )
    result["threshold_source"] = source
    return result


def predict_cells(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    cells: np.ndarray,
    cfg: RunConfig,
    device: torch.device,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The run's maps for the periods holding any of ``cells`` ((P, cy, cx) bool), predicted
    exactly as ``predict`` does (both lattices merged, the run's batch size and precision)."""
    from ..predict import Inference, predict_arrays

    return predict_arrays(
        model,
        reader,
        norm,
        periods=np.flatnonzero(cells.any(axis=(1, 2))).tolist(),
        merge=cfg.model.lattice_merge,
        inference=Inference.of_run(cfg, device),
        progress=progress,
    )


def evaluate_run(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    split: Split,
    cfg: RunConfig,
    device: torch.device,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the model on exactly the split's test cells (per test period and pooled).

    Predictions merge both lattices exactly as ``predict`` does. The class threshold is
    ``evaluation.threshold`` or the max-F1 threshold on the validation cells (never test). On a
    synthetic scenario the oracle (truth's P, E[D|D>0], E[D]) is scored on the same cells with
    its own validation threshold, and skill = (AUC - 0.5) / (oracle AUC - 0.5).
    """
    from .metrics import skill

    arrays = predict_cells(
        model, reader, norm, split.test_cells | split.val_cells, cfg, device, progress
    )
    observed = np.where(reader.valid[None], reader.target, np.nan)
    names = reader.period_names
    result = score_on_split(arrays, observed, split, cfg, names)
    out: dict[str, Any] = {
        "protocol": split.protocol,
        "fold": split.fold,
        "leaky": split.leaky,
        "split": split.summary(),
        "threshold": result["threshold"],
        "threshold_source": result["threshold_source"],
        "model": result,
        "held_out_auc": result["pooled"]["occurrence"]["auc"],
        "oracle": None,
        "oracle_auc": None,
        "skill_pooled": None,
        "skill_per_period": None,
    }
    truth_dir = find_truth_dir(cfg)
    if truth_dir is not None:
        truth = read_truth(truth_dir, reader.grid, reader.n_periods)
        oracle = score_on_split(truth, observed, split, cfg, names)
        out["oracle"] = oracle
        out["truth_dir"] = str(truth_dir)
        out["oracle_auc"] = oracle["pooled"]["occurrence"]["auc"]
        out["skill_pooled"] = skill(out["held_out_auc"], out["oracle_auc"])
        out["skill_per_period"] = {
            m["name"]: skill(m["occurrence"]["auc"], o["occurrence"]["auc"])
            for m, o in zip(result["periods"], oracle["periods"], strict=True)
        }
        if has_observable_truth(truth_dir):
            observable = read_truth(truth_dir, reader.grid, reader.n_periods, observable=True)
            scored = score_on_split(observable, observed, split, cfg, names)
            out["observable_oracle"] = scored
            out["observable_oracle_auc"] = scored["pooled"]["occurrence"]["auc"]
            out["skill_observable"] = skill(out["held_out_auc"], out["observable_oracle_auc"])
    return out
