"""predict.mc: the maps and their MC-dropout spread from one assembly of the inputs.

Checked against the per-pass route (``predict_arrays`` for the maps, ``mc_dropout_maps`` over
``predict_arrays`` for the spread): the maps bit for bit; one pass bit for bit (the same
masks, drawn in the same order); many passes statistically (the masks are drawn batch by batch
rather than pass by pass); and the band bookkeeping against a hand loop that holds every pass's
whole maps.
"""

from __future__ import annotations

from contextlib import closing

import numpy as np
import pytest
import torch
from scipy.stats import norm as normal

from landslide_hazard.models import build_enn
from landslide_hazard.predict import Inference, MCPasses, predict_arrays, predict_with_mc_dropout
from landslide_hazard.predict import core as predict_core
from landslide_hazard.predict.mc import rows_by_band
from landslide_hazard.predict.uncertainty import (
    MCDropout,
    _Moments,
    dropout_layers,
    mc_dropout_maps,
)
from landslide_hazard.sampling import device as sampling_device
from landslide_hazard.sampling.dataset import CubeReader
from landslide_hazard.sampling.normalisation import compute_normalisation
from landslide_hazard.testing import make_cube

N, K = 4, 4  # patch cells, cell pixels
QUANTITIES = ("susceptibility", "density", "hazard")


def _reader(tmp_path, shape=(9, 10), n_periods=3):
    cube = make_cube(tmp_path / "cube.zarr", shape_cells=shape, k=K, n=N, n_periods=n_periods)
    reader = CubeReader(cube)
    norm = compute_normalisation(
        reader.static, reader.dynamic, reader.monsoons, reader.label_mask, K
    )
    return reader, norm


def _model(dropout=0.3, calibrated=True, density_dropout=True):
    """An untrained tiny ENN; calibrated: Platt scaling and a logit shift on two periods.
    ``density_dropout`` False: the density block's dropout layers at p = 0, so that the
    per-pass route (every pass a whole forward) draws the masks the susceptibility-only passes
    draw, and its density is the evaluation pass's."""
    torch.manual_seed(0)
    model = build_enn("tiny", in_channels=13, patch_cells=N, cell_pixels=K, dropout=dropout)
    if calibrated:
        model.set_calibration(1.5, -0.3)
        model.period_shifts = {"P0": 0.4, "P2": -0.2}
    if not density_dropout:
        for m in model.density.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _reader(tmp_path_factory.mktemp("mc"))


def _equal(a, b):
    return all(np.array_equal(a[q], b[q], equal_nan=True) for q in QUANTITIES)


@pytest.mark.parametrize(
    ("path", "merge", "inference", "periods"),
    [
        ("numpy", "mean", Inference(batch_size=5), None),
        ("numpy", "lattice0", Inference(batch_size=5), None),
        ("numpy", "mean", Inference(batch_size=4, input_threads=1), [1]),
        ("numpy", "mean", Inference(batch_size=7, channels_last=False, cpu_bf16=True), None),
        ("device", "mean", Inference(batch_size=5), None),
        ("device", "lattice0", Inference(batch_size=6), [0, 2]),
    ],
)
def test_maps_are_those_of_predict_arrays_bit_for_bit(
    small, monkeypatch, path, merge, inference, periods
):
    reader, norm = small
    monkeypatch.setattr(sampling_device, "ON_CPU", path == "device")
    model = _model()
    want = predict_arrays(model, reader, norm, periods, merge, inference)
    maps, stats = predict_with_mc_dropout(
        model, reader, norm, MCPasses(3), periods, merge, inference
    )
    assert _equal(maps, want)
    assert stats.n_samples == 3
    assert stats.n_dropout_layers == len(dropout_layers(model.susceptibility)) > 0
    for q in QUANTITIES:
        assert stats.std[q].shape == want[q].shape
        np.testing.assert_array_equal(np.isnan(stats.std[q]), np.isnan(want[q]))
        np.testing.assert_array_equal(np.isnan(stats.mean[q]), np.isnan(want[q]))
    assert np.nanmin(stats.std["susceptibility"]) >= 0
    assert np.nanmax(stats.std["susceptibility"]) > 0
    # the passes vary the susceptibility only: the density is the maps' (its dropout stays off)
    assert dropout_layers(model.density)
    np.testing.assert_array_equal(stats.mean["density"], maps["density"].astype(np.float32))
    assert np.nanmax(stats.std["density"]) == 0


@pytest.mark.parametrize("path", ["numpy", "device"])
def test_one_pass_equals_the_per_pass_route_with_the_same_masks(small, monkeypatch, path):
    """With one pass both routes draw the same masks when the rows come in the same order (the
    per-pass route's rows sorted as here) and the density block draws none (its dropout at 0):
    the pass's merged, calibrated maps bit for bit."""
    reader, norm = small
    monkeypatch.setattr(sampling_device, "ON_CPU", path == "device")
    inference = Inference(batch_size=5)
    model = _model(density_dropout=False)
    _, stats = predict_with_mc_dropout(
        model, reader, norm, MCPasses(1, seed=3), inference=inference
    )
    monkeypatch.setattr(predict_core, "_patch_rows", rows_by_band)
    old = mc_dropout_maps(
        model, lambda m: predict_arrays(m, reader, norm, inference=inference), 1, seed=3
    )
    assert _equal(stats.mean, old.mean) and _equal(stats.std, old.std)
    assert not _equal(stats.mean, predict_arrays(model, reader, norm, inference=inference))


def _hand_loop(model, reader, norm, n_samples, seed, inference):
    """The batch-major passes of predict_with_mc_dropout without its band: every pass's whole
    sums held, then merged and summarised as mc_dropout_maps summarises whole maps."""
    n_periods, (cy, cx) = reader.n_periods, reader.grid.cell_shape
    rows = rows_by_band(reader, "mean", list(range(n_periods)))
    sums = np.zeros((n_samples, 3, n_periods, cy, cx))
    counts = np.zeros((n_periods, cy, cx), dtype=np.int32)
    wrapped = MCDropout(model)
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(seed)
        for row in rows:
            values = np.empty((n_samples, len(row), 3, N, N), dtype=np.float32)
            with closing(predict_core.row_inputs(reader, norm, row, inference)) as batches:
                for i, xt in batches:
                    for k in range(n_samples):
                        predict_core.store_outputs(values[k], i, wrapped(xt))
            predict_core._accumulate(sums, counts, row, values)  # counts: once per patch
    moments = _Moments()
    for pass_sums in sums:
        moments.add(
            predict_core.merged_maps(
                pass_sums, counts, reader.valid, model, list(reader.period_names)
            )
        )
    return moments.result(ddof=1)


def test_band_bookkeeping_equals_whole_maps_per_pass(tmp_path):
    """A taller grid with a gap of invalid rows (rows of patches skipped, the band jumps): the
    statistics equal those of the same passes held as whole maps, bit for bit."""
    reader, norm = _reader(tmp_path, shape=(22, 9), n_periods=2)
    reader.valid = reader.valid.copy()
    reader.valid[7:17] = False
    inference = Inference(batch_size=3)
    model = _model(density_dropout=False)
    maps, stats = predict_with_mc_dropout(
        model, reader, norm, MCPasses(3, seed=5, ddof=1), inference=inference
    )
    mean, std = _hand_loop(model, reader, norm, 3, 5, inference)
    assert _equal(stats.mean, mean) and _equal(stats.std, std)
    assert np.isnan(maps["susceptibility"][:, 7:17]).all()
    assert np.isfinite(stats.std["susceptibility"][:, 18:][:, reader.valid[18:]]).all()


def test_without_dropout_the_passes_are_the_maps(small):
    """No active dropout layer: every pass is the evaluation pass, so the mean is the maps bit
    for bit (both lattices merged and calibrated the same way) and the std is zero."""
    reader, norm = small
    model = _model(dropout=0.0)
    with pytest.warns(UserWarning, match="no dropout layer"):
        maps, stats = predict_with_mc_dropout(model, reader, norm, MCPasses(3))
    assert _equal(stats.mean, maps) and stats.n_dropout_layers == 0
    finite = np.isfinite(maps["susceptibility"])
    assert (stats.std["susceptibility"][finite] == 0).all()


def test_seeded_reproducible_and_the_callers_rng_and_modes_are_kept(small):
    reader, norm = small
    model = _model().train()
    model.density.eval()  # a mixed state: restored module by module
    modes = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    _, a = predict_with_mc_dropout(model, reader, norm, MCPasses(2, seed=7))
    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: m.training for name, m in model.named_modules()} == modes
    _, b = predict_with_mc_dropout(model, reader, norm, MCPasses(2, seed=7))
    _, c = predict_with_mc_dropout(model, reader, norm, MCPasses(2, seed=8))
    assert _equal(a.std, b.std) and not _equal(a.std, c.std)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        predict_with_mc_dropout(model, reader, norm, MCPasses(0))


def test_the_std_agrees_with_the_per_pass_route_within_monte_carlo_error(tmp_path):
    """Many passes of each route (different masks): per cell, the two stds differ by no more
    than their Monte-Carlo error allows.

    For n iid passes with central moments m2 = s**2 and m4, Var(s**2) ~ (m4 - m2**2) / n and,
    by the delta method, se(s) ~ sqrt(m4 - m2**2) / (2 s sqrt(n)); the two routes' estimates
    are independent, so z = (s_new - s_old) / (sqrt(2) se(s)) is ~ N(0, 1) per cell if both
    estimate the same std. m2 and m4 come from the per-pass route's own samples. Over the M
    cells compared, the Bonferroni bound puts max |z| below Phi^-1(1 - alpha / 2M) with
    probability >= 1 - alpha (alpha = 1e-3). The bound is not vacuous: the new std divided by
    1.5 (the size of the calibration's slope here) fails it."""
    reader, norm = _reader(tmp_path, shape=(6, 7), n_periods=2)
    inference, n_samples = Inference(batch_size=32), 150
    model = _model(density_dropout=False)  # both routes: only the susceptibility varies
    _, new = predict_with_mc_dropout(
        model, reader, norm, MCPasses(n_samples, seed=1), inference=inference
    )
    samples: dict[str, list[np.ndarray]] = {q: [] for q in QUANTITIES}

    def one_pass(m):
        out = predict_arrays(m, reader, norm, inference=inference)
        for q in QUANTITIES:
            samples[q].append(out[q].astype(np.float64))
        return out

    old = mc_dropout_maps(model, one_pass, n_samples, seed=2)
    z_all, z_wrong = [], []
    for q in QUANTITIES:
        if q == "density":  # the density block draws no mask in either route
            np.testing.assert_array_equal(np.nan_to_num(new.std[q]), 0.0)
            np.testing.assert_array_equal(np.nan_to_num(old.std[q]), 0.0)
            continue
        x = np.stack(samples[q])
        centred = x - x.mean(axis=0)
        m2, m4 = (centred**2).mean(axis=0), (centred**4).mean(axis=0)
        np.testing.assert_allclose(np.sqrt(m2), old.std[q], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.isnan(new.std[q]), np.isnan(old.std[q]))
        spread = np.isfinite(m2) & (m2 > 1e-12)
        assert spread.sum() > 50, q
        s = np.sqrt(m2[spread])
        se = np.sqrt(np.maximum(m4[spread] - m2[spread] ** 2, 0)) / (2 * s * np.sqrt(n_samples))
        z_all.append((new.std[q][spread] - s) / (np.sqrt(2) * se))
        if q == "susceptibility":
            z_wrong.append((new.std[q][spread] / 1.5 - s) / (np.sqrt(2) * se))
        flat = np.isfinite(m2) & ~spread  # no spread over the old passes: none over the new
        np.testing.assert_allclose(new.std[q][flat], 0.0, atol=1e-5)
    z = np.concatenate(z_all)
    bound = normal.ppf(1 - 1e-3 / (2 * z.size))
    assert np.abs(z).max() < bound, (np.abs(z).max(), bound)
    assert np.abs(np.concatenate(z_wrong)).max() > bound


def test_predict_shares_the_inputs_here_and_keeps_the_per_pass_route_on_a_cluster(
    tmp_path, monkeypatch
):
    """`predict --mc-samples`: in this process the maps and the passes come from one assembly of
    the inputs; with a scheduler the maps come from the workers and the passes from
    ``mc_uncertainty`` here. Both write the maps and a spread of the same shape."""
    from distributed import LocalCluster

    from landslide_hazard import predict as predict_mod
    from landslide_hazard.config import parse_config
    from landslide_hazard.io import read_raster
    from landslide_hazard.testing import one_epoch_config
    from landslide_hazard.training import train

    cube = make_cube(tmp_path / "out" / "cube.zarr", shape_cells=(9, 10), k=K, n=N, n_periods=3)
    data = one_epoch_config(cube, batch_size=4, block_km=3.0)
    data["model"] = {"preset": "tiny", "dropout": 0.3}
    data["output"] = {"dir": str(tmp_path / "out"), "hazard_class_breaks": [0.1, 0.2, 0.3]}
    run = train(parse_config(data, tmp_path), progress=False)
    per_pass_calls = []
    real = predict_mod.stage.mc_uncertainty

    def spy(*args):
        per_pass_calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(predict_mod.stage, "mc_uncertainty", spy)
    maps = {}
    for where in ("here", "cluster"):
        if where == "here":
            out = predict_mod.predict(run, progress=False, mc_samples=3)
            assert per_pass_calls == []
        else:
            with LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster:
                out = predict_mod.predict(
                    run, progress=False, mc_samples=3, scheduler=cluster.scheduler_address
                )
            assert per_pass_calls == [3]
        maps[where] = {q: read_raster(out / f"{q}.tif")[0] for q in ("susceptibility", "hazard")}
        maps[where]["std"] = read_raster(out / "uncertainty.tif")[0]
    for q in ("susceptibility", "hazard"):
        np.testing.assert_allclose(maps["cluster"][q], maps["here"][q], rtol=1e-6, atol=1e-7)
    for where in maps:
        std = maps[where]["std"]
        np.testing.assert_array_equal(np.isnan(std), np.isnan(maps[where]["susceptibility"]))
        assert np.nanmin(std) >= 0 and np.nanmax(std) > 0
