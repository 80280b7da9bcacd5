"""The landslide legacy bands: each cell's own record of new failures before a period.

Strictly causal. Period ``p`` runs over (start_p, end_p]; its legacy is computed from the new-
failure densities of the periods ``q`` with ``end_q <= start_p`` only, i.e. from inventories
dated at or before the period starts. With consecutive periods (each one starting at the previous
inventory) that is every earlier period; a later inventory can never change an earlier period's
legacy (tested).

- ``legacy_prev_density`` (% of cell area): the density of the latest such period (0 if none);
- ``legacy_cum_density`` (% of cell area): the sum over all such periods (a cell's cumulative
  new-failure density since the record began, i.e. since the first trigger event when the
  baseline inventory is pre-event);
- ``legacy_periods_since`` (periods): how many such periods ago the cell last had new failures
  (1 = the latest one); a cell with none so far gets the number of such periods + 1, as if it
  had failed just before the record began, so the value grows with quiet time either way;
- ``legacy_mean_density`` (% of cell area): the cumulative density over the number of such
  periods (0 if none);
- ``legacy_failed_fraction`` (1): the share of such periods in which the cell failed (0 if none).

The last two do not grow with the length of the record, so they are the ones a model reads with
the previous density (:data:`bands.MODEL_LEGACY_NAMES`).

A cell is "failed" in a period when its density is above ``min_density`` (the same threshold the
labels use). Unmapped (NaN) densities count as 0. Cells outside ``valid_cells`` are NaN.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ..bands import LEGACY_NAMES
from ..cube import PeriodInfo


def visible_periods(periods: Sequence[PeriodInfo]) -> list[list[int]]:
    """For each period, the indices of the earlier periods mapped by its start (end <= start)."""
    starts = [dt.date.fromisoformat(p.start) for p in periods]
    ends = [dt.date.fromisoformat(p.end) for p in periods]
    return [[q for q in range(len(periods)) if ends[q] <= s] for s in starts]


def legacy_bands(
    targets: npt.ArrayLike,
    periods: Sequence[PeriodInfo],
    valid_cells: np.ndarray | None = None,
    min_density: float = 0.0,
) -> np.ndarray:
    """(period, 5, cy, cx) float32 legacy bands in :data:`bands.LEGACY_NAMES` order.

    targets: (period, cy, cx) new-failure density (%), NaN where unmapped.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 3 or targets.shape[0] != len(periods):
        raise ValueError(f"targets of shape {targets.shape} for {len(periods)} periods")
    density = np.nan_to_num(targets, nan=0.0)
    failed = density > min_density
    out = np.zeros((len(periods), len(LEGACY_NAMES), *targets.shape[1:]), dtype=np.float32)
    for p, seen in enumerate(visible_periods(periods)):
        seen = sorted(seen, key=lambda q: periods[q].end)
        since = np.full(targets.shape[1:], len(seen) + 1, dtype=np.float64)
        for age, q in enumerate(reversed(seen), start=1):
            since = np.where(failed[q] & (since > age), age, since)
        out[p, 0] = density[seen[-1]] if seen else 0.0
        out[p, 1] = density[seen].sum(axis=0) if seen else 0.0
        out[p, 2] = since
        if seen:
            out[p, 3] = out[p, 1] / len(seen)
            out[p, 4] = failed[seen].mean(axis=0)
    if valid_cells is not None:
        out[:, :, ~np.asarray(valid_cells, dtype=bool)] = np.nan
    return out
