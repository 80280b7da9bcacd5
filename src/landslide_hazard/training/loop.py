"""The train stage: susceptibility, density curriculum, then the ENN fine-tuned (paper 6.2).

The stages and their losses: :mod:`.stages`; fitting through them (resume, early stopping,
checkpoints): :mod:`.fit`; one epoch: :mod:`.epochs`; the optional hyper-parameter search:
:mod:`.hparam`. This module opens the run folder and the cube, makes the split, fits, then
calibrates, writes ``model.pt`` and scores the held-out cells.

On CPU ``torch.use_deterministic_algorithms`` is on; on GPU, AMP (bf16, else fp16 with a grad
scaler) and channels-last are used when ``training.amp``.

Launched by ``torchrun`` with ``WORLD_SIZE > 1``, training is data-parallel (``training.ddp``):
each rank trains on its share of every epoch's batches, gradients are averaged over the ranks,
and rank 0 alone writes the run folder (docs/training.md, "Several GPUs / processes").
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, load_config, save_config
from ..cube import open_cube
from ..errors import InputError, ResumeError
from ..evaluation.evaluate import metrics_to_json
from ..evaluation.held_out import evaluate_run
from ..io.atomic import atomic_write_text, ensure_writable_dir
from ..models.enn import ENN
from ..run import (
    RunFolder,
    cube_path,
    load_checkpoint,
    run_dir_for,
    save_trained_model,
)
from ..runtime import ThreadChoice, apply_thread_policy, resolve_device
from ..sampling.dataset import DEFAULT_MEMORY_BUDGET_BYTES, CubeReader
from ..sampling.device import device_inputs
from ..sampling.normalisation import compute_normalisation
from ..sampling.splits import PROTOCOLS, SplitSettings, make_split
from .calibrate import fit_calibration
from .ddp import process_group
from .epochs import close_loaders
from .fit import Checkpoints, FitRuntime, TrainingData, config_hash, fit
from .hparam import apply_hparams, hparam_search


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
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg, protocol, fold)
    device = resolve_device(cfg.training.device)
    with process_group(device) as dist:
        if dist is not None and cfg_run.training.hparam_search_trials > 0:
            raise InputError(
                f"training.hparam_search_trials = {cfg_run.training.hparam_search_trials} is "
                f"not supported with {dist.world_size} data-parallel processes; run the search "
                "in one process (set hparam_search_trials: 0 here and copy the chosen values "
                "from that run's config.yaml)"
            )
        rt = FitRuntime(
            dist.device if dist is not None else device,
            progress=progress and (dist is None or dist.is_main),
            epoch_callback=epoch_callback,
            dist=dist,
        )
        return _run_training(cfg, cfg_run, RunFolder(run_dir), rt, memory_budget_bytes)


def _run_training(
    cfg: RunConfig,
    cfg_run: RunConfig,
    run: RunFolder,
    rt: FitRuntime,
    memory_budget_bytes: int,
) -> Path:
    """Open the run folder (refusing another config's checkpoint), read the cube, split, fit,
    then (rank 0) calibrate, write model.pt and score the held-out cells."""
    checkpoints = Checkpoints(run.checkpoints, config_hash(cfg_run, portable=True))
    if checkpoints.last.is_file():
        old = load_checkpoint(checkpoints.last)
        # a checkpoint of an earlier version hashed the config with its absolute paths
        if old.get("config_hash") not in (checkpoints.config_hash, config_hash(cfg_run)):
            raise ResumeError(
                f"{run.path}: holds a checkpoint of a different config; delete the folder or "
                "set output.run_name to train a new run"
            )
    if rt.is_main:
        ensure_writable_dir(run.path, "run folder (output.dir/runs/<name>)")
        run.checkpoints.mkdir(exist_ok=True)
        save_config(cfg_run, run.config, portable=True)
    rt = replace(rt, log=_Log(run.train_log, rt.progress, write=rt.is_main))
    threads = apply_thread_policy(cfg.runtime.threads)
    # CPU results depend on the thread count (reductions are split per thread): say so
    rt.log(f"{threads.describe()}; CPU results depend on the thread count")
    data = _training_data(cfg_run, memory_budget_bytes)
    if rt.is_main:
        data.split.save(run.splits)
        data.norm.save(run.normalisation)
    summary = data.split.summary()
    ev = cfg_run.evaluation
    rt.log(
        f"run {run.path.name}: protocol {ev.protocol} fold {ev.test_fold}"
        f"{' (leaky, optimistic)' if data.split.leaky else ''}; "
        f"{summary['n_train_patches']} train / {summary['n_val_patches']} val patches, "
        f"{summary['n_test_cells']} test cells; static in memory: {data.reader.static_in_memory}"
    )
    layout = "channels-last (NHWC)" if cfg_run.training.channels_last else "NCHW"
    rt.log(
        f"inputs: {data.reader.n_channels} bands"
        + (
            " with the rain anomalies (predictors.trigger_anomalies)"
            if cfg_run.trigger_anomalies
            else ""
        )
        + (" with the landslide legacy (predictors.legacy)" if cfg_run.legacy else "")
        + f"; model and batches in {layout} (training.channels_last)"
    )
    inputs, input_path = device_inputs(data.reader, data.norm, rt.device)
    data = replace(data, inputs=inputs)
    rt.log(input_path)
    prev_det = torch.are_deterministic_algorithms_enabled()
    if rt.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        if cfg_run.training.hparam_search_trials > 0:
            best = hparam_search(cfg_run, data, run.path, rt)
            cfg_run = apply_hparams(cfg_run, best)
            save_config(cfg_run, run.config, portable=True)
        model = fit(cfg_run, data, checkpoints, rt)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        close_loaders()
    if rt.is_main:  # calibration and held-out scoring are cheap next to training: rank 0 alone
        _finish_run(run, model, cfg_run, data, rt, threads)
    if rt.dist is not None:  # every rank returns once model.pt and metrics.json exist
        rt.dist.barrier()
    return run.path


def recalibrate(run_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Refit a finished run's stored calibration with this version's code and the run's own
    config, keeping its weights: Platt scaling, the per-period shifts and the density blend
    (``training.calibrate.fit_calibration``), then rewrite ``model.pt`` and ``metrics.json``
    exactly as ``train`` ends (the same files a retrain gives, training being deterministic)
    and add a line to ``train.log``. Returns the new metrics. For runs calibrated by an
    earlier version, or after changing ``training.calibration`` in the run's config.yaml."""
    import json

    from ..predict import load_run
    from ..sampling.splits import Split

    run = RunFolder(Path(run_dir))
    if not run.metrics.is_file():
        raise InputError(
            f"{run.path}: no metrics.json, so no finished run to recalibrate; train it first "
            "(`landslide-hazard train CONFIG`)"
        )
    cfg_run = load_config(run.config)
    device = resolve_device(cfg_run.training.device)
    loaded = load_run(run.path, device)
    threads = apply_thread_policy(cfg_run.runtime.threads)
    # the run's own split, normalisation and input bands, as stored (a run trained before an
    # input was added keeps its own); the cube read as train reads it
    reader = _open_reader(cfg_run, DEFAULT_MEMORY_BUDGET_BYTES, loaded.dynamic_bands)
    data = TrainingData(reader, Split.load(run.splits), loaded.norm)
    model = loaded.model
    model.clear_calibration()  # until refitted (training.calibration: none keeps it so)
    before = json.loads(run.metrics.read_text())
    rt = FitRuntime(device, log=_Log(run.train_log, progress), progress=progress)
    rt.log(f"recalibrate: {threads.describe()}; the weights kept, the calibration refitted")
    _finish_run(run, model, cfg_run, data, rt, threads)
    after: dict[str, Any] = json.loads(run.metrics.read_text())
    after["previous_held_out_auc"] = before.get("held_out_auc")
    return after


def _training_data(cfg: RunConfig, memory_budget_bytes: int) -> TrainingData:
    """The cube (its grid checked against the config), the split of the run ``cfg`` (its
    ``evaluation.protocol`` and ``test_fold``) and the normalisation."""
    reader = _open_reader(cfg, memory_budget_bytes)
    grid = reader.grid
    split = make_split(
        reader.target,
        reader.valid,
        SplitSettings.from_config(cfg),
        patch_cells=grid.patch_cells,
        cell_size_m=grid.cell_size_m,
    )
    norm = compute_normalisation(
        reader.static,
        reader.dynamic,
        reader.monsoons,
        split.train_cells,
        grid.cell_pixels,
        dynamic_names=reader.dynamic_bands,
    )
    return TrainingData(reader, split, norm)


def _open_reader(
    cfg: RunConfig, memory_budget_bytes: int, dynamic_bands: tuple[str, ...] | None = None
) -> CubeReader:
    """A reader of the run's cube, its grid checked against the config, with the cell-grid
    bands the run's model reads (``dynamic_bands``, by default those the config asks for)."""
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
    return CubeReader(
        cube,
        memory_budget_bytes=memory_budget_bytes,
        dynamic_bands=cfg.model_dynamic_bands if dynamic_bands is None else dynamic_bands,
    )


def _finish_run(
    run: RunFolder,
    model: ENN,
    cfg_run: RunConfig,
    data: TrainingData,
    rt: FitRuntime,
    threads: ThreadChoice,
) -> None:
    """Calibrate on the validation cells, write model.pt, score the held-out cells."""
    reader, norm, split = data.reader, data.norm, data.split
    calibration = fit_calibration(model, reader, norm, split, cfg_run, rt.device, rt.progress)
    if calibration.get("slope") is not None:
        rt.log(
            f"calibration ({cfg_run.training.calibration}) on {calibration['n_cells']} "
            f"validation cells, the per-period level on {calibration['n_level_cells']} "
            f"training and validation cells: validation ECE {_fmt(calibration['ece_raw'])} -> "
            f"{_fmt(calibration['ece_calibrated'])}"
        )
    blend = calibration.get("density_blend")
    if blend is not None:
        rt.log(
            f"density blend on {blend['n_cells']} positive validation cells: "
            f"{_fmt(blend['weight'])} x the density block + the rest x {_fmt(blend['constant'])} % "
            f"(validation r of the block {_fmt(blend['r_val'])})"
        )
    factors = calibration.get("period_density_factors")
    if factors:
        rt.log(
            f"density level per period on {calibration['n_density_level_cells']} positive "
            "training and validation cells: x "
            + ", ".join(f"{_fmt(v)} ({k})" for k, v in factors.items())
            + f"; x {_fmt(calibration['density_level'])} for a period without its own"
        )
    save_trained_model(
        run.model, model, cfg_run, norm, reader.grid, reader.cube, cube_path(cfg_run)
    )
    metrics = evaluate_run(model, reader, norm, split, cfg_run, rt.device, rt.progress)
    metrics["calibration"] = calibration
    metrics["threads"] = threads.threads  # CPU results depend on it (docs/performance.md)
    if metrics.get("truth_dir"):  # relative to the run folder, like its config.yaml
        metrics["truth_dir"] = os.path.relpath(metrics["truth_dir"], run.path.resolve())
    atomic_write_text(run.metrics, metrics_to_json(metrics))
    rt.log(
        f"held-out AUC {_fmt(metrics['held_out_auc'])}, oracle AUC "
        f"{_fmt(metrics['oracle_auc'])}, skill {_fmt(metrics['skill_pooled'])}"
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"
