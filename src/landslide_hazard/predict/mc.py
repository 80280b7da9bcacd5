"""The maps and their MC-dropout spread from one pass over the inputs: each batch built once.

``predict_arrays`` for the maps, then ``mc_dropout_maps(model, lambda m: predict_arrays(m,
...))`` for the spread, builds the inputs of every patch (static windows read and normalised,
triggers upsampled, ...) 1 + N times. :func:`predict_with_mc_dropout` builds each batch once and
runs the model 1 + N times on it: once in evaluation mode, for the maps (bit for bit those of
``predict_arrays``), and N times with only the dropout layers in training mode (BatchNorm
frozen: :class:`~.uncertainty.MCDropout`'s semantics), for the statistics.

The N passes run the susceptibility block only, with its dropout layers on; each pass's
density is the evaluation pass's (so its hazard is that pass's S x the maps' D, and the density
std is 0). The spread ``predict`` writes is the susceptibility's, and in the ENNs of this
package the density block is most of a forward pass (88 % for the tiny preset at k = 16), so
the passes cost a fraction of a full forward each. A model without a ``susceptibility`` block
runs whole in every pass.

The statistics keep the definition of ``mc_dropout_maps`` over ``predict_arrays``: each pass's
lattices are merged per cell and the stored calibration applied as for the maps
(:func:`~.core.merged_maps`), and the mean and std over the passes are streamed per cell
(float64 Welford, ``ddof``) for the susceptibility, density and hazard (calibrated S x D of the
pass). To merge per pass without holding N maps, the rows of patches run in the order of their
first cell row, both lattices interleaved, and the passes' sums are held for one band of ``n``
cell rows only (:class:`_PassBand`): a cell row is final once no remaining row of patches
covers it. The maps' sums do not depend on that order (each cell adds at most one value per
lattice to zero, and that addition commutes).

Random masks: one stream forked from the global torch RNG and seeded with ``seed``, as in
``mc_dropout_maps`` (the caller's stream is untouched), drawn batch by batch (passes 1..N on the
first batch, then on the second, ...) rather than pass by pass, so the values differ from
``mc_dropout_maps``' for the same seed; their distribution does not (the tests compare the two).
With one pass, the draws are those of ``mc_dropout_maps`` over the rows in this order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models.enn import ENNOutput
from ..runtime import autocast, progress_bar
from ..sampling.dataset import CubeReader
from ..sampling.device import DeviceInputs
from ..sampling.normalisation import Normalisation
from .core import (
    QUANTITIES,
    Inference,
    _accumulate,
    _patch_rows,
    merged_maps,
    model_inputs,
    row_inputs,
    store_outputs,
)
from .uncertainty import (
    PredictiveStats,
    _Moments,
    _warn_no_dropout,
    dropout_layers,
    seeded_passes,
)

Row = list[tuple[int, int, int]]  # (period, row0, col0) of each patch of a row of patches


@dataclass(frozen=True)
class MCPasses:
    """MC-dropout passes: how many, the seed of their masks, and the std's ``ddof`` (0: the std
    of the predictive distribution the passes form)."""

    n_samples: int
    seed: int = 0
    ddof: int = 0


def rows_by_band(reader: CubeReader, merge: str, periods: list[int]) -> list[Row]:
    """The rows of patches of ``predict_arrays`` (``_patch_rows``), both lattices interleaved
    in the order of their first cell row (a stable sort: lattice 0 first on a tie)."""
    return sorted(_patch_rows(reader, merge, periods), key=lambda row: row[0][1])


def predict_with_mc_dropout(
    model: torch.nn.Module,
    reader: CubeReader,
    norm: Normalisation,
    passes: MCPasses,
    periods: list[int] | None = None,
    merge: str = "mean",
    inference: Inference | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], PredictiveStats]:
    """``predict_arrays``' maps and ``mc_dropout_maps``' statistics over ``passes.n_samples``
    MC-dropout passes, from one assembly of the inputs (module doc). In this process only.

    Returns (maps, stats): the maps as ``predict_arrays(model, reader, norm, periods, merge,
    inference)`` gives them, bit for bit; the per-cell mean and std (P, cy, cx) of each
    quantity over the passes (NaN where the maps are NaN). The MC passes run under
    ``inference.amp`` (CUDA autocast) but never ``cpu_bf16``, as ``predict --mc-samples`` ran
    them before (``stage.mc_uncertainty``). The model's train/eval flags and the global torch
    RNG are as they were afterwards. A model without an active dropout layer gives a zero std,
    with a warning."""
    periods = list(range(reader.n_periods)) if periods is None else [int(t) for t in periods]
    rows = rows_by_band(reader, merge, periods)  # an unknown merge is refused here
    if passes.n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {passes.n_samples}")
    drops = dropout_layers(getattr(model, "susceptibility", model))
    if not drops:
        _warn_no_dropout(stacklevel=2)
    inference = inference or Inference()
    cy, cx = reader.grid.cell_shape
    sums = np.zeros((3, reader.n_periods, cy, cx), dtype=np.float64)
    counts = np.zeros((reader.n_periods, cy, cx), dtype=np.int32)
    band = _PassBand(passes, reader, model, counts)
    bar = progress_bar(progress)
    with bar, seeded_passes(model, passes.seed):
        label = f"predict + {passes.n_samples} MC-dropout passes"
        task = bar.add_task(label, total=sum(len(r) for r in rows)) if progress else None
        run_row = _RowPasses(model, drops, inference, passes.n_samples)
        with model_inputs(model, reader, norm, inference) as (inputs, pool):
            for row in rows:
                values, samples = run_row(reader, norm, row, pool, inputs)
                _accumulate(sums, counts, row, values)
                band.add(row, samples)
                if task is not None:
                    bar.advance(task, len(row))
    maps = merged_maps(sums, counts, reader.valid, model, list(reader.period_names))
    return maps, band.stats(len(drops))


@dataclass(frozen=True)
class _RowPasses:
    """The model's passes over one row of patches: each batch built once, run in evaluation
    mode and then ``n_samples`` times with the dropout layers ``drops`` in training mode."""

    model: torch.nn.Module
    drops: list[torch.nn.Module]
    inference: Inference
    n_samples: int

    def __call__(
        self,
        reader: CubeReader,
        norm: Normalisation,
        row: Row,
        pool: ThreadPoolExecutor | None,
        inputs: DeviceInputs | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(len(row), 3, n, n) values of the evaluation pass and (n_samples, len(row), 3, n, n)
        of the MC passes, float32."""
        n = reader.grid.patch_cells
        values = np.empty((len(row), 3, n, n), dtype=np.float32)
        samples = np.empty((self.n_samples, len(row), 3, n, n), dtype=np.float32)
        inference, device = self.inference, self.inference.torch_device
        with (
            torch.inference_mode(),
            closing(row_inputs(reader, norm, row, inference, pool, inputs)) as batches,
        ):
            for i, xt in batches:
                self._dropout(False)
                with autocast(device, inference.amp, inference.cpu_bf16):
                    out = self.model(xt)
                    store_outputs(values, i, out)
                self._dropout(True)
                for sample in samples:
                    with autocast(device, inference.amp, False):
                        store_outputs(sample, i, self._pass(xt, out))
        return values, samples

    def _pass(self, xt: torch.Tensor, evaluation: Any) -> Any:
        """One MC pass: the susceptibility block with its dropout on, the evaluation pass's
        density (module doc); a model without that block runs whole."""
        block = getattr(self.model, "susceptibility", None)
        if block is None:
            return self.model(xt)
        s = block(xt)
        density = evaluation.density.to(s.dtype)
        return ENNOutput(susceptibility=s, density=density, hazard=s * density)

    def _dropout(self, active: bool) -> None:
        for m in self.drops:
            m.train(active)


class _PassBand:
    """The MC passes' per-cell sums over a band of ``n`` cell rows, and the statistics of the
    cell rows already final (no remaining row of patches reaches them).

    Rows of patches must come in the order of their first cell row (:func:`rows_by_band`):
    before a row starting at cell row R is added, the cell rows above R are final, so they are
    merged per pass (:func:`merged_maps`), calibrated and summarised, and the band moves down
    to start at R; a row of patches then reaches cell rows R .. R + n - 1 only."""

    def __init__(
        self, passes: MCPasses, reader: CubeReader, model: torch.nn.Module, counts: np.ndarray
    ) -> None:
        self.passes, self.model, self.counts = passes, model, counts  # counts: filled by caller
        self.valid, self.period_names = reader.valid, list(reader.period_names)
        n_periods, cy, cx = counts.shape
        n = reader.grid.patch_cells
        self.sums = np.zeros((passes.n_samples, 3, n_periods, n, cx), dtype=np.float64)
        self.first: int | None = None  # the cell row the band starts at (< 0 above the grid)
        self.mean = {q: np.full(counts.shape, np.nan, dtype=np.float32) for q in QUANTITIES}
        self.std = {q: np.full(counts.shape, np.nan, dtype=np.float32) for q in QUANTITIES}

    def add(self, row: Row, samples: np.ndarray) -> None:
        """Add a row's MC values (n_samples, len(row), 3, n, n)."""
        r0 = row[0][1]
        if self.first is None:
            self.first = r0
        elif r0 < self.first:  # its cells above the band were summarised already
            raise ValueError(f"row of patches at cell row {r0} after one at {self.first}")
        elif r0 > self.first:
            self._move_to(r0)
        _accumulate(self.sums, None, row, samples, first_row=self.first)

    def stats(self, n_dropout_layers: int) -> PredictiveStats:
        """Summarise the rows still in the band; the statistics of every cell."""
        if self.first is not None:
            self._move_to(self.first + self.sums.shape[-2])
        return PredictiveStats(self.mean, self.std, self.passes.n_samples, n_dropout_layers)

    def _move_to(self, start: int) -> None:
        """Summarise the cell rows above ``start`` and move the band down to start there."""
        assert self.first is not None
        held, cy = self.sums.shape[-2], self.counts.shape[-2]
        a, b = max(self.first, 0), min(start, self.first + held, cy)
        if b > a:
            self._summarise(a, b)
        shift = start - self.first
        if shift < held:  # the rows below ``start`` stay (a copy: source and target overlap)
            self.sums[..., : held - shift, :] = self.sums[..., shift:, :].copy()
        self.sums[..., max(held - shift, 0) :, :] = 0.0
        self.first = start

    def _summarise(self, a: int, b: int) -> None:
        """Mean and std over the passes of cell rows a .. b - 1, each pass merged and calibrated
        as ``predict_arrays`` merges and calibrates a map."""
        assert self.first is not None
        rows = slice(a - self.first, b - self.first)
        moments = _Moments()
        for pass_sums in self.sums[..., rows, :]:
            moments.add(
                merged_maps(
                    pass_sums, self.counts[:, a:b], self.valid[a:b], self.model, self.period_names
                )
            )
        mean, std = moments.result(self.passes.ddof)
        for q in QUANTITIES:
            self.mean[q][:, a:b] = mean[q]
            self.std[q][:, a:b] = std[q]
