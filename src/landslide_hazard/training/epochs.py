"""One epoch of a training stage: the optimiser, the batches of each data-parallel rank, the
data loaders (persistent workers), and the training and validation passes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import TrainingConfig
from ..errors import InputError
from ..models.enn import ENN
from ..runtime import autocast, progress_bar, single_thread_worker
from ..sampling.dataset import PatchDataset, batches_of
from ..sampling.device import DeviceInputs
from .average import WeightAverage
from .ddp import DistContext, all_reduce_sums, average_gradients, shard_batches
from .stages import ExponentialDecay, Stage, part_of, stage_loss, stages_from_config


@dataclass(frozen=True)
class Steps:
    """How batches run: the device, mixed precision, the training config, the occurrence
    threshold, the progress bar, the data-parallel context (None: one process), and the inputs
    built on the device (None: by a DataLoader from the datasets)."""

    device: torch.device
    use_amp: bool
    t: TrainingConfig
    min_density: float
    progress: bool = False
    dist: DistContext | None = None
    inputs: DeviceInputs | None = None


@dataclass(frozen=True)
class StageOptimiser:
    """A stage's optimiser, its learning-rate schedule and the AMP grad scaler (all three are
    checkpointed together)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, part: torch.nn.Module, lr: float, t: TrainingConfig, use_amp: bool):
        optimizer = _optimizer(part, lr, t)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, ExponentialDecay(t.lr_decay_rate, t.lr_decay_steps)
        )
        scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()
        )
        return cls(optimizer, scheduler, scaler)

    def state(self) -> dict[str, Any]:
        """The checkpoint entries ``optimizer``, ``scheduler`` and ``scaler``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])


def _optimizer(part: torch.nn.Module, lr: float, t: TrainingConfig) -> torch.optim.Optimizer:
    """Adam (AdamW with ``training.weight_decay`` > 0) over ``part``; the susceptibility's wide
    path (a handful of linear weights) learns ``training.lr_wide_factor`` times faster, so it
    converges before early stopping halts the deep path.

    ``foreach``: one update over each group's tensors together instead of a loop over them, on
    the CPU too (torch picks it on CUDA only): the same arithmetic, bitwise (the fused kernel
    is not, and is left out), 1.7x faster per step for the demo's model
    (docs/performance.md)."""
    wide = [p for n, p in part.named_parameters() if ".wide." in f".{n}"]
    ids = {id(p) for p in wide}
    groups = [{"params": [p for p in part.parameters() if id(p) not in ids], "lr": lr}]
    if wide:
        groups.append({"params": wide, "lr": lr * t.lr_wide_factor})
    if t.weight_decay > 0:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=t.weight_decay, foreach=True)
    return torch.optim.Adam(groups, lr=lr, foreach=True)


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


def rank_batches(
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


def _layout(x: torch.Tensor, steps: Steps) -> torch.Tensor:
    """``x`` in the model's layout (``training.channels_last``)."""
    return x.contiguous(memory_format=torch.channels_last) if steps.t.channels_last else x


def _to_device(batch: dict[str, torch.Tensor], steps: Steps, layout: bool = True):
    x = batch["x"].to(steps.device, non_blocking=True)
    x = _layout(x, steps) if layout else x
    return x, batch["target"].to(steps.device), batch["mask"].to(steps.device)


def device_batches(
    ds: PatchDataset, batches: list[list[int]], steps: Steps, layout: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, target, mask) on the device for each batch of ``ds`` items: built there
    (``steps.inputs``) or by a DataLoader and copied. ``layout`` False leaves ``x`` as built
    (the density stages gather their cells from either layout, ``models.layers.patch_to_cells``,
    so converting the whole batch would be a wasted copy)."""
    if steps.inputs is None:
        for batch in _loader(ds, batches, steps.t.num_workers):
            yield _to_device(batch, steps, layout)
        return
    # a DataLoader's iterator draws its base seed from torch's generator: draw it here too, so
    # that dropout masks (and so the weights) follow the same random stream on both paths
    torch.empty((), dtype=torch.int64).random_()
    patches = steps.inputs.patches(ds)
    for items in batches:
        x, target, mask = patches.batch(items)
        yield (_layout(x, steps) if layout else x), target, mask


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


def close_loaders() -> None:
    """Stop the persistent workers of every loader (end of a fit)."""
    for _, _, loader in _LOADERS.values():
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
    _LOADERS.clear()


def train_epoch(
    model: ENN,
    stage: Stage,
    ds: PatchDataset,
    batches: list[list[int]],
    opt: StageOptimiser,
    steps: Steps,
    epoch: int,
    average: WeightAverage | None = None,
) -> float:
    """Train ``stage``'s part of ``model`` one epoch over ``batches`` (folding each step's
    weights into ``average``, if given); the mean training loss per patch (over every rank)."""
    device, t, dist = steps.device, steps.t, steps.dist
    part = part_of(model, stage.part)
    model.eval()
    part.train()
    trained = list(part.parameters())
    total, count = 0.0, 0.0
    with progress_bar(steps.progress) as bar:
        task = bar.add_task(f"{stage.name} {epoch + 1}/{stage.max_epochs}", total=len(batches))
        for x, target, mask in device_batches(ds, batches, steps, stage.part != "density"):
            opt.optimizer.zero_grad(set_to_none=True)
            with autocast(device, steps.use_amp):
                loss = stage_loss(stage.name, model, x, target, mask, t, steps.min_density)
            opt.scaler.scale(loss).backward()
            if dist is not None:  # scaled gradients: the scale is the same on every rank
                average_gradients(trained, dist.world_size)
            opt.scaler.step(opt.optimizer)
            opt.scaler.update()
            opt.scheduler.step()
            if average is not None:
                average.update()
            total += float(loss.detach()) * len(x)
            count += len(x)
            bar.advance(task)
    if dist is not None:
        total, count = all_reduce_sums([total, count], device)
    return total / max(count, 1)


def _eval_batches(ds: PatchDataset, steps: Steps) -> list[list[int]]:
    """The batches of ``ds`` in order that this rank scores: ``rank, rank + W, ...`` (all of
    them in one process)."""
    batches = batches_of(np.arange(len(ds)), steps.t.batch_size)
    dist = steps.dist
    return batches if dist is None else batches[dist.rank :: dist.world_size]


def eval_loss(model: ENN, stage: Stage, ds: PatchDataset, steps: Steps) -> float:
    """Mean loss per patch over ``ds``; data-parallel ranks score batches ``rank, rank + W, ...``
    and add their sums, so every rank gets the same value."""
    device, t, dist = steps.device, steps.t, steps.dist
    model.eval()
    total, count = 0.0, 0.0
    batches = _eval_batches(ds, steps)
    with torch.inference_mode():
        for x, target, mask in device_batches(ds, batches, steps, stage.part != "density"):
            with autocast(device, steps.use_amp):
                loss = stage_loss(stage.name, model, x, target, mask, t, steps.min_density)
            total += float(loss) * len(x)
            count += len(x)
    if dist is not None:
        total, count = all_reduce_sums([total, count], device)
    return total / max(count, 1)


def platt_nll(
    z: torch.Tensor, y: torch.Tensor, reduce=lambda sums: sums, iterations: int = 50
) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y`` under ``sigmoid(a z + b)`` with (a, b)
    the maximum-likelihood Platt fit on these same cells (Newton's method, float64).

    ``reduce`` sums a list of floats over data-parallel ranks (identity in one process): each
    Newton step needs only sums over the cells, so every rank gets the same fit and value.
    With one class only, or no cell, the fit is undefined: NaN.
    """
    z, y = z.double().ravel(), y.double().ravel()
    n, n_pos = reduce([float(z.numel()), float(y.sum())])
    if n_pos <= 0 or n_pos >= n:
        return math.nan
    a, b = 1.0, 0.0
    for _ in range(iterations):
        q = torch.sigmoid(a * z + b)
        r, w = y - q, q * (1 - q)
        ga, gb, haa, hab, hbb = reduce(
            [float((r * z).sum()), float(r.sum()), float((w * z * z).sum()),
             float((w * z).sum()), float(w.sum())]
        )  # fmt: skip
        det = haa * hbb - hab * hab
        if det <= 0:
            break
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = a + da, b + db
        if abs(da) + abs(db) < 1e-10:
            break
    s = a * z + b
    nll = torch.nn.functional.softplus(s) - y * s  # -log p(y | s), stable
    return reduce([float(nll.sum())])[0] / n


def eval_calibrated_nll(model: ENN, stage: Stage, ds: PatchDataset, steps: Steps) -> float:
    """The validation score of ``training.stopping: calibrated``: the susceptibility's mean
    negative log-likelihood per scored cell of ``ds`` after the Platt scaling that training
    fits on validation cells at the end (``training.calibrate``), refitted here on the same
    cells. It ranks epochs by what the calibrated maps will score, not by their raw level and
    spread, which calibration corrects anyway. Other stages: :func:`eval_loss`."""
    if stage.name != "susceptibility":
        return eval_loss(model, stage, ds, steps)
    device, dist = steps.device, steps.dist
    model.eval()
    batches = _eval_batches(ds, steps)
    logits, labels = [], []
    with torch.inference_mode():
        for x, target, mask in device_batches(ds, batches, steps):
            with autocast(device, steps.use_amp):
                p = model.susceptibility(x).float()
            keep = mask.bool()
            q = p[keep].clamp(1e-7, 1 - 1e-7)
            logits.append(torch.log(q) - torch.log1p(-q))
            labels.append((target[keep] > steps.min_density).float())
    z = torch.cat(logits).cpu() if logits else torch.zeros(0)
    y = torch.cat(labels).cpu() if labels else torch.zeros(0)
    reduce = (lambda sums: all_reduce_sums(sums, device)) if dist is not None else (lambda s: s)
    score = platt_nll(z, y, reduce)
    # one class only among the validation cells (the same every epoch): the raw loss instead
    return eval_loss(model, stage, ds, steps) if math.isnan(score) else score
