"""Fill values inside a DEM: constant blocks with cliffs at their edges.

A DEM export or mosaic can leave undeclared fill values (0, -9999, -32768 ...) inside the grid,
not only in the collar at its edges. Read as elevations they make cliffs of hundreds or
thousands of metres, and every terrain band around them is wrong. Real flat terrain (lakes,
valley floors, plains, a DEM clamped at sea level) is constant too, so a block is taken as a
fill only when it is both

- large: at least :data:`FILL_BLOCK_MIN_CORE` pixels whose whole 3 x 3 window holds the same
  value (a 5 x 5 block at the least), and
- walled: the median step from the block to the pixels around it exceeds
  :data:`FILL_CLIFF_MIN_M` and :data:`FILL_CLIFF_FACTOR` times the DEM's own 99th percentile
  step between neighbours (a lake's shore rises a few metres; a fill's wall is the whole
  elevation).

Pixels already NaN (declared nodata, the collar) are not looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Pixels whose 3 x 3 window is constant that a block needs (a 5 x 5 block has 9).
FILL_BLOCK_MIN_CORE = 9
#: A wall lower than this (m) is never a fill's (terrain steps of 30 m pixels reach ~50 m).
FILL_CLIFF_MIN_M = 100.0
#: ... and it must exceed this many times the DEM's 99th percentile neighbour step.
FILL_CLIFF_FACTOR = 3.0


@dataclass(frozen=True)
class FillBlock:
    """A constant block with a cliff at its edge: its value, size and window (fine pixels)."""

    value: float
    pixels: int
    rows: tuple[int, int]  # first, last (inclusive)
    cols: tuple[int, int]
    cliff_m: float  # median step from the block to its surrounding pixels


def _neighbour_steps(z: np.ndarray) -> np.ndarray:
    """Absolute elevation steps between 4-neighbours, both finite."""
    steps = [np.abs(np.diff(z, axis=0)).ravel(), np.abs(np.diff(z, axis=1)).ravel()]
    s = np.concatenate(steps)
    return s[np.isfinite(s)]


def find_fill_blocks(dem: np.ndarray) -> list[FillBlock]:
    """Constant blocks of ``dem`` (NaN = nodata) that are large and walled by cliffs."""
    from scipy import ndimage

    z = np.asarray(dem, dtype=np.float64)
    finite = np.isfinite(z)
    if finite.sum() < 25:
        return []
    hi = ndimage.maximum_filter(np.where(finite, z, -np.inf), size=3, mode="nearest")
    lo = ndimage.minimum_filter(np.where(finite, z, np.inf), size=3, mode="nearest")
    core = finite & (hi == lo)
    if core.sum() < FILL_BLOCK_MIN_CORE:
        return []
    # Two 8-adjacent core pixels lie in each other's constant window: one value per component.
    labels, n = ndimage.label(core, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.nonzero(sizes >= FILL_BLOCK_MIN_CORE)[0]
    big = big[big > 0]
    if big.size == 0:
        return []
    steps = _neighbour_steps(z)
    typical = float(np.percentile(steps, 99)) if steps.size else 0.0
    threshold = max(FILL_CLIFF_MIN_M, FILL_CLIFF_FACTOR * typical)
    slices = ndimage.find_objects(labels)
    blocks: list[FillBlock] = []
    for label in big:
        sl = slices[label - 1]
        r0, r1 = max(sl[0].start - 2, 0), min(sl[0].stop + 2, z.shape[0])
        c0, c1 = max(sl[1].start - 2, 0), min(sl[1].stop + 2, z.shape[1])
        window = z[r0:r1, c0:c1]
        own_core = labels[r0:r1, c0:c1] == label
        value = float(window[own_core][0])
        block = ndimage.binary_dilation(own_core, structure=np.ones((3, 3), dtype=bool))
        ring = ndimage.binary_dilation(block) & ~block & np.isfinite(window)
        if not ring.any():
            continue
        cliff = float(np.median(np.abs(window[ring] - value)))
        if cliff <= threshold:
            continue
        rows, cols = np.nonzero(block)
        blocks.append(
            FillBlock(
                value=value,
                pixels=int(block.sum()),
                rows=(r0 + int(rows.min()), r0 + int(rows.max())),
                cols=(c0 + int(cols.min()), c0 + int(cols.max())),
                cliff_m=cliff,
            )
        )
    return blocks
