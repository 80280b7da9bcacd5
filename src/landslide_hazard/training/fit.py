"""Fitting the ENN through its stages (paper 6.2): resume, early stopping, checkpoints.

Each stage has its own Adam optimiser, exponential learning-rate decay (per step:
``lr * rate ** (step / decay_steps)``) and early stopping on the validation loss with the best
weights kept. Every epoch writes ``checkpoints/last.pt`` (model, optimiser, scheduler, RNG
states, stage, epoch, best score and weights); a crashed fit resumes exactly where it stopped,
and the epoch order is a pure function of (seed, stage, epoch), so a resumed fit ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..models.enn import ENN
from ..run import CHECKPOINT, enn_arguments, load_checkpoint, save_checkpoint, stage_checkpoint
from ..runtime import to_memory_format
from ..sampling.dataset import (
    CubeReader,
    PatchDataset,
    StaticPatchCache,
    batches_of,
    epoch_order,
)
from ..sampling.device import DeviceInputs
from ..sampling.normalisation import Normalisation
from ..sampling.splits import Split
from .average import WeightAverage
from .ddp import DistContext, broadcast_module
from .epochs import (
    StageOptimiser,
    Steps,
    check_stage_batches,
    close_loaders,
    eval_calibrated_nll,
    eval_loss,
    rank_batches,
    train_epoch,
)
from .glm import fit_glm_offset, glm_modules, stack_glm
from .stages import STAGES, Stage, part_of, stages_from_config

PATCH_CACHE_BYTES = 1024**3  # normalised static pixels of patch windows kept for a whole run


@dataclass(frozen=True)
class TrainingData:
    """What a fit reads: the cube, the split of its cells, the normalisation, and the inputs
    built on the device (``sampling.device_inputs``; None: per patch, by DataLoaders)."""

    reader: CubeReader
    split: Split
    norm: Normalisation
    inputs: DeviceInputs | None = None


@dataclass(frozen=True)
class Checkpoints:
    """Where a fit keeps its checkpoints, and the config hash a resumed checkpoint must match."""

    dir: Path
    config_hash: str

    @property
    def last(self) -> Path:
        return self.dir / CHECKPOINT


def _no_log(line: str) -> None:
    return None


@dataclass(frozen=True)
class FitRuntime:
    """Where and how a fit runs: the device, the log, progress bars, an epoch hook (tests use
    it to simulate a crash) and the data-parallel context (None: one process)."""

    device: torch.device
    log: Callable[[str], None] = _no_log
    progress: bool = False
    epoch_callback: Callable[[str, int], None] | None = None
    dist: DistContext | None = None

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def world_size(self) -> int:
        return 1 if self.dist is None else self.dist.world_size


def config_hash(cfg: RunConfig, portable: bool = False) -> str:
    """What a checkpoint must match to be resumed: the config without its ``runtime`` section
    (threads may change between a crash and the resume; before the section existed the hash
    was of the same text). ``portable``: every path reduced to its last part, so that a run
    folder (or the whole output folder) moved or copied elsewhere still resumes."""
    if portable:
        data = cfg.model_dump()
        _path_names(data)
        cfg = RunConfig.model_validate(data)
    return hashlib.sha256(cfg.to_yaml(exclude={"runtime"}).encode()).hexdigest()


def _path_names(obj: Any) -> None:
    """Replace every ``Path`` in a dumped model by its last part, in place."""
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in list(items):
        if isinstance(value, Path):
            obj[key] = Path(value.name)
        else:
            _path_names(value)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Datasets:
    """The patch datasets of a fit, per (role, positive_only), built on first use."""

    def __init__(self, data: TrainingData, min_density: float, cache: StaticPatchCache):
        self.data, self.min_density, self.cache = data, min_density, cache
        self._built: dict[tuple[str, bool], PatchDataset] = {}

    def get(self, role: str, positive_only: bool) -> PatchDataset:
        key = (role, positive_only)
        if key not in self._built:
            split = self.data.split
            patches = split.train_patches if role == "train" else split.val_patches
            cells = split.train_cells if role == "train" else split.val_cells
            args = (self.data.norm, positive_only, self.min_density, self.cache)
            ds = PatchDataset(self.data.reader, patches, cells, *args)
            counts = ds.cells_per_patch()
            if (counts == 0).any():  # positive-only: patches without positives drop out
                ds = PatchDataset(self.data.reader, patches.subset(counts > 0), cells, *args)
            self._built[key] = ds
        return self._built[key]

    def has_positive(self, train_ds: PatchDataset) -> np.ndarray:
        """Per training patch of ``train_ds``: whether it holds at least one positive cell."""
        pos_set = {tuple(r) for r in self.get("train", True).patches.as_array().tolist()}
        return np.array([tuple(r) in pos_set for r in train_ds.patches.as_array().tolist()])


@dataclass
class EarlyStopping:
    """The best validation loss so far, its weights, and the epochs since it improved."""

    patience: int
    best_state: dict[str, Any]
    best: float = math.inf
    bad: int = 0

    @property
    def stopped(self) -> bool:
        return self.bad >= self.patience

    def update(self, loss: float, model: torch.nn.Module) -> bool:
        """Record an epoch's ``loss``; True when it improved (the weights are kept)."""
        if loss < self.best:
            self.best, self.bad = loss, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.bad += 1
        return False


@dataclass
class _StageRun:
    """One stage in progress."""

    stage: Stage
    opt: StageOptimiser
    stop: EarlyStopping
    train_ds: PatchDataset
    val_ds: PatchDataset
    has_pos: np.ndarray | None = field(default=None)
    average: WeightAverage | None = None

    def averaged(self) -> contextlib.AbstractContextManager[None]:
        """The block in which the model holds the weights that are validated and kept."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()


class _Fit:
    """One fit in progress: the model, its datasets, the history, where checkpoints go."""

    def __init__(
        self, cfg: RunConfig, data: TrainingData, checkpoints: Checkpoints, rt: FitRuntime
    ):
        from ..models import build_enn

        self.cfg, self.t, self.ck, self.rt = cfg, cfg.training, checkpoints, rt
        min_density = cfg.inventory.min_density
        torch.manual_seed(cfg.seed)
        model = build_enn(
            **enn_arguments(cfg.model, data.reader.grid, data.reader.dynamic_bands)
        ).to(rt.device)
        use_amp = bool(self.t.amp and rt.device.type == "cuda")
        if self.t.channels_last:
            model = to_memory_format(model, torch.channels_last)
        self.model = model
        self.steps = Steps(
            rt.device, use_amp, self.t, min_density, rt.progress, rt.dist, data.inputs
        )
        close_loaders()  # the workers of an earlier fit (hyper-parameter trials) hold its datasets
        cache = StaticPatchCache(data.reader, data.norm, PATCH_CACHE_BYTES)
        self.datasets = _Datasets(data, min_density, cache)
        self.history: list[dict[str, Any]] = []

    def run(self) -> ENN:
        resume = self._resume()
        dist = self.rt.dist
        if dist is not None:
            # before any stage trains: every stage must give each process at least one batch
            check_stage_batches(
                {
                    s.name: len(self.datasets.get("train", s.positive_only))
                    for s in stages_from_config(self.t)
                },
                self.t,
                dist.world_size,
            )
            dist.barrier()  # every rank has read the checkpoint before rank 0 writes the next
            broadcast_module(self.model)  # the same start everywhere, whatever init did
        stacking = self.cfg.model.glm and self.cfg.model.glm_fit == "stack"
        if resume is None and not stacking:  # a resumed fit has it in its checkpoint's weights
            self._fit_glm()
        for stage in stages_from_config(self.t):
            if resume is not None and stage.index < resume["stage_index"]:
                continue
            train_ds = self.datasets.get("train", stage.positive_only)
            val_ds = self.datasets.get("val", stage.positive_only)
            if stage.max_epochs == 0 or len(train_ds) == 0:
                why = "0 epochs" if stage.max_epochs == 0 else "no training patch"
                self.rt.log(f"{stage.name}: skipped ({why})")
                continue
            here = resume if resume is not None and stage.index == resume["stage_index"] else None
            resume = None
            self._train_stage(stage, train_ds, val_ds, here)
        if resume is not None:  # every stage was already done
            _set_rng_state(resume["rng"])
        if stacking:  # after the last stage, so a resumed fit stacks as an uninterrupted one
            self._fit_glm()
            self._stack_glm()
        return self.model

    def _fit_glm(self) -> None:
        """Fit the susceptibility's per-cell regression (``model.glm``) on the training cells.
        Every data-parallel rank fits it on the same cells, so all get the same coefficients."""
        tic = time.perf_counter()
        fitted = fit_glm_offset(self.model, self.datasets.get("train", False), self.steps)
        if fitted is not None:
            self.rt.log(
                f"per-cell regression (model.glm): fitted on {fitted['n_cells']} training cells "
                f"({fitted['n_positive']} with new landslides) on {fitted['n_features']} cell "
                "summaries (every band's mean, the fine-grid bands' std; "
                f"{fitted['n_constant']} constant, left out), {time.perf_counter() - tic:.1f}s"
            )

    def _stack_glm(self) -> None:
        """``model.glm_fit: stack``: weigh the trained network and the fitted regression on the
        validation cells (``training.glm.stack_glm``)."""
        tic = time.perf_counter()
        report = stack_glm(self.model, self.datasets.get("val", False), self.steps)
        if report is None:
            return
        if "note" in report:
            self.rt.log(f"stacking with the per-cell regression skipped: {report['note']}")
            return
        for (s, _, c), alone, stacked in zip(
            report["weights"], report["log_loss_network"], report["log_loss_stacked"], strict=True
        ):
            self.rt.log(
                f"stacked on {report['n_cells']} validation cells: logit = {s:.3f} x (network + "
                f"per-cell regression) {c:+.3f} (validation log-loss {alone:.5f} for the "
                f"network alone, {stacked:.5f} stacked), {time.perf_counter() - tic:.1f}s"
            )

    def _resume(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (its weights loaded, its history kept), if any."""
        path = self.ck.last
        if not path.is_file():
            return None
        resume = load_checkpoint(path)
        self.model.load_state_dict(resume["model"])
        index = resume["stage_index"]
        at = STAGES[index] if index < len(STAGES) else "done"
        self.rt.log(f"resuming from {path} at stage {at}, epoch {resume['epoch']}")
        self.history = list(resume["history"])
        world_size = self.rt.world_size
        if index < len(STAGES) and resume.get("world_size", 1) != world_size:
            self.rt.log(
                f"warning: {path} was written by {resume.get('world_size', 1)} process(es), "
                f"resuming with {world_size}: batches are dealt differently from here on, so "
                "the result will not match an uninterrupted run"
            )
        return resume

    def _train_stage(
        self,
        stage: Stage,
        train_ds: PatchDataset,
        val_ds: PatchDataset,
        resume: dict[str, Any] | None,
    ) -> None:
        """Train ``stage`` (from ``resume``, a checkpoint of this stage, if given) until early
        stopping or its last epoch; keep its best weights and checkpoint its end."""
        part = part_of(self.model, stage.part)
        opt = StageOptimiser.create(part, stage.lr, self.t, self.steps.use_amp)
        stop = EarlyStopping(self.t.patience, copy.deepcopy(self.model.state_dict()))
        average = self._weight_average(part, len(train_ds))
        start_epoch = 0
        if resume is not None:
            _set_rng_state(resume["rng"])
            if "optimizer" in resume:  # a mid-stage checkpoint (else: saved at a stage's end)
                opt.load(resume)
                if average is not None and resume.get("average") is not None:
                    average.load_state_dict(resume["average"])
                start_epoch = resume["epoch"]
                stop = EarlyStopping(
                    self.t.patience, resume["best_state"], resume["best"], resume["bad_epochs"]
                )
        if len(val_ds) == 0:
            self.rt.log(
                f"{stage.name}: no validation patch; early stopping watches the training loss"
            )
        starts_as_glm = self.cfg.model.glm_fit == "start" and glm_modules(self.model)
        if resume is None and stage.name == "susceptibility" and starts_as_glm:
            # the fitted regression alone is a candidate: kept unless an epoch validates better
            start = self._validation_score(stage, val_ds) if len(val_ds) else math.inf
            stop.best = start
            self.rt.log(f"{stage.name}: the fitted regression alone, validation loss {start:.5f}")
        run = _StageRun(stage, opt, stop, train_ds, val_ds, average=average)
        if self.t.balance_patches and not stage.positive_only:
            run.has_pos = self.datasets.has_positive(train_ds)
        for epoch in range(start_epoch, stage.max_epochs):
            if stop.stopped:
                break
            self._epoch(run, epoch)
        self.model.load_state_dict(stop.best_state)
        self.rt.log(f"{stage.name}: done, best validation loss {stop.best:.5f}")
        if self.rt.is_main:
            self._save_stage_end(stage)

    def _validation_score(self, stage: Stage, val_ds: PatchDataset) -> float:
        """What early stopping watches: the stage's loss on the validation patches, or for the
        susceptibility under ``training.stopping: calibrated`` the validation cells' negative
        log-likelihood after Platt scaling (``epochs.eval_calibrated_nll``)."""
        if self.t.stopping == "calibrated":
            return eval_calibrated_nll(self.model, stage, val_ds, self.steps)
        return eval_loss(self.model, stage, val_ds, self.steps)

    def _epoch(self, run: _StageRun, epoch: int) -> None:
        """One epoch: train, validate, early-stopping bookkeeping, log, checkpoint."""
        stage, t, dist = run.stage, self.t, self.rt.dist
        tic = time.perf_counter()
        order = epoch_order(
            len(run.train_ds), self.cfg.seed, stage.index, epoch, run.has_pos, augment=t.augment
        )
        batches = batches_of(order, t.batch_size)
        if dist is not None:
            batches = rank_batches(batches, stage, epoch, self.cfg.seed, t.batch_size, dist)
        train_loss = train_epoch(
            self.model, stage, run.train_ds, batches, run.opt, self.steps, epoch, run.average
        )
        if dist is not None:  # one model everywhere: rank 0's batch-norm statistics
            broadcast_module(self.model)
        with run.averaged():
            val_loss = self._validation_score(stage, run.val_ds) if len(run.val_ds) else train_loss
            improved = run.stop.update(val_loss, self.model)
        lr_now = run.opt.optimizer.param_groups[0]["lr"]
        self.history.append(
            {
                "stage": stage.name,
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": lr_now,
                "seconds": time.perf_counter() - tic,
            }
        )
        stop = run.stop
        self.rt.log(
            f"{stage.name} epoch {epoch + 1}/{stage.max_epochs} train {train_loss:.5f} "
            f"val {val_loss:.5f} lr {lr_now:.2e} best {stop.best:.5f} "
            f"({'*' if improved else f'{stop.bad}/{t.patience}'}) "
            f"{time.perf_counter() - tic:.1f}s"
        )
        if self.rt.is_main:
            save_checkpoint(
                self.ck.last,
                {
                    **self._checkpoint_head(stage.index, epoch + 1),
                    **run.opt.state(),
                    "best": stop.best,
                    "bad_epochs": stop.bad,
                    "best_state": stop.best_state,
                    "average": run.average.state_dict() if run.average is not None else None,
                    "rng": _rng_state(),
                    "history": self.history,
                },
            )
        if self.rt.epoch_callback is not None:
            self.rt.epoch_callback(stage.name, epoch)

    def _weight_average(self, part: torch.nn.Module, n_train: int) -> WeightAverage | None:
        """The moving average of ``part``'s weights over ``training.average_epochs`` epochs of
        this process's batches (None when off)."""
        if self.t.average_epochs <= 0:
            return None
        steps = math.ceil(n_train / self.t.batch_size) / self.rt.world_size
        return WeightAverage(part, max(1.0, self.t.average_epochs * steps))

    def _checkpoint_head(self, stage_index: int, epoch: int) -> dict[str, Any]:
        return {
            "config_hash": self.ck.config_hash,
            "world_size": self.rt.world_size,
            "stage_index": stage_index,
            "epoch": epoch,
            "model": self.model.state_dict(),
        }

    def _save_stage_end(self, stage: Stage) -> None:
        """The stage's weights (``checkpoints/<stage>.pt``) and a checkpoint at the next stage."""
        torch.save(
            {"model": self.model.state_dict(), "stage": stage.name},
            stage_checkpoint(self.ck.dir, stage.name),
        )
        save_checkpoint(
            self.ck.last,
            {
                **self._checkpoint_head(stage.index + 1, 0),
                "rng": _rng_state(),
                "history": self.history,
            },
        )


def fit(cfg: RunConfig, data: TrainingData, checkpoints: Checkpoints, rt: FitRuntime) -> ENN:
    """Build the ENN of ``cfg`` and train it through its stages (resuming from
    ``checkpoints.last`` when it exists); returns the model with each stage's best weights."""
    return _Fit(cfg, data, checkpoints, rt).run()
