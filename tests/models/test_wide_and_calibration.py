"""The wide paths, the Gamma density loss and the calibration stored in the ENN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from landslide_hazard.models import build_enn
from landslide_hazard.models.layers import CellSummaryLinear, PixelRatePool
from landslide_hazard.training.losses import masked_gamma_deviance


def _cells_by_hand(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell mean and population std of every channel, with loops."""
    b, c, h, w = x.shape
    mean = np.zeros((b, c, h // k, w // k))
    std = np.zeros_like(mean)
    for i in range(h // k):
        for j in range(w // k):
            block = x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].reshape(b, c, -1)
            mean[:, :, i, j] = block.mean(-1)
            std[:, :, i, j] = block.std(-1)
    return mean, std


def test_cell_summary_linear_is_a_linear_model_of_cell_means_and_stds():
    torch.manual_seed(0)
    k, c = 4, 3
    layer = CellSummaryLinear(c, k)
    assert torch.count_nonzero(layer(torch.randn(2, c, 8, 8))) == 0  # starts at 0
    w = torch.randn(1, 2 * c, 1, 1)
    with torch.no_grad():
        layer.linear.weight.copy_(w)
        layer.linear.bias.fill_(0.25)
    x = torch.randn(2, c, 8, 12, dtype=torch.float64)
    got = layer.double()(x).detach().numpy()
    mean, std = _cells_by_hand(x.numpy(), k)
    coef = w.double().numpy().reshape(-1)
    want = np.einsum("bchw,c->bhw", mean, coef[:c]) + np.einsum("bchw,c->bhw", std, coef[c:])
    np.testing.assert_allclose(got, want + 0.25, atol=1e-6)


def test_summary_wide_path_reads_the_baselines_percentiles():
    """The ``summary`` wide path's 10th and 90th percentiles are numpy's (and so the per-cell
    baselines', ``evaluation.baselines.cell_statistics``) on every cell."""
    from landslide_hazard.evaluation.baselines import cell_statistics
    from landslide_hazard.models.layers import cell_percentiles

    rng = np.random.default_rng(3)
    k = 4
    x = rng.normal(size=(2, 3, 8, 12))
    got = cell_percentiles(torch.from_numpy(x), k, (10.0, 90.0)).numpy()
    assert got.shape == (2, 6, 2, 3)
    for b in range(2):
        for c in range(3):
            stats = cell_statistics(x[b, c], k)  # (cy, cx, [mean, std, p10, p90])
            np.testing.assert_allclose(got[b, 2 * c], stats[..., 2], rtol=1e-12)
            np.testing.assert_allclose(got[b, 2 * c + 1], stats[..., 3], rtol=1e-12)
    layer = CellSummaryLinear(3, k, percentiles=True).double()
    w = torch.from_numpy(rng.normal(size=(1, 12, 1, 1)))
    with torch.no_grad():
        layer.linear.weight.copy_(w)
    mean, std = _cells_by_hand(x, k)
    coef = w.numpy().reshape(-1)
    feats = np.concatenate([mean, std, got], axis=1)
    want = np.einsum("bchw,c->bhw", feats, coef)
    # atol: the std carries a 1e-6 floor under its square root
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), want, atol=1e-5)


def test_pixel_rate_pool_is_the_log_of_the_mean_pixel_rate():
    torch.manual_seed(1)
    k = 4
    pool = PixelRatePool(2, k).double()
    torch.nn.init.normal_(pool.pixel[-1].weight)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64) * 3
    rate = torch.exp(pool.pixel(x))[:, 0].detach().numpy()  # (B, H, W) per-pixel rates
    got = pool(x).detach().numpy()
    want = np.log(rate.reshape(3, 2, k, 2, k).mean(axis=(2, 4)))
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("wide", ["linear", "summary", "pixel"])
def test_a_fresh_wide_path_leaves_the_deep_network_unchanged(wide):
    torch.manual_seed(2)
    plain = build_enn("tiny", 13, 4, 8, wide="none").eval()
    torch.manual_seed(2)
    widened = build_enn("tiny", 13, 4, 8, wide=wide).eval()
    # same deep weights (the wide modules are created after the deep ones)
    widened.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 13, 32, 32)
    out_a, out_b = plain(x), widened(x)
    torch.testing.assert_close(out_a.susceptibility, out_b.susceptibility)
    torch.testing.assert_close(out_a.density, out_b.density)


def test_paper_preset_refuses_a_wide_path():
    with pytest.raises(ValueError, match="no logit"):
        build_enn("paper", 13, 4, 32, wide="linear")


def test_gamma_deviance_hand_values_and_ignored_cells():
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.tensor([1.0, 0.0, 6.0, float("nan")])
    # cells: y=1 mu=1 -> 0; y=0 -> ignored (no positive density); y=6 mu=3 -> 2 - ln 2 - 1
    want = (0.0 + (2 - np.log(2) - 1)) / 2
    assert float(masked_gamma_deviance(pred, target)) == pytest.approx(want, rel=1e-6)
    mask = torch.tensor([True, True, False, True])
    assert float(masked_gamma_deviance(pred, target, mask)) == pytest.approx(0.0, abs=1e-7)


def test_gamma_deviance_minimiser_is_the_mean():
    """A constant fitted under the Gamma deviance lands on the sample mean (not the median)."""
    y = torch.tensor([0.1, 0.2, 0.3, 5.0])
    mu = torch.tensor(1.0, requires_grad=True)
    opt = torch.optim.LBFGS([mu], lr=0.5, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = masked_gamma_deviance(mu.expand(4), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert float(mu.detach()) == pytest.approx(float(y.mean()), rel=1e-3)


def test_calibration_is_platt_scaling_of_a_map_and_survives_the_state_dict():
    torch.manual_seed(3)
    enn = build_enn("tiny", 13, 4, 8).eval()
    p = np.random.default_rng(0).uniform(0.01, 0.99, (2, 5, 5)).astype(np.float32)
    assert enn.calibrate_map(p) is None  # nothing stored: maps stay raw
    enn.set_calibration(0.6, -1.2)
    want = expit(0.6 * logit(p.astype(np.float64)) - 1.2)
    np.testing.assert_allclose(enn.calibrate_map(p), want, rtol=1e-6)
    enn.use_calibration = False  # the raw network output stays available
    assert enn.calibrate_map(p) is None
    other = build_enn("tiny", 13, 4, 8).eval()
    other.load_state_dict(enn.state_dict())
    assert other.calibrated
    np.testing.assert_allclose(other.calibrate_map(p), want, rtol=1e-6)
    x = torch.randn(2, 13, 32, 32)
    torch.testing.assert_close(other(x).susceptibility, enn(x).susceptibility)  # forward is raw


def test_period_shifts_add_to_each_named_periods_logit():
    enn = build_enn("tiny", 13, 4, 8).eval()
    p = np.random.default_rng(1).uniform(0.01, 0.99, (3, 4, 4)).astype(np.float32)
    enn.set_calibration(0.8, -0.5)
    enn.period_shifts = {"wet": 0.4, "dry": -0.3}
    z = 0.8 * logit(p.astype(np.float64)) - 0.5
    got = enn.calibrate_map(p, ["dry", "new forecast", "wet"])
    want = expit(z + np.array([-0.3, 0.0, 0.4])[:, None, None])  # an unknown period: no shift
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(enn.calibrate_map(p), expit(z), rtol=1e-6)  # no names: pooled
    with pytest.raises(ValueError, match="period names"):
        enn.calibrate_map(p, ["dry"])


def test_density_blend_moves_the_density_maps_toward_the_constant():
    enn = build_enn("tiny", 13, 4, 8).eval()
    d = np.random.default_rng(2).gamma(2.0, 1.0, (3, 4, 4)).astype(np.float32)
    assert enn.calibrate_density(d) is None  # none stored: the maps as they are
    enn.density_blend = (0.25, 1.5)
    np.testing.assert_allclose(enn.calibrate_density(d), 1.5 + 0.25 * (d - 1.5), rtol=1e-6)
    enn.use_calibration = False  # predict --raw: the network's own maps
    assert enn.calibrate_density(d) is None


def test_period_density_factors_scale_each_named_periods_blended_map():
    enn = build_enn("tiny", 13, 4, 8).eval()
    d = np.random.default_rng(2).gamma(2.0, 1.0, (3, 4, 4)).astype(np.float32)
    enn.period_density_factors = {"wet": 2.0, "dry": 0.5}
    got = enn.calibrate_density(d, ["dry", "new forecast", "wet"])
    want = d * np.array([0.5, 1.0, 2.0])[:, None, None]  # an unknown period: none
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert enn.calibrate_density(d) is None  # no names and no blend: as they are
    enn.density_blend = (0.25, 1.5)
    blended = 1.5 + 0.25 * (d - 1.5)
    got = enn.calibrate_density(d, ["dry", "new forecast", "wet"])
    np.testing.assert_allclose(got, blended * np.array([0.5, 1.0, 2.0])[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(enn.calibrate_density(d), blended, rtol=1e-6)
    with pytest.raises(ValueError, match="period names"):
        enn.calibrate_density(d, ["dry"])
    # the common level: a period without its own factor, and maps without names, get it
    enn.density_level = 1.6
    got = enn.calibrate_density(d, ["dry", "new forecast", "wet"])
    np.testing.assert_allclose(got, blended * np.array([0.5, 1.6, 2.0])[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(enn.calibrate_density(d), blended * 1.6, rtol=1e-6)
    enn.density_blend = None
    np.testing.assert_allclose(enn.calibrate_density(d), d * 1.6, rtol=1e-6)


def test_pixel_rate_pool_does_not_underflow_far_below_the_patch_maximum():
    """One cell's pixels 200 log units below another cell's: exp underflows in float32 if the
    shift were the patch maximum; the per-cell shift keeps the value and a finite gradient."""
    pool = PixelRatePool(1, 2)
    with torch.no_grad():  # make the MLP the identity on its one input channel, times 1
        pool.pixel[0].weight.zero_()
        pool.pixel[0].weight[0, 0] = 1.0
        pool.pixel[0].bias.zero_()
        pool.pixel[2].weight.zero_()
        pool.pixel[2].weight[0, 0] = 1.0
        pool.pixel[2].bias.zero_()
        pool.pixel[4].weight.zero_()
        pool.pixel[4].weight[0, 0] = 1.0
    x = torch.zeros(1, 1, 2, 4)
    x[..., :2] = 200.0  # cell (0, 0): log rate 200; cell (0, 1): log rate 0
    x.requires_grad_(True)
    out = pool(x)
    torch.testing.assert_close(out.detach(), torch.tensor([[[200.0, 0.0]]]))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
