import numpy as np
import pytest
import torch
from scipy import ndimage

from landslide_hazard.bands import INPUT_NAMES
from landslide_hazard.sampling.dataset import (
    CubeReader,
    PatchDataset,
    batches_of,
    epoch_order,
    upsample_cells_bilinear,
)
from landslide_hazard.sampling.lattice import build_patch_index, read_window
from landslide_hazard.sampling.normalisation import Normalisation, compute_normalisation


def _full_upsample_reference(cells, k):
    """scipy's linear interpolation at the fine-pixel centres, edges extended (mode=nearest)."""
    cy, cx = cells.shape
    u = (np.arange(cy * k) + 0.5) / k - 0.5
    v = (np.arange(cx * k) + 0.5) / k - 0.5
    uu, vv = np.meshgrid(u, v, indexing="ij")
    return ndimage.map_coordinates(cells.astype("float64"), [uu, vv], order=1, mode="nearest")


def test_upsample_matches_scipy_and_is_seamless():
    rng = np.random.default_rng(0)
    cells = rng.random((7, 9)).astype("float32")
    k = 4
    ref = _full_upsample_reference(cells, k)
    whole = upsample_cells_bilinear(read_window(cells, -1, -1, 9, 11)[None], k)[0]
    np.testing.assert_allclose(whole, ref, atol=1e-5)
    # windows read one by one (halo of one cell) reproduce the global field exactly
    for r0, c0 in [(-2, -2), (0, 3), (4, 6), (5, 7)]:
        win = upsample_cells_bilinear(read_window(cells, r0 - 1, c0 - 1, 6, 6)[None], k)[0]
        ref_win = read_window(np.pad(whole, 0), r0 * k, c0 * k, 4 * k, 4 * k)
        inside = np.isfinite(ref_win)
        np.testing.assert_allclose(win[inside], ref_win[inside], atol=1e-6)


def test_upsample_linear_field_exact_and_nan_aware():
    k = 8
    r, c = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    cells = (2.0 * r - 3.0 * c + 1.0).astype("float32")
    out = upsample_cells_bilinear(read_window(cells, -1, -1, 8, 7)[None], k)[0]
    y = (np.arange(6 * k) + 0.5) / k - 0.5
    x = (np.arange(5 * k) + 0.5) / k - 0.5
    exact = 2.0 * y[:, None] - 3.0 * x[None, :] + 1.0
    inner = (slice(k // 2, -k // 2), slice(k // 2, -k // 2))
    np.testing.assert_allclose(out[inner], exact[inner], atol=1e-4)
    holed = cells.copy()
    holed[2, 2] = np.nan
    out2 = upsample_cells_bilinear(read_window(holed, -1, -1, 8, 7)[None], k)[0]
    assert np.isfinite(out2).all()  # a NaN cell is filled from its neighbours' weights


def test_upsample_of_a_finite_window_equals_the_nan_aware_sum_bit_for_bit():
    """A window whose cells are all finite takes the cached weight sum: the same float32
    values as the NaN-aware route, which a single NaN far off switches on for the copy."""
    rng = np.random.default_rng(4)
    cells = rng.normal(size=(3, 6, 6)).astype("float32")
    k = 8
    fast = upsample_cells_bilinear(cells, k)
    with_nan = np.concatenate([cells, np.full((1, 6, 6), np.nan, dtype="float32")])
    slow = upsample_cells_bilinear(with_nan, k)[:3]  # the NaN channel forces the general route
    np.testing.assert_array_equal(fast, slow)


def test_normalisation_uses_training_cells_only(tiny_cube):
    reader = CubeReader(tiny_cube)
    k = reader.grid.cell_pixels
    train = np.zeros(reader.target.shape, dtype=bool)
    train[1, 4:8, 4:10] = True
    train[2, 6:9, 2:5] = True
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, train, k, rows_per_read=3
    )
    cells_any = train.any(axis=0)
    pix = np.repeat(np.repeat(cells_any, k, 0), k, 1)
    for b in range(8):
        vals = reader.static[b][pix]
        assert norm.mean[b] == pytest.approx(np.nanmean(vals), rel=1e-6)
        assert norm.std[b] == pytest.approx(np.nanstd(vals), rel=1e-5)
    t, r, c = np.nonzero(train)
    for b in range(4):
        vals = reader.dynamic[t, b, r, c]
        assert norm.mean[8 + b] == pytest.approx(vals.mean(), rel=1e-6)
        assert norm.maximum[8 + b] == pytest.approx(vals.max())
    assert norm.mean[12] == pytest.approx(reader.monsoons[t].mean())
    # values outside the training cells do not move the statistics
    static2 = reader.static.copy()
    static2[:, ~pix] = 1e6
    dyn2 = reader.dynamic.copy()
    dyn2[0] = 1e6
    norm2 = compute_normalisation(static2, dyn2, reader.monsoons, train, k)
    np.testing.assert_allclose(norm2.mean, norm.mean, rtol=1e-9)
    np.testing.assert_allclose(norm2.std, norm.std, rtol=1e-9)
    assert norm.names == INPUT_NAMES
    np.testing.assert_allclose(Normalisation.from_dict(norm.to_dict()).std, norm.std)


def test_patch_dataset_items(tiny_cube):
    reader = CubeReader(tiny_cube)
    label = reader.label_mask
    patches = build_patch_index(label, 4)
    norm = compute_normalisation(reader.static, reader.dynamic, reader.monsoons, label, 4)
    ds = PatchDataset(reader, patches, label, norm)
    # the patch at the padded top-left of lattice 1 in period 0
    i = int(
        np.flatnonzero(
            (patches.lattice == 1)
            & (patches.row0 == -2)
            & (patches.col0 == 2)
            & (patches.period == 0)
        )[0]
    )
    item = ds[i]
    assert item["x"].shape == (13, 16, 16) and item["x"].dtype == torch.float32
    assert torch.isfinite(item["x"]).all()
    x = item["x"].numpy()
    # padding rows (above the grid) and the masked corner hold 0 in static channels
    assert (x[:8, :8, :] == 0).all()
    raw = reader.static_window(-2, 2, 4, 4)
    expected = (raw - norm.mean[:8, None, None]) / norm.std[:8, None, None]
    np.testing.assert_allclose(x[:8], np.nan_to_num(expected), atol=1e-5)
    # the monsoon channel is the normalised constant of the period
    np.testing.assert_allclose(x[12], (0 - norm.mean[12]) / norm.std[12], atol=1e-6)
    target = read_window(reader.target[0], -2, 2, 4, 4)
    np.testing.assert_array_equal(item["mask"].numpy(), np.isfinite(target))
    np.testing.assert_allclose(item["target"].numpy(), np.nan_to_num(target))
    # positive-only masks keep the positive cells only
    dpos = PatchDataset(reader, patches, label, norm, positive_only=True)
    assert (dpos[i]["target"][dpos[i]["mask"]] > 0).all()


def test_zarr_windows_equal_memory(tiny_cube):
    mem = CubeReader(tiny_cube)
    lazy = CubeReader(tiny_cube, memory_budget_bytes=0)
    assert mem.static_in_memory and not lazy.static_in_memory
    norm = compute_normalisation(mem.static, mem.dynamic, mem.monsoons, mem.label_mask, 4)
    for args in [(0, -2, -2), (1, 0, 0), (3, 8, 10), (2, 6, 6)]:
        np.testing.assert_array_equal(mem.patch_input(norm, *args), lazy.patch_input(norm, *args))


def test_epoch_order_and_batches():
    a = epoch_order(10, 0, 1, 2)
    np.testing.assert_array_equal(a, epoch_order(10, 0, 1, 2))
    assert sorted(a.tolist()) == list(range(10))
    assert not np.array_equal(a, epoch_order(10, 0, 1, 3))
    pos = np.zeros(1000, dtype=bool)
    pos[:50] = True
    draws = epoch_order(1000, 0, 0, 0, has_positive=pos)
    assert 0.4 < pos[draws].mean() < 0.6  # balanced: about half the draws hold landslides
    assert batches_of(np.arange(33), 16) == [list(range(16)), list(range(16, 33))]
    assert [len(b) for b in batches_of(np.arange(20), 16)] == [16, 4]
