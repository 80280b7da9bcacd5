"""Losses of the ENN (paper Sect. 6.2, DESIGN section 4).

All take per-cell tensors of any matching shape (typically (B, n, n)) and an optional boolean
mask of the same shape; cells where the mask is False or the target is not finite (NaN: outside
the study mask or unmapped) are excluded, and contribute neither to the value nor to the gradient.
With no valid cell the loss is 0 (still attached to the graph, so ``backward`` works).
"""

from __future__ import annotations

import torch

FOCAL_FORMS: tuple[str, ...] = ("power", "inverse")


def _valid(target: torch.Tensor, mask: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
        )
    valid = torch.isfinite(target)
    if mask is not None:
        if mask.shape != target.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != target shape {tuple(target.shape)}"
            )
        valid = valid & mask.to(torch.bool)
    return valid


def _masked_mean(per_cell: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_cell`` over the valid cells (0 when there is none); invalid cells give
    no value and no gradient."""
    zero = torch.zeros((), dtype=per_cell.dtype, device=per_cell.device)
    total = torch.where(valid, per_cell, zero).sum()
    return total / torch.clamp(valid.sum(), min=1).to(per_cell.dtype)


def _masked_residual(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred - target, with 0 for the target of invalid cells; the valid cells)."""
    valid = _valid(target, mask, pred)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    return pred - torch.where(valid, target, zero).to(pred.dtype), valid


def focal_tversky_loss(
    p: torch.Tensor,
    g: torch.Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 1.0,
    form: str = "power",
    eps: float = 1e-7,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal Tversky loss on soft counts over all valid cells of the batch.

    TI = (sum p g + eps) / (sum p g + alpha sum p (1 - g) + beta sum (1 - p) g + eps);
    FTL = (1 - TI) ** gamma for ``form="power"`` (the published code) or
    (1 - TI) ** (1 / gamma) for ``form="inverse"`` (the paper's Eq. 1).
    alpha weights false positives, beta false negatives.

    Args:
        p: predicted occurrence probabilities in [0, 1].
        g: observed occurrence (0/1, or soft labels in [0, 1]); NaN = invalid cell.
        mask: optional boolean mask, True = use the cell.
    Returns: a scalar tensor in [0, 1].
    """
    if form not in FOCAL_FORMS:
        raise ValueError(f"form={form!r}; choose 'power' (the code) or 'inverse' (the text)")
    if gamma <= 0:
        raise ValueError(f"gamma={gamma} must be > 0")
    valid = _valid(g, mask, p)
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    pv = torch.where(valid, p, zero)
    gv = torch.where(valid, g, zero).to(p.dtype)
    tp = (pv * gv).sum()
    fp = (pv * (1 - gv)).sum()
    fn = (torch.where(valid, 1 - pv, zero) * gv).sum()
    ti = (tp + eps) / (tp + alpha * fp + beta * fn + eps)
    exponent = gamma if form == "power" else 1.0 / gamma
    # clamp: 1 - TI can round to a tiny negative, and x ** (1/gamma) has no real value there
    return torch.clamp(1 - ti, min=0.0) ** exponent


def weighted_bce(
    p: torch.Tensor,
    g: torch.Tensor,
    pos_weight: float = 5.0,
    mask: torch.Tensor | None = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Class-weighted binary cross-entropy, mean over valid cells (the paper's 1:5 weighting).

    loss_i = -(pos_weight * g log p + (1 - g) log(1 - p)), p clamped to [eps, 1 - eps];
    returns sum(loss_i) / number of valid cells.
    """
    if pos_weight <= 0:
        raise ValueError(f"pos_weight={pos_weight} must be > 0")
    valid = _valid(g, mask, p)
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    pc = torch.clamp(torch.where(valid, p, zero + 0.5), eps, 1 - eps)
    gv = torch.where(valid, g, zero).to(p.dtype)
    per_cell = -(pos_weight * gv * torch.log(pc) + (1 - gv) * torch.log1p(-pc))
    return _masked_mean(per_cell, valid)


def masked_mae(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error over valid cells (mask True and target finite), in target units."""
    diff, valid = _masked_residual(pred, target, mask)
    return _masked_mean(diff.abs(), valid)


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over valid cells (mask True and target finite), in target units squared.

    Its minimiser is the conditional mean, which is why the fine-tune stage scores the hazard
    E[D] with it: on the zero-inflated observed density the MAE's minimiser, the conditional
    median, is 0 wherever P(D > 0) < 0.5 (docs/decisions.md).
    """
    diff, valid = _masked_residual(pred, target, mask)
    return _masked_mean(diff * diff, valid)


def masked_gamma_deviance(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Mean Gamma deviance / 2, ``y / mu - log(y / mu) - 1``, over valid cells with ``y > 0``.

    Its minimiser over ``mu`` is the conditional mean E[y | x] (like the squared error), but each
    cell's term depends on the ratio y / mu only, so the largest landslides do not dominate the fit
    as they do under the squared error; 0 where ``mu == y``. ``pred`` is clamped to ``eps``.
    """
    valid = _valid(target, mask, pred)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    valid = valid & (torch.where(valid, target, zero) > 0)
    one = torch.ones((), dtype=pred.dtype, device=pred.device)
    y = torch.where(valid, target.to(pred.dtype), one)
    mu = torch.clamp(pred, min=eps)
    ratio = y / mu
    return _masked_mean(ratio - torch.log(ratio) - 1.0, valid)
