"""Sampling: patch lattices, validation splits, normalisation, the lazy patch Dataset and the
inputs built in batches on the model's device."""

from .dataset import (
    CubeReader,
    PatchDataset,
    batches_of,
    epoch_order,
    upsample_cells_bilinear,
)
from .device import DeviceInputs, DevicePatches, device_inputs
from .lattice import (
    LATTICES,
    PatchIndex,
    build_patch_index,
    lattice_offset,
    lattice_origins,
    lattice_starts,
    patch_cells_mask,
    read_window,
    tile_cells,
    untile_cells,
)
from .normalisation import Normalisation, compute_normalisation
from .splits import PROTOCOLS, Split, assign_block_folds, buffer_around, make_split

__all__ = [
    "LATTICES",
    "PROTOCOLS",
    "CubeReader",
    "DeviceInputs",
    "DevicePatches",
    "Normalisation",
    "PatchDataset",
    "PatchIndex",
    "Split",
    "assign_block_folds",
    "batches_of",
    "buffer_around",
    "build_patch_index",
    "compute_normalisation",
    "device_inputs",
    "epoch_order",
    "lattice_offset",
    "lattice_origins",
    "lattice_starts",
    "make_split",
    "patch_cells_mask",
    "read_window",
    "tile_cells",
    "untile_cells",
    "upsample_cells_bilinear",
]
