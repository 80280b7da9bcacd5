"""Model inputs built where the model runs: batches of patches gathered from tensors on its device.

The per-patch path (:meth:`CubeReader.patch_input`, one patch at a time in numpy, then a copy to
the device) costs a Python loop per patch and a host-to-device copy per batch. Here the static
cube (fine grid) is held on the model's device normalised once with the run's
:class:`Normalisation`, NaN -> 0, and padded by a patch of zeros, so every patch is one window
of it; the cell-grid arrays (the reader's dynamic bands, targets, valid cells, monsoon counts)
are held there too. A whole batch is then built with index arithmetic: the static windows, the
halo cells of the dynamic bands (NaN outside the grid), the bilinear bands upsampled as
:func:`upsample_cells_bilinear` does (the same weights, as batched matrix products), the
per-cell bands (the legacy) repeated over their cells as :meth:`CubeReader.dynamic_window`
does, normalisation, NaN -> 0, and the monsoon count broadcast. Training batches also get their
targets and masks (as :class:`PatchDataset`) and the flips / rotations of
:func:`dihedral_transform`. The channels follow the reader's band list
(:attr:`CubeReader.dynamic_bands`, :attr:`CubeReader.input_names`), so a new band needs no code
here.

The inputs equal the per-patch path's within float rounding: the static, per-cell and monsoon
channels exactly, the upsampled bands within a few float32 steps (the matrix products round
differently); tests compare every patch. :func:`device_inputs` decides which path a run uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..bands import STATIC_NAMES
from .dataset import _EASTNESS, _NORTHNESS, CubeReader, PatchDataset, _bilinear_weights
from .normalisation import Normalisation

DEVICE_MEMORY_FRACTION = 0.5  # of a GPU's free memory, at most, for the input tensors
# On the CPU the per-patch numpy path is at least as fast for predict and faster for training
# batches (bench_inputs, docs/performance.md "Input path"), so the batched path is a choice
# there, not the default (tests and benchmarks turn it on)
ON_CPU = False
_N_STATIC = len(STATIC_NAMES)
Indices = Sequence[int] | np.ndarray | torch.Tensor  # patches' periods, rows or columns


def _cells(starts: torch.Tensor, size: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, size) cell indices from each start, clamped into [0, limit), and whether each lies
    inside the grid (the clamped ones are replaced by NaN / False by the caller)."""
    idx = starts[:, None] + torch.arange(size, device=starts.device)
    inside = (idx >= 0) & (idx < limit)
    return idx.clamp(0, limit - 1), inside


class DeviceInputs:
    """A reader's arrays and a normalisation as tensors on ``device``; builds batches of model
    inputs there (:meth:`inputs`), equal to ``reader.patch_input(norm, ...)`` within rounding.

    Needs the reader's static cube in memory (``reader.static_in_memory``); what the tensors
    take on the device: :meth:`bytes_needed`. ``copy_per_patch``: how static windows are copied
    (:meth:`_static_into`; set from the device, tests try both)."""

    def __init__(self, reader: CubeReader, norm: Normalisation, device: torch.device | str):
        if not reader.static_in_memory:
            raise ValueError("device inputs need the reader's static cube in memory")
        self.reader, self.norm = reader, norm
        self.device = device = torch.device(device)
        grid = reader.grid
        self.k, self.n = grid.cell_pixels, grid.patch_cells
        self.cell_shape = grid.cell_shape
        cy, cx, k = *grid.cell_shape, self.k

        def put(a: np.ndarray, dtype=np.float32) -> torch.Tensor:  # small arrays: copied
            return torch.tensor(np.asarray(a, dtype=dtype), device=device)

        # normalised once, NaN -> 0, padded with a patch of zeros (what a pixel outside the grid
        # becomes) on every side: (8, H + 2nk, W + 2nk); every patch is then one window of it
        pad = self.n * k
        self.static = torch.zeros(
            (_N_STATIC, cy * k + 2 * pad, cx * k + 2 * pad), dtype=torch.float32, device=device
        )
        # device tensors, not Python scalars: CUDA divides by a CPU scalar as a product with its
        # reciprocal, which rounds differently from numpy's division
        self.mean = put(norm.mean.astype(np.float32))
        self.std = put(norm.std.astype(np.float32))
        for b in range(_N_STATIC):  # band by band: one band's temporaries at a time
            band = torch.as_tensor(np.asarray(reader.static[b], dtype=np.float32), device=device)
            inner = self.static[b, pad:-pad, pad:-pad]
            torch.div(band - self.mean[b], self.std[b], out=inner)
            torch.nan_to_num_(inner, nan=0.0, posinf=0.0, neginf=0.0)
        # (R, C, 8, nk, nk): the window of every cell position (a view, nothing copied)
        self._windows = self.static.unfold(1, pad, k).unfold(2, pad, k).permute(1, 2, 0, 3, 4)
        self.dynamic = put(reader.dynamic)  # (P, D, cy, cx)
        self.monsoons = put(np.asarray(reader.monsoons))  # (P,)
        self.target = put(reader.target)  # (P, cy, cx)
        self.valid = put(reader.valid, bool)  # (cy, cx)
        self.n_smooth = reader.n_bilinear_bands
        halo = _bilinear_weights(self.n, k)  # (nk, n + 2), as upsample_cells_bilinear
        self.wy = put(halo)
        self.wx_t = put(halo.T)
        self.n_channels = reader.n_channels
        self._full_weight = self._upsample(
            torch.ones((1, 1, self.n + 2, self.n + 2), device=device)
        )
        self.copy_per_patch = device.type == "cpu"
        self._sets: dict[int, tuple[PatchDataset, DevicePatches]] = {}

    @staticmethod
    def bytes_needed(reader: CubeReader, device: torch.device) -> int:
        """Bytes the tensors take on ``device``: the normalised, padded static cube and the
        cell-grid arrays."""
        n_px = reader.grid.patch_pixels * 2
        static = len(STATIC_NAMES) * np.prod(np.add(reader.grid.fine_shape, n_px)) * 4
        return int(static + reader.dynamic.nbytes + reader.target.nbytes + reader.valid.size)

    def _index(self, values: Indices) -> torch.Tensor:
        """Integer indices as an int64 tensor on the device."""
        if isinstance(values, torch.Tensor):  # np.asarray cannot read a GPU tensor
            return values.to(self.device, torch.int64)
        return torch.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    def inputs(self, period: Indices, row0: Indices, col0: Indices) -> torch.Tensor:
        """(B, C, nk, nk) float32 normalised inputs of the patches (period[i], row0[i], col0[i])
        (1-D integer sequences, cells; C = ``reader.n_channels``), NaN -> 0, on the device."""
        t, r0, c0 = (self._index(v) for v in (period, row0, col0))
        n, k, ns = self.n, self.k, self.n_smooth
        out = torch.empty((len(t), self.n_channels, n * k, n * k), device=self.device)
        self._static_into(out[:, :_N_STATIC], r0, c0)
        # dynamic: (B, D, n + 2, n + 2) cells with a one-cell halo, NaN outside the grid
        rows, in_r = _cells(r0 - 1, n + 2, self.cell_shape[0])
        cols, in_c = _cells(c0 - 1, n + 2, self.cell_shape[1])
        halo = self.dynamic[t[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        halo = torch.where((in_r[:, :, None] & in_c[:, None, :])[..., None], halo, torch.nan)
        halo = halo.permute(0, 3, 1, 2)
        dyn = slice(_N_STATIC, _N_STATIC + halo.shape[1])
        if ns:
            self._bilinear_into(out[:, _N_STATIC : _N_STATIC + ns], halo[:, :ns])
        if ns < halo.shape[1]:  # per-cell bands: constant over each cell
            own = halo[:, ns:, 1:-1, 1:-1, None, None].transpose(3, 4)  # (B, L, n, 1, n, 1)
            per_cell = out[:, _N_STATIC + ns : dyn.stop].unflatten(2, (n, k)).unflatten(4, (n, k))
            per_cell.copy_(own.expand(per_cell.shape))
        values = out[:, dyn]
        values.sub_(self.mean[dyn, None, None]).div_(self.std[dyn, None, None])
        torch.nan_to_num_(values, nan=0.0, posinf=0.0, neginf=0.0)
        mon = dyn.stop
        monsoon = (self.monsoons[t] - self.mean[mon]) / self.std[mon]
        out[:, mon] = torch.nan_to_num(monsoon, nan=0.0, posinf=0.0, neginf=0.0)[:, None, None]
        return out

    def _static_into(self, dest: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor) -> None:
        """Copy the patches' static windows (already normalised) into ``dest`` (B, 8, nk, nk).

        On the CPU one slice copy per patch: 5x faster than one gather of the batch there
        (contiguous rows copied while they are in cache; 0.85 vs 4.4 ms for 16 patches at
        k = 32); elsewhere one gather (one kernel instead of one per patch)."""
        if not self.copy_per_patch:
            dest.copy_(self._windows[r0 + self.n, c0 + self.n])
            return
        side = self.n * self.k
        rows = ((r0 + self.n) * self.k).tolist()
        cols = ((c0 + self.n) * self.k).tolist()
        for i, (y, x) in enumerate(zip(rows, cols, strict=True)):
            dest[i] = self.static[:, y : y + side, x : x + side]

    def _upsample(self, cells: torch.Tensor) -> torch.Tensor:
        """wy @ cells @ wx.T, as numpy computes it (rows first): (B, D, n + 2, n + 2) ->
        (B, D, nk, nk). The second product as one 2-D matrix product (a broadcast matmul is
        3-5x slower on the CPU)."""
        rows = self.wy @ cells  # (B, D, nk, n + 2): small
        side = self.wy.shape[0]
        flat = rows.reshape(-1, rows.shape[-1]) @ self.wx_t
        return flat.view(*cells.shape[:2], side, side)

    def _bilinear_into(self, dest: torch.Tensor, cells: torch.Tensor) -> None:
        """:func:`upsample_cells_bilinear` of a batch of halo windows (B, D, n + 2, n + 2) into
        ``dest`` (B, D, nk, nk). The weight of the finite cells is the same for every window
        without NaN (computed once); only windows with NaN cells get their own."""
        finite = torch.isfinite(cells)
        num = self._upsample(torch.where(finite, cells, 0.0))
        torch.div(num, self._full_weight, out=dest)
        holed = torch.nonzero(~finite.flatten(1).all(1))[:, 0]
        if len(holed):
            den = self._upsample(finite[holed].to(torch.float32))
            dest[holed] = torch.div(num[holed], den).masked_fill_(den <= 1e-6, torch.nan)

    def patches(self, ds: PatchDataset) -> DevicePatches:
        """The training batches of ``ds`` (same reader and normalisation), built here."""
        entry = self._sets.get(id(ds))
        if entry is None or entry[0] is not ds:
            entry = self._sets[id(ds)] = (ds, DevicePatches(self, ds))
        return entry[1]


class DevicePatches:
    """:class:`PatchDataset` batches built on the device: :meth:`batch` gives what a DataLoader
    over ``ds`` collates (``x``, ``target``, ``mask``), already on ``inputs.device``."""

    def __init__(self, inputs: DeviceInputs, ds: PatchDataset) -> None:
        if ds.reader is not inputs.reader or ds.norm is not inputs.norm:
            raise ValueError("the dataset belongs to another reader or normalisation")
        self.inputs, self.ds = inputs, ds
        put = inputs._index
        self.period, self.row0, self.col0 = (
            put(a) for a in (ds.patches.period, ds.patches.row0, ds.patches.col0)
        )
        self.cell_mask = torch.as_tensor(ds.cell_mask, device=inputs.device)

    def __len__(self) -> int:
        return len(self.ds)

    def batch(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, target, mask) of dataset items (``code * len + i`` under flip / rotation
        ``code``, as :meth:`PatchDataset.__getitem__`)."""
        code, i = np.divmod(np.asarray(items, dtype=np.int64), len(self))
        i_dev = self.inputs._index(i)
        t, r0, c0 = self.period[i_dev], self.row0[i_dev], self.col0[i_dev]
        x = self.inputs.inputs(t, r0, c0)
        target, mask = self._targets(t, r0, c0)
        for c in np.unique(code[code > 0]).tolist():
            sel = self.inputs._index(np.flatnonzero(code == c))
            # index_select / index_copy_: whole patches copied (the CPU's indexing is per value)
            turned = dihedral_batch(
                x.index_select(0, sel),
                target.index_select(0, sel),
                mask.index_select(0, sel),
                c,
                self.inputs,
            )
            for whole, part in zip((x, target, mask), turned, strict=True):
                whole.index_copy_(0, sel, part)
        return x, target, mask

    def _targets(self, t, r0, c0) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`PatchDataset.target_and_mask`: (B, n, n) density (NaN -> 0) and mask."""
        n, (cy, cx) = self.inputs.n, self.inputs.cell_shape
        rows, in_r = _cells(r0, n, cy)
        cols, in_c = _cells(c0, n, cx)
        r, c = rows[:, :, None], cols[:, None, :]
        inside = in_r[:, :, None] & in_c[:, None, :]
        tt = t[:, None, None]
        known = inside & self.inputs.valid[r, c]
        target = torch.where(known, self.inputs.target[tt, r, c], torch.nan)
        mask = torch.isfinite(target) & inside & self.cell_mask[tt, r, c]
        target = torch.nan_to_num(target, nan=0.0)
        if self.ds.positive_only:
            mask &= target > self.ds.min_density
        return target, mask


def dihedral_batch(
    x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, code: int, inputs: DeviceInputs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`dihedral_transform` of a batch (B, C, H, W), (B, n, n), (B, n, n): the same flip /
    rotation ``code`` of every patch, the aspect bands turned with their terrain (on the raw
    values, as there). Returns new tensors."""
    mean, std = inputs.mean, inputs.std
    north = x[:, _NORTHNESS] * std[_NORTHNESS] + mean[_NORTHNESS]
    east = x[:, _EASTNESS] * std[_EASTNESS] + mean[_EASTNESS]
    flips = [d for bit, d in ((2, -2), (1, -1)) if code & bit]

    def turn(a: torch.Tensor) -> torch.Tensor:  # one copy: transpose (a view), then the flips
        a = a.transpose(-1, -2) if code & 4 else a
        return a.flip(flips) if flips else a.contiguous()

    if code & 4:
        north, east = -east, -north
    if code & 2:
        north = -north
    if code & 1:
        east = -east
    x = turn(x)
    x[:, _NORTHNESS] = (turn(north) - mean[_NORTHNESS]) / std[_NORTHNESS]
    x[:, _EASTNESS] = (turn(east) - mean[_EASTNESS]) / std[_EASTNESS]
    return x, turn(target), turn(mask)


def device_inputs(
    reader: CubeReader, norm: Normalisation, device: torch.device | str
) -> tuple[DeviceInputs | None, str]:
    """The device inputs of ``reader`` when they are worth it and fit, else None; and a line
    saying which path builds the inputs and why (for logs).

    Used on a GPU (or on the CPU with :data:`ON_CPU`) when the reader holds its static cube in
    memory and the tensors (:meth:`DeviceInputs.bytes_needed`) fit: on a GPU at most
    :data:`DEVICE_MEMORY_FRACTION` of its free memory, on the CPU the reader's memory budget."""
    device = torch.device(device)
    numpy_path = "inputs built per patch in numpy"
    if device.type == "cpu" and not ON_CPU:
        return None, f"{numpy_path} (at least as fast on the CPU: bench_inputs)"
    if not reader.static_in_memory:
        return None, f"{numpy_path} (the static cube is read from Zarr: over the memory budget)"
    need = DeviceInputs.bytes_needed(reader, device)
    if device.type == "cuda":
        budget = int(DEVICE_MEMORY_FRACTION * torch.cuda.mem_get_info(device)[0])
    else:
        budget = reader.memory_budget_bytes
    if need > budget:
        return None, (
            f"{numpy_path} (the input tensors' {need / 2**20:,.0f} MiB exceed the "
            f"{budget / 2**20:,.0f} MiB budget on {device})"
        )
    inputs = DeviceInputs(reader, norm, device)
    return inputs, f"inputs built in batches on {device} ({need / 2**20:,.0f} MiB there)"
