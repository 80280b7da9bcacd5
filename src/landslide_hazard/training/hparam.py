"""Hyper-parameter search: a seeded random search over the susceptibility stage's learning rate
and dropout, scored on the validation loss (never test cells)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..evaluation.evaluate import metrics_to_json
from ..io.atomic import atomic_write_text
from ..run import RunFolder, load_checkpoint
from .fit import Checkpoints, FitRuntime, TrainingData, config_hash, fit

LR_RANGE: tuple[float, float] = (1e-4, 1e-2)
DROPOUT_CHOICES: tuple[float, ...] = (0.0, 0.1, 0.3)


def sample_hparams(cfg: RunConfig, n_trials: int, seed: int) -> list[dict[str, float]]:
    """Seeded random search space: trial 0 is the config's own values, then log-uniform
    ``lr_susceptibility`` in :data:`LR_RANGE` and ``dropout`` from :data:`DROPOUT_CHOICES`.
    (The batch size is not searched: the focal Tversky loss is a batch-level ratio, so
    validation losses at different batch sizes would not compare.)"""
    trials = [{"lr_susceptibility": cfg.training.lr_susceptibility, "dropout": cfg.model.dropout}]
    rng = np.random.default_rng([seed, 99])
    lo, hi = np.log10(LR_RANGE[0]), np.log10(LR_RANGE[1])
    for _ in range(1, n_trials):
        trials.append(
            {
                "lr_susceptibility": float(10 ** rng.uniform(lo, hi)),
                "dropout": float(rng.choice(DROPOUT_CHOICES)),
            }
        )
    return trials


def apply_hparams(cfg: RunConfig, params: dict[str, float]) -> RunConfig:
    data = cfg.model_dump()
    data["training"]["lr_susceptibility"] = float(params["lr_susceptibility"])
    data["model"]["dropout"] = float(params["dropout"])
    return RunConfig.model_validate(data)


def hparam_search(
    cfg: RunConfig, data: TrainingData, run_dir: Path, rt: FitRuntime
) -> dict[str, float]:
    """Train the susceptibility stage for each of ``training.hparam_search_trials`` trials and
    return the parameters with the lowest validation loss (never test cells).

    Trials live in ``RUN/hparam/trial-<i>/`` (each resumable); the table goes to
    ``RUN/hparam_search.json``. A finished search is reused when the run is resumed.
    """
    log = rt.log
    out_file = RunFolder(run_dir).hparam_search
    if out_file.is_file():
        done = json.loads(out_file.read_text())
        log(f"hyper-parameter search: reusing {out_file.name} (best {done['best']})")
        return done["best"]
    trials = sample_hparams(cfg, cfg.training.hparam_search_trials, cfg.seed)
    rows = []
    for i, params in enumerate(trials):
        trial_cfg = apply_hparams(cfg, params)
        dumped = trial_cfg.model_dump()
        dumped["training"].update(
            max_epochs_density_log=0, max_epochs_density=0, max_epochs_finetune=0
        )
        trial_cfg = RunConfig.model_validate(dumped)
        ckpt_dir = RunFolder(run_dir).hparam_checkpoints(i)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        trial = Checkpoints(ckpt_dir, config_hash(trial_cfg))
        fit(trial_cfg, data, trial, FitRuntime(rt.device, log, rt.progress))
        history = load_checkpoint(trial.last)["history"]
        losses = [h["val_loss"] for h in history if h["stage"] == "susceptibility"]
        best_loss = min(losses) if losses else math.inf
        rows.append({"trial": i, **params, "val_loss": best_loss, "epochs": len(losses)})
        log(
            f"hyper-parameter trial {i}: lr_susceptibility {params['lr_susceptibility']:.2e} "
            f"dropout {params['dropout']:.2f} -> validation loss {best_loss:.5f}"
        )
    best_row = min(rows, key=lambda r: r["val_loss"])
    best = {"lr_susceptibility": best_row["lr_susceptibility"], "dropout": best_row["dropout"]}
    atomic_write_text(
        out_file,
        metrics_to_json(
            {
                "criterion": "min validation loss of the susceptibility stage",
                "trials": rows,
                "best": best,
                "best_trial": best_row["trial"],
            }
        ),
    )
    log(f"hyper-parameter search: best trial {best_row['trial']} {best}")
    return best
