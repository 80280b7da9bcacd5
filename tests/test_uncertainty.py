"""Uncertainty: MC dropout (analytic and hand references), ensembles, reliability plot, std COG."""

from __future__ import annotations

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402
from affine import Affine  # noqa: E402
from torch import nn  # noqa: E402

from landslide_hazard.cube import PeriodInfo  # noqa: E402
from landslide_hazard.io import read_raster  # noqa: E402
from landslide_hazard.models import build_enn  # noqa: E402
from landslide_hazard.predict.uncertainty import (  # noqa: E402
    MCDropout,
    accumulate_stats,
    dropout_layers,
    ensemble_predict,
    ensemble_stats,
    mc_dropout_maps,
    mc_dropout_predict,
    reliability_diagram,
    write_uncertainty_tif,
)

QUANTITIES = ("susceptibility", "density", "hazard")


def tiny_enn(dropout: float, seed: int = 0) -> nn.Module:
    """A tiny ENN (2 x 2 cells of 8 px) whose BatchNorm running stats are not the defaults."""
    torch.manual_seed(seed)
    model = build_enn("tiny", in_channels=13, patch_cells=2, cell_pixels=8, dropout=dropout)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 13, 16, 16) * 2 + 0.5)  # moves the running statistics
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 13, 16, 16, generator=torch.Generator().manual_seed(42))


def test_dropout_zero_gives_zero_std_and_the_deterministic_forward(x):
    model = tiny_enn(0.0)
    with torch.no_grad():
        ref = model(x)
    with pytest.warns(UserWarning, match="no dropout layer"):
        stats = mc_dropout_predict(model, x, n_samples=5, seed=1)
    assert stats.n_dropout_layers == 0 and stats.n_samples == 5
    for q in QUANTITIES:
        assert stats.mean[q].shape == (3, 2, 2)
        np.testing.assert_allclose(stats.mean[q], getattr(ref, q).numpy(), rtol=1e-6, atol=1e-7)
        assert np.abs(stats.std[q]).max() <= 1e-7
    # batching the passes changes nothing without dropout
    with pytest.warns(UserWarning):
        batched = mc_dropout_predict(model, x, n_samples=2, batch_size=2)
    np.testing.assert_allclose(batched.mean["hazard"], stats.mean["hazard"], rtol=1e-6, atol=1e-7)


def test_dropout_gives_a_positive_reproducible_std_and_keeps_the_global_rng(x):
    model = tiny_enn(0.3)
    assert len(dropout_layers(model)) > 0
    torch.manual_seed(123)
    rng_before = torch.get_rng_state().clone()
    a = mc_dropout_predict(model, x, n_samples=8, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's stream is untouched
    b = mc_dropout_predict(model, x, n_samples=8, seed=7)
    c = mc_dropout_predict(model, x, n_samples=8, seed=8)
    assert a.n_dropout_layers == len(dropout_layers(model))
    assert (a.std["susceptibility"] > 0).all()
    for q in QUANTITIES:
        np.testing.assert_array_equal(a.mean[q], b.mean[q])
        np.testing.assert_array_equal(a.std[q], b.std[q])
    assert not np.array_equal(a.std["susceptibility"], c.std["susceptibility"])
    assert ((a.mean["susceptibility"] >= 0) & (a.mean["susceptibility"] <= 1)).all()


def test_mc_statistics_equal_a_hand_loop_with_only_dropout_in_train_mode(x):
    """Reference: eval() everything, switch the Dropout modules to train, loop by hand."""
    model = tiny_enn(0.3)
    stats = mc_dropout_predict(model, x, n_samples=6, seed=3)
    ref = tiny_enn(0.3)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    for m in ref.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.train()
    torch.manual_seed(3)
    passes = {q: [] for q in QUANTITIES}
    with torch.no_grad():
        for _ in range(6):
            out = ref(x)
            for q in QUANTITIES:
                passes[q].append(getattr(out, q).numpy().astype("float64"))
    for q in QUANTITIES:
        s = np.stack(passes[q])
        np.testing.assert_allclose(stats.mean[q], s.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats.std[q], s.std(0), rtol=1e-4, atol=1e-7)
    # hazard statistics are those of the per-pass product, not mean S x mean D
    h = np.stack(passes["susceptibility"]) * np.stack(passes["density"])
    np.testing.assert_allclose(stats.mean["hazard"], h.mean(0), rtol=1e-5, atol=1e-7)


def test_batchnorm_running_stats_and_module_modes_are_unchanged(x):
    model = tiny_enn(0.3)
    model.train()  # the caller's mode must come back, BN must still not update
    model.susceptibility.eval()  # a mixed state, to check per-module restoration
    modes = {name: m.training for name, m in model.named_modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    mc_dropout_predict(model, x, n_samples=4, seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), f"{k} changed"
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_mc_dropout_matches_the_analytic_moments_of_a_linear_model():
    """y = w . dropout(x): mean w . x, variance sum (w x)^2 q / (1 - q) (inverted dropout)."""
    q, d = 0.25, 8
    lin = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.linspace(-1.0, 2.0, d)[None])
    model = nn.Sequential(nn.Dropout(q), lin)
    xs = torch.tensor([[1.0] * d, [0.5 * i for i in range(d)]])
    stats = mc_dropout_predict(model, xs, n_samples=4000, seed=11)
    w = lin.weight.detach().numpy()[0]
    mean = xs.numpy() @ w
    std = np.sqrt(((xs.numpy() * w) ** 2).sum(1) * q / (1 - q))
    got_mean, got_std = stats.mean["output"][:, 0], stats.std["output"][:, 0]
    np.testing.assert_allclose(got_mean, mean, atol=4 * std.max() / math.sqrt(4000))
    np.testing.assert_allclose(got_std, std, rtol=0.05)


def test_wrapper_survives_eval_and_inference_mode_like_predict_arrays(x):
    """A predict routine that calls model.eval() under inference_mode still samples dropout."""
    model = tiny_enn(0.3)
    model.train()

    def predict_like_a_stage(m: nn.Module) -> dict[str, np.ndarray]:
        m.eval()  # what predict.predict_arrays does
        with torch.inference_mode():
            out = m(x)
        m.train(True)  # and it restores the mode afterwards
        return {q: getattr(out, q).numpy().copy() for q in QUANTITIES}

    wrapped = MCDropout(model)
    wrapped.eval()
    assert all(m.training for m in dropout_layers(model))
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.train()

    stats = mc_dropout_maps(model, predict_like_a_stage, n_samples=6, seed=3)
    direct = mc_dropout_predict(model, x, n_samples=6, seed=3)  # same RNG use, same numbers
    for q in QUANTITIES:
        np.testing.assert_allclose(stats.mean[q], direct.mean[q], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(stats.std[q], direct.std[q], rtol=1e-5, atol=1e-8)
    assert (stats.std["susceptibility"] > 0).all()
    assert model.training and all(m.training for m in model.modules())


def test_accumulate_stats_streams_nan_maps_like_ensemble_stats():
    rng = np.random.default_rng(5)
    maps = [rng.normal(size=(2, 4, 5)) for _ in range(4)]
    maps[0][0, 0, :] = np.nan
    maps[1][0, 0, :3] = np.nan
    for m in maps:
        m[1, 3, 4] = np.nan  # outside the mask in every member
    samples = ({"hazard": m, "density": 2 * m} for m in maps)  # a generator
    stats = accumulate_stats(samples, ddof=1)
    assert stats.n_samples == 4
    mean, std = ensemble_stats(maps, ddof=1)
    np.testing.assert_allclose(stats.mean["hazard"], mean, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(stats.std["hazard"], std, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(stats.std["density"], 2 * std, rtol=1e-5, equal_nan=True)
    assert np.isnan(stats.mean["hazard"][1, 3, 4])
    with pytest.raises(ValueError, match="different outputs"):
        accumulate_stats([{"hazard": maps[0]}, {"density": maps[1]}])
    with pytest.raises(ValueError, match="same cells"):
        accumulate_stats([{"hazard": maps[0]}, {"hazard": maps[1][0]}])
    with pytest.raises(ValueError, match="no sample"):
        accumulate_stats([])


def test_ensemble_stats_equal_numpy_on_hand_arrays_with_nan():
    nan = np.nan
    a = np.array([[1.0, nan, 3.0], [2.0, nan, 10.0]])
    b = np.array([[3.0, nan, nan], [4.0, nan, nan]])
    c = np.array([[5.0, nan, 7.0], [9.0, 6.0, nan]])
    mean, std = ensemble_stats([a, b, c])
    # by hand: (0,0) 1,3,5 -> 3, sqrt(8/3); (0,2) 3,7 -> 5, 2; (1,1) 6 alone -> 6, 0
    assert mean[0, 0] == pytest.approx(3.0) and std[0, 0] == pytest.approx(math.sqrt(8 / 3))
    assert mean[0, 2] == pytest.approx(5.0) and std[0, 2] == pytest.approx(2.0)
    assert mean[1, 1] == pytest.approx(6.0) and std[1, 1] == 0.0
    assert np.isnan(mean[0, 1]) and np.isnan(std[0, 1])
    stack = np.stack([a, b, c])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ddof in (0, 1):
            m, s = ensemble_stats([a, b, c], ddof=ddof)
            np.testing.assert_allclose(m, np.nanmean(stack, 0), rtol=1e-6)
            ref = np.nanstd(stack, 0, ddof=ddof)
            ref[np.sum(np.isfinite(stack), 0) <= ddof] = np.nan
            np.testing.assert_allclose(s, ref, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no all-NaN RuntimeWarning leaks out
        ensemble_stats([a, b, c])
    with pytest.raises(ValueError, match="same grid"):
        ensemble_stats([a, b[:, :2]])
    with pytest.raises(ValueError, match="at least one"):
        ensemble_stats([])


def test_ensemble_predict_mean_and_std_of_two_members(x):
    m1, m2 = tiny_enn(0.0, seed=1), tiny_enn(0.0, seed=2)
    m2.train()
    stats = ensemble_predict([m1, m2], x)
    assert m2.training and not m1.training
    with torch.no_grad():
        o1, o2 = m1.eval()(x), m2.eval()(x)
    for q in QUANTITIES:
        v1, v2 = getattr(o1, q).numpy(), getattr(o2, q).numpy()
        np.testing.assert_allclose(stats.mean[q], (v1 + v2) / 2, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats.std[q], np.abs(v1 - v2) / 2, rtol=1e-4, atol=1e-7)
    # the same maps through ensemble_stats give the same numbers
    mean, std = ensemble_stats([o1.hazard.numpy(), o2.hazard.numpy()])
    np.testing.assert_allclose(mean, stats.mean["hazard"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, stats.std["hazard"], rtol=1e-4, atol=1e-7)


def _artist(fig, gid):
    """The line or the bar container (its rectangles) tagged ``gid``, and its axes."""
    for ax in fig.axes:
        bars = [r for r in ax.patches if r.get_gid() == gid]
        if bars:
            return bars, ax
        for line in ax.lines:
            if line.get_gid() == gid:
                return line, ax
    raise AssertionError(f"no artist with gid {gid}")


def test_reliability_diagram_bins_equal_a_hand_computation():
    p = np.array([0.05, 0.1, 0.45, 0.55, 0.9, 0.95, np.nan])
    y = np.array([0, 0, 1, 0, 1, 1, 1])
    fig = reliability_diagram(y, p, n_bins=2)
    fig.canvas.draw()
    # bins (0, 0.5] and (0.5, 1]: mean p 0.2 and 0.8, observed 1/3 and 2/3, 3 cells each
    line, _ = _artist(fig, "reliability:model")
    np.testing.assert_allclose(line.get_xdata(), [0.2, 0.8])
    np.testing.assert_allclose(line.get_ydata(), [1 / 3, 2 / 3])
    bars, _ = _artist(fig, "count:model")
    assert [r.get_height() for r in bars] == [3, 3]
    assert [r.get_x() for r in bars] == [0.0, 0.5]
    # ECE = 0.5 |1/3 - 0.2| + 0.5 |2/3 - 0.8| = 0.1333
    assert "ECE = 0.133" in fig.axes[0].get_title()
    plt.close(fig)


def test_reliability_diagram_overlay_on_a_given_axis():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(float)
    fig, ax = plt.subplots()
    out = reliability_diagram(y, {"raw": p**2, "calibrated": p}, n_bins=10, ax=ax)
    assert out is fig
    out.canvas.draw()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("raw (ECE ") for t in labels)
    assert any(t.startswith("calibrated (ECE ") for t in labels)
    _artist(fig, "reliability:raw")
    bars, count_ax = _artist(fig, "count:calibrated")
    assert count_ax is not ax and sum(r.get_height() for r in bars) == 500
    plt.close(fig)


def test_write_uncertainty_tif_round_trip(tmp_path):
    std = np.abs(np.random.default_rng(1).normal(size=(2, 5, 6))).astype("float32")
    std[1, 2, 3] = np.nan
    transform = Affine(1000.0, 0, 300_000.0, 0, -1000.0, 3_100_000.0)
    path = write_uncertainty_tif(
        tmp_path / "uncertainty.tif",
        std,
        transform,
        "EPSG:32645",
        [
            PeriodInfo("p1", "2015-04-24", "2015-06-15"),
            PeriodInfo("p2", "2015-06-15", "2015-11-30"),
        ],
        quantity="hazard",
        method="mc_dropout n=20",
    )
    data, info = read_raster(path)
    np.testing.assert_array_equal(data, std)  # NaN in the same place
    assert info.descriptions == ("p1", "p2")
    assert info.transform == transform and info.crs.to_epsg() == 32645
    with rasterio.open(path) as ds:
        assert ds.units == ("% of cell area", "% of cell area")
        tags = ds.tags()
        band2 = ds.tags(2)
    assert tags["quantity"] == "hazard" and tags["method"] == "mc_dropout n=20"
    assert band2["period"] == "p2" and band2["units"] == "% of cell area"
    assert (band2["period_start"], band2["period_end"]) == ("2015-06-15", "2015-11-30")
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no leftover temporary


def test_write_uncertainty_tif_errors(tmp_path):
    t = Affine(1000.0, 0, 0.0, 0, -1000.0, 0.0)
    good = np.zeros((2, 3, 3), dtype="float32")
    with pytest.raises(ValueError, match="2 std maps"):
        write_uncertainty_tif(tmp_path / "u.tif", good, t, "EPSG:32645", ["only one"])
    with pytest.raises(ValueError, match="negative"):
        write_uncertainty_tif(tmp_path / "u.tif", good - 1, t, "EPSG:32645", ["a", "b"])
    with pytest.raises(ValueError, match="quantity 'rain'"):
        write_uncertainty_tif(tmp_path / "u.tif", good, t, "EPSG:32645", ["a", "b"], "rain")
    assert not (tmp_path / "u.tif").exists()


def test_reliability_diagram_with_no_valid_cell_renders_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = reliability_diagram([0, 1, np.nan], [np.nan, np.nan, 0.3])
        fig.canvas.draw()
    assert "ECE = nan" in fig.axes[0].get_title()
    plt.close(fig)
