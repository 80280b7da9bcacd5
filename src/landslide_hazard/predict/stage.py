"""The predict stage's entry point: a trained run's maps, or a what-if scenario's."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..distributed import resolve_scheduler
from ..errors import InputError
from ..io.atomic import atomic_path
from ..run import RunFolder
from ..runtime import apply_thread_policy, resolve_device
from ..sampling.dataset import DEFAULT_MEMORY_BUDGET_BYTES, CubeReader
from .core import default_input_threads, predict_arrays
from .loading import LoadedRun, _cube_of, load_run
from .maps import UncertaintyLayer, write_maps
from .scenario import applicability, load_scenario, scenario_triggers
from .uncertainty import mc_dropout_maps


def predict(
    run_dir: str | Path,
    scenario: Path | None = None,
    progress: bool = True,
    *,
    mc_samples: int = 0,
    scheduler: str | None = None,
    cpu_bf16: bool = False,
    raw: bool = False,
) -> Path:
    """Wall-to-wall maps of a trained run; returns the folder written (RUN/maps or
    RUN/scenarios/<name>).

    mc_samples > 0 also writes ``uncertainty.tif``: the per-cell standard deviation of the
    susceptibility over that many MC-dropout passes (dropout on, batch norm frozen; seeded with
    the run's seed), one band per period. It needs a run trained with ``model.dropout > 0``.

    scheduler: run the rows of patches on dask.distributed - ``"local"`` / ``"local:N"`` for a
    LocalCluster on this machine, or a scheduler address such as ``tcp://10.0.0.5:8786`` (None:
    the environment variable ``LANDSLIDE_HAZARD_SCHEDULER`` if set, else in this process). The
    MC-dropout passes always run in this process.

    cpu_bf16: bf16 autocast when predicting on the CPU (1.3-2x faster on CPUs with AMX or
    AVX512-BF16; probabilities change by ~1e-3). On a GPU, ``training.amp`` decides.

    raw: maps of the network's own probabilities, without the calibration stored in the run
    (``training.calibration``), written to RUN/maps-raw (or RUN/scenarios/<name>-raw).
    """
    from ..malloc import tune_malloc

    tune_malloc()
    run_dir = Path(run_dir)
    run, device = _prepared_run(run_dir, mc_samples, raw)
    cube = _cube_of(run)
    cfg = run.cfg
    tags = {"run": run_dir.name, "model_preset": str(run.meta["preset"])}
    scheduler = resolve_scheduler(scheduler)
    # On a cluster the workers read the fine rasters; this process needs only the cell grids.
    budget = 0 if scheduler is not None and not mc_samples else DEFAULT_MEMORY_BUDGET_BYTES

    def run_arrays(reader: CubeReader, which: list[int] | None = None) -> dict[str, np.ndarray]:
        kwargs = {
            "periods": which,
            "merge": cfg.model.lattice_merge,
            "batch_size": cfg.training.batch_size,
            "device": device,
            "amp": cfg.training.amp,
            "progress": progress,
            "input_threads": default_input_threads(device),
            "cpu_bf16": cpu_bf16,
        }
        if scheduler is None:
            return predict_arrays(run.model, reader, run.norm, **kwargs)
        from .. import distributed as dist

        with dist.client_for(scheduler) as client:
            return predict_arrays(run.model, reader, run.norm, client=client, **kwargs)

    if scenario is None:
        reader = CubeReader(cube, memory_budget_bytes=budget)
        arrays = run_arrays(reader)
        observed = np.where(reader.valid[None], reader.target, np.nan).astype(np.float32)
        spread = mc_uncertainty(run, reader, device, mc_samples) if mc_samples else None
        out_dir = RunFolder(run_dir).raw_maps if raw else RunFolder(run_dir).maps
        # the folder is replaced as a whole: no reader sees old and new maps mixed, and no file
        # of an earlier prediction (an uncertainty map, a scenario layer) lingers beside new ones
        with atomic_path(out_dir) as tmp:
            write_maps(
                tmp,
                arrays,
                cube.grid,
                cube.meta.periods,
                cfg.output.hazard_class_breaks,
                observed,
                tags=tags,
                uncertainty=spread,
                item_id=f"{run_dir.name}-{out_dir.name}",
            )
        return out_dir

    return _scenario_maps(run_dir, run, cube, Path(scenario), run_arrays, budget, raw, tags)


def _prepared_run(run_dir: Path, mc_samples: int, raw: bool) -> tuple[LoadedRun, torch.device]:
    """The run loaded, checked for MC dropout, on the device its config names (the CPU if that
    device is missing here), with its calibration off for ``raw`` maps."""
    run = load_run(run_dir, "cpu")
    apply_thread_policy(run.cfg.runtime.threads)
    if mc_samples < 0:
        raise InputError(f"mc_samples must be >= 0, got {mc_samples}")
    if mc_samples and float(run.meta.get("dropout", 0.0)) <= 0:
        raise InputError(
            f"{run_dir}: trained with model.dropout = 0, so MC dropout gives no spread; retrain "
            "with model.dropout > 0 (e.g. 0.3) or use a deep ensemble of runs"
        )
    try:
        device = resolve_device(run.cfg.training.device)
    except ValueError:  # trained on a GPU that this machine lacks: predict on the CPU
        warnings.warn(
            f"training.device = {run.cfg.training.device} is not available here; predicting "
            "on the CPU",
            stacklevel=3,
        )
        device = torch.device("cpu")
    run.model.to(device, memory_format=torch.channels_last)
    if raw:
        run.model.use_calibration = False
    return run, device


def _scenario_maps(
    run_dir: Path,
    run: LoadedRun,
    cube,
    scenario: Path,
    run_arrays: Callable[..., dict[str, np.ndarray]],
    budget: int,
    raw: bool,
    tags: dict[str, str],
) -> Path:
    """A what-if scenario's maps (with applicability.tif) in RUN/scenarios/<name>[-raw]."""
    cfg = run.cfg
    periods = cube.meta.period_names
    spec = load_scenario(scenario, periods)
    dynamic, monsoons = scenario_triggers(spec, cube)
    reader = CubeReader(cube, memory_budget_bytes=budget, dynamic=dynamic, monsoons=monsoons)
    apply_idx = [periods.index(p) for p in spec.periods]
    arrays = run_arrays(reader, apply_idx)
    inside = applicability(dynamic, monsoons, run.norm, reader.valid)
    sub = {q: a[apply_idx] for q, a in arrays.items()}
    app = inside[apply_idx].astype(np.float32)
    app[:, ~reader.valid] = np.nan
    frac_out = float(np.nanmean(1.0 - app)) if np.isfinite(app).any() else 0.0
    if frac_out > 0:
        warnings.warn(
            f"scenario '{spec.name}': {100 * frac_out:.1f} % of the cells have trigger inputs "
            "outside the training range; see applicability.tif (0 = extrapolating)",
            stacklevel=3,
        )
    out_dir = RunFolder(run_dir).scenario(f"{spec.name}-raw" if raw else spec.name)
    with atomic_path(out_dir) as tmp:
        write_maps(
            tmp,
            sub,
            cube.grid,
            [cube.meta.periods[i] for i in apply_idx],
            cfg.output.hazard_class_breaks,
            extra={"applicability": (app, "1 = inside the training range")},
            tags={**tags, "scenario": spec.name},
            item_id=f"{run_dir.name}-scenario-{out_dir.name}",
        )
        (tmp / "scenario.yaml").write_text(Path(scenario).read_text())
    return out_dir


def mc_uncertainty(
    run: LoadedRun, reader: CubeReader, device: torch.device, n_samples: int
) -> UncertaintyLayer:
    """MC-dropout standard deviation of the susceptibility, per cell and period."""

    cfg = run.cfg

    def one_pass(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return predict_arrays(
            model,
            reader,
            run.norm,
            merge=cfg.model.lattice_merge,
            batch_size=cfg.training.batch_size,
            device=device,
            amp=cfg.training.amp,
        )

    stats = mc_dropout_maps(run.model, one_pass, n_samples=n_samples, seed=cfg.seed)
    return UncertaintyLayer(
        stats.std["susceptibility"],
        quantity="susceptibility",
        method=f"MC dropout, {n_samples} passes, dropout {cfg.model.dropout}",
    )
