"""Fill blocks inside a DEM (prepare.dem_checks): injected fill values are found with their
window; real flat terrain (flooded basins, a low plain) and the real Langtang DSM are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from landslide_hazard.predictors.static import detect_fill_value, find_nodata_collar
from landslide_hazard.prepare.dem_checks import find_fill_blocks

LANGTANG = Path("/work/shared/data/langtang/aw3d30_dsm_langtang_utm45.tif")


def _relief(shape=(96, 96), seed=0) -> np.ndarray:
    """Smooth mountain relief, 2,000-5,000 m."""
    rng = np.random.default_rng(seed)
    z = ndimage.gaussian_filter(rng.normal(size=shape), 6)
    return 2000 + 3000 * (z - z.min()) / (z.max() - z.min())


def _langtang() -> np.ndarray:
    import rasterio

    if not LANGTANG.is_file():
        pytest.skip("the Langtang DSM is not in /work/shared/data")
    with rasterio.open(LANGTANG) as ds:
        z = ds.read(1).astype(np.float64)
    fill = detect_fill_value(z)  # its undeclared 0 collar, as prepare takes it
    z[find_nodata_collar(z, fill if fill is not None else np.nan)] = np.nan
    return z


@pytest.mark.parametrize("value", [0.0, -9999.0, -32768.0])
def test_injected_fill_blocks_are_found_with_their_window(value):
    z = _relief()
    z[20:32, 40:47] = value
    z[70:75, 10:15] = value
    blocks = sorted(find_fill_blocks(z), key=lambda b: -b.pixels)
    assert [(b.value, b.pixels, b.rows, b.cols) for b in blocks] == [
        (value, 84, (20, 31), (40, 46)),
        (value, 25, (70, 74), (10, 14)),
    ]
    assert all(b.cliff_m > 1000 for b in blocks)


def test_small_runs_and_nan_are_not_blocks():
    z = _relief()
    z[10:14, 10:14] = 0.0  # 4 x 4: below the 5 x 5 minimum
    z[50:60, 50:60] = np.nan  # declared nodata: the hole check's business
    assert find_fill_blocks(z) == []


@pytest.mark.parametrize("rise", [2.0, 20.0, 80.0])
def test_lakes_are_not_fill_blocks(rise):
    """A lake: the basin around a pixel flooded to rise metres above it (gentle shores)."""
    z = _relief(seed=1)
    rng = np.random.default_rng(int(rise))
    for _ in range(10):
        r, c = rng.integers(5, 91, size=2)
        level = z[r, c] + rise
        labels, _ = ndimage.label(z <= level)
        lake = labels == labels[r, c]
        flooded = z.copy()
        flooded[lake] = level
        assert find_fill_blocks(flooded) == [], (r, c, rise, lake.sum())


def test_a_low_plain_at_sea_level_is_not_a_fill():
    """A coastal plain clamped at 0 m beside land rising a few metres: flat, no cliff."""
    z = np.tile(np.linspace(0.0, 40.0, 96), (96, 1))
    z[:, :30] = 0.0
    assert find_fill_blocks(z) == []


def test_the_real_langtang_dsm_has_no_fill_block_and_an_injected_one_is_found():
    z = _langtang()
    assert find_fill_blocks(z) == []
    z[400:420, 500:530] = 0.0
    (block,) = find_fill_blocks(z)
    assert (block.value, block.pixels, block.rows, block.cols) == (0.0, 600, (400, 419), (500, 529))
