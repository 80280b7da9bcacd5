"""Losses against hand-worked values, numpy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import log_loss

from landslide_hazard.training.losses import (
    focal_tversky_loss,
    masked_mae,
    masked_mse,
    weighted_bce,
)

NAN = float("nan")


def test_focal_tversky_hand_computed():
    p = torch.tensor([[0.9, 0.2], [0.6, 0.1]])
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # TP = 0.9 + 0.6 = 1.5, FP = 0.2 + 0.1 = 0.3, FN = 0.1 + 0.4 = 0.5
    # TI = 1.5 / (1.5 + 0.3*0.3 + 0.7*0.5) = 1.5 / 1.94
    ti = (1.5 + 1e-7) / (1.94 + 1e-7)
    assert focal_tversky_loss(p, g).item() == pytest.approx(1 - ti, rel=1e-6)
    assert focal_tversky_loss(p, g, gamma=2.0).item() == pytest.approx((1 - ti) ** 2, rel=1e-6)
    assert focal_tversky_loss(p, g, gamma=4 / 3, form="inverse").item() == pytest.approx(
        (1 - ti) ** 0.75, rel=1e-6
    )
    # alpha = beta = 0.5 is the soft Dice loss: 1 - 2 TP / (2 TP + FP + FN)
    dice = 1 - 2 * 1.5 / (3.0 + 0.3 + 0.5)
    assert focal_tversky_loss(p, g, alpha=0.5, beta=0.5).item() == pytest.approx(dice, rel=1e-6)


def test_focal_tversky_mask_and_nan_cells_are_ignored():
    p = torch.tensor([0.9, 0.2, 0.6, 0.7, 0.3], requires_grad=True)
    g = torch.tensor([1.0, 0.0, 1.0, NAN, 1.0])
    mask = torch.tensor([True, True, True, True, False])
    loss = focal_tversky_loss(p, g, mask=mask)
    # valid: cells 0-2 -> TP 1.5, FP 0.2, FN 0.5
    ti = (1.5 + 1e-7) / (1.5 + 0.3 * 0.2 + 0.7 * 0.5 + 1e-7)
    assert loss.item() == pytest.approx(1 - ti, rel=1e-6)
    loss.backward()
    assert torch.all(torch.isfinite(p.grad))
    assert p.grad[3] == 0 and p.grad[4] == 0
    assert p.grad[0] != 0


def test_focal_tversky_limits():
    g = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert focal_tversky_loss(g.clone(), g).item() == pytest.approx(0.0, abs=1e-7)
    assert focal_tversky_loss(1 - g, g).item() == pytest.approx(1.0, abs=1e-6)
    # no positives and no predictions: TI = eps / eps = 1, loss 0
    z = torch.zeros(4)
    assert focal_tversky_loss(z, z).item() == pytest.approx(0.0)
    empty = focal_tversky_loss(torch.rand(3, requires_grad=True), torch.full((3,), NAN))
    empty.backward()
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="form"):
        focal_tversky_loss(g, g, form="log")
    with pytest.raises(ValueError, match="shape"):
        focal_tversky_loss(g, g[:3])


def test_weighted_bce_equals_sklearn_weighted_log_loss():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 200)
    g = (rng.uniform(size=200) < 0.2).astype(float)
    weights = np.where(g == 1, 5.0, 1.0)
    reference = log_loss(g, p, sample_weight=weights, normalize=False) / g.size
    ours = weighted_bce(torch.tensor(p), torch.tensor(g), pos_weight=5.0)
    assert ours.item() == pytest.approx(reference, rel=1e-9)


def test_weighted_bce_hand_computed_with_mask():
    p = torch.tensor([0.8, 0.4, 0.5, 0.9])
    g = torch.tensor([1.0, 0.0, NAN, 1.0])
    mask = torch.tensor([True, True, True, False])
    expected = -(5 * np.log(0.8) + np.log(0.6)) / 2
    assert weighted_bce(p, g, mask=mask).item() == pytest.approx(expected, rel=1e-6)
    # saturated probabilities stay finite
    assert np.isfinite(weighted_bce(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])).item())


@pytest.mark.parametrize(
    ("loss_fn", "error", "seed", "hand"),
    [
        (masked_mae, lambda d: np.abs(d), 1, 1.5),  # |1-2|, |3-1| -> 1.5
        (masked_mse, lambda d: d**2, 2, 2.5),  # 1, 4 -> 2.5
    ],
)
def test_masked_errors_equal_numpy(loss_fn, error, seed, hand):
    rng = np.random.default_rng(seed)
    pred = rng.gamma(1.0, 2.0, (4, 4, 4))
    target = rng.gamma(1.0, 2.0, (4, 4, 4))
    target[0, 0, :2] = np.nan
    mask = rng.uniform(size=target.shape) < 0.7
    valid = mask & np.isfinite(target)
    expected = error(pred - target)[valid].mean()
    t_pred = torch.tensor(pred, requires_grad=True)
    loss = loss_fn(t_pred, torch.tensor(target), torch.tensor(mask))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert torch.all(t_pred.grad[torch.tensor(~valid)] == 0)
    assert loss_fn(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])).item() == hand
    assert loss_fn(torch.tensor([1.0]), torch.tensor([float("nan")])).item() == 0.0


def test_zero_inflated_target_mae_picks_zero_mse_picks_mean():
    # why the fine-tune stage uses the MSE for E[D]: with 80 % zeros the best constant under
    # the MAE is the median (0), under the MSE the mean
    target = torch.tensor([0.0] * 8 + [1.0, 9.0])
    grid = torch.linspace(0.0, 3.0, 301)
    mae = torch.stack([masked_mae(torch.full_like(target, c), target) for c in grid])
    mse = torch.stack([masked_mse(torch.full_like(target, c), target) for c in grid])
    assert grid[mae.argmin()].item() == 0.0
    assert grid[mse.argmin()].item() == pytest.approx(target.mean().item(), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, 12, elements=st.floats(0, 1)),
    arrays(np.bool_, 12),
    st.floats(0.05, 0.95),
    st.floats(0.25, 4.0),
    st.sampled_from(["power", "inverse"]),
)
def test_focal_tversky_is_a_bounded_loss_that_matches_a_numpy_reference(p, g, alpha, gamma, form):
    gf = g.astype(float)
    beta = 1 - alpha
    tp, fp, fn = (p * gf).sum(), (p * (1 - gf)).sum(), ((1 - p) * gf).sum()
    ti = (tp + 1e-7) / (tp + alpha * fp + beta * fn + 1e-7)
    expected = max(1 - ti, 0.0) ** (gamma if form == "power" else 1 / gamma)
    ours = focal_tversky_loss(
        torch.tensor(p), torch.tensor(gf), alpha=alpha, beta=beta, gamma=gamma, form=form
    ).item()
    assert 0.0 <= ours <= 1.0
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12)
