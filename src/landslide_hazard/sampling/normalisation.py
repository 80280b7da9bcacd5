"""Per-band input normalisation, computed on a run's training cells only.

The statistics (mean, std, min, max per band of :data:`bands.INPUT_NAMES`) belong to a run and
are saved as ``normalisation.json`` and inside ``model.pt``; the cube holds raw values. Static
bands are summarised over the fine pixels of every cell that trains in any period (each cell
once); dynamic bands and the monsoon count over the (period, cell) pairs that train, on the cell
grid (the bilinear upsampling applied when a patch is read is a weighted mean of those values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bands import DYNAMIC_NAMES, INPUT_NAMES, SCALAR_NAMES, STATIC_NAMES, UNITS
from ..errors import InputError


@dataclass(frozen=True)
class Normalisation:
    """mean/std/min/max per input band, in the band's units, in ``names`` order."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    count: np.ndarray

    def to_dict(self) -> dict:
        return {
            "bands": list(self.names),
            "units": [UNITS.get(b, "") for b in self.names],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "min": [float(v) for v in self.minimum],
            "max": [float(v) for v in self.maximum],
            "count": [int(v) for v in self.count],
            "note": "computed on the run's training cells only",
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(
            names=tuple(d["bands"]),
            mean=np.asarray(d["mean"], dtype=np.float64),
            std=np.asarray(d["std"], dtype=np.float64),
            minimum=np.asarray(d["min"], dtype=np.float64),
            maximum=np.asarray(d["max"], dtype=np.float64),
            count=np.asarray(d["count"], dtype=np.int64),
        )

    def save(self, path: str | Path) -> None:
        from ..io.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Normalisation:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def check_bands(self, names: tuple[str, ...] = INPUT_NAMES, what: str = "model") -> None:
        if tuple(self.names) != tuple(names):
            raise InputError(
                f"{what}: normalisation bands {list(self.names)} differ from the input bands "
                f"{list(names)}; the run was trained on another band order, retrain it"
            )

    def scale(self, values: np.ndarray, band_slice: slice) -> np.ndarray:
        """(values - mean) / std for the bands of ``band_slice``; values (bands, ...)."""
        mean = self.mean[band_slice].astype(np.float32)
        std = self.std[band_slice].astype(np.float32)
        shape = (-1,) + (1,) * (values.ndim - 1)
        return (values - mean.reshape(shape)) / std.reshape(shape)


class _Stats:
    """Streaming sum / sum of squares / min / max per band (float64, NaN ignored)."""

    def __init__(self, n_bands: int) -> None:
        self.n = np.zeros(n_bands, dtype=np.int64)
        self.s = np.zeros(n_bands)
        self.s2 = np.zeros(n_bands)
        self.lo = np.full(n_bands, np.inf)
        self.hi = np.full(n_bands, -np.inf)

    def add(self, band: int, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if not v.size:
            return
        self.n[band] += v.size
        self.s[band] += v.sum()
        self.s2[band] += np.square(v).sum()
        self.lo[band] = min(self.lo[band], v.min())
        self.hi[band] = max(self.hi[band], v.max())

    def result(self) -> tuple[np.ndarray, ...]:
        n = np.maximum(self.n, 1)
        mean = self.s / n
        var = np.maximum(self.s2 / n - mean**2, 0.0)
        std = np.sqrt(var)
        # A constant (or absent) band would divide by zero: scale it by 1 instead.
        std = np.where((std > 1e-12) & (self.n > 0), std, 1.0)
        mean = np.where(self.n > 0, mean, 0.0)
        lo = np.where(self.n > 0, self.lo, np.nan)
        hi = np.where(self.n > 0, self.hi, np.nan)
        return mean, std, lo, hi, self.n.copy()


def compute_normalisation(
    static,
    dynamic: np.ndarray,
    monsoons: np.ndarray,
    train_cells: np.ndarray,
    cell_pixels: int,
    rows_per_read: int = 16,
    dynamic_names: tuple[str, ...] = DYNAMIC_NAMES,
) -> Normalisation:
    """Statistics of the input bands over the training cells only.

    static: (8, H, W) numpy or zarr array on the fine grid; dynamic: (P, D, cy, cx) on the cell
    grid, bands ``dynamic_names`` (the triggers, or the triggers and the legacy); monsoons:
    (P,); train_cells: (P, cy, cx) bool. Static pixels are streamed in bands of
    ``rows_per_read`` cell rows, so memory stays bounded on large grids.
    """
    train_cells = np.asarray(train_cells, dtype=bool)
    if not train_cells.any():
        raise InputError("no training cell to compute the normalisation from")
    k = cell_pixels
    n_static, n_dyn = len(STATIC_NAMES), len(dynamic_names)
    if np.shape(dynamic)[1] != n_dyn:
        raise ValueError(f"dynamic has {np.shape(dynamic)[1]} bands, names {list(dynamic_names)}")
    stats = _Stats(n_static + n_dyn + 1)
    cells_any = np.asarray(train_cells.any(axis=0))
    cy = cells_any.shape[0]
    for r in range(0, cy, rows_per_read):
        block = cells_any[r : r + rows_per_read]
        if not block.any():
            continue
        pix_mask = np.repeat(np.repeat(block, k, axis=0), k, axis=1)
        data = np.asarray(static[:, r * k : (r + block.shape[0]) * k, :], dtype=np.float32)
        for b in range(n_static):
            stats.add(b, data[b][pix_mask])
    t_idx, r_idx, c_idx = np.nonzero(train_cells)
    for b in range(n_dyn):
        stats.add(n_static + b, np.asarray(dynamic)[t_idx, b, r_idx, c_idx])
    stats.add(n_static + n_dyn, np.asarray(monsoons, dtype=np.float64)[t_idx])
    mean, std, lo, hi, count = stats.result()
    names = STATIC_NAMES + tuple(dynamic_names) + SCALAR_NAMES
    return Normalisation(names, mean, std, lo, hi, count)
