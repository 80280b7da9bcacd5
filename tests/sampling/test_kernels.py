"""The compiled input assembly against the numpy reference and a float64 computation."""

from typing import NamedTuple

import numpy as np
import pytest

from landslide_hazard.sampling.dataset import CubeReader, upsample_cells_bilinear
from landslide_hazard.sampling.kernels import dynamic_into
from landslide_hazard.sampling.lattice import build_patch_index, read_window
from landslide_hazard.sampling.normalisation import compute_normalisation

# float32 values of order 1-10 after normalisation: a few units in the last place
RTOL, ATOL = 1e-6, 1e-6


class Case(NamedTuple):
    """One patch of one period's cell-grid bands, and how to build its input."""

    cells: np.ndarray  # (D, cy, cx)
    row0: int
    col0: int
    size: int
    k: int
    mean: np.ndarray
    std: np.ndarray
    n_smooth: int


def _reference(case: Case) -> np.ndarray:
    """What patch_input computed before the kernel: the numpy upsampling (bilinear for the
    first ``n_smooth`` bands, repeated cells for the rest), normalised, NaN -> 0."""
    cells, row0, col0, size, k, mean, std, n_smooth = case
    cells = read_window(cells, row0 - 1, col0 - 1, size + 2, size + 2)
    smooth = upsample_cells_bilinear(cells[:n_smooth], k)
    per_cell = np.repeat(np.repeat(cells[n_smooth:, 1:-1, 1:-1], k, axis=-2), k, axis=-1)
    raw = np.concatenate([smooth, per_cell])
    out = (raw - mean[:, None, None]) / std[:, None, None]
    return np.where(np.isfinite(out), out, np.float32(0.0))


def _float64(case: Case) -> np.ndarray:
    """The same field from its definition, in float64, without the package's weights: each
    fine pixel's bilinear weights of its four nearest cell centres, renormalised over the
    finite ones."""
    cells, row0, col0, size, k, mean, std, n_smooth = case
    cells = read_window(cells, row0 - 1, col0 - 1, size + 2, size + 2).astype(np.float64)
    u = (np.arange(size * k) + 0.5) / k + 0.5  # pixel centres in halo-window cell units
    lo = np.floor(u).astype(int)
    frac = u - lo
    out = np.zeros((cells.shape[0], size * k, size * k))
    for b in range(cells.shape[0]):
        for p in range(size * k):
            for q in range(size * k):
                if b >= n_smooth:
                    value = cells[b, p // k + 1, q // k + 1]
                else:
                    num = den = 0.0
                    for dy, wy in ((0, 1 - frac[p]), (1, frac[p])):
                        for dx, wx in ((0, 1 - frac[q]), (1, frac[q])):
                            c = cells[b, lo[p] + dy, lo[q] + dx]
                            if np.isfinite(c):
                                num += wy * wx * c
                                den += wy * wx
                    value = num / den if den > 1e-6 else np.nan
                value = (value - mean[b]) / std[b]
                out[b, p, q] = value if np.isfinite(value) else 0.0
    return out


def _kernel(case: Case) -> np.ndarray:
    stats = np.stack([case.mean, case.std]).astype(np.float32)
    out = np.full(
        (case.cells.shape[0] + 2, case.size * case.k, case.size * case.k), 7.0, np.float32
    )
    dynamic_into(
        case.cells, case.row0, case.col0, case.size, case.k, stats, case.n_smooth, out[1:-1]
    )
    assert (out[0] == 7.0).all() and (out[-1] == 7.0).all()  # nothing written outside its view
    return out[1:-1]


@pytest.fixture
def bands():
    rng = np.random.default_rng(3)
    dynamic = rng.gamma(2.0, 30.0, size=(2, 5, 7, 8)).astype(np.float32)
    dynamic[0, 1, 3, 4] = np.nan  # a masked cell inside the grid
    dynamic[1, :, 0, 0] = np.nan
    dynamic[1, 4, 2, 5] = np.inf
    mean = np.array([60.0, 55.0, 61.0, 0.5, 58.0], dtype=np.float32)
    std = np.array([42.0, 40.0, 44.0, 0.3, 41.0], dtype=np.float32)
    return dynamic, mean, std


@pytest.mark.parametrize("row0, col0", [(2, 2), (0, 0), (-2, 6), (5, -1), (3, 4), (-3, -3)])
@pytest.mark.parametrize("period", [0, 1])
def test_kernel_equals_the_numpy_reference_and_float64(bands, row0, col0, period):
    dynamic, mean, std = bands
    # 3 bilinear bands, 2 per-cell ones; 3 x 3 cells of 5 x 5 px
    case = Case(dynamic[period], row0, col0, 3, 5, mean, std, n_smooth=3)
    got = _kernel(case)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _reference(case), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, _float64(case), rtol=RTOL, atol=ATOL)


def test_kernel_reproduces_a_linear_field_exactly_inside():
    """Bilinear interpolation of cell values that are linear in the cell position gives the
    same linear function of the fine-pixel position, away from the grid edge."""
    k, size = 8, 4
    r, c = np.meshgrid(np.arange(10), np.arange(9), indexing="ij")
    cells = (2.0 * r - 3.0 * c + 1.0).astype(np.float32)[None]
    zero, one = np.zeros(1, np.float32), np.ones(1, np.float32)
    got = _kernel(Case(cells, 3, 2, size, k, zero, one, n_smooth=1))
    y = 3 + (np.arange(size * k) + 0.5) / k - 0.5  # cell-centre units of the whole grid
    x = 2 + (np.arange(size * k) + 0.5) / k - 0.5
    np.testing.assert_allclose(got[0], 2.0 * y[:, None] - 3.0 * x[None, :] + 1.0, atol=1e-5)


def test_patch_input_equals_the_reference_on_every_patch(tmp_path):
    from landslide_hazard.testing import make_cube

    cube = make_cube(tmp_path / "cube.zarr", shape_cells=(10, 12), k=4, n=4, n_periods=3)
    dynamic = np.asarray(cube.dynamic[:], dtype=np.float32).copy()
    dynamic[1, 2, 4, 5] = np.nan  # a what-if layer with a hole: the NaN-aware route
    reader = CubeReader(cube, dynamic=dynamic)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, 4
    )
    dyn = reader._dynamic_slice
    index = build_patch_index(reader.label_mask, 4)
    assert len(index) > 20
    for i in range(len(index)):
        t, r0, c0 = int(index.period[i]), int(index.row0[i]), int(index.col0[i])
        x = reader.patch_input(norm, t, r0, c0)
        mean, std = norm.mean[dyn].astype(np.float32), norm.std[dyn].astype(np.float32)
        want = _reference(Case(reader.dynamic[t], r0, c0, 4, 4, mean, std, reader.n_bilinear_bands))
        np.testing.assert_allclose(x[dyn], want, rtol=RTOL, atol=ATOL)
        assert np.isfinite(x).all()
