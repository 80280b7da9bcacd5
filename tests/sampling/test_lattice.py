import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from landslide_hazard.sampling.lattice import (
    build_patch_index,
    lattice_origins,
    lattice_starts,
    patch_all_within,
    patch_cells_mask,
    read_window,
    tile_cells,
    untile_cells,
)


@settings(max_examples=40, deadline=None)
@given(
    cy=st.integers(1, 23),
    cx=st.integers(1, 23),
    half=st.integers(1, 4),
    lattice=st.sampled_from([0, 1]),
)
def test_every_cell_covered_exactly_once_per_lattice(cy, cx, half, lattice):
    n = 2 * half
    cover = np.zeros((cy, cx), dtype=int)
    for r0, c0 in lattice_origins((cy, cx), n, lattice):
        cover[max(r0, 0) : r0 + n, max(c0, 0) : c0 + n] += 1
    assert (cover == 1).all()
    # every patch touches the grid (none is pure padding)
    for r0, c0 in lattice_origins((cy, cx), n, lattice):
        assert r0 + n > 0 and r0 < cy and c0 + n > 0 and c0 < cx


@pytest.mark.parametrize("n", [2, 4, 6])
def test_lattice1_shifted_half_patch_east_and_south(n):
    s0 = lattice_starts(20, n, 0)
    s1 = lattice_starts(20, n, 1)
    assert s0[0] == 0 and s1[0] == -(n // 2)
    # every lattice-1 boundary sits exactly n/2 cells after a lattice-0 boundary
    assert set((s1 + n).tolist()) & set(range(20)) <= set((s0 + n // 2).tolist())
    o0 = lattice_origins((20, 20), n, 0)
    o1 = lattice_origins((20, 20), n, 1)
    assert np.all(o1 % n == n // 2) and np.all(o0 % n == 0)


@pytest.mark.parametrize("lattice", [0, 1])
def test_tile_untile_roundtrip_and_layout(lattice):
    rng = np.random.default_rng(1)
    a = rng.random((3, 7, 9))
    tiles = tile_cells(a, 4, lattice)
    origins = lattice_origins((7, 9), 4, lattice)
    r, c = tiles.shape[1:3]
    assert r * c == len(origins)
    for idx, (r0, c0) in enumerate(origins):
        ref = read_window(a, r0, c0, 4, 4)
        np.testing.assert_array_equal(tiles[:, idx // c, idx % c].astype("float32"), ref)
    np.testing.assert_array_equal(untile_cells(tiles, (7, 9), lattice), a)


def test_read_window_pads_like_numpy():
    a = np.arange(30, dtype="float32").reshape(5, 6)
    padded = np.pad(a, 3, constant_values=np.nan)
    for r0, c0 in [(-3, -3), (-1, 2), (3, 4), (0, 0), (4, -2)]:
        got = read_window(a, r0, c0, 4, 5)
        np.testing.assert_array_equal(got, padded[r0 + 3 : r0 + 7, c0 + 3 : c0 + 8])
    b = np.stack([a, a + 100])
    np.testing.assert_array_equal(
        read_window(b, -1, -1, 3, 3, prefix=(1,)), read_window(a + 100, -1, -1, 3, 3)
    )


def test_patch_index_skips_empty_and_keeps_edges():
    label = np.zeros((2, 6, 6), dtype=bool)
    label[0, 5, 5] = True  # only the bottom-right corner cell in period 0
    idx = build_patch_index(label, 4)
    got = sorted(
        zip(
            idx.lattice.tolist(),
            idx.row0.tolist(),
            idx.col0.tolist(),
            idx.period.tolist(),
            strict=True,
        )
    )
    # lattice 0: the padded edge patch at (4, 4); lattice 1: the patch at (2, 2)
    assert got == [(0, 4, 4, 0), (1, 2, 2, 0)]
    mask = patch_cells_mask(idx, label.shape, 4)
    assert mask[0, 5, 5] and mask[0, 2:6, 2:6].all() and not mask[1].any()


def test_patch_all_within():
    label = np.ones((1, 8, 8), dtype=bool)
    region = np.zeros((8, 8), dtype=bool)
    region[:, :4] = True
    idx = build_patch_index(label, 4)
    inside = patch_all_within(label, region, idx, 4)
    for i in range(len(idx)):
        c0 = idx.col0[i]
        cols = range(max(c0, 0), min(c0 + 4, 8))
        assert inside[i] == all(c < 4 for c in cols)
