"""The cube's targets: new failed area density per period, from the inventories."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ..config import RunConfig
from ..inventory import new_failure_targets


def compute_targets(
    cfg: RunConfig,
    valid_cells: np.ndarray,
    log: list[str],
    on_date: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(period, cy, cx) new failed area density (% of cell area), NaN outside ``valid_cells``.

    The inventories' warnings are written to ``log`` and warned again; ``on_date`` is called
    after each inventory date is read (progress).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        targets = new_failure_targets(cfg, log, on_date=on_date)
    for w in caught:
        log.append(f"warning: {w.message}")
        warnings.warn(str(w.message), stacklevel=3)  # at prepare()'s caller
    targets[:, ~valid_cells] = np.nan
    return targets
