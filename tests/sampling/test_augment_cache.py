"""The static patch cache equals uncached reads; flips / rotations keep the terrain consistent."""

import numpy as np
import pytest

from landslide_hazard.sampling.dataset import (
    N_AUGMENTATIONS,
    CubeReader,
    PatchDataset,
    StaticPatchCache,
    dihedral_transform,
    epoch_order,
)
from landslide_hazard.sampling.lattice import build_patch_index
from landslide_hazard.sampling.normalisation import Normalisation, compute_normalisation

NORTH, EAST = 2, 3  # northness, eastness in bands.INPUT_NAMES


def _setup(cube):
    reader = CubeReader(cube)
    label = reader.label_mask
    patches = build_patch_index(label, reader.grid.patch_cells)
    norm = compute_normalisation(reader.static, reader.dynamic, reader.monsoons, label, 4)
    return reader, label, patches, norm


def test_cache_gives_exactly_the_uncached_inputs(tiny_cube):
    reader, label, patches, norm = _setup(tiny_cube)
    plain = PatchDataset(reader, patches, label, norm)
    cache = StaticPatchCache(reader, norm, budget_bytes=10**9)
    cached = PatchDataset(reader, patches, label, norm, cache=cache)
    for _ in range(2):  # the second pass is served from the cache
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            for key in ("x", "target", "mask"):
                np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert cache.hits >= len(plain) and cache.misses == len(cache.windows)
    # windows are shared between periods: one per lattice position
    positions = {(int(r), int(c)) for r, c in zip(patches.row0, patches.col0, strict=True)}
    assert len(cache.windows) == len(positions)
    # a zero budget caches nothing and still gives the same inputs
    none = StaticPatchCache(reader, norm, budget_bytes=0)
    ds0 = PatchDataset(reader, patches, label, norm, cache=none)
    np.testing.assert_array_equal(ds0[3]["x"].numpy(), plain[3]["x"].numpy())
    assert none.windows == {} and none.used_bytes == 0
    other = compute_normalisation(reader.static, reader.dynamic, reader.monsoons, label, 4)
    with pytest.raises(ValueError, match="another reader or normalisation"):
        PatchDataset(reader, patches, label, other, cache=cache)


def _aspect_bands(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Northness and eastness of a surface (rows north -> south, columns west -> east),
    by central differences: aspect is the downslope azimuth, clockwise from north."""
    dz_drow, dz_dcol = np.gradient(z)
    down_east, down_north = -dz_dcol, dz_drow  # row index grows southwards
    length = np.hypot(down_east, down_north)
    return down_north / length, down_east / length


def _apply(a: np.ndarray, code: int) -> np.ndarray:
    if code & 4:
        a = a.T
    if code & 2:
        a = a[::-1]
    if code & 1:
        a = a[:, ::-1]
    return a


@pytest.mark.parametrize("code", range(N_AUGMENTATIONS))
def test_dihedral_transform_matches_aspect_of_the_transformed_surface(code):
    rng = np.random.default_rng(code)
    yy, xx = np.mgrid[0:16, 0:16].astype(float)
    z = 3.0 * xx + 1.7 * yy + 0.05 * (xx - 7) ** 2 - 0.08 * (yy - 9) ** 2 + 0.3 * xx * yy / 16
    north, east = _aspect_bands(z)
    x = rng.normal(size=(13, 16, 16)).astype(np.float32)
    mean = rng.normal(size=13)
    std = rng.uniform(0.5, 2.0, size=13)
    norm = Normalisation(
        names=tuple(f"b{i}" for i in range(13)),
        mean=mean,
        std=std,
        minimum=mean - 3,
        maximum=mean + 3,
        count=np.ones(13),
    )
    x[NORTH] = (north - mean[NORTH]) / std[NORTH]
    x[EAST] = (east - mean[EAST]) / std[EAST]
    target = rng.random((4, 4)).astype(np.float32)
    mask = rng.random((4, 4)) < 0.5
    tx, tt, tm = dihedral_transform(x, target, mask, code, norm)
    # the reference: the aspect bands of the flipped / rotated surface itself
    ref_north, ref_east = _aspect_bands(_apply(z, code))
    np.testing.assert_allclose(tx[NORTH] * std[NORTH] + mean[NORTH], ref_north, atol=1e-5)
    np.testing.assert_allclose(tx[EAST] * std[EAST] + mean[EAST], ref_east, atol=1e-5)
    for b in range(13):
        if b not in (NORTH, EAST):  # scalar bands just move with their pixels
            np.testing.assert_array_equal(tx[b], _apply(x[b], code))
    np.testing.assert_array_equal(tt, _apply(target, code))
    np.testing.assert_array_equal(tm, _apply(mask, code))
    assert tx.flags.c_contiguous and not np.shares_memory(tx, x)


def test_augmented_indices_and_order(tiny_cube):
    reader, label, patches, norm = _setup(tiny_cube)
    ds = PatchDataset(reader, patches, label, norm)
    n = len(ds)
    plain = epoch_order(n, 3, 0, 5)
    aug = epoch_order(n, 3, 0, 5, augment=True)
    np.testing.assert_array_equal(aug % n, plain)  # the same items in the same order
    codes = aug // n
    assert codes.min() >= 0 and codes.max() < N_AUGMENTATIONS and len(set(codes.tolist())) > 4
    np.testing.assert_array_equal(aug, epoch_order(n, 3, 0, 5, augment=True))
    i = 7
    for code in range(N_AUGMENTATIONS):
        item = ds[code * n + i]
        base = ds[i]
        ex, et, em = dihedral_transform(
            base["x"].numpy(), base["target"].numpy(), base["mask"].numpy(), code, norm
        )
        if code == 0:
            np.testing.assert_array_equal(item["x"].numpy(), base["x"].numpy())
        np.testing.assert_allclose(item["x"].numpy(), ex, atol=1e-6)
        np.testing.assert_array_equal(item["target"].numpy(), et)
        np.testing.assert_array_equal(item["mask"].numpy(), em)
    with pytest.raises(ValueError, match="augmentation code"):
        dihedral_transform(base["x"].numpy(), et, em, 8, norm)
