"""The predict stage: wall-to-wall inference of a trained run, and what-if trigger scenarios.

:func:`predict_arrays` is the core (a model and a cube reader in, per-cell arrays out): it runs
the model over every patch of both lattices, period by period, in row-bands of patches, and
merges the lattices per cell (the mean where both cover a cell, or lattice 0 only; config
``model.lattice_merge``). Memory is bounded by the cell-grid outputs plus one batch of patches.

:func:`predict` is the file edge: it loads ``RUN/model.pt`` (checking bands, units and grid
against the cube) and writes COGs to ``RUN/maps/``: ``susceptibility.tif`` (P(occurrence)),
``density.tif`` (E[D | D > 0], %), ``hazard.tif`` (E[D], %), ``observed.tif`` (the cube's target
density), ``hazard_class.tif`` (classes of E[D] at ``output.hazard_class_breaks``) and
``cells.gpkg`` (one polygon per valid cell, a column per quantity and period). With a scenario
YAML the triggers are replaced and the maps go to ``RUN/scenarios/<name>/``.

Hazard of a cell is the mean over lattices of each lattice's hazard (its own S x D), so the
merged hazard is the ensemble mean of E[D], not exactly the product of the merged S and D maps.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bands import DYNAMIC_NAMES, INPUT_NAMES, TARGET_UNIT, UNITS
from ..distributed import resolve_scheduler
from ..errors import InputError, MissingFileError, RunFolderError
from ..run import RunFolder, check_run_folder, cube_path, read_model_payload
from ..runtime import autocast, progress_bar, resolve_device
from ..sampling.dataset import DEFAULT_MEMORY_BUDGET_BYTES, CubeReader
from ..sampling.lattice import LATTICES, lattice_origins, read_window
from ..sampling.normalisation import Normalisation

QUANTITIES: tuple[str, ...] = ("susceptibility", "density", "hazard")
QUANTITY_UNITS = {"susceptibility": "probability", "density": TARGET_UNIT, "hazard": TARGET_UNIT}
MAP_DESCRIPTIONS = {
    "susceptibility": "P(new landslide in the cell during the period)",
    "density": "E[new failed area density | occurrence], % of cell area",
    "hazard": "E[new failed area density], % of cell area",
    "observed": "observed new failed area density, % of cell area",
    "hazard_class": "class of E[D] at the configured breaks (0 = lowest)",
}


def _patch_rows(
    reader: CubeReader, merge: str, periods: list[int]
) -> list[list[tuple[int, int, int]]]:
    """The prediction's work units: one row of patches of one lattice, every period of each
    patch, as lists of (period, row0, col0). Patches without any valid cell are left out."""
    grid = reader.grid
    n = grid.patch_cells
    valid_f = reader.valid.astype(np.float32)
    lattices = LATTICES if merge == "mean" else (0,)
    rows: list[list[tuple[int, int, int]]] = []
    for lat in lattices:
        origins = lattice_origins(grid.cell_shape, n, lat)
        for r0 in np.unique(origins[:, 0]):
            row = []
            for c0 in origins[origins[:, 0] == r0, 1]:
                if read_window(valid_f, int(r0), int(c0), n, n, fill=0.0).any():
                    row.extend((t, int(r0), int(c0)) for t in periods)
            if row:
                rows.append(row)
    return rows


def _predict_row(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    row: list[tuple[int, int, int]],
    batch_size: int,
    device: torch.device,
    amp: bool,
    channels_last: bool = True,
    pool: ThreadPoolExecutor | None = None,
    cpu_bf16: bool = False,
) -> np.ndarray:
    """(len(row), 3, n, n) float32: susceptibility, density and hazard of each patch of a row.

    The model must be in eval mode (or in the MC-dropout mode the caller chose). ``pool``: build
    the next batches' inputs in these threads while the model runs (same inputs, same order)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    n = reader.grid.patch_cells
    out_rows = np.empty((len(row), 3, n, n), dtype=np.float32)
    chunks = [row[i : i + batch_size] for i in range(0, len(row), batch_size)]

    def assemble(chunk: list[tuple[int, int, int]]) -> np.ndarray:
        return np.stack([reader.patch_input(norm, t, r0, c0) for t, r0, c0 in chunk])

    reader.hold_rows(row[0][1], n)  # one row of patches: read its static rows once
    try:
        with torch.inference_mode():
            batches = map(assemble, chunks) if pool is None else _prefetch(pool, assemble, chunks)
            for i, x in zip(range(0, len(row), batch_size), batches, strict=True):
                chunk = row[i : i + batch_size]
                xt = torch.from_numpy(x).to(device).contiguous(memory_format=layout)
                with autocast(device, amp, cpu_bf16):
                    out = model(xt)
                for q, value in enumerate((out.susceptibility, out.density, out.hazard)):
                    out_rows[i : i + len(chunk), q] = value.float().cpu().numpy()
    finally:
        reader.release_rows()
    return out_rows


def default_input_threads(device: torch.device) -> int:
    """Threads to build inputs in while the model runs: up to 4 of the cores the model leaves
    free (on a GPU, all but one core are free; on the CPU, those beyond torch's threads)."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(4, cores - 1))
    return max(0, min(4, cores - torch.get_num_threads()))


def _prefetch(pool: ThreadPoolExecutor, fn, items: list, ahead: int = 2):
    """fn(item) for each item, in order, computed up to ``ahead`` items early in ``pool``."""
    pending = [pool.submit(fn, item) for item in items[:ahead]]
    for i in range(len(items)):
        result = pending.pop(0).result()
        if i + ahead < len(items):
            pending.append(pool.submit(fn, items[i + ahead]))
        yield result


def _accumulate(
    sums: np.ndarray, counts: np.ndarray, row: list[tuple[int, int, int]], values: np.ndarray
) -> None:
    """Add a row's patch values into the per-cell sums (clipped at the grid edge)."""
    n = values.shape[-1]
    cy, cx = counts.shape[-2:]
    for j, (t, r0, c0) in enumerate(row):
        ra, rb = max(r0, 0), min(r0 + n, cy)
        ca, cb = max(c0, 0), min(c0 + n, cx)
        sums[:, t, ra:rb, ca:cb] += values[j, :, ra - r0 : rb - r0, ca - c0 : cb - c0]
        counts[t, ra:rb, ca:cb] += 1


def predict_arrays(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    periods: list[int] | None = None,
    merge: str = "mean",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
    client: Any = None,
    channels_last: bool = True,
    input_threads: int = 0,
    cpu_bf16: bool = False,
) -> dict[str, np.ndarray]:
    """Per-cell susceptibility, density and hazard for the given periods (default all).

    Returns a dict of (P, cy, cx) float32 arrays (NaN for periods not predicted and for cells
    outside ``reader.valid``). ``merge``: ``mean`` of both lattices where both cover a cell, or
    ``lattice0`` only. Patches without any valid cell are skipped.

    ``client``: a dask.distributed Client; the rows of patches then run on its workers (each
    reads its own static rows from the cube's Zarr store, so the cube must be on a path the
    workers can read) and only the per-cell values come back. Each cell gets at most one value
    per lattice and addition of two numbers is commutative, so the result does not depend on
    the order in which rows finish.

    ``channels_last``: model and inputs in channels-last layout (the model is converted in
    place). The same values; faster convolutions and pooling on CPU and GPU
    (``benchmarks/bench_predict.py``). False keeps the model's layout, NCHW inputs.

    ``input_threads`` > 0: that many threads build the next batches' inputs (static windows,
    upsampled triggers, normalisation) while the model runs the current one - worth it when the
    model runs elsewhere (a GPU) or on fewer threads than there are cores. Same results.

    ``amp``: bf16 (else fp16) autocast on CUDA. ``cpu_bf16``: bf16 autocast on the CPU (fast on
    CPUs with AMX or AVX512-BF16, slow elsewhere); probabilities move by ~1e-3.
    """
    if merge not in ("mean", "lattice0"):
        raise InputError(f"lattice merge '{merge}' unknown; use 'mean' or 'lattice0'")
    device = torch.device(device)
    cy, cx = reader.grid.cell_shape
    n_periods = reader.n_periods
    periods = list(range(n_periods)) if periods is None else [int(t) for t in periods]
    rows = _patch_rows(reader, merge, periods)
    sums = np.zeros((3, n_periods, cy, cx), dtype=np.float64)
    counts = np.zeros((n_periods, cy, cx), dtype=np.int32)

    bar = progress_bar(progress)
    with bar:
        task = bar.add_task("predict", total=sum(len(r) for r in rows)) if progress else None
        if client is None:
            was_training = model.training
            model.eval()
            if channels_last:
                model.to(memory_format=torch.channels_last)
            pool = ThreadPoolExecutor(input_threads) if input_threads > 0 else None
            try:
                for row in rows:
                    values = _predict_row(
                        model,
                        reader,
                        norm,
                        row,
                        batch_size,
                        device,
                        amp,
                        channels_last,
                        pool,
                        cpu_bf16,
                    )
                    _accumulate(sums, counts, row, values)
                    if task is not None:
                        bar.advance(task, len(row))
            finally:
                model.train(was_training)
                if pool is not None:
                    pool.shutdown()
        else:
            for row, values in _distributed_rows(
                client, model, reader, norm, rows, batch_size, device, amp, channels_last, cpu_bf16
            ):
                _accumulate(sums, counts, row, values)
                if task is not None:
                    bar.advance(task, len(row))
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = (sums / counts[None]).astype(np.float32)
    merged[:, :, ~reader.valid] = np.nan
    merged[:, counts == 0] = np.nan
    return dict(zip(QUANTITIES, merged, strict=True))


# Worker-side state of distributed prediction: the reader of the job being run (one at a time
# per worker process, so a worker holds one cube's cell-grid arrays, never its fine rasters).
_WORKER_READER: dict[str, CubeReader] = {}


def _worker_row(
    job: dict[str, Any], model: torch.nn.Module, norm: Normalisation, dynamic, monsoons, row
) -> np.ndarray:
    """One row of patches on a dask worker: open the cube (once per job), predict the row."""
    from ..cube import open_cube
    from ..malloc import tune_malloc

    tune_malloc()
    reader = _WORKER_READER.get(job["token"])
    if reader is None:
        _WORKER_READER.clear()
        reader = CubeReader(
            open_cube(job["cube"]), memory_budget_bytes=0, dynamic=dynamic, monsoons=monsoons
        )
        _WORKER_READER[job["token"]] = reader
    device = torch.device(job["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    layout = torch.channels_last if job["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=layout)
    model.eval()
    return _predict_row(
        model,
        reader,
        norm,
        row,
        job["batch_size"],
        device,
        job["amp"],
        job["channels_last"],
        cpu_bf16=job["cpu_bf16"],
    )


def _distributed_rows(
    client, model, reader, norm, rows, batch_size, device, amp, channels_last, cpu_bf16
):
    """Yield (row, values) as the rows finish on the cluster's workers."""
    import copy
    import uuid

    from distributed import as_completed

    if not rows:
        return
    token = uuid.uuid4().hex[:12]  # unique keys: other runs may share the scheduler
    job = {
        "token": token,
        "cube": str(Path(reader.cube.path).resolve()),
        "device": str(device),
        "batch_size": int(batch_size),
        "amp": bool(amp),
        "channels_last": bool(channels_last),
        "cpu_bf16": bool(cpu_bf16),
    }
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    shared = client.scatter([cpu_model, norm, reader.dynamic, reader.monsoons], broadcast=True)
    futures = {
        client.submit(_worker_row, job, *shared, row, key=f"predict-{token}-{i}", pure=False): i
        for i, row in enumerate(rows)
    }
    try:
        for future in as_completed(futures):
            yield rows[futures[future]], future.result()
    finally:
        client.cancel(list(futures))
        client.cancel(shared)


def hazard_classes(hazard: np.ndarray, breaks: list[float]) -> np.ndarray:
    """Class index of E[D] (%): 0 below ``breaks[0]``, i for breaks[i-1] <= E[D] < breaks[i];
    NaN stays NaN. Breaks must increase."""
    b = np.asarray(breaks, dtype=np.float64)
    if b.ndim != 1 or np.any(np.diff(b) <= 0):
        raise InputError(f"hazard class breaks {breaks} must be strictly increasing")
    classes = np.digitize(hazard, b).astype(np.float32)
    classes[~np.isfinite(hazard)] = np.nan
    return classes


# --------------------------------------------------------------------------------------------
# run loading


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Any  # RunConfig
    model: torch.nn.Module
    norm: Normalisation
    meta: dict[str, Any]


def load_model_file(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, Normalisation, dict]:
    """Rebuild the ENN saved in ``model.pt``; returns (model, normalisation, metadata)."""
    from ..models import build_enn

    path = Path(path)
    meta = read_model_payload(path)
    if tuple(meta.get("bands", ())) != INPUT_NAMES:
        raise RunFolderError(
            f"{path}: trained on bands {meta.get('bands')}, this package uses {list(INPUT_NAMES)}; "
            "retrain the run with this version"
        )
    units = meta.get("units", {})
    for b in INPUT_NAMES:
        if units.get(b) != UNITS[b]:
            raise RunFolderError(
                f"{path}: band '{b}' was in {units.get(b)!r}, the cube holds {UNITS[b]!r}; retrain"
            )
    model = build_enn(
        meta["preset"],
        in_channels=len(INPUT_NAMES),
        patch_cells=int(meta["patch_cells"]),
        cell_pixels=int(meta["cell_pixels"]),
        dropout=float(meta.get("dropout", 0.0)),
        density_activation=str(meta.get("density_activation", "relu")),
    )
    try:
        model.load_state_dict(meta["state_dict"])
    except RuntimeError as exc:
        raise RunFolderError(
            f"{path}: its weights do not fit the {meta['preset']} preset ({exc}); the file is "
            "damaged or foreign; train the run again"
        ) from exc
    model.to(device)
    norm = Normalisation.from_dict(meta["normalisation"])
    norm.check_bands(INPUT_NAMES, str(path))
    return model, norm, meta


def check_model_grid(meta: dict, grid, what: str) -> None:
    """Raise if the cube's cell size, k or n differ from what the model was trained on."""
    for key in ("cell_pixels", "patch_cells"):
        if int(meta[key]) != int(getattr(grid, key)):
            raise InputError(
                f"{what}: {key} = {getattr(grid, key)} but the model was trained with "
                f"{meta[key]}; prepare the cube with the run's grid settings"
            )
    trained = float(meta["grid"]["pixel_size_m"])
    if not np.isclose(trained, grid.pixel_size_m, rtol=1e-6):
        raise InputError(
            f"{what}: pixel size {grid.pixel_size_m} m but the model was trained on {trained} m; "
            "prepare the cube on the run's pixel size"
        )


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    from ..config import load_config

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    check_run_folder(folder)
    cfg = load_config(folder.config)
    model, norm, meta = load_model_file(folder.model, device)
    return LoadedRun(run_dir, cfg, model, norm, meta)


def _cube_of(run: LoadedRun):
    from ..cube import open_cube

    candidates = [cube_path(run.cfg)]
    if run.meta.get("cube_path"):
        candidates.append(Path(run.meta["cube_path"]))
    for c in candidates:
        if c.exists():
            cube = open_cube(c)
            check_model_grid(run.meta, cube.grid, str(c))
            return cube
    raise MissingFileError(
        f"{run.run_dir}: the run's cube is missing ({candidates[0]}); run "
        "`landslide-hazard prepare` with the run's config.yaml"
    )


# --------------------------------------------------------------------------------------------
# writing maps


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower() or "period"


def write_maps(
    out_dir: Path,
    arrays: dict[str, np.ndarray],
    grid,
    period_names: list[str],
    breaks: list[float],
    observed: np.ndarray | None = None,
    extra: dict[str, tuple[np.ndarray, str]] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write the per-period maps as COGs (band per period named after it) and the cell GPKG."""
    from ..io import write_raster

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    layers: dict[str, tuple[np.ndarray, str]] = {
        q: (arrays[q], QUANTITY_UNITS[q]) for q in QUANTITIES
    }
    if observed is not None:
        layers["observed"] = (observed, TARGET_UNIT)
    layers["hazard_class"] = (hazard_classes(arrays["hazard"], breaks), "class")
    for name, value in (extra or {}).items():
        layers[name] = value
    base_tags = {**(tags or {}), "hazard_class_breaks": ",".join(f"{b:g}" for b in breaks)}
    for name, (data, unit) in layers.items():
        written[name] = write_raster(
            out_dir / f"{name}.tif",
            data,
            grid.cell_transform,
            grid.crs,
            band_names=period_names,
            units=unit,
            tags={**base_tags, "quantity": name, "description": MAP_DESCRIPTIONS.get(name, name)},
        )
    written["cells"] = write_cells_gpkg(out_dir / "cells.gpkg", layers, grid, period_names)
    return written


def write_cells_gpkg(
    path: Path, layers: dict[str, tuple[np.ndarray, str]], grid, period_names: list[str]
) -> Path:
    """One square polygon per cell with a value in any layer; columns ``<quantity>_<period>``."""
    import shapely

    from ..io.vectors import write_vectors

    stack = np.stack([v for v, _ in layers.values()])  # (Q, P, cy, cx)
    keep = np.isfinite(stack).any(axis=(0, 1))
    rows, cols = np.nonzero(keep)
    t = grid.cell_transform
    x0 = t.c + cols * t.a
    y0 = t.f + rows * t.e
    geoms = shapely.box(x0, y0 + t.e, x0 + t.a, y0)
    fields: dict[str, np.ndarray] = {
        "cell_row": rows.astype(np.int32),
        "cell_col": cols.astype(np.int32),
    }
    for name, (data, _) in layers.items():
        for p, pname in enumerate(period_names):
            fields[f"{name}_{_slug(pname)}"] = data[p][rows, cols].astype(np.float64)
    return write_vectors(path, geoms, grid.crs, fields=fields, layer="cells")


def predict(
    run_dir: str | Path,
    scenario: Path | None = None,
    progress: bool = True,
    *,
    mc_samples: int = 0,
    scheduler: str | None = None,
    cpu_bf16: bool = False,
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
    """
    from ..malloc import tune_malloc

    tune_malloc()
    run_dir = Path(run_dir)
    run = load_run(run_dir, "cpu")
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
            stacklevel=2,
        )
        device = torch.device("cpu")
    run.model.to(device, memory_format=torch.channels_last)
    cube = _cube_of(run)
    cfg = run.cfg
    periods = cube.meta.period_names
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
        out_dir = RunFolder(run_dir).maps
        write_maps(
            out_dir, arrays, cube.grid, periods, cfg.output.hazard_class_breaks, observed, tags=tags
        )
        if mc_samples:
            write_mc_uncertainty(out_dir / "uncertainty.tif", run, reader, device, mc_samples)
        return out_dir

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
            stacklevel=2,
        )
    out_dir = RunFolder(run_dir).scenario(spec.name)
    write_maps(
        out_dir,
        sub,
        cube.grid,
        list(spec.periods),
        cfg.output.hazard_class_breaks,
        extra={"applicability": (app, "1 = inside the training range")},
        tags={**tags, "scenario": spec.name},
    )
    from ..io.atomic import atomic_write_text

    atomic_write_text(out_dir / "scenario.yaml", Path(scenario).read_text())
    return out_dir


def write_mc_uncertainty(
    path: Path, run: LoadedRun, reader: CubeReader, device: torch.device, n_samples: int
) -> Path:
    """MC-dropout standard deviation of the susceptibility, per cell and period, as a COG."""
    from .uncertainty import mc_dropout_maps, write_uncertainty_tif

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
    return write_uncertainty_tif(
        path,
        stats.std["susceptibility"],
        reader.grid.cell_transform,
        reader.grid.crs,
        reader.period_names,
        quantity="susceptibility",
        method=f"MC dropout, {n_samples} passes, dropout {cfg.model.dropout}",
    )


# --------------------------------------------------------------------------------------------
# what-if scenarios


@dataclass
class ScenarioEarthquake:
    name: str
    date: dt.date
    pga: Path
    pga_unit: str = "g"
    sigma_ln_pga: Path | None = None


@dataclass
class ScenarioSpec:
    """A what-if: new trigger inputs for some periods of the cube.

    rain: a daily rain stack (mm/day) covering each applied period's days, or ``rain_window``
    (start exclusive, end inclusive) used for every applied period; earthquakes: replace the
    shaking (events after a period's end are ignored); rasters: cell-grid rasters for any
    dynamic band, a band per applied period or one band for all; monsoons_since_eq: override.
    """

    name: str
    periods: list[str]
    rain: Path | None = None
    rain_window: tuple[dt.date, dt.date] | None = None
    earthquakes: list[ScenarioEarthquake] | None = None
    rasters: dict[str, Path] | None = None
    monsoons_since_eq: float | None = None


def load_scenario(path: str | Path, period_names: list[str]) -> ScenarioSpec:
    """Read and check a scenario YAML; relative paths are relative to the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: scenario file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a scenario is a mapping (name, periods, rain, earthquakes, ...)")
    allowed = {
        "name",
        "periods",
        "rain",
        "rain_window",
        "earthquakes",
        "rasters",
        "monsoons_since_eq",
    }
    unknown = set(data) - allowed
    if unknown:
        raise InputError(
            f"{path}: unknown scenario field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    base = path.parent

    def _p(v) -> Path:
        q = Path(v)
        return q if q.is_absolute() else (base / q).resolve()

    name = str(data.get("name") or path.stem)
    if not re.fullmatch(r"[0-9A-Za-z._-]+", name):
        raise InputError(f"{path}: scenario name '{name}' must use letters, digits, '.', '_', '-'")
    periods = data.get("periods") or list(period_names)
    if isinstance(periods, str):
        periods = [periods]
    missing = [p for p in periods if p not in period_names]
    if missing:
        raise InputError(f"{path}: period(s) {missing} not in the cube's periods {period_names}")
    if not any(k in data for k in ("rain", "earthquakes", "rasters", "monsoons_since_eq")):
        raise InputError(
            f"{path}: the scenario changes nothing; give rain, earthquakes, rasters or monsoons_since_eq"
        )
    window = None
    if data.get("rain_window"):
        w = data["rain_window"]
        window = (dt.date.fromisoformat(str(w["start"])), dt.date.fromisoformat(str(w["end"])))
    quakes = None
    if data.get("earthquakes") is not None:
        quakes = [
            ScenarioEarthquake(
                name=str(q.get("name", f"event{i}")),
                date=dt.date.fromisoformat(str(q["date"])),
                pga=_p(q["pga"]),
                pga_unit=str(q.get("pga_unit", "g")),
                sigma_ln_pga=_p(q["sigma_ln_pga"]) if q.get("sigma_ln_pga") else None,
            )
            for i, q in enumerate(data["earthquakes"])
        ]
    rasters = None
    if data.get("rasters"):
        rasters = {}
        for band, p in data["rasters"].items():
            if band not in DYNAMIC_NAMES:
                raise InputError(
                    f"{path}: rasters: '{band}' is not a dynamic band {list(DYNAMIC_NAMES)}"
                )
            rasters[band] = _p(p)
    return ScenarioSpec(
        name=name,
        periods=list(periods),
        rain=_p(data["rain"]) if data.get("rain") else None,
        rain_window=window,
        earthquakes=quakes,
        rasters=rasters,
        monsoons_since_eq=(
            float(data["monsoons_since_eq"]) if data.get("monsoons_since_eq") is not None else None
        ),
    )


def scenario_triggers(spec: ScenarioSpec, cube) -> tuple[np.ndarray, np.ndarray]:
    """The cube's dynamic bands and monsoon counts with the scenario's replacements applied."""
    from ..io import read_on_grid, read_rain_stack, resample_array
    from ..predictors.triggers import pga_stats, pga_to_ms2, rain_period_stats

    grid = cube.grid
    dynamic = np.asarray(cube.dynamic[:], dtype=np.float32).copy()
    monsoons = cube.monsoons_since_eq.copy()
    names = cube.meta.period_names
    band = {b: i for i, b in enumerate(DYNAMIC_NAMES)}
    idx = [names.index(p) for p in spec.periods]
    if spec.rain is not None:
        stack = read_rain_stack(spec.rain)
        for t in idx:
            info = cube.meta.periods[t]
            start, end = spec.rain_window or (
                dt.date.fromisoformat(info.start),
                dt.date.fromisoformat(info.end),
            )
            days = stack.days_in(start, end)
            rmax, rci = rain_period_stats(stack.data, days)
            both = resample_array(
                np.stack([rmax, rci]),
                stack.transform,
                stack.crs,
                grid.cell_transform,
                grid.crs,
                grid.cell_shape,
                "continuous",
            )
            dynamic[t, band["rain_max"]] = both[0]
            dynamic[t, band["rain_ci95"]] = both[1]
    if spec.earthquakes is not None:
        pgas, sigmas = [], []
        for q in spec.earthquakes:
            pgas.append(
                pga_to_ms2(read_on_grid(q.pga, grid, "cell", "continuous", bands=1), q.pga_unit)
            )
            sigmas.append(
                read_on_grid(q.sigma_ln_pga, grid, "cell", "continuous", bands=1)
                if q.sigma_ln_pga is not None
                else None
            )
        for t in idx:
            end = dt.date.fromisoformat(cube.meta.periods[t].end)
            use = [i for i, q in enumerate(spec.earthquakes) if q.date <= end]
            pmax, pstd = pga_stats(
                [pgas[i] for i in use], [sigmas[i] for i in use], shape=grid.cell_shape
            )
            dynamic[t, band["pga_max"]] = pmax
            dynamic[t, band["pga_std"]] = pstd
    for bname, path in (spec.rasters or {}).items():
        data = read_on_grid(path, grid, "cell", "continuous")
        data = data[None] if data.ndim == 2 else data
        if data.shape[0] not in (1, len(idx)):
            raise InputError(
                f"{path}: {data.shape[0]} bands; give one band or one per applied period ({len(idx)})"
            )
        for j, t in enumerate(idx):
            dynamic[t, band[bname]] = data[j if data.shape[0] > 1 else 0]
    if spec.monsoons_since_eq is not None:
        monsoons[idx] = spec.monsoons_since_eq
    return dynamic, monsoons


def applicability(
    dynamic: np.ndarray, monsoons: np.ndarray, norm: Normalisation, valid: np.ndarray
) -> np.ndarray:
    """(P, cy, cx) bool: every trigger input of the cell lies inside the training range
    (``norm`` min..max of each dynamic band and of the monsoon count)."""
    n_static = len(INPUT_NAMES) - len(DYNAMIC_NAMES) - 1
    ok = np.ones((dynamic.shape[0], *dynamic.shape[2:]), dtype=bool)
    for b in range(len(DYNAMIC_NAMES)):
        lo, hi = norm.minimum[n_static + b], norm.maximum[n_static + b]
        v = dynamic[:, b]
        tol = 1e-6 * max(abs(lo), abs(hi), 1.0)
        ok &= ~np.isfinite(v) | ((v >= lo - tol) & (v <= hi + tol))
    lo, hi = norm.minimum[-1], norm.maximum[-1]
    ok &= ((monsoons >= lo - 1e-9) & (monsoons <= hi + 1e-9))[:, None, None]
    ok &= valid[None]
    return ok
