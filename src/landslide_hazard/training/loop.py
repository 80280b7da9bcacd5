"""The train stage: susceptibility, density curriculum, then the ENN fine-tuned (paper 6.2).

Stages, each with its own Adam optimiser, exponential learning-rate decay (per step:
``lr * rate ** (step / decay_steps)``), early stopping on the validation loss with the best
weights kept:

1. ``susceptibility``: the susceptibility block on occurrence (density > ``min_density``), focal
   Tversky or class-weighted BCE, lr ``lr_susceptibility``;
2. ``density_log``: the density block on positive cells only, MAE against log1p(density);
3. ``density``: the density block on positive cells, MAE on the original scale (% of cell);
   both with lr ``lr_density``;
4. ``finetune``: the whole ENN on all cells with the zeros back in: mean squared error of
   hazard = S x D against the observed density plus the susceptibility loss, lr
   ``lr_finetune``. (The paper's code uses the MAE here; its minimiser on a zero-inflated target
   is the conditional median, 0 almost everywhere, and it shrank E[D|D>0] to 0.4-6 % of the
   truth's mean on the demo: docs/decisions.md.)

Every epoch writes ``checkpoints/last.pt`` (model, optimiser, scheduler, RNG states, stage,
epoch, best score and weights); a crashed run resumes exactly where it stopped, and the epoch
order is a pure function of (seed, stage, epoch), so a resumed run ends with the same weights
as an uninterrupted one. On CPU ``torch.use_deterministic_algorithms`` is on; on GPU, AMP
(bf16, else fp16 with a grad scaler) and channels-last are used when ``training.amp``.

Launched by ``torchrun`` with ``WORLD_SIZE > 1``, training is data-parallel (``training.ddp``):
each rank trains on its share of every epoch's batches, gradients are averaged over the ranks,
and rank 0 alone writes the run folder (docs/training.md, "Several GPUs / processes").
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig, TrainingConfig
from ..errors import InputError, ResumeError
from ..evaluation.held_out import evaluate_run
from ..models.susceptibility import SusceptibilityEnsemble
from ..run import (
    CHECKPOINT,
    RunFolder,
    cube_path,
    enn_arguments,
    load_checkpoint,
    run_dir_for,
    save_checkpoint,
    save_trained_model,
    stage_checkpoint,
)
from ..runtime import (
    apply_thread_policy,
    autocast,
    progress_bar,
    resolve_device,
    single_thread_worker,
)
from ..sampling.dataset import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    CubeReader,
    PatchDataset,
    StaticPatchCache,
    batches_of,
    epoch_order,
)
from ..sampling.normalisation import Normalisation, compute_normalisation
from ..sampling.splits import PROTOCOLS, Split, make_split
from .calibrate import fit_calibration
from .ddp import (
    DistContext,
    all_reduce_sums,
    average_gradients,
    broadcast_module,
    process_group,
    shard_batches,
)

STAGES: tuple[str, ...] = ("susceptibility", "density_log", "density", "finetune")
PATCH_CACHE_BYTES = 1024**3  # normalised static pixels of patch windows kept for a whole run


@dataclass(frozen=True)
class Stage:
    """One training stage: which part trains, on what, for how long, at which learning rate."""

    index: int
    name: str
    part: str  # "susceptibility", "density" or "all"
    max_epochs: int
    lr: float
    positive_only: bool


@dataclass(frozen=True)
class ExponentialDecay:
    """Learning-rate factor ``rate ** (step / decay_steps)`` (Keras ExponentialDecay, smooth)."""

    rate: float
    decay_steps: int

    def __call__(self, step: int) -> float:
        return self.rate ** (step / self.decay_steps)


def stages_from_config(t: TrainingConfig) -> list[Stage]:
    return [
        Stage(
            0,
            "susceptibility",
            "susceptibility",
            t.max_epochs_susceptibility,
            t.lr_susceptibility,
            False,
        ),
        Stage(1, "density_log", "density", t.max_epochs_density_log, t.lr_density, True),
        Stage(2, "density", "density", t.max_epochs_density, t.lr_density, True),
        Stage(3, "finetune", "all", t.max_epochs_finetune, t.lr_finetune, False),
    ]


def susceptibility_loss(
    p: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, t: TrainingConfig
) -> torch.Tensor:
    """The configured occurrence loss: focal Tversky (default) or class-weighted BCE."""
    from .losses import focal_tversky_loss, weighted_bce

    if t.loss == "focal_tversky":
        return focal_tversky_loss(
            p, g, t.tversky_alpha, t.tversky_beta, t.tversky_gamma, t.tversky_gamma_form, mask=mask
        )
    return weighted_bce(p, g, t.bce_pos_weight, mask=mask)


def _members_loss(
    block: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, t: TrainingConfig
) -> torch.Tensor:
    """The occurrence loss of a susceptibility block; for a deep ensemble, the mean of each
    member's own loss (so the members train independently, as a deep ensemble's do)."""
    if isinstance(block, SusceptibilityEnsemble):
        losses = [susceptibility_loss(p.float(), g, mask, t) for p in block.member_probabilities(x)]
        return torch.stack(losses).mean()
    return susceptibility_loss(block(x).float(), g, mask, t)


def stage_loss(
    stage: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    t: TrainingConfig,
    min_density: float,
) -> torch.Tensor:
    """Loss of one batch in one stage. target: density (%), mask: cells that count."""
    from .losses import masked_gamma_deviance, masked_mae, masked_mse

    occurrence = (target > min_density).to(torch.float32)
    if stage == "susceptibility":
        return _members_loss(model.susceptibility, x, occurrence, mask, t)
    if stage == "density_log":
        return masked_mae(model.density(x).float(), torch.log1p(target), mask)
    if stage == "density":
        if t.density_loss == "gamma":
            return masked_gamma_deviance(model.density(x).float(), target, mask)
        return masked_mae(model.density(x).float(), target, mask)
    if stage == "finetune":
        out = model(x)
        # MSE by default, not the paper code's MAE: E[D] is a conditional mean, and the MAE's
        # minimiser (the median, 0 wherever P < 0.5) drove the density block to ~0
        # (docs/decisions.md); training.hazard_loss = mae restores the paper code's
        hazard_term = masked_mse if t.hazard_loss == "mse" else masked_mae
        hazard = hazard_term(out.hazard.float(), target, mask)
        if isinstance(model.susceptibility, SusceptibilityEnsemble):
            return hazard + _members_loss(model.susceptibility, x, occurrence, mask, t)
        return hazard + susceptibility_loss(out.susceptibility.float(), occurrence, mask, t)
    raise ValueError(f"unknown stage '{stage}'")


def _part(model: torch.nn.Module, part: str) -> torch.nn.Module:
    return model if part == "all" else getattr(model, part)


class _Log:
    """Per-epoch log lines to RUN/train.log (appended) and, with progress on, the console.
    With ``write`` False (data-parallel ranks other than 0) it does nothing."""

    def __init__(self, path: Path, echo: bool, write: bool = True) -> None:
        self.path = path
        self.echo = echo
        self.write = write

    def __call__(self, line: str) -> None:
        if not self.write:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.path, "a") as fh:
            fh.write(f"{stamp} {line}\n")
        if self.echo:
            from ..streams import log_console

            log_console().print(line, highlight=False)


def _config_for_run(cfg: RunConfig, protocol: str, fold: int) -> RunConfig:
    data = cfg.model_dump()
    data["evaluation"]["protocol"] = protocol
    data["evaluation"]["test_fold"] = fold
    return RunConfig.model_validate(data)


def train(
    cfg: RunConfig,
    protocol: str | None = None,
    fold: int | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train one run (protocol x fold) and score it on its held-out cells; returns the run folder.

    The folder ``<output.dir>/runs/<name>/`` (name: ``output.run_name`` or
    ``<protocol>-fold<k>``) receives config.yaml, normalisation.json, splits.npz, checkpoints/,
    train.log, model.pt and metrics.json. Re-running on a folder with a checkpoint resumes it.
    """
    return run_training(cfg, protocol, fold, run_dir, progress)


def run_training(
    cfg: RunConfig,
    protocol: str | None = None,
    fold: int | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
    epoch_callback: Callable[[str, int], None] | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> Path:
    """:func:`train` with hooks: ``epoch_callback(stage, epoch)`` runs after each epoch's
    checkpoint (tests use it to simulate a crash).

    Under ``torchrun`` with ``WORLD_SIZE > 1`` every rank calls this; it joins the process group
    (:func:`training.ddp.process_group`), trains data-parallel, and returns on every rank once
    rank 0 has written ``metrics.json``.
    """
    from ..malloc import tune_malloc

    tune_malloc()  # batch-sized activations reused, not re-mapped (landslide_hazard.malloc)
    protocol = protocol or cfg.evaluation.protocol
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    fold = cfg.evaluation.test_fold if fold is None else int(fold)
    cfg_run = _config_for_run(cfg, protocol, fold)
    device = resolve_device(cfg.training.device)
    with process_group(device) as dist:
        if dist is not None and cfg_run.training.hparam_search_trials > 0:
            raise InputError(
                f"training.hparam_search_trials = {cfg_run.training.hparam_search_trials} is "
                f"not supported with {dist.world_size} data-parallel processes; run the search "
                "in one process (set hparam_search_trials: 0 here and copy the chosen values "
                "from that run's config.yaml)"
            )
        return _run_training(
            cfg,
            cfg_run,
            protocol,
            fold,
            run_dir,
            progress,
            epoch_callback,
            memory_budget_bytes,
            dist.device if dist is not None else device,
            dist,
        )


def _run_training(
    cfg: RunConfig,
    cfg_run: RunConfig,
    protocol: str,
    fold: int,
    run_dir: Path | None,
    progress: bool,
    epoch_callback: Callable[[str, int], None] | None,
    memory_budget_bytes: int,
    device: torch.device,
    dist: DistContext | None,
) -> Path:
    from ..config import save_config
    from ..cube import open_cube

    is_main = dist is None or dist.is_main
    progress = progress and is_main
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg, protocol, fold)
    run = RunFolder(run_dir)
    ckpt_dir = run.checkpoints
    ckpt_path = run.checkpoint
    config_hash = _config_hash(cfg_run)
    if ckpt_path.is_file():
        old = load_checkpoint(ckpt_path)
        if old.get("config_hash") != config_hash:
            raise ResumeError(
                f"{run_dir}: holds a checkpoint of a different config; delete the folder or set "
                "output.run_name to train a new run"
            )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        save_config(cfg_run, run.config)
    log = _Log(run.train_log, progress, write=is_main)
    threads = apply_thread_policy(cfg.runtime.threads)
    # CPU results depend on the thread count (reductions are split per thread): say so
    log(f"{threads.describe()}; CPU results depend on the thread count")

    path = cube_path(cfg)
    cube = open_cube(path)
    grid = cube.grid
    want = cfg.study_grid()
    if (grid.cell_pixels, grid.patch_cells, grid.cell_shape) != (
        want.cell_pixels,
        want.patch_cells,
        want.cell_shape,
    ):
        raise InputError(
            f"{path}: cube grid (k={grid.cell_pixels}, n={grid.patch_cells}, {grid.cell_shape} "
            f"cells) differs from the config (k={want.cell_pixels}, n={want.patch_cells}, "
            f"{want.cell_shape}); re-run `landslide-hazard prepare` with this config"
        )
    reader = CubeReader(cube, memory_budget_bytes=memory_budget_bytes)
    ev = cfg.evaluation
    split = make_split(
        reader.target,
        reader.valid,
        protocol,
        patch_cells=grid.patch_cells,
        cell_size_m=grid.cell_size_m,
        block_km=ev.block_km,
        n_folds=ev.n_folds,
        test_fold=fold,
        buffer_cells=ev.buffer_cells,
        temporal_test_periods=ev.temporal_test_periods,
        val_fraction=cfg.training.val_fraction,
        seed=cfg.seed,
    )
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, split.train_cells, grid.cell_pixels
    )
    if is_main:
        split.save(run.splits)
        norm.save(run.normalisation)
    summary = split.summary()
    log(
        f"run {run_dir.name}: protocol {protocol} fold {fold}{' (leaky, optimistic)' if split.leaky else ''}; "
        f"{summary['n_train_patches']} train / {summary['n_val_patches']} val patches, "
        f"{summary['n_test_cells']} test cells; static in memory: {reader.static_in_memory}"
    )

    prev_det = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        if cfg_run.training.hparam_search_trials > 0:
            best = hparam_search(cfg_run, reader, split, norm, device, run_dir, log, progress)
            cfg_run = apply_hparams(cfg_run, best)
            save_config(cfg_run, run.config)
        model = _fit(
            cfg_run,
            reader,
            split,
            norm,
            device,
            ckpt_dir,
            config_hash,
            log,
            progress,
            epoch_callback,
            dist,
        )
    finally:
        torch.use_deterministic_algorithms(prev_det)
        _close_loaders()
    if is_main:  # calibration and held-out scoring are cheap next to training: rank 0 alone
        calibration = fit_calibration(model, reader, norm, split, cfg_run, device, progress)
        if calibration.get("slope") is not None:
            log(
                f"calibration ({cfg_run.training.calibration}) on {calibration['n_cells']} "
                f"validation cells: ECE {_fmt(calibration['ece_raw'])} -> "
                f"{_fmt(calibration['ece_calibrated'])}"
            )
        save_trained_model(run.model, model, cfg_run, norm, grid, cube, path)
        metrics = evaluate_run(model, reader, norm, split, cfg_run, device, progress)
        metrics["calibration"] = calibration
        from ..evaluation.evaluate import metrics_to_json
        from ..io.atomic import atomic_write_text

        metrics["threads"] = threads.threads  # CPU results depend on it (docs/performance.md)
        atomic_write_text(run.metrics, metrics_to_json(metrics))
        log(
            f"held-out AUC {_fmt(metrics['held_out_auc'])}, oracle AUC "
            f"{_fmt(metrics['oracle_auc'])}, skill {_fmt(metrics['skill_pooled'])}"
        )
    if dist is not None:  # every rank returns once model.pt and metrics.json exist
        dist.barrier()
    return run_dir


def _config_hash(cfg: RunConfig) -> str:
    """What a checkpoint must match to be resumed: the config without its ``runtime`` section
    (threads may change between a crash and the resume; before the section existed the hash
    was of the same text)."""
    return hashlib.sha256(cfg.to_yaml(exclude={"runtime"}).encode()).hexdigest()


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# hyper-parameter search

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
    cfg: RunConfig,
    reader: CubeReader,
    split: Split,
    norm: Normalisation,
    device: torch.device,
    run_dir: Path,
    log: _Log,
    progress: bool,
) -> dict[str, float]:
    """Train the susceptibility stage for each of ``training.hparam_search_trials`` trials and
    return the parameters with the lowest validation loss (never test cells).

    Trials live in ``RUN/hparam/trial-<i>/`` (each resumable); the table goes to
    ``RUN/hparam_search.json``. A finished search is reused when the run is resumed.
    """
    from ..evaluation.evaluate import metrics_to_json
    from ..io.atomic import atomic_write_text

    out_file = run_dir / "hparam_search.json"
    if out_file.is_file():
        import json

        done = json.loads(out_file.read_text())
        log(f"hyper-parameter search: reusing {out_file.name} (best {done['best']})")
        return done["best"]
    trials = sample_hparams(cfg, cfg.training.hparam_search_trials, cfg.seed)
    rows = []
    for i, params in enumerate(trials):
        trial_cfg = apply_hparams(cfg, params)
        data = trial_cfg.model_dump()
        data["training"].update(
            max_epochs_density_log=0, max_epochs_density=0, max_epochs_finetune=0
        )
        trial_cfg = RunConfig.model_validate(data)
        ckpt_dir = RunFolder(run_dir).hparam_checkpoints(i)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        trial_hash = _config_hash(trial_cfg)
        _fit(trial_cfg, reader, split, norm, device, ckpt_dir, trial_hash, log, progress, None)
        history = load_checkpoint(ckpt_dir / CHECKPOINT)["history"]
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


def _fit(
    cfg: RunConfig,
    reader: CubeReader,
    split: Split,
    norm: Normalisation,
    device: torch.device,
    ckpt_dir: Path,
    config_hash: str,
    log: _Log,
    progress: bool,
    epoch_callback: Callable[[str, int], None] | None,
    dist: DistContext | None = None,
) -> torch.nn.Module:
    from ..models import build_enn

    is_main = dist is None or dist.is_main

    t = cfg.training
    grid = reader.grid
    min_density = cfg.inventory.min_density
    torch.manual_seed(cfg.seed)
    model = build_enn(**enn_arguments(cfg.model, grid)).to(device)
    use_amp = bool(t.amp and device.type == "cuda")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    datasets: dict[tuple[str, bool], PatchDataset] = {}
    _close_loaders()  # the workers of an earlier fit (hyper-parameter trials) hold its datasets
    cache = StaticPatchCache(reader, norm, PATCH_CACHE_BYTES)

    def dataset(role: str, positive_only: bool) -> PatchDataset:
        key = (role, positive_only)
        if key not in datasets:
            patches = split.train_patches if role == "train" else split.val_patches
            cells = split.train_cells if role == "train" else split.val_cells
            ds = PatchDataset(reader, patches, cells, norm, positive_only, min_density, cache)
            counts = ds.cells_per_patch()
            if (counts == 0).any():  # positive-only: patches without positives drop out
                ds = PatchDataset(
                    reader,
                    patches.subset(counts > 0),
                    cells,
                    norm,
                    positive_only,
                    min_density,
                    cache,
                )
            datasets[key] = ds
        return datasets[key]

    ckpt_path = ckpt_dir / CHECKPOINT
    resume = load_checkpoint(ckpt_path) if ckpt_path.is_file() else None
    if resume is not None:
        model.load_state_dict(resume["model"])
        log(
            f"resuming from {ckpt_path} at stage {STAGES[resume['stage_index']] if resume['stage_index'] < len(STAGES) else 'done'}, epoch {resume['epoch']}"
        )
    history: list[dict[str, Any]] = [] if resume is None else list(resume["history"])
    world_size = 1 if dist is None else dist.world_size
    unfinished = resume is not None and resume["stage_index"] < len(STAGES)
    if unfinished and resume.get("world_size", 1) != world_size:
        log(
            f"warning: {ckpt_path} was written by {resume.get('world_size', 1)} process(es), "
            f"resuming with {world_size}: batches are dealt differently from here on, so the "
            "result will not match an uninterrupted run"
        )
    if dist is not None:
        # before any stage trains: every stage must give each process at least one batch
        check_stage_batches(
            {s.name: len(dataset("train", s.positive_only)) for s in stages_from_config(t)},
            t,
            dist.world_size,
        )
        dist.barrier()  # every rank has read the checkpoint before rank 0 writes the next one
        broadcast_module(model)  # the same start everywhere, whatever the device did on init

    for stage in stages_from_config(t):
        if resume is not None and stage.index < resume["stage_index"]:
            continue
        train_ds = dataset("train", stage.positive_only)
        val_ds = dataset("val", stage.positive_only)
        if stage.max_epochs == 0 or len(train_ds) == 0:
            log(
                f"{stage.name}: skipped ({'0 epochs' if stage.max_epochs == 0 else 'no training patch'})"
            )
            continue
        part = _part(model, stage.part)
        optimizer = _optimizer(part, stage.lr, t)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, ExponentialDecay(t.lr_decay_rate, t.lr_decay_steps)
        )
        scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()
        )
        start_epoch, best, bad = 0, math.inf, 0
        best_state = copy.deepcopy(model.state_dict())
        if resume is not None and stage.index == resume["stage_index"]:
            _set_rng_state(resume["rng"])
            if "optimizer" in resume:  # a mid-stage checkpoint (else: saved at a stage's end)
                optimizer.load_state_dict(resume["optimizer"])
                scheduler.load_state_dict(resume["scheduler"])
                if resume.get("scaler"):
                    scaler.load_state_dict(resume["scaler"])
                start_epoch, best, bad = resume["epoch"], resume["best"], resume["bad_epochs"]
                best_state = resume["best_state"]
        resume = None
        if len(val_ds) == 0:
            log(f"{stage.name}: no validation patch; early stopping watches the training loss")
        has_pos = None
        if t.balance_patches and not stage.positive_only:
            has_pos = dataset("train", True).patches  # patches with at least one positive
            pos_set = {tuple(r) for r in has_pos.as_array().tolist()}
            has_pos = np.array([tuple(r) in pos_set for r in train_ds.patches.as_array().tolist()])

        for epoch in range(start_epoch, stage.max_epochs):
            if bad >= t.patience:
                break
            tic = time.perf_counter()
            order = epoch_order(
                len(train_ds), cfg.seed, stage.index, epoch, has_pos, augment=t.augment
            )
            batches = batches_of(order, t.batch_size)
            if dist is not None:
                batches = _rank_batches(batches, stage, epoch, cfg.seed, t.batch_size, dist)
            train_loss = _train_epoch(
                model,
                part,
                stage,
                train_ds,
                batches,
                optimizer,
                scheduler,
                scaler,
                device,
                use_amp,
                t,
                min_density,
                progress,
                epoch,
                dist,
            )
            if dist is not None:  # one model everywhere: rank 0's batch-norm statistics
                broadcast_module(model)
            val_loss = (
                _eval_loss(model, stage, val_ds, t, min_density, device, use_amp, dist=dist)
                if len(val_ds)
                else train_loss
            )
            improved = val_loss < best
            if improved:
                best, bad = val_loss, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
            lr_now = optimizer.param_groups[0]["lr"]
            history.append(
                {
                    "stage": stage.name,
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "lr": lr_now,
                    "seconds": time.perf_counter() - tic,
                }
            )
            log(
                f"{stage.name} epoch {epoch + 1}/{stage.max_epochs} train {train_loss:.5f} "
                f"val {val_loss:.5f} lr {lr_now:.2e} best {best:.5f} "
                f"({'*' if improved else f'{bad}/{t.patience}'}) {time.perf_counter() - tic:.1f}s"
            )
            if is_main:
                save_checkpoint(
                    ckpt_path,
                    {
                        "config_hash": config_hash,
                        "world_size": world_size,
                        "stage_index": stage.index,
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "best": best,
                        "bad_epochs": bad,
                        "best_state": best_state,
                        "rng": _rng_state(),
                        "history": history,
                    },
                )
            if epoch_callback is not None:
                epoch_callback(stage.name, epoch)
        model.load_state_dict(best_state)
        log(f"{stage.name}: done, best validation loss {best:.5f}")
        if is_main:
            torch.save(
                {"model": model.state_dict(), "stage": stage.name},
                stage_checkpoint(ckpt_dir, stage.name),
            )
            save_checkpoint(
                ckpt_path,
                {
                    "config_hash": config_hash,
                    "world_size": world_size,
                    "stage_index": stage.index + 1,
                    "epoch": 0,
                    "model": model.state_dict(),
                    "rng": _rng_state(),
                    "history": history,
                },
            )
    if resume is not None:  # every stage was already done
        _set_rng_state(resume["rng"])
    return model


def _optimizer(part: torch.nn.Module, lr: float, t: TrainingConfig) -> torch.optim.Optimizer:
    """Adam (AdamW with ``training.weight_decay`` > 0) over ``part``; the susceptibility's wide
    path (a handful of linear weights) learns ``training.lr_wide_factor`` times faster, so it
    converges before early stopping halts the deep path."""
    wide = [p for n, p in part.named_parameters() if ".wide." in f".{n}"]
    ids = {id(p) for p in wide}
    groups = [{"params": [p for p in part.parameters() if id(p) not in ids], "lr": lr}]
    if wide:
        groups.append({"params": wide, "lr": lr * t.lr_wide_factor})
    if t.weight_decay > 0:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(groups, lr=lr)


def _check_batches_per_rank(n_batches: int, stage: str, batch_size: int, world_size: int) -> None:
    if n_batches < world_size:
        raise InputError(
            f"stage {stage}: {n_batches} training batch(es) of training.batch_size "
            f"{batch_size} for {world_size} processes; every process needs at least one "
            "batch per epoch: lower training.batch_size (it is per process) or start fewer "
            "processes"
        )


def check_stage_batches(n_train: dict[str, int], t: TrainingConfig, world_size: int) -> None:
    """Raise if a stage that will train (epochs > 0, training patches > 0) has fewer batches
    per epoch than data-parallel processes. ``n_train``: training patches per stage name."""
    for stage in stages_from_config(t):
        n = n_train.get(stage.name, 0)
        if stage.max_epochs and n:
            _check_batches_per_rank(-(-n // t.batch_size), stage.name, t.batch_size, world_size)


def _rank_batches(
    batches: list[list[int]],
    stage: Stage,
    epoch: int,
    seed: int,
    batch_size: int,
    dist: DistContext,
) -> list[list[int]]:
    """This rank's share of an epoch's batches; reseeds torch per (seed, stage, epoch, rank).

    The reseed gives each rank its own dropout masks, and makes them independent of where a
    resumed run restarted (the checkpoint holds rank 0's RNG state only).
    """
    _check_batches_per_rank(len(batches), stage.name, batch_size, dist.world_size)
    entropy = [seed, stage.index, epoch, dist.rank]
    torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1)
    return shard_batches(batches, dist.rank, dist.world_size)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device):
    x = batch["x"].to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, batch["target"].to(device), batch["mask"].to(device)


class _EpochBatches(torch.utils.data.Sampler):
    """A batch sampler whose batches are replaced every epoch (a persistent loader's)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# One DataLoader per dataset while a run trains (num_workers > 0): its workers persist from
# epoch to epoch instead of restarting, and fork after the parent filled the static-patch cache,
# so every worker reads it (shared copy-on-write) instead of re-reading windows each epoch.
_LOADERS: dict[int, tuple[PatchDataset, _EpochBatches, torch.utils.data.DataLoader]] = {}


def _loader(ds: PatchDataset, batches: list[list[int]], num_workers: int):
    if num_workers == 0:
        return torch.utils.data.DataLoader(ds, batch_sampler=batches)
    entry = _LOADERS.get(id(ds))
    if entry is None or entry[0] is not ds:
        if ds.cache is not None:
            ds.cache.fill(ds.patches)
        sampler = _EpochBatches()
        loader = torch.utils.data.DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=num_workers,
            persistent_workers=True,
            worker_init_fn=single_thread_worker,
        )
        entry = _LOADERS[id(ds)] = (ds, sampler, loader)
    entry[1].batches = batches
    return entry[2]


def _close_loaders() -> None:
    """Stop the persistent workers of every loader (end of a fit)."""
    for _, _, loader in _LOADERS.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
    _LOADERS.clear()


def _train_epoch(
    model,
    part,
    stage: Stage,
    ds,
    batches,
    optimizer,
    scheduler,
    scaler,
    device,
    use_amp,
    t: TrainingConfig,
    min_density: float,
    progress: bool,
    epoch: int,
    dist: DistContext | None = None,
) -> float:
    """Train one epoch over ``batches``; the mean training loss per patch (over every rank)."""

    model.eval()
    part.train()
    trained = list(part.parameters())
    total, count = 0.0, 0
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{stage.name} {epoch + 1}/{stage.max_epochs}", total=len(batches))
        for batch in _loader(ds, batches, t.num_workers):
            x, target, mask = _to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, use_amp):
                loss = stage_loss(stage.name, model, x, target, mask, t, min_density)
            scaler.scale(loss).backward()
            if dist is not None:  # scaled gradients: the scale is the same on every rank
                average_gradients(trained, dist.world_size)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.advance(task)
    if dist is not None:
        total, count = all_reduce_sums([total, count], device)
    return total / max(count, 1)


def _eval_loss(
    model,
    stage: Stage,
    ds,
    t: TrainingConfig,
    min_density,
    device,
    use_amp,
    dist: DistContext | None = None,
) -> float:
    """Mean loss per patch over ``ds``; data-parallel ranks score batches ``rank, rank + W, ...``
    and add their sums, so every rank gets the same value."""
    model.eval()
    total, count = 0.0, 0
    batches = batches_of(np.arange(len(ds)), t.batch_size)
    if dist is not None:
        batches = batches[dist.rank :: dist.world_size]
    with torch.inference_mode():
        for batch in _loader(ds, batches, t.num_workers):
            x, target, mask = _to_device(batch, device)
            with autocast(device, use_amp):
                loss = stage_loss(stage.name, model, x, target, mask, t, min_density)
            total += float(loss) * len(x)
            count += len(x)
    if dist is not None:
        total, count = all_reduce_sums([total, count], device)
    return total / max(count, 1)
