"""Wall-to-wall inference: the model over every patch of both lattices, merged per cell.

:func:`predict_arrays` is the core (a model and a cube reader in, per-cell arrays out): it runs
the model over every patch of both lattices, period by period, in row-bands of patches, and
merges the lattices per cell (the mean where both cover a cell, or lattice 0 only; config
``model.lattice_merge``). Memory is bounded by the cell-grid outputs plus one batch of patches.
The rows of patches run in this process or on the workers of a dask.distributed cluster.

Hazard of a cell is the mean over lattices of each lattice's hazard (its own S x D), so the
merged hazard is the ensemble mean of E[D], not exactly the product of the merged S and D maps.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..runtime import (
    autocast,
    available_cores,
    progress_bar,
    single_thread_worker,
    to_memory_format,
)
from ..sampling.dataset import CubeReader
from ..sampling.device import DeviceInputs, device_inputs
from ..sampling.lattice import LATTICES, lattice_origins, read_window
from ..sampling.normalisation import Normalisation

QUANTITIES: tuple[str, ...] = ("susceptibility", "density", "hazard")


@dataclass(frozen=True)
class Inference:
    """How the model runs: patches per batch, the device, autocast (``amp``: bf16, else fp16,
    on CUDA; ``cpu_bf16``: bf16 on the CPU, probabilities move by ~1e-3), the channels-last
    layout (model converted in place; the same values, faster convolutions), and
    ``input_threads`` building the next batches' inputs while the model runs (same results)."""

    batch_size: int = 16
    device: torch.device | str = "cpu"
    amp: bool = False
    cpu_bf16: bool = False
    channels_last: bool = True
    input_threads: int = 0

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @classmethod
    def of_run(cls, cfg: Any, device: torch.device | str = "cpu") -> Inference:
        """As a run of config ``cfg`` predicts: its batch size and ``training.amp``."""
        return cls(batch_size=cfg.training.batch_size, device=device, amp=cfg.training.amp)


def _patch_rows(
    reader: CubeReader, merge: str, periods: list[int]
) -> list[list[tuple[int, int, int]]]:
    """The prediction's work units: one row of patches of one lattice, every period of each
    patch, as lists of (period, row0, col0). Patches without any valid cell are left out.
    ``merge``: ``mean`` (both lattices) or ``lattice0``; anything else is an InputError."""
    if merge not in ("mean", "lattice0"):
        raise InputError(f"lattice merge '{merge}' unknown; use 'mean' or 'lattice0'")
    grid = reader.grid
    n = grid.patch_cells
    valid_f = reader.valid.astype(np.float32)
    lattices = LATTICES if merge == "mean" else (0,)
    rows: list[list[tuple[int, int, int]]] = []
    for lat in lattices:
        origins = lattice_origins(grid.cell_shape, n, lat)
        for r0 in np.unique(origins[:, 0]):
            row: list[tuple[int, int, int]] = []
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
    inference: Inference,
    pool: ThreadPoolExecutor | None = None,
    inputs: DeviceInputs | None = None,
) -> np.ndarray:
    """(len(row), 3, n, n) float32: susceptibility, density and hazard of each patch of a row.

    The model must be in eval mode (or in the MC-dropout mode the caller chose). ``pool`` and
    ``inputs``: how the inputs are built (:func:`row_inputs`)."""
    n = reader.grid.patch_cells
    out_rows = np.empty((len(row), 3, n, n), dtype=np.float32)
    device = inference.torch_device
    with (
        torch.inference_mode(),
        closing(row_inputs(reader, norm, row, inference, pool, inputs)) as batches,
    ):
        for i, xt in batches:
            with autocast(device, inference.amp, inference.cpu_bf16):
                store_outputs(out_rows, i, model(xt))
    return out_rows


def row_inputs(
    reader: CubeReader,
    norm: Normalisation,
    row: list[tuple[int, int, int]],
    inference: Inference,
    pool: ThreadPoolExecutor | None = None,
    inputs: DeviceInputs | None = None,
) -> Generator[tuple[int, torch.Tensor], None, None]:
    """(index in ``row`` of its first patch, model input on the device) of each batch of a row,
    in ``inference``'s batch size, device and layout.

    ``inputs``: build each batch on the device (``sampling.device_inputs``); else per patch in
    numpy, ``pool``: the next batches' inputs in these threads while the caller runs the model
    (same inputs, same order). Consume it under the caller's ``torch.inference_mode()`` and
    close it (``contextlib.closing``): the reader holds the row's static rows until then."""
    batch_size, device = inference.batch_size, inference.torch_device
    layout = torch.channels_last if inference.channels_last else torch.contiguous_format
    n = reader.grid.patch_cells
    chunks = [row[i : i + batch_size] for i in range(0, len(row), batch_size)]

    def assemble(chunk: list[tuple[int, int, int]]) -> np.ndarray | torch.Tensor:
        if inputs is not None:
            t, r0, c0 = np.asarray(chunk, dtype=np.int64).T
            return inputs.inputs(t, r0, c0)
        return assemble_inputs(reader, norm, chunk)

    if inputs is None:
        reader.hold_rows(row[0][1], n)  # one row of patches: read its static rows once
    try:
        batches = map(assemble, chunks) if pool is None else _prefetch(pool, assemble, chunks)
        for i, x in zip(range(0, len(row), batch_size), batches, strict=True):
            yield i, torch.as_tensor(x).to(device).contiguous(memory_format=layout)
    finally:
        reader.release_rows()


def store_outputs(out_rows: np.ndarray, first: int, out: Any) -> None:
    """Put a batch's ENN outputs (susceptibility, density, hazard) into ``out_rows`` (patches,
    3, n, n) from patch ``first`` on, as float32 on the CPU."""
    for q, value in enumerate((out.susceptibility, out.density, out.hazard)):
        out_rows[first : first + value.shape[0], q] = value.float().cpu().numpy()


def assemble_inputs(
    reader: CubeReader, norm: Normalisation, chunk: list[tuple[int, int, int]]
) -> np.ndarray:
    """(len(chunk), 13, nk, nk) model inputs of (period, row0, col0) patches. A row lists every
    period of a patch one after the other, so the static part of each patch (8 of 13 bands,
    the fine-grid ones) is sliced and normalised once per patch in the chunk, not once per
    period (1.5x faster input assembly, bench_predict), and every patch is written straight
    into the batch; the same values."""
    n = reader.grid.patch_cells
    side = n * reader.grid.cell_pixels
    statics: dict[tuple[int, int], np.ndarray] = {}
    out = np.empty((len(chunk), reader.n_channels, side, side), dtype=np.float32)
    for i, (t, r0, c0) in enumerate(chunk):
        static = statics.get((r0, c0))
        if static is None:
            static = statics[(r0, c0)] = reader.static_input(norm, r0, c0, n, finite=True)
        reader.patch_input(norm, t, r0, c0, static=static, out=out[i])
    return out


def default_input_threads(device: torch.device) -> int:
    """Threads to build inputs in while the model runs: up to 4 of the cores the model leaves
    free (on a GPU, all but one core are free; on the CPU, those beyond torch's threads)."""
    cores = available_cores()
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
    sums: np.ndarray,
    counts: np.ndarray | None,
    row: list[tuple[int, int, int]],
    values: np.ndarray,
    first_row: int = 0,
) -> None:
    """Add a row's patch values into the per-cell sums (clipped at the grid edge).

    ``values``: (len(row), 3, n, n) into ``sums`` (3, P, rows, cx); with leading axes (such as
    MC passes) on both, (N, len(row), 3, n, n) into (N, 3, P, rows, cx). ``sums`` holds the
    cell rows from ``first_row`` on (0: the whole grid); ``counts`` (P, cy, cx), if given,
    counts the values added per cell."""
    n = values.shape[-1]
    end_row, cx = first_row + sums.shape[-2], sums.shape[-1]
    for j, (t, r0, c0) in enumerate(row):
        ra, rb = max(r0, 0), min(r0 + n, end_row)
        ca, cb = max(c0, 0), min(c0 + n, cx)
        sums[..., t, ra - first_row : rb - first_row, ca:cb] += values[
            ..., j, :, ra - r0 : rb - r0, ca - c0 : cb - c0
        ]
        if counts is not None:
            counts[t, ra:rb, ca:cb] += 1


def merged_maps(
    sums: np.ndarray,
    counts: np.ndarray,
    valid: np.ndarray,
    model: torch.nn.Module,
    period_names: list[str],
) -> dict[str, np.ndarray]:
    """Per-cell maps from the lattices' sums (3, P, rows, cx) and counts (P, rows, cx): their
    mean as float32, NaN outside ``valid`` (rows, cx) and where no patch was predicted, then the
    model's stored calibration (``calibrate_map``, if any) on the susceptibility, its density
    blend and per-period levels (``calibrate_density``, if any) on the density, and hazard =
    their product. The same definition for the maps and for each MC-dropout pass."""
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = (sums / counts[None]).astype(np.float32)
    merged[:, :, ~valid] = np.nan
    merged[:, counts == 0] = np.nan
    out = dict(zip(QUANTITIES, merged, strict=True))
    calibrate = getattr(model, "calibrate_map", None)
    calibrated = calibrate(out["susceptibility"], period_names) if calibrate is not None else None
    if calibrated is not None:  # the stored Platt scaling and period shifts (training.calibrate)
        out["susceptibility"] = calibrated
    blend = getattr(model, "calibrate_density", None)
    blended = blend(out["density"], period_names) if blend is not None else None
    if blended is not None:  # the stored density blend and levels (training.calibrate)
        out["density"] = blended
    if calibrated is not None or blended is not None:
        out["hazard"] = out["susceptibility"] * out["density"]
    return out


@contextmanager
def model_inputs(
    model: torch.nn.Module, reader: CubeReader, norm: Normalisation, inference: Inference
) -> Iterator[tuple[DeviceInputs | None, ThreadPoolExecutor | None]]:
    """The model in evaluation mode (channels-last if ``inference`` says so) and how its inputs
    are built, as (inputs, pool) for :func:`row_inputs`: on the device when the cube fits
    (``sampling.device_inputs``), else per patch in numpy with ``inference.input_threads``
    threads; the threads stop on exit. The caller restores the model's train/eval flags."""
    model.eval()
    if inference.channels_last:
        to_memory_format(model, torch.channels_last)
    inputs, _ = device_inputs(reader, norm, inference.torch_device)
    threads = inference.input_threads if inputs is None else 0
    pool = ThreadPoolExecutor(threads) if threads > 0 else None
    try:
        yield inputs, pool
    finally:
        if pool is not None:
            pool.shutdown()


def predict_arrays(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    periods: list[int] | None = None,
    merge: str = "mean",
    inference: Inference | None = None,
    progress: bool = False,
    client: Any = None,
) -> dict[str, np.ndarray]:
    """Per-cell susceptibility, density and hazard for the given periods (default all).

    Returns a dict of (P, cy, cx) float32 arrays (NaN for periods not predicted and for cells
    outside ``reader.valid``). A model with a stored calibration (``ENN.set_calibration``)
    gives calibrated susceptibility, and hazard = that x density, unless its
    ``use_calibration`` is off. ``merge``: ``mean`` of both lattices where both cover a cell, or
    ``lattice0`` only. Patches without any valid cell are skipped.

    ``client``: a dask.distributed Client; the rows of patches then run on its workers (each
    reads its own static rows from the cube's Zarr store, so the cube must be on a path the
    workers can read) and only the per-cell values come back. Each cell gets at most one value
    per lattice and addition of two numbers is commutative, so the result does not depend on
    the order in which rows finish.

    ``inference`` (default :class:`Inference`): batch size, device, autocast, layout and input
    threads. ``channels_last``: model and inputs in channels-last layout (the model is
    converted in place); faster convolutions and pooling on CPU and GPU
    (``benchmarks/bench_predict.py``); False keeps the model's layout, NCHW inputs.
    ``input_threads`` > 0: that many threads build the next batches' inputs (static windows,
    upsampled triggers, normalisation) while the model runs the current one - worth it when the
    model runs elsewhere (a GPU) or on fewer threads than there are cores. ``cpu_bf16`` is fast
    on CPUs with AMX or AVX512-BF16, slow elsewhere.

    On a GPU, when the reader holds its static cube in memory and it fits the device
    (``sampling.device_inputs``), the inputs are built there in batches instead (no input
    threads; the same inputs within float rounding); on the CPU per patch in numpy.
    """
    inference = inference or Inference()
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
            try:
                with model_inputs(model, reader, norm, inference) as (inputs, pool):
                    for row in rows:
                        values = _predict_row(model, reader, norm, row, inference, pool, inputs)
                        _accumulate(sums, counts, row, values)
                        if task is not None:
                            bar.advance(task, len(row))
            finally:
                model.train(was_training)
        else:
            for row, values in _distributed_rows(client, model, reader, norm, rows, inference):
                _accumulate(sums, counts, row, values)
                if task is not None:
                    bar.advance(task, len(row))
    return merged_maps(sums, counts, reader.valid, model, list(reader.period_names))


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
    single_thread_worker()  # one thread per dask worker: parallelism comes from the workers
    reader = _WORKER_READER.get(job["token"])
    if reader is None:
        _WORKER_READER.clear()
        reader = CubeReader(
            open_cube(job["cube"]),
            memory_budget_bytes=0,
            dynamic=dynamic,
            monsoons=monsoons,
            dynamic_bands=job["dynamic_bands"],
            dynamic_picked=True,  # the driver's reader.dynamic
        )
        _WORKER_READER[job["token"]] = reader
    inference: Inference = job["inference"]
    device = inference.torch_device
    if device.type == "cuda" and not torch.cuda.is_available():
        inference = replace(inference, device="cpu")
    layout = torch.channels_last if inference.channels_last else torch.contiguous_format
    to_memory_format(model, layout, inference.device)
    model.eval()
    return _predict_row(model, reader, norm, row, inference)


def _distributed_rows(
    client: Any,
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    rows: list[list[tuple[int, int, int]]],
    inference: Inference,
) -> Iterator[tuple[list[tuple[int, int, int]], np.ndarray]]:
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
        "dynamic_bands": reader.dynamic_bands,
        # the workers build no input in threads: parallelism comes from the workers
        "inference": replace(inference, device=str(inference.device), input_threads=0),
    }
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    # hash=False: keys of this call only. Content-hashed keys are shared by the next call with
    # the same norm or triggers, and the cancel below could then race its scatter on the
    # scheduler ("lost dependencies", seen in the test suite)
    shared = client.scatter(
        [cpu_model, norm, reader.dynamic, reader.monsoons], broadcast=True, hash=False
    )
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
