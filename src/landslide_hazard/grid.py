"""Study-grid geometry: the fine predictor grid, the cell grid (mapping units) and patches.

Both grids share one origin (the upper-left corner) and one projected CRS in metres. A cell is
``k x k`` fine pixels, a patch ``n x n`` cells. Lattice 0 starts at the origin; lattice 1 is
shifted ``n // 2`` cells east and south (DESIGN.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from affine import Affine

from .errors import InputError


@dataclass(frozen=True)
class StudyGrid:
    """Geometry of a study region.

    crs: any string rasterio.crs.CRS understands (``EPSG:32645`` or WKT).
    x_min, y_max: upper-left corner in CRS units (m).
    pixel_size_m: fine pixel size p; cell_pixels: k; n_cell_rows / n_cell_cols: cell-grid shape;
    patch_cells: n.
    """

    crs: str
    x_min: float
    y_max: float
    pixel_size_m: float
    cell_pixels: int
    n_cell_rows: int
    n_cell_cols: int
    patch_cells: int = 4

    def __post_init__(self) -> None:
        if self.pixel_size_m <= 0:
            raise InputError(f"pixel_size_m must be > 0, got {self.pixel_size_m}")
        if self.cell_pixels < 1 or self.patch_cells < 1:
            raise InputError("cell_pixels (k) and patch_cells (n) must be >= 1")
        if self.n_cell_rows < 1 or self.n_cell_cols < 1:
            raise InputError("the cell grid needs at least one row and one column")

    @property
    def cell_size_m(self) -> float:
        return self.pixel_size_m * self.cell_pixels

    @property
    def cell_area_m2(self) -> float:
        return self.cell_size_m**2

    @property
    def fine_shape(self) -> tuple[int, int]:
        return (self.n_cell_rows * self.cell_pixels, self.n_cell_cols * self.cell_pixels)

    @property
    def cell_shape(self) -> tuple[int, int]:
        return (self.n_cell_rows, self.n_cell_cols)

    @property
    def fine_transform(self) -> Affine:
        return Affine(self.pixel_size_m, 0.0, self.x_min, 0.0, -self.pixel_size_m, self.y_max)

    @property
    def cell_transform(self) -> Affine:
        return Affine(self.cell_size_m, 0.0, self.x_min, 0.0, -self.cell_size_m, self.y_max)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) in CRS units."""
        return (
            self.x_min,
            self.y_max - self.n_cell_rows * self.cell_size_m,
            self.x_min + self.n_cell_cols * self.cell_size_m,
            self.y_max,
        )

    @property
    def patch_pixels(self) -> int:
        return self.patch_cells * self.cell_pixels

    @property
    def lattice_offsets_cells(self) -> tuple[int, int]:
        """Row/column offset (cells) of lattice 0 and lattice 1 (the same in both axes)."""
        return (0, self.patch_cells // 2)

    def to_dict(self) -> dict:
        return {
            "crs": self.crs,
            "x_min": self.x_min,
            "y_max": self.y_max,
            "pixel_size_m": self.pixel_size_m,
            "cell_pixels": self.cell_pixels,
            "n_cell_rows": self.n_cell_rows,
            "n_cell_cols": self.n_cell_cols,
            "patch_cells": self.patch_cells,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StudyGrid:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})
