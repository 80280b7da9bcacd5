"""Lazy patch reading: a cube reader, bilinear upsampling of cell-grid triggers, a torch Dataset.

A model input is (13, n*k, n*k) in :data:`bands.INPUT_NAMES` order: the 8 static bands read from
the fine grid, the 4 dynamic bands upsampled bilinearly from the cell grid when the patch is read
(never materialised on the whole fine grid), and the monsoon count as a constant channel. A
reader built with the legacy bands (``dynamic_bands=model_dynamic_names(True)``) gives 16
channels, the 3 model legacy bands after the triggers (:func:`bands.input_names`), each constant
over its cell. Inputs are normalised with the run's training statistics, then NaN -> 0. Targets outside the grid, NaN,
or outside the role's cell mask are masked.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from ..bands import ANOMALY_SOURCES, DYNAMIC_NAMES, LEGACY_NAMES, SCALAR_NAMES, STATIC_NAMES
from ..cube import CubeArrays
from ..errors import InputError
from ..grid import StudyGrid
from .kernels import dynamic_into
from .lattice import PatchIndex, read_window
from .normalisation import Normalisation

DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
_STATIC = slice(0, len(STATIC_NAMES))


@functools.lru_cache(maxsize=32)
def _bilinear_weights(n_cells: int, cell_pixels: int) -> np.ndarray:
    """(n*k, n+2) weights of the halo-window cells for each fine pixel along one axis
    (cached: every patch of a grid uses the same few; read-only)."""
    k = cell_pixels
    u = (np.arange(n_cells * k) + 0.5) / k + 0.5  # pixel centre in halo-window cell units
    i0 = np.floor(u).astype(np.int64)
    frac = u - i0
    w = np.zeros((n_cells * k, n_cells + 2), dtype=np.float64)
    rows = np.arange(n_cells * k)
    w[rows, i0] = 1.0 - frac
    w[rows, i0 + 1] += frac
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


def upsample_cells_bilinear(cells_with_halo: np.ndarray, cell_pixels: int) -> np.ndarray:
    """Bilinear upsampling of cell values to fine pixels, NaN-aware.

    cells_with_halo: (C, h + 2, w + 2), the window's cells plus a one-cell halo (NaN outside the
    grid). Returns (C, h*k, w*k). Cell values sit at cell centres; a fine pixel takes the
    bilinear weights of the four nearest cell centres, renormalised over the finite ones (so at
    the grid edge the value is extended as a constant). With the halo, windows read side by side
    give the same pixels as upsampling the whole grid at once (no seams). Bilinear weights are
    separable, so both the weighted sum and the weight of the finite cells are two small matrix
    products per channel; where every cell is finite (a window inside the grid) the weight is
    the same every time and comes from a cache (the same float32 values, computed once).
    """
    v = np.asarray(cells_with_halo, dtype=np.float32)
    h, w = v.shape[-2] - 2, v.shape[-1] - 2
    wy = _bilinear_weights(h, cell_pixels)
    wx = _bilinear_weights(w, cell_pixels)
    finite = np.isfinite(v)
    if finite.all():  # every weight sum is about 1: nothing to mask
        out = wy @ v @ wx.T
        out /= _full_weight(h, w, cell_pixels)
        return out
    num = wy @ np.where(finite, v, np.float32(0.0)) @ wx.T
    den = wy @ finite.astype(np.float32) @ wx.T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den <= 1e-6] = np.nan
    return out.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=32)
def _full_weight(h: int, w: int, cell_pixels: int) -> np.ndarray:
    """(h*k, w*k) summed bilinear weight of a window whose cells are all finite, as
    :func:`upsample_cells_bilinear` computes it for one channel (read-only)."""
    wy = _bilinear_weights(h, cell_pixels)
    wx = _bilinear_weights(w, cell_pixels)
    den = wy @ np.ones((h + 2, w + 2), dtype=np.float32) @ wx.T
    den.flags.writeable = False
    return den


def period_anomaly(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(P, cy, cx) cell-grid values minus each period's mean over its valid cells with a
    finite value (``bands.ANOMALY_BANDS``); NaN stays NaN, a period with no such cell is NaN."""
    values = np.asarray(values, dtype=np.float32)
    out = np.full_like(values, np.nan)
    for t in range(values.shape[0]):
        inside = valid & np.isfinite(values[t])
        if inside.any():
            mean = values[t][inside].mean(dtype=np.float64)
            out[t] = values[t] - np.float32(mean)
    return out


def pick_dynamic(
    values: np.ndarray, names: tuple[str, ...], bands: tuple[str, ...], valid: np.ndarray
) -> np.ndarray:
    """(P, len(bands), cy, cx): the ``bands`` of cell-grid ``values`` (P, len(names), cy, cx),
    a stored band sliced, an anomaly (``bands.ANOMALY_SOURCES``) derived from its source."""
    out = np.empty((values.shape[0], len(bands), *values.shape[2:]), dtype=np.float32)
    for i, band in enumerate(bands):
        if band in names:
            out[:, i] = values[:, names.index(band)]
        else:
            out[:, i] = period_anomaly(values[:, names.index(ANOMALY_SOURCES[band])], valid)
    return out


def unavailable(bands: tuple[str, ...], held: tuple[str, ...]) -> list[str]:
    """The ``bands`` that are neither among ``held`` nor derivable from one of them (a rain
    anomaly, ``bands.ANOMALY_SOURCES``)."""
    return [b for b in bands if b not in held and ANOMALY_SOURCES.get(b) not in held]


class CubeReader:
    """Reads patch windows of a cube: static from the fine grid, dynamic/targets from the cells.

    The cell-grid arrays (dynamic, targets, monsoons, valid mask) are small and always held in
    memory; the fine static array is loaded when it fits ``memory_budget_bytes``, else read
    window by window from Zarr. ``dynamic`` / ``monsoons`` override the cube's triggers (what-if
    scenarios) without touching the cube; it holds all the cube's dynamic bands
    (``cube.meta.dynamic_bands``) or, ``dynamic_picked``, those of ``dynamic_bands`` (None: told
    by its shape). Rain anomalies (``bands.ANOMALY_SOURCES``) among ``dynamic_bands`` are derived
    from their stored source band, period by period. ``dynamic_bands``: those
    the model reads, in its channel order (the triggers, or the triggers and the legacy);
    ``self.dynamic`` holds only them (:meth:`with_dynamic_bands` for another choice).
    """

    def __init__(
        self,
        cube: CubeArrays,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
        dynamic: np.ndarray | None = None,
        monsoons: np.ndarray | None = None,
        dynamic_bands: tuple[str, ...] = DYNAMIC_NAMES,
        dynamic_picked: bool | None = None,
    ) -> None:
        self.cube = cube
        self.grid: StudyGrid = cube.grid
        self.period_names: list[str] = cube.meta.period_names
        if tuple(cube.meta.static_bands) != STATIC_NAMES:
            raise InputError(
                f"{cube.path}: static bands {cube.meta.static_bands} differ from {STATIC_NAMES}; "
                "re-run prepare with this package version"
            )
        cube_bands = tuple(cube.meta.dynamic_bands)
        missing = unavailable(tuple(dynamic_bands), cube_bands)
        if missing:
            raise InputError(
                f"{cube.path}: the cube has no band(s) {missing} (its dynamic bands: "
                f"{list(cube.meta.dynamic_bands)}); re-run `landslide-hazard prepare CONFIG "
                "--overwrite` with this package version"
            )
        self._choose_bands(tuple(dynamic_bands))
        n_dyn = len(self.dynamic_bands)
        static = cube.static
        self.memory_budget_bytes = int(memory_budget_bytes)
        self.static_in_memory = int(np.prod(static.shape)) * 4 <= memory_budget_bytes
        self.static = np.asarray(static[:], dtype=np.float32) if self.static_in_memory else static
        self._row_cache: tuple[int, int, np.ndarray] | None = None
        all_dynamic = np.asarray(cube.dynamic[:] if dynamic is None else dynamic, np.float32)
        n_p = len(self.period_names)
        expected = (n_p, len(cube_bands), *self.grid.cell_shape)
        picked = (n_p, n_dyn, *self.grid.cell_shape)
        self.valid = cube.valid_cells
        if dynamic is None:
            dynamic_picked = False
        elif dynamic_picked is None:
            if expected == picked and cube_bands != self.dynamic_bands:
                raise ValueError(
                    "dynamic has as many bands as the cube and as the reader's choice; say which "
                    "it holds (dynamic_picked)"
                )
            dynamic_picked = all_dynamic.shape == picked and all_dynamic.shape != expected
        if not dynamic_picked and all_dynamic.shape == expected:
            all_dynamic = pick_dynamic(all_dynamic, cube_bands, self.dynamic_bands, self.valid)
        elif not dynamic_picked or all_dynamic.shape != picked:
            raise InputError(
                f"dynamic bands of shape {all_dynamic.shape}, expected {expected} "
                f"(period, {list(cube.meta.dynamic_bands)}, cell rows, cell columns)"
            )
        self.dynamic = np.ascontiguousarray(all_dynamic)
        self.monsoons = (
            cube.monsoons_since_eq if monsoons is None else np.asarray(monsoons, dtype=np.float32)
        )
        self.target = np.asarray(cube.target_density[:], dtype=np.float32)

    def _choose_bands(self, bands: tuple[str, ...]) -> None:
        """Set the dynamic bands the model reads and their channel slices."""
        self.dynamic_bands = bands
        self.input_names = STATIC_NAMES + bands + SCALAR_NAMES
        n_dyn = len(bands)
        self._dynamic_slice = slice(len(STATIC_NAMES), len(STATIC_NAMES) + n_dyn)
        self._monsoon_slice = slice(len(STATIC_NAMES) + n_dyn, len(STATIC_NAMES) + n_dyn + 1)
        # the bands upsampled bilinearly come first (the triggers), the per-cell ones last
        self._n_smooth = sum(b not in LEGACY_NAMES for b in bands)
        if any(b in LEGACY_NAMES for b in bands[: self._n_smooth]):
            raise InputError(f"legacy bands must follow the triggers: {bands}")

    def with_dynamic_bands(self, bands: tuple[str, ...]) -> CubeReader:
        """This reader with another choice among its dynamic bands, sharing its static pixels,
        targets and monsoon counts (nothing is read again)."""
        missing = unavailable(tuple(bands), self.dynamic_bands)
        if missing:
            raise InputError(f"this reader holds no band(s) {missing}: {self.dynamic_bands}")
        other = copy.copy(self)
        other._row_cache = None
        held = self.dynamic_bands
        other._choose_bands(tuple(bands))
        other.dynamic = pick_dynamic(self.dynamic, held, tuple(bands), self.valid)
        return other

    @property
    def n_periods(self) -> int:
        return len(self.period_names)

    @property
    def label_mask(self) -> np.ndarray:
        """(P, cy, cx) bool: valid cells with a finite target."""
        return np.isfinite(self.target) & self.valid[None]

    def hold_rows(self, row0: int, h: int) -> None:
        """Keep the static pixels of cell rows [row0, row0+h) (all columns) in memory.

        For a Zarr-backed reader, patch reads inside those rows then slice memory instead of
        decompressing the same chunks again (``predict`` walks the grid one row of patches at a
        time). A no-op when the whole static array is in memory.
        """
        if self.static_in_memory:
            return
        k = self.grid.cell_pixels
        width = self.static.shape[-1]
        self._row_cache = (row0, h, read_window(self.static, row0 * k, 0, h * k, width))

    def release_rows(self) -> None:
        self._row_cache = None

    def static_window(self, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """(8, h*k, w*k) raw static values of cells [row0, row0+h) x [col0, col0+w)."""
        k = self.grid.cell_pixels
        if self._row_cache is not None:
            c_row0, c_h, rows = self._row_cache
            if c_row0 <= row0 and row0 + h <= c_row0 + c_h:
                return read_window(rows, (row0 - c_row0) * k, col0 * k, h * k, w * k)
        return read_window(self.static, row0 * k, col0 * k, h * k, w * k)

    @property
    def n_bilinear_bands(self) -> int:
        """How many of :attr:`dynamic_bands` (the first ones) are upsampled bilinearly; the
        rest are constant over each cell."""
        return self._n_smooth

    @property
    def n_channels(self) -> int:
        """Model input channels: 13, or 16 with the legacy bands."""
        return self._monsoon_slice.stop

    def dynamic_window(self, period: int, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """(D, h*k, w*k) raw dynamic values on the fine pixels: the triggers upsampled
        bilinearly from the cell grid (smooth fields), the legacy bands constant over each cell
        (a cell's own record, not to be blended with its neighbours')."""
        cells = read_window(self.dynamic, row0 - 1, col0 - 1, h + 2, w + 2, prefix=(period,))
        k = self.grid.cell_pixels
        n = self._n_smooth
        if n == cells.shape[0]:
            return upsample_cells_bilinear(cells, k)
        out = np.empty((cells.shape[0], h * k, w * k), dtype=np.float32)
        out[:n] = upsample_cells_bilinear(cells[:n], k)
        out[n:] = np.repeat(np.repeat(cells[n:, 1:-1, 1:-1], k, axis=-2), k, axis=-1)
        return out

    def target_window(self, period: int, row0: int, col0: int, h: int, w: int) -> np.ndarray:
        """(h, w) target density (%), NaN outside the grid, outside valid cells or unlabelled."""
        t = read_window(self.target, row0, col0, h, w, prefix=(period,))
        valid = read_window(self.valid, row0, col0, h, w, fill=0.0) > 0
        t[~valid] = np.nan
        return t

    def static_input(
        self, norm: Normalisation, row0: int, col0: int, size: int, finite: bool = False
    ) -> np.ndarray:
        """(8, s*k, s*k) normalised static bands of a window (NaN kept; ``finite``: NaN and
        +-inf -> 0, as the model input has them): the same in every period, so a caller
        building several periods of a patch computes it once and passes it (``finite``) to
        :meth:`patch_input`."""
        x = norm.scale(self.static_window(row0, col0, size, size), _STATIC)
        if finite:
            np.copyto(x, np.float32(0.0), where=~np.isfinite(x))
        return x

    def patch_input(
        self,
        norm: Normalisation,
        period: int,
        row0: int,
        col0: int,
        size: int | None = None,
        static: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The normalised model input (C, s*k, s*k) of the ``s x s``-cell patch at (row0, col0)
        (C = :attr:`n_channels`; ``norm`` holds the statistics of :attr:`input_names`).

        ``static``: its 8 static bands already normalised with NaN -> 0 (:meth:`static_input`
        with ``finite=True``, or a :class:`StaticPatchCache`), used instead of reading them.
        ``out``: a float32 (C, s*k, s*k) array to write the input into (e.g. a row of a batch),
        returned."""
        s = self.grid.patch_cells if size is None else size
        k = self.grid.cell_pixels
        dyn, mon = self._dynamic_slice, self._monsoon_slice
        x = np.empty((mon.stop, s * k, s * k), dtype=np.float32) if out is None else out
        x[_STATIC] = (
            self.static_input(norm, row0, col0, s, finite=True) if static is None else static
        )
        # the triggers (and legacy) upsampled, normalised and NaN -> 0 in one compiled pass;
        # the same values as norm.scale(self.dynamic_window(...)) within float32 rounding
        stats = np.stack([norm.mean[dyn], norm.std[dyn]]).astype(np.float32)
        dynamic_into(self.dynamic[period], row0, col0, s, k, stats, self._n_smooth, x[dyn])
        count = norm.scale(np.array([self.monsoons[period]], dtype=np.float32), mon)[0]
        x[mon] = count if np.isfinite(count) else np.float32(0.0)
        return x


N_AUGMENTATIONS = 8  # the dihedral group of the square: identity, flips, rotations
_NORTHNESS = STATIC_NAMES.index("northness")
_EASTNESS = STATIC_NAMES.index("eastness")


def dihedral_transform(
    x: np.ndarray, target: np.ndarray, mask: np.ndarray, code: int, norm: Normalisation
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One of the 8 flips / rotations of a patch, applied to its input, target and mask alike.

    code in [0, 8): bit 2 transposes (rows <-> columns), then bit 1 flips the rows (north <->
    south), then bit 0 flips the columns (east <-> west). Rows run north to south. The aspect
    bands follow the terrain they describe: a row flip negates northness, a column flip negates
    eastness, a transpose maps (northness, eastness) to (-eastness, -northness); this is done
    on the raw values (``norm``'s mean/std undone, then re-applied). All other bands are
    invariant scalars (slope, curvatures, TWI, distances, triggers). x: (13, H, W) normalised;
    target, mask: (n, n). Returns new arrays.
    """
    if not 0 <= code < N_AUGMENTATIONS:
        raise ValueError(f"augmentation code {code} not in [0, {N_AUGMENTATIONS})")
    mean = norm.mean.astype(np.float32)
    std = norm.std.astype(np.float32)
    north = x[_NORTHNESS] * std[_NORTHNESS] + mean[_NORTHNESS]
    east = x[_EASTNESS] * std[_EASTNESS] + mean[_EASTNESS]
    out_x, out_t, out_m = x, target, mask
    if code & 4:
        out_x, out_t, out_m = (np.swapaxes(a, -1, -2) for a in (out_x, out_t, out_m))
        north, east = -east.T, -north.T
    if code & 2:
        out_x, out_t, out_m = (a[..., ::-1, :] for a in (out_x, out_t, out_m))
        north, east = -north[::-1], east[::-1]
    if code & 1:
        out_x, out_t, out_m = (a[..., ::-1] for a in (out_x, out_t, out_m))
        north, east = north[:, ::-1], -east[:, ::-1]
    out_x = np.array(out_x, dtype=np.float32, order="C")  # a copy, never a view of x
    out_x[_NORTHNESS] = (north - mean[_NORTHNESS]) / std[_NORTHNESS]
    out_x[_EASTNESS] = (east - mean[_EASTNESS]) / std[_EASTNESS]
    return out_x, np.ascontiguousarray(out_t), np.ascontiguousarray(out_m)


class StaticPatchCache:
    """The normalised static pixels (8, n*k, n*k) of patch windows, kept in memory.

    A training stage reads every patch each epoch, and the static pixels of a window are the
    same in every period (only the 4 cell-grid trigger bands change), so they are read and
    normalised once per window and shared by all datasets of a run (train, validation,
    positive-only). Windows are added until ``budget_bytes`` is used; later ones are read as
    before. The cached values are exactly those :meth:`CubeReader.patch_input` computes.
    """

    def __init__(self, reader: CubeReader, norm: Normalisation, budget_bytes: int) -> None:
        self.reader = reader
        self.norm = norm
        self.budget_bytes = int(budget_bytes)
        self.used_bytes = 0
        self.windows: dict[tuple[int, int, int], np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def static_input(self, row0: int, col0: int, size: int) -> np.ndarray:
        """(8, s*k, s*k) normalised static input with NaN -> 0 (do not modify it)."""
        key = (row0, col0, size)
        cached = self.windows.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        x = self.norm.scale(self.reader.static_window(row0, col0, size, size), _STATIC)
        x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        if self.used_bytes + x.nbytes <= self.budget_bytes:
            x.setflags(write=False)
            self.windows[key] = x
            self.used_bytes += x.nbytes
        return x

    def fill(self, patches: PatchIndex) -> None:
        """Read every window of ``patches`` now (up to the budget): DataLoader workers forked
        afterwards share the filled cache instead of each reading the windows again."""
        s = self.reader.grid.patch_cells
        for row0, col0 in sorted(
            set(zip(patches.row0.tolist(), patches.col0.tolist(), strict=True))
        ):
            if self.used_bytes >= self.budget_bytes:
                break
            if (row0, col0, s) not in self.windows:
                self.static_input(row0, col0, s)

    def patch_input(self, period: int, row0: int, col0: int) -> np.ndarray:
        """Equal to ``reader.patch_input(norm, period, row0, col0)``, static part cached."""
        s = self.reader.grid.patch_cells
        static = self.static_input(row0, col0, s)
        return self.reader.patch_input(self.norm, period, row0, col0, static=static)


class PatchDataset(Dataset):
    """Patches of one role (train / val) as tensors: ``x`` (13, nk, nk), ``target`` (n, n)
    (density %, NaN -> 0) and ``mask`` (n, n) bool (cells whose loss counts).

    cell_mask: (P, cy, cx) bool, the role's cells; positive_only keeps only cells with density
    > ``min_density`` in the mask (the density curriculum). ``cache``: a
    :class:`StaticPatchCache` of the same reader and normalisation (shared between datasets) so
    that the static pixels of a window are read once per run instead of once per epoch.
    """

    def __init__(
        self,
        reader: CubeReader,
        patches: PatchIndex,
        cell_mask: np.ndarray,
        norm: Normalisation,
        positive_only: bool = False,
        min_density: float = 0.0,
        cache: StaticPatchCache | None = None,
    ) -> None:
        self.reader = reader
        self.patches = patches
        self.cell_mask = np.asarray(cell_mask, dtype=bool)
        self.norm = norm
        self.positive_only = positive_only
        self.min_density = min_density
        self.n = reader.grid.patch_cells
        if cache is not None and (cache.reader is not reader or cache.norm is not norm):
            raise ValueError("the patch cache belongs to another reader or normalisation")
        self.cache = cache

    def __len__(self) -> int:
        return len(self.patches)

    def target_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        t, r0, c0 = (
            int(self.patches.period[i]),
            int(self.patches.row0[i]),
            int(self.patches.col0[i]),
        )
        n = self.n
        target = self.reader.target_window(t, r0, c0, n, n)
        role = read_window(self.cell_mask, r0, c0, n, n, fill=0.0, prefix=(t,)) > 0
        mask = np.isfinite(target) & role
        if self.positive_only:
            mask &= np.nan_to_num(target, nan=0.0) > self.min_density
        return np.nan_to_num(target, nan=0.0), mask

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Item ``i`` in [0, len); an index ``code * len + i`` (code in [1, 8), from
        :func:`epoch_order` with ``augment``) returns item i under :func:`dihedral_transform`."""
        code, i = divmod(int(i), len(self))
        t, r0, c0 = (
            int(self.patches.period[i]),
            int(self.patches.row0[i]),
            int(self.patches.col0[i]),
        )
        if self.cache is not None:
            x = self.cache.patch_input(t, r0, c0)
        else:
            x = self.reader.patch_input(self.norm, t, r0, c0)
        target, mask = self.target_and_mask(i)
        if code:
            x, target, mask = dihedral_transform(x, target, mask, code, self.norm)
        return {
            "x": torch.from_numpy(x),
            "target": torch.from_numpy(target.astype(np.float32)),
            "mask": torch.from_numpy(mask),
        }

    def cells_per_patch(self) -> np.ndarray:
        """(N,) int: cells whose loss counts in each patch."""
        return np.array([int(self.target_and_mask(i)[1].sum()) for i in range(len(self))])


def epoch_order(
    n_items: int,
    seed: int,
    stage: int,
    epoch: int,
    has_positive: np.ndarray | None = None,
    augment: bool = False,
) -> np.ndarray:
    """The item order of one epoch, a pure function of (seed, stage, epoch).

    Without ``has_positive``: a permutation. With it (balancing): ``n_items`` draws with
    replacement in which patches with and without landslides carry equal total weight. With
    ``augment`` each drawn item i becomes ``code * n_items + i``, code uniform in [0, 8) (its
    flip / rotation, see :meth:`PatchDataset.__getitem__`), drawn from a separate stream so the
    item order is the same with and without it. Being a pure function of the epoch makes
    resuming after a crash exact.
    """
    rng = np.random.default_rng([seed, 17, stage, epoch])
    pos = None if has_positive is None else np.asarray(has_positive, dtype=bool)
    if pos is None or pos.all() or not pos.any():
        order = rng.permutation(n_items)
    else:
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        weights = np.where(pos, 0.5 / n_pos, 0.5 / n_neg)
        order = rng.choice(n_items, size=n_items, replace=True, p=weights)
    if augment:
        codes = np.random.default_rng([seed, 23, stage, epoch]).integers(
            0, N_AUGMENTATIONS, n_items
        )
        order = order + codes * n_items
    return order


def batches_of(order: np.ndarray, batch_size: int) -> list[list[int]]:
    """Split an epoch order into batches; a final batch of one item joins the previous one
    (batch normalisation needs more than one sample)."""
    out = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2].extend(out.pop())
    return out
