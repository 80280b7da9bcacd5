"""The predict stage's entry point: a trained run's maps, or a what-if scenario's."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..cube import Cube, PeriodInfo
from ..distributed import resolve_scheduler
from ..errors import InputError
from ..io.atomic import atomic_path, ensure_writable_dir, remove_stale_temporaries
from ..run import SCENARIO_FILE, RunFolder
from ..runtime import apply_thread_policy, resolve_device, to_memory_format
from ..sampling.dataset import DEFAULT_MEMORY_BUDGET_BYTES, CubeReader
from .core import Inference, default_input_threads, predict_arrays
from .forecast import ForecastCube, check_forecast_triggers, forecast_cube
from .loading import LoadedRun, _cube_of, load_run
from .maps import ExtraLayers, MapLabels, UncertaintyLayer, write_maps
from .mc import MCPasses, predict_with_mc_dropout
from .scenario import ScenarioSpec, applicability, load_scenario, scenario_triggers
from .uncertainty import PredictiveStats, mc_dropout_maps


def predict(
    run_dir: str | Path,
    scenario: Path | None = None,
    progress: bool = True,
    *,
    mc_samples: int = 0,
    scheduler: str | None = None,
    cpu_bf16: bool = False,
    raw: bool = False,
    cube: str | Path | None = None,
) -> Path:
    """Wall-to-wall maps of a trained run; returns the folder written (RUN/maps or
    RUN/scenarios/<name>).

    mc_samples > 0 also writes ``uncertainty.tif``: the per-cell standard deviation of the
    (calibrated) susceptibility over that many MC-dropout passes (dropout on, batch norm frozen;
    seeded with the run's seed), one band per period. It needs a run trained with
    ``model.dropout > 0``. In this process the passes share the maps' inputs: each batch is
    built once, the ENN run on it once and its susceptibility block mc_samples times
    (``predict_with_mc_dropout``).

    scheduler: run the rows of patches on dask.distributed - ``"local"`` / ``"local:N"`` for a
    LocalCluster on this machine, or a scheduler address such as ``tcp://10.0.0.5:8786`` (None:
    the environment variable ``LANDSLIDE_HAZARD_SCHEDULER`` if set, else in this process). The
    MC-dropout passes always run in this process, after the maps, one pass over the inputs each
    (``mc_uncertainty``).

    cpu_bf16: bf16 autocast when predicting on the CPU (1.3-2x faster on CPUs with AMX or
    AVX512-BF16; probabilities change by ~1e-3). On a GPU, ``training.amp`` decides.

    raw: maps of the network's own probabilities, without the calibration stored in the run
    (``training.calibration``), written to RUN/maps-raw (or RUN/scenarios/<name>-raw).

    cube: the predictor cube, when it is not where the run's config puts it
    (``<output.dir>/cube.zarr``, relative to the run folder).
    """
    from ..malloc import tune_malloc

    tune_malloc()
    run_dir = Path(run_dir)
    run = load_run(run_dir, "cpu")
    apply_thread_policy(run.cfg.runtime.threads)
    if mc_samples < 0:
        raise InputError(f"mc_samples must be >= 0, got {mc_samples}")
    if mc_samples and float(run.meta.get("dropout", 0.0)) <= 0:
        raise InputError(
            f"{run_dir}: trained with model.dropout = 0, so MC dropout gives no spread; retrain "
            "with model.dropout > 0 (e.g. 0.3) or use a deep ensemble of runs"
        )
    device = _device_for(run)
    to_memory_format(run.model, torch.channels_last, device)
    if raw:
        run.model.use_calibration = False
    scheduler = resolve_scheduler(scheduler)
    inference = replace(
        Inference.of_run(run.cfg, device),
        input_threads=default_input_threads(device),
        cpu_bf16=cpu_bf16,
    )
    job = _Prediction(run, run_dir, inference, scheduler, progress, raw, mc_samples, cube)
    return job.maps() if scenario is None else job.scenario(Path(scenario))


def _clean_leftovers(out_dir: Path) -> None:
    """Check that the maps' folder can be written (before the long work) and delete the
    temporaries a killed predict left beside it."""
    ensure_writable_dir(out_dir.parent, "run folder")
    for stale in remove_stale_temporaries(out_dir.parent, out_dir.name):
        warnings.warn(f"{stale}: removed, left by an interrupted predict", stacklevel=4)


def _device_for(run: LoadedRun) -> torch.device:
    """The run's training device, or the CPU (with a warning) when this machine lacks it."""
    try:
        return resolve_device(run.cfg.training.device)
    except ValueError:  # trained on a GPU that this machine lacks: predict on the CPU
        warnings.warn(
            f"training.device = {run.cfg.training.device} is not available here; predicting "
            "on the CPU",
            stacklevel=3,
        )
        return torch.device("cpu")


@dataclass(frozen=True)
class _Prediction:
    """One predict call: the loaded run and how its model runs (here or on a cluster)."""

    run: LoadedRun
    run_dir: Path
    inference: Inference
    scheduler: str | None
    progress: bool
    raw: bool
    mc_samples: int  # MC-dropout passes for the uncertainty map (0: none)
    cube: str | Path | None = None  # predict --cube: the cube, if not where the config says

    @property
    def tags(self) -> dict[str, str]:
        return {"run": self.run_dir.name, "model_preset": str(self.run.meta["preset"])}

    @property
    def budget(self) -> int:
        """On a cluster the workers read the fine rasters; this process needs only the cells
        (unless it runs the MC-dropout passes)."""
        if self.scheduler is not None and not self.mc_samples:
            return 0
        return DEFAULT_MEMORY_BUDGET_BYTES

    def arrays(self, reader: CubeReader, which: list[int] | None = None) -> dict[str, np.ndarray]:
        run, merge = self.run, self.run.cfg.model.lattice_merge
        args = (run.model, reader, run.norm, which, merge, self.inference, self.progress)
        if self.scheduler is None:
            return predict_arrays(*args)
        from .. import distributed as dist

        with dist.client_for(self.scheduler) as client:
            return predict_arrays(*args, client)

    def arrays_and_spread(
        self, reader: CubeReader
    ) -> tuple[dict[str, np.ndarray], UncertaintyLayer | None]:
        """The maps and, with ``mc_samples``, their MC-dropout spread: in this process from one
        assembly of the inputs; with a scheduler the maps on the cluster, then the passes here."""
        run, n = self.run, self.mc_samples
        if not n:
            return self.arrays(reader), None
        if self.scheduler is not None:
            return self.arrays(reader), mc_uncertainty(run, reader, self.inference.torch_device, n)
        passes = MCPasses(n, seed=run.cfg.seed)
        merge = run.cfg.model.lattice_merge
        arrays, stats = predict_with_mc_dropout(
            run.model, reader, run.norm, passes, None, merge, self.inference, self.progress
        )
        return arrays, _spread_layer(stats, run.cfg, n)

    def maps(self) -> Path:
        """RUN/maps (RUN/maps-raw when raw), with the MC-dropout spread if ``mc_samples``."""
        folder = RunFolder(self.run_dir)
        out_dir = folder.raw_maps if self.raw else folder.maps
        _clean_leftovers(out_dir)
        run, cube = self.run, _cube_of(self.run, self.cube)
        reader = CubeReader(cube, memory_budget_bytes=self.budget, dynamic_bands=run.dynamic_bands)
        arrays, spread = self.arrays_and_spread(reader)
        observed = np.where(reader.valid[None], reader.target, np.nan).astype(np.float32)
        # the folder is replaced as a whole: no reader sees old and new maps mixed, and no file
        # of an earlier prediction (an uncertainty map, a scenario layer) lingers beside new ones
        with atomic_path(out_dir) as tmp:
            write_maps(
                tmp,
                arrays,
                cube.grid,
                cube.meta.periods,
                run.cfg.output.hazard_class_breaks,
                ExtraLayers(observed=observed, uncertainty=spread),
                MapLabels(self.tags, item_id=f"{self.run_dir.name}-{out_dir.name}"),
            )
        return out_dir

    def scenario(self, scenario: Path) -> Path:
        """RUN/scenarios/<name>: the maps of the scenario's periods under its triggers, their
        applicability, and a copy of the scenario file."""
        run = self.run
        mapped = _cube_of(run, self.cube)
        spec = load_scenario(scenario, mapped.meta.period_names)
        cube = _scenario_cube(spec, mapped, run.cfg)
        periods = cube.meta.period_names
        name = f"{spec.name}-raw" if self.raw else spec.name
        out_dir = RunFolder(self.run_dir).scenario(name)
        _clean_leftovers(out_dir)
        dynamic, monsoons = scenario_triggers(spec, cube)
        if spec.forecast is not None:
            check_forecast_triggers(dynamic, cube.valid_cells, spec.forecast.name, scenario)
        reader = CubeReader(
            cube,
            memory_budget_bytes=self.budget,
            dynamic=dynamic,
            monsoons=monsoons,
            dynamic_bands=run.dynamic_bands,
            dynamic_picked=False,  # every band of the cube, the scenario's applied
        )
        apply_idx = [periods.index(p) for p in spec.periods]
        arrays = self.arrays(reader, apply_idx)
        inside = applicability(
            reader.dynamic, reader.dynamic_bands, monsoons, run.norm, reader.valid
        )
        sub = {q: a[apply_idx] for q, a in arrays.items()}
        app = inside[apply_idx].astype(np.float32)
        app[:, ~reader.valid] = np.nan
        frac_out = float(np.nanmean(1.0 - app)) if np.isfinite(app).any() else 0.0
        if frac_out > 0:
            warnings.warn(
                f"scenario '{spec.name}': {100 * frac_out:.1f} % of the cells have trigger "
                "inputs outside the training range; see applicability.tif (0 = extrapolating)",
                stacklevel=3,
            )
        with atomic_path(out_dir) as tmp:
            write_maps(
                tmp,
                sub,
                cube.grid,
                [cube.meta.periods[i] for i in apply_idx],
                run.cfg.output.hazard_class_breaks,
                ExtraLayers(named={"applicability": (app, "1 = inside the training range")}),
                MapLabels(
                    {**self.tags, "scenario": spec.name},
                    item_id=f"{self.run_dir.name}-scenario-{out_dir.name}",
                ),
            )
            (tmp / SCENARIO_FILE).write_text(scenario.read_text())
        return out_dir


def _scenario_cube(spec: ScenarioSpec, cube: Cube, cfg: RunConfig) -> Cube | ForecastCube:
    """The cube a scenario applies to: the run's, or with the scenario's forecast period
    appended after the last mapped one (its start defaults to the last inventory's date)."""
    if spec.forecast is None:
        return cube
    start = spec.forecast.start.isoformat() if spec.forecast.start else cube.meta.periods[-1].end
    period = PeriodInfo(spec.forecast.name, start, spec.forecast.end.isoformat())
    return forecast_cube(cube, period, cfg)


def mc_uncertainty(
    run: LoadedRun, reader: CubeReader, device: torch.device, n_samples: int
) -> UncertaintyLayer:
    """MC-dropout standard deviation of the susceptibility, per cell and period: one
    ``predict_arrays`` per pass (``mc_dropout_maps``), each building its inputs again.
    ``predict`` uses it with a scheduler; in this process it runs the maps and the passes on the
    same inputs instead (:func:`.mc.predict_with_mc_dropout`)."""

    cfg = run.cfg

    def one_pass(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return predict_arrays(
            model,
            reader,
            run.norm,
            merge=cfg.model.lattice_merge,
            inference=Inference.of_run(cfg, device),
        )

    stats = mc_dropout_maps(run.model, one_pass, n_samples=n_samples, seed=cfg.seed)
    return _spread_layer(stats, cfg, n_samples)


def _spread_layer(stats: PredictiveStats, cfg: RunConfig, n_samples: int) -> UncertaintyLayer:
    """uncertainty.tif's layer: the std of the susceptibility over the MC-dropout passes."""
    return UncertaintyLayer(
        stats.std["susceptibility"],
        quantity="susceptibility",
        method=f"MC dropout, {n_samples} passes, dropout {cfg.model.dropout}",
    )
