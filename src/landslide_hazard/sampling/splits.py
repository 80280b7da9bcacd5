"""Train / validation / test splits for the four validation protocols (DESIGN.md section 5).

- ``paper``: random 70/30 split of patches over both lattices. It leaks on purpose (the shifted
  lattice regroups the same cells, so test cells are also training cells) and is flagged
  ``leaky``.
- ``spatial``: ``B x B`` km blocks dealt to ``k`` folds; a patch trains only if all its labelled
  cells are training cells; patches straddling roles are dropped; a buffer of ``buffer_cells``
  cells around the test blocks is left out of training and validation.
- ``temporal``: test = the last ``temporal_test_periods`` periods; train = the earlier ones.
- ``spacetime``: test = spatial test folds x last periods; train = other folds x earlier periods.

Validation (early stopping) is a ``val_fraction`` of the training data, never test cells: random
patches for ``paper``, whole blocks for the other protocols (the same block grid as the folds).
A training patch holds training cells only; a validation patch holds at least one validation cell
and no test or buffer cell (its training cells are masked out of the validation loss).
Cell masks (period, cy, cx) say exactly which cells each role scores, so evaluation scores exactly
the test cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .lattice import (
    LATTICES,
    PatchIndex,
    build_patch_index,
    patch_all_within,
    patch_cells_mask,
)

PROTOCOLS: tuple[str, ...] = ("paper", "spatial", "temporal", "spacetime")
PAPER_TEST_FRACTION = 0.3


@dataclass
class Split:
    """Which cells and patches train, validate and test, for one protocol and fold.

    Cell masks are (period, cy, cx) bool. ``fold_map`` is (cy, cx) int (fold per block, -1 for
    blocks without valid cells). ``buffer`` is (cy, cx) bool, cells left out around test blocks.
    """

    protocol: str
    fold: int | None
    train_cells: np.ndarray
    val_cells: np.ndarray
    test_cells: np.ndarray
    train_patches: PatchIndex
    val_patches: PatchIndex
    fold_map: np.ndarray
    buffer: np.ndarray
    leaky: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "protocol": self.protocol,
            "fold": self.fold,
            "leaky": self.leaky,
            "n_train_patches": len(self.train_patches),
            "n_val_patches": len(self.val_patches),
            "n_train_cells": int(self.train_cells.sum()),
            "n_val_cells": int(self.val_cells.sum()),
            "n_test_cells": int(self.test_cells.sum()),
            "n_buffer_cells": int(self.buffer.sum()),
            "notes": list(self.notes),
        }

    def save(self, path: str | Path) -> None:
        """Write the split as a compressed npz (atomically)."""
        from ..io.atomic import atomic_path

        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                protocol=np.array(self.protocol),
                fold=np.array(-1 if self.fold is None else self.fold),
                leaky=np.array(self.leaky),
                notes=np.array(self.notes, dtype=str),
                train_cells=self.train_cells,
                val_cells=self.val_cells,
                test_cells=self.test_cells,
                train_patches=self.train_patches.as_array(),
                val_patches=self.val_patches.as_array(),
                fold_map=self.fold_map,
                buffer=self.buffer,
            )

    @classmethod
    def load(cls, path: str | Path) -> Split:
        with np.load(Path(path), allow_pickle=False) as z:
            fold = int(z["fold"])
            return cls(
                protocol=str(z["protocol"]),
                fold=None if fold < 0 else fold,
                train_cells=z["train_cells"].astype(bool),
                val_cells=z["val_cells"].astype(bool),
                test_cells=z["test_cells"].astype(bool),
                train_patches=PatchIndex.from_array(z["train_patches"]),
                val_patches=PatchIndex.from_array(z["val_patches"]),
                fold_map=z["fold_map"],
                buffer=z["buffer"].astype(bool),
                leaky=bool(z["leaky"]),
                notes=[str(s) for s in z["notes"]],
            )


def block_cells_for(block_km: float, cell_size_m: float) -> int:
    """Block side in cells for a block of ``block_km`` km (at least one cell)."""
    return max(1, int(round(block_km * 1000.0 / cell_size_m)))


def block_ids(shape_cells: tuple[int, int], block_cells: int) -> np.ndarray:
    """(cy, cx) int: the id of the ``block_cells``-square block each cell belongs to."""
    cy, cx = shape_cells
    n_bc = -(-cx // block_cells)
    rows = np.arange(cy)[:, None] // block_cells
    cols = np.arange(cx)[None, :] // block_cells
    return rows * n_bc + cols


def assign_block_folds(valid: np.ndarray, block_cells: int, n_folds: int, seed: int) -> np.ndarray:
    """Deal the blocks holding valid cells to ``n_folds`` folds at random (seeded), round robin.

    Returns (cy, cx) int: the fold of each cell's block, -1 for blocks without valid cells.
    """
    ids = block_ids(valid.shape, block_cells)
    used = np.unique(ids[valid])
    if len(used) < n_folds:
        raise InputError(
            f"only {len(used)} blocks of {block_cells} cells hold valid cells, fewer than the "
            f"{n_folds} folds; lower evaluation.block_km or evaluation.n_folds"
        )
    order = np.random.default_rng([seed, 1]).permutation(len(used))
    fold_of_block = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    fold_of_block[used[order]] = np.arange(len(used)) % n_folds
    return fold_of_block[ids]


def buffer_around(region: np.ndarray, buffer_cells: int) -> np.ndarray:
    """Cells within ``buffer_cells`` cells (Chebyshev distance) of ``region``, not in it."""
    region = np.asarray(region, dtype=bool)
    if buffer_cells <= 0 or not region.any():
        return np.zeros_like(region)
    size = 2 * buffer_cells + 1
    grown = ndimage.binary_dilation(region, structure=np.ones((size, size), dtype=bool))
    return grown & ~region


def choose_val_blocks(
    region: np.ndarray, block_cells: int, val_fraction: float, seed: int
) -> np.ndarray:
    """(cy, cx) bool: whole blocks (of those holding ``region`` cells) set aside for validation.

    Takes ``round(val_fraction * n_blocks)`` blocks (at least one, at most all but one).
    """
    ids = block_ids(region.shape, block_cells)
    used = np.unique(ids[region])
    if len(used) < 2:
        raise InputError(
            f"the training region spans {len(used)} block(s) of {block_cells} cells: too few to "
            "set whole blocks aside for validation; lower evaluation.block_km"
        )
    n_val = int(np.clip(round(val_fraction * len(used)), 1, len(used) - 1))
    chosen = np.random.default_rng([seed, 2]).choice(used, size=n_val, replace=False)
    return np.isin(ids, chosen) & region


def _role_patches(
    label: np.ndarray, region: np.ndarray, patch_cells: int, periods: np.ndarray
) -> PatchIndex:
    """Patches (both lattices, given periods) whose labelled cells all lie in ``region``."""
    masked = label & region
    candidates = build_patch_index(masked, patch_cells, LATTICES, periods=periods)
    keep = patch_all_within(label, region, candidates, patch_cells)
    return candidates.subset(keep)


@dataclass(frozen=True)
class SplitSettings:
    """How to split: the protocol and fold, the block grid of the folds, the test periods of
    the temporal protocols, the validation share and the seed (a config's ``evaluation``
    section and ``training.val_fraction``: :meth:`from_config`). ``buffer_cells`` None: one
    patch side; ``val_buffer_cells`` None: half of one (spatial and spacetime only)."""

    protocol: str
    block_km: float = 16.0
    n_folds: int = 5
    test_fold: int = 0
    buffer_cells: int | None = None
    val_buffer_cells: int | None = None
    temporal_test_periods: int = 2
    val_fraction: float = 0.3
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> SplitSettings:
        """The settings of a RunConfig (its ``evaluation.protocol`` and ``test_fold``)."""
        ev = cfg.evaluation
        return cls(
            ev.protocol,
            block_km=ev.block_km,
            n_folds=ev.n_folds,
            test_fold=ev.test_fold,
            buffer_cells=ev.buffer_cells,
            val_buffer_cells=ev.val_buffer_cells,
            temporal_test_periods=ev.temporal_test_periods,
            val_fraction=cfg.training.val_fraction,
            seed=cfg.seed,
        )


def make_split(
    target_density: np.ndarray,
    valid_cells: np.ndarray,
    settings: SplitSettings,
    *,
    patch_cells: int,
    cell_size_m: float,
) -> Split:
    """Build the split of one protocol and fold from the cube's targets.

    target_density: (P, cy, cx) float, NaN where unlabelled; valid_cells: (cy, cx) bool.
    A cell is labelled in period t when it is valid and its target is finite. Deterministic for
    a given seed.
    """
    if settings.protocol not in PROTOCOLS:
        raise InputError(
            f"unknown protocol '{settings.protocol}'; choose one of {', '.join(PROTOCOLS)}"
        )
    target_density = np.asarray(target_density)
    label = np.isfinite(target_density) & np.asarray(valid_cells, dtype=bool)[None]
    if not label.any():
        raise InputError("the cube holds no labelled cell (target_density is NaN everywhere)")
    if settings.protocol == "paper":
        return _paper_split(label, settings, patch_cells)
    return _blocked_split(
        label, settings, patch_cells, block_cells_for(settings.block_km, cell_size_m)
    )


def _paper_split(label: np.ndarray, s: SplitSettings, n: int) -> Split:
    """Random patches over both lattices (leaky: flagged)."""
    shape2 = label.shape[1:]
    patches = build_patch_index(label, n, LATTICES)
    rng = np.random.default_rng([s.seed, 3])
    order = rng.permutation(len(patches))
    n_test = int(round(PAPER_TEST_FRACTION * len(patches)))
    test_p = patches.subset(np.sort(order[:n_test]))
    rest = np.sort(order[n_test:])
    n_val = int(round(s.val_fraction * len(rest)))
    val_sel = np.sort(rng.permutation(rest)[:n_val])
    train_sel = np.setdiff1d(rest, val_sel)
    train_p, val_p = patches.subset(train_sel), patches.subset(val_sel)
    shape3 = label.shape
    test_cells = patch_cells_mask(test_p, shape3, n) & label
    train_cells = patch_cells_mask(train_p, shape3, n) & label
    # validation never scores a test cell, even here (its patches' test cells are masked)
    val_cells = patch_cells_mask(val_p, shape3, n) & label & ~test_cells
    notes = [
        "paper protocol: random patches over both lattices; the shifted lattice regroups "
        "the same cells, so test cells are also training cells (optimistic)"
    ]
    return Split(
        s.protocol,
        None,
        train_cells,
        val_cells,
        test_cells,
        train_p,
        val_p,
        np.full(shape2, -1, dtype=np.int64),
        np.zeros(shape2, dtype=bool),
        leaky=True,
        notes=notes,
    )


def _blocked_split(label: np.ndarray, s: SplitSettings, n: int, block_cells: int) -> Split:
    """The spatial, temporal and spacetime protocols: blocks dealt to folds, test periods."""
    protocol, test_fold, n_folds = s.protocol, s.test_fold, s.n_folds
    n_periods = label.shape[0]
    buffer_cells = n if s.buffer_cells is None else s.buffer_cells
    any_label = np.asarray(label.any(axis=0))
    shape2 = label.shape[1:]
    all_periods = np.arange(n_periods)
    notes: list[str] = []
    spatial = protocol in ("spatial", "spacetime")
    temporal = protocol in ("temporal", "spacetime")
    n_test_periods = s.temporal_test_periods
    if temporal and n_periods <= n_test_periods:
        raise InputError(
            f"protocol '{protocol}' tests on the last {n_test_periods} periods but the cube "
            f"has {n_periods}; lower evaluation.temporal_test_periods or add periods"
        )
    test_periods = all_periods[n_periods - n_test_periods :] if temporal else all_periods
    train_periods = all_periods[: n_periods - n_test_periods] if temporal else all_periods
    in_test_period = np.isin(all_periods, test_periods)[:, None, None]
    in_train_period = np.isin(all_periods, train_periods)[:, None, None]

    fold_map = assign_block_folds(any_label, block_cells, n_folds, s.seed)
    if spatial:
        if not 0 <= test_fold < n_folds:
            raise InputError(f"fold {test_fold} out of range 0..{n_folds - 1}")
        test_region = fold_map == test_fold
        buffer = buffer_around(test_region, buffer_cells)
        train_region = any_label & ~test_region & ~buffer
    else:
        test_region = np.ones(shape2, dtype=bool)
        buffer = np.zeros(shape2, dtype=bool)
        train_region = any_label.copy()
    val_region = choose_val_blocks(train_region, block_cells, s.val_fraction, s.seed)
    fit_region = train_region & ~val_region
    if spatial:
        # validation cells as far from training cells as test cells are (a ring left out):
        # a network whose context reaches into training cells, or that learns where it is from
        # smooth inputs such as elevation, scores better next to its training cells than on
        # the buffered test blocks, and early stopping and calibration would believe it
        val_buffer = n // 2 if s.val_buffer_cells is None else s.val_buffer_cells
        fit_region &= ~buffer_around(val_region, val_buffer)

    test_cells = label & test_region[None] & in_test_period
    train_cells = label & fit_region[None] & in_train_period
    val_cells = label & val_region[None] & in_train_period
    train_p = _role_patches(label, fit_region[None] & in_train_period, n, train_periods)
    # Validation patches hold at least one validation cell and no test or buffer cell; their
    # training cells (if any) are masked out of the validation loss by ``val_cells``.
    val_candidates = build_patch_index(label & val_region[None] & in_train_period, n, LATTICES)
    keep = patch_all_within(label, train_region[None] & in_train_period, val_candidates, n)
    val_p = val_candidates.subset(keep)
    # Cells of dropped (straddling) patches neither train nor validate: keep the masks honest.
    train_cells &= patch_cells_mask(train_p, label.shape, n)
    val_cells &= patch_cells_mask(val_p, label.shape, n)
    if not len(train_p):
        raise InputError(
            f"protocol '{protocol}' fold {test_fold}: no training patch left (every patch "
            "straddles a test or validation block or a buffer around them); raise "
            "evaluation.block_km, or lower evaluation.buffer_cells / val_buffer_cells"
        )
    if not test_cells.any():
        raise InputError(f"protocol '{protocol}' fold {test_fold}: no labelled test cell")
    if spatial:
        notes.append(
            f"{block_cells}-cell blocks in {n_folds} folds, test fold {test_fold}, buffer "
            f"{buffer_cells} cells ({int(buffer.sum())} cells left out)"
        )
    if temporal:
        notes.append(
            f"test periods {test_periods.tolist()}, train periods {train_periods.tolist()}"
        )
    return Split(
        protocol,
        test_fold if spatial else None,
        train_cells,
        val_cells,
        test_cells,
        train_p,
        val_p,
        fold_map,
        buffer,
        leaky=False,
        notes=notes,
    )
