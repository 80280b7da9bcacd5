"""Landslide inventories -> new failed area density per cell and period (the targets)."""

from .density import (
    SparseFractions,
    dense_fractions_to_cell_density,
    dissolve,
    fractions_to_cell_density,
    new_failed_density,
    new_failed_fractions,
    polygon_area_per_box,
    polygon_cell_density,
    polygon_pixel_fractions,
)
from .load import (
    InventoryError,
    check_inventory_file,
    new_failure_targets,
    read_cell_density,
    read_mapped_cells,
    read_pixel_fractions,
)

__all__ = [
    "InventoryError",
    "SparseFractions",
    "check_inventory_file",
    "dense_fractions_to_cell_density",
    "dissolve",
    "fractions_to_cell_density",
    "new_failed_density",
    "new_failed_fractions",
    "new_failure_targets",
    "polygon_area_per_box",
    "polygon_cell_density",
    "polygon_pixel_fractions",
    "read_cell_density",
    "read_mapped_cells",
    "read_pixel_fractions",
]
