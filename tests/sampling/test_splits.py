import numpy as np
import pytest
from scipy import ndimage

from landslide_hazard.sampling.lattice import read_window
from landslide_hazard.sampling.splits import (
    Split,
    SplitSettings,
    assign_block_folds,
    buffer_around,
    make_split,
)


def _targets(shape=(4, 24, 28), seed=0):
    rng = np.random.default_rng(seed)
    t = np.where(rng.random(shape) < 0.3, rng.exponential(1.0, shape), 0.0)
    t[:, :3, :5] = np.nan
    valid = np.ones(shape[1:], dtype=bool)
    valid[-2:, -2:] = False
    return t, valid


def _make(t, valid, protocol, **kw):
    """make_split with the grid and the settings given as keywords together."""
    grid = {key: kw.pop(key) for key in ("patch_cells", "cell_size_m")}
    return make_split(t, valid, SplitSettings(protocol, **kw), **grid)


KW = dict(patch_cells=4, cell_size_m=1000.0, block_km=6.0, n_folds=3, val_fraction=0.3, seed=7)


def _labelled_cells_of(split: Split, label, which):
    patches = split.train_patches if which == "train" else split.val_patches
    out = []
    for lat, r0, c0, t in patches.as_array():
        del lat
        m = read_window(label[t].astype("float32"), r0, c0, 4, 4, fill=0.0) > 0
        out.append((t, r0, c0, m))
    return out


@pytest.mark.parametrize("protocol", ["spatial", "temporal", "spacetime"])
def test_no_leakage_between_roles(protocol):
    t, valid = _targets()
    label = np.isfinite(t) & valid[None]
    s = _make(t, valid, protocol, test_fold=1, **KW)
    assert not s.leaky
    assert not (s.train_cells & s.test_cells).any()
    assert not (s.val_cells & s.test_cells).any()
    assert not (s.train_cells & s.val_cells).any()
    assert s.test_cells.any() and s.train_cells.any() and s.val_cells.any()
    for period, r0, c0, m in _labelled_cells_of(s, label, "train"):
        window = read_window(s.train_cells[period].astype("float32"), r0, c0, 4, 4, fill=0.0) > 0
        # every labelled cell of a training patch is a training cell of that period
        assert (window[m]).all()
    for period, r0, c0, m in _labelled_cells_of(s, label, "val"):
        val = read_window(s.val_cells[period].astype("float32"), r0, c0, 4, 4, fill=0.0) > 0
        # a validation patch scores validation cells and holds no test cell
        assert val[m].any()
        test = read_window(s.test_cells[period].astype("float32"), r0, c0, 4, 4, fill=0.0) > 0
        assert not test.any()
    assert not (s.test_cells & ~label).any()


@pytest.mark.parametrize("protocol", ["spatial", "spacetime"])
def test_buffer_respected(protocol):
    t, valid = _targets()
    s = _make(t, valid, protocol, test_fold=0, buffer_cells=2, **{**KW, "n_folds": 3})
    test_region = s.fold_map == 0
    # Chebyshev distance from every cell to the nearest test-region cell
    dist = ndimage.distance_transform_cdt(~test_region, metric="chessboard")
    for cells in (s.train_cells, s.val_cells):
        used = cells.any(axis=0)
        assert used.any()
        assert dist[used].min() > 2
    # and every patch that trains holds no test or buffer cell at all among its labelled cells
    assert not (s.train_cells.any(axis=0) & (s.buffer | test_region)).any()


@pytest.mark.parametrize(("protocol", "ring"), [("spatial", 2), ("spacetime", 1), ("spatial", 0)])
def test_validation_blocks_keep_their_distance_from_training_cells(protocol, ring):
    t, valid = _targets(shape=(4, 36, 36))
    kw = {**KW, "n_folds": 3}
    s = _make(t, valid, protocol, test_fold=0, val_buffer_cells=ring, **kw)
    val = s.val_cells.any(axis=0)
    dist = ndimage.distance_transform_cdt(~val, metric="chessboard")
    assert val.any() and s.train_cells.any()
    assert dist[s.train_cells.any(axis=0)].min() > ring
    default = _make(t, valid, protocol, test_fold=0, **kw)  # half a patch side: 2 cells
    assert dist[default.train_cells.any(axis=0)].min() > 2
    if ring:
        loose = _make(t, valid, protocol, test_fold=0, val_buffer_cells=0, **kw)
        assert s.train_cells.sum() < loose.train_cells.sum()


def test_temporal_validation_has_no_ring():
    t, valid = _targets()
    a = _make(t, valid, "temporal", val_buffer_cells=0, **KW)
    b = _make(t, valid, "temporal", val_buffer_cells=3, **KW)
    np.testing.assert_array_equal(a.train_cells, b.train_cells)


def test_temporal_and_spacetime_periods():
    t, valid = _targets(shape=(5, 24, 28))
    s = _make(t, valid, "temporal", temporal_test_periods=2, **KW)
    assert s.test_cells[:3].sum() == 0 and s.test_cells[3:].sum() > 0
    assert s.train_cells[3:].sum() == 0 and s.val_cells[3:].sum() == 0
    label = np.isfinite(t) & valid[None]
    np.testing.assert_array_equal(s.test_cells[3:], label[3:])
    st = _make(t, valid, "spacetime", test_fold=2, temporal_test_periods=2, **KW)
    assert st.test_cells[:3].sum() == 0
    np.testing.assert_array_equal(st.test_cells[3:], label[3:] & (st.fold_map == 2)[None])
    assert not st.train_cells[:, st.fold_map == 2].any()
    assert st.train_cells[3:].sum() == 0


def test_splits_deterministic_and_seed_dependent(tmp_path):
    t, valid = _targets()
    for protocol in ("paper", "spatial", "temporal", "spacetime"):
        a = _make(t, valid, protocol, **KW)
        b = _make(t, valid, protocol, **KW)
        for name in ("train_cells", "val_cells", "test_cells", "fold_map"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.train_patches.as_array(), b.train_patches.as_array())
        a.save(tmp_path / f"{protocol}.npz")
        c = Split.load(tmp_path / f"{protocol}.npz")
        np.testing.assert_array_equal(c.test_cells, a.test_cells)
        np.testing.assert_array_equal(c.val_patches.as_array(), a.val_patches.as_array())
        assert c.protocol == protocol and c.leaky == a.leaky
    other = _make(t, valid, "spatial", **{**KW, "seed": 8})
    assert not np.array_equal(other.fold_map, _make(t, valid, "spatial", **KW).fold_map)


def test_paper_protocol_is_random_70_30_and_leaky():
    t, valid = _targets()
    s = _make(t, valid, "paper", **KW)
    assert s.leaky
    n_train, n_val = len(s.train_patches), len(s.val_patches)
    from landslide_hazard.sampling.lattice import build_patch_index

    n_all = len(build_patch_index(np.isfinite(t) & valid[None], 4))
    assert n_train + n_val == n_all - round(0.3 * n_all)
    assert abs(n_val - 0.3 * (n_train + n_val)) <= 1
    # both lattices are used, and the shifted lattice makes test cells also training cells
    assert set(np.unique(s.train_patches.lattice)) == {0, 1}
    assert (s.train_cells & s.test_cells).any()
    assert not (s.val_cells & s.test_cells).any() and s.val_cells.any()


def test_block_folds_and_buffer_helpers():
    valid = np.ones((10, 10), dtype=bool)
    folds = assign_block_folds(valid, 5, 2, seed=0)
    # 4 blocks of 5x5 dealt round robin: 2 blocks per fold, constant inside a block
    assert sorted(np.unique(folds, return_counts=True)[1].tolist()) == [50, 50]
    for r in (0, 5):
        for c in (0, 5):
            assert np.unique(folds[r : r + 5, c : c + 5]).size == 1
    region = np.zeros((7, 7), dtype=bool)
    region[3, 3] = True
    buf = buffer_around(region, 1)
    assert buf.sum() == 8 and not buf[3, 3]
    with pytest.raises(ValueError, match="fewer than"):
        assign_block_folds(valid, 10, 2, seed=0)
