"""Inputs built in batches on the model's device equal the per-patch numpy path's."""

import numpy as np
import pytest
import torch

from landslide_hazard.bands import DYNAMIC_NAMES, MODEL_LEGACY_NAMES
from landslide_hazard.sampling import device as device_mod
from landslide_hazard.sampling.dataset import (
    N_AUGMENTATIONS,
    CubeReader,
    PatchDataset,
    StaticPatchCache,
)
from landslide_hazard.sampling.device import DeviceInputs, device_inputs
from landslide_hazard.sampling.lattice import LATTICES, lattice_origins
from landslide_hazard.sampling.normalisation import compute_normalisation
from landslide_hazard.testing import make_cube

TOL = {"rtol": 1e-6, "atol": 1e-6}  # the upsampling's matrix products may round differently
BANDS = {"triggers": DYNAMIC_NAMES, "legacy": DYNAMIC_NAMES + MODEL_LEGACY_NAMES}


def _setup(cube, bands):
    cube, dynamic = cube
    reader = CubeReader(cube, dynamic=dynamic, dynamic_bands=bands)
    label = reader.label_mask
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, label, 4, dynamic_names=bands
    )
    return reader, label, norm


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """Corner outside the study mask, an unmapped cell, and a NaN trigger cell."""
    made = make_cube(tmp_path_factory.mktemp("device") / "cube.zarr", shape_cells=(10, 11))
    dynamic = np.array(made.dynamic[:])
    dynamic[1, 0, 4, 6] = np.nan
    return made, dynamic


@pytest.mark.parametrize("bands", BANDS, ids=list(BANDS))
@pytest.mark.parametrize("per_patch", [True, False], ids=["slices", "gather"])
def test_every_patch_of_both_lattices_equals_patch_input(cube, bands, per_patch):
    reader, _, norm = _setup(cube, BANDS[bands])
    inputs = DeviceInputs(reader, norm, "cpu")
    inputs.copy_per_patch = per_patch  # the CPU's slice copies, or the GPU's one gather
    n = reader.grid.patch_cells
    origins = np.concatenate([lattice_origins(reader.grid.cell_shape, n, lat) for lat in LATTICES])
    assert origins.min() < 0 and (origins + n).max() > 10  # edge patches, partly outside
    for t in range(reader.n_periods):
        got = inputs.inputs(np.full(len(origins), t), origins[:, 0], origins[:, 1]).numpy()
        assert got.shape == (len(origins), reader.n_channels, n * 4, n * 4)
        for j, (r0, c0) in enumerate(origins.tolist()):
            want = reader.patch_input(norm, t, r0, c0)
            np.testing.assert_allclose(got[j], want, **TOL, err_msg=f"{t} {r0} {c0}")
            # static, per-cell and monsoon channels are exact; only the upsampling rounds
            smooth = slice(8, 8 + reader.n_bilinear_bands)
            np.testing.assert_array_equal(got[j, : smooth.start], want[: smooth.start])
            np.testing.assert_array_equal(got[j, smooth.stop :], want[smooth.stop :])


@pytest.mark.parametrize("bands", BANDS, ids=list(BANDS))
@pytest.mark.parametrize("positive_only", [False, True])
def test_training_batches_with_flips_equal_the_dataset_items(cube, bands, positive_only):
    reader, label, norm = _setup(cube, BANDS[bands])
    from landslide_hazard.sampling.lattice import build_patch_index

    patches = build_patch_index(label, reader.grid.patch_cells)
    cache = StaticPatchCache(reader, norm, budget_bytes=10**9)
    ds = PatchDataset(reader, patches, label, norm, positive_only, 0.5, cache)
    inputs = DeviceInputs(reader, norm, "cpu")
    batches = inputs.patches(ds)
    assert inputs.patches(ds) is batches and len(batches) == len(ds)
    rng = np.random.default_rng(0)
    items = rng.permutation(len(ds)) + rng.integers(0, N_AUGMENTATIONS, len(ds)) * len(ds)
    x, target, mask = batches.batch(items.tolist())
    assert x.dtype == target.dtype == torch.float32 and mask.dtype == torch.bool
    for j, item in enumerate(items.tolist()):
        want = ds[item]
        np.testing.assert_allclose(x[j].numpy(), want["x"].numpy(), **TOL, err_msg=str(item))
        np.testing.assert_array_equal(target[j].numpy(), want["target"].numpy())
        np.testing.assert_array_equal(mask[j].numpy(), want["mask"].numpy())
    other = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, label, 4, dynamic_names=BANDS[bands]
    )
    with pytest.raises(ValueError, match="another reader or normalisation"):
        inputs.patches(PatchDataset(reader, patches, label, other))


def test_which_path_and_why(cube, monkeypatch):
    reader, _, norm = _setup(cube, DYNAMIC_NAMES)
    none, why = device_inputs(reader, norm, "cpu")
    assert none is None and "numpy" in why and "CPU" in why
    monkeypatch.setattr(device_mod, "ON_CPU", True)
    inputs, why = device_inputs(reader, norm, "cpu")
    assert isinstance(inputs, DeviceInputs) and "in batches on cpu" in why
    lazy = CubeReader(cube[0], memory_budget_bytes=0)
    assert device_inputs(lazy, norm, "cpu")[0] is None
    with pytest.raises(ValueError, match="static cube in memory"):
        DeviceInputs(lazy, norm, "cpu")
    need = DeviceInputs.bytes_needed(reader, torch.device("cpu"))
    tight = CubeReader(cube[0], memory_budget_bytes=need - 1)
    assert tight.static_in_memory
    none, why = device_inputs(tight, norm, "cpu")
    assert none is None and "exceed" in why


def test_predict_arrays_on_the_device_path_equals_the_numpy_path(cube, monkeypatch):
    from landslide_hazard.models import build_enn
    from landslide_hazard.predict import Inference, predict_arrays

    reader, _, norm = _setup(cube, DYNAMIC_NAMES)
    torch.manual_seed(0)
    model = build_enn("tiny", patch_cells=4, cell_pixels=4)
    plain = predict_arrays(model, reader, norm, inference=Inference(batch_size=5))
    monkeypatch.setattr(device_mod, "ON_CPU", True)
    batched = predict_arrays(model, reader, norm, inference=Inference(batch_size=5))
    for q, values in plain.items():
        np.testing.assert_allclose(batched[q], values, rtol=1e-5, atol=1e-7, err_msg=q)
        assert np.array_equal(np.isnan(batched[q]), np.isnan(values))
