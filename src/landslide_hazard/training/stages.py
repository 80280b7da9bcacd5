"""The training stages (paper 6.2) and each stage's loss.

1. ``susceptibility``: the susceptibility block on occurrence (density > ``min_density``), focal
   Tversky or class-weighted BCE, lr ``lr_susceptibility``;
2. ``density_log``: the density block on positive cells only, MAE against log1p(density);
3. ``density``: the density block on positive cells, MAE on the original scale (% of cell);
   both with lr ``lr_density``, and both compute the block on the cells whose loss counts only
   (``DensityBlock.forward_selected``: the others would be masked out of the loss; so the
   block's batch norms normalise over the positive cells it learns from);
4. ``finetune``: the whole ENN on all cells with the zeros back in: mean squared error of
   hazard = S x D against the observed density plus the susceptibility loss, lr
   ``lr_finetune``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TrainingConfig
from ..models.enn import ENN
from ..models.susceptibility import SusceptibilityEnsemble
from .losses import (
    focal_tversky_loss,
    masked_gamma_deviance,
    masked_mae,
    masked_mse,
    weighted_bce,
)

STAGES: tuple[str, ...] = ("susceptibility", "density_log", "density", "finetune")


@dataclass(frozen=True)
class Stage:
    """One training stage: which part trains, on what, for how long, at which learning rate."""

    index: int
    name: str
    part: str  # "susceptibility", "density" or "all"
    max_epochs: int
    lr: float
    positive_only: bool


@dataclass(frozen=True)
class ExponentialDecay:
    """Learning-rate factor ``rate ** (step / decay_steps)`` (Keras ExponentialDecay, smooth)."""

    rate: float
    decay_steps: int

    def __call__(self, step: int) -> float:
        return self.rate ** (step / self.decay_steps)


def stages_from_config(t: TrainingConfig) -> list[Stage]:
    return [
        Stage(
            0,
            "susceptibility",
            "susceptibility",
            t.max_epochs_susceptibility,
            t.lr_susceptibility,
            False,
        ),
        Stage(1, "density_log", "density", t.max_epochs_density_log, t.lr_density, True),
        Stage(2, "density", "density", t.max_epochs_density, t.lr_density, True),
        Stage(3, "finetune", "all", t.max_epochs_finetune, t.lr_finetune, False),
    ]


def susceptibility_loss(
    p: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, t: TrainingConfig
) -> torch.Tensor:
    """The configured occurrence loss: focal Tversky (default) or class-weighted BCE."""
    if t.loss == "focal_tversky":
        return focal_tversky_loss(
            p, g, t.tversky_alpha, t.tversky_beta, t.tversky_gamma, t.tversky_gamma_form, mask=mask
        )
    return weighted_bce(p, g, t.bce_pos_weight, mask=mask)


def _members_loss(
    block: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, mask: torch.Tensor, t: TrainingConfig
) -> torch.Tensor:
    """The occurrence loss of a susceptibility block; for a deep ensemble, the mean of each
    member's own loss (so the members train independently, as a deep ensemble's do)."""
    if isinstance(block, SusceptibilityEnsemble):
        losses = [susceptibility_loss(p.float(), g, mask, t) for p in block.member_probabilities(x)]
        return torch.stack(losses).mean()
    return susceptibility_loss(block(x).float(), g, mask, t)


def stage_loss(
    stage: str,
    model: ENN,
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    t: TrainingConfig,
    min_density: float,
) -> torch.Tensor:
    """Loss of one batch in one stage. target: density (%), mask: cells that count."""
    occurrence = (target > min_density).to(torch.float32)
    if stage == "susceptibility":
        return _members_loss(model.susceptibility, x, occurrence, mask, t)
    if stage in ("density_log", "density"):
        counts = mask.to(torch.bool) & torch.isfinite(target)
        d = model.density.forward_selected(x, counts).float()
        y = target[counts].to(d.dtype)
        if stage == "density_log":
            return masked_mae(d, torch.log1p(y))
        if t.density_loss == "gamma":
            return masked_gamma_deviance(d, y)
        return masked_mae(d, y)
    if stage == "finetune":
        out = model(x)
        # MSE by default, not the paper code's MAE: E[D] is a conditional mean, and the MAE's
        # minimiser (the median, 0 wherever P < 0.5) drove the density block to ~0
        # (docs/decisions.md); training.hazard_loss = mae restores the paper code's
        hazard_term = masked_mse if t.hazard_loss == "mse" else masked_mae
        hazard = hazard_term(out.hazard.float(), target, mask)
        if isinstance(model.susceptibility, SusceptibilityEnsemble):
            return hazard + _members_loss(model.susceptibility, x, occurrence, mask, t)
        return hazard + susceptibility_loss(out.susceptibility.float(), occurrence, mask, t)
    raise ValueError(f"unknown stage '{stage}'")


def part_of(model: torch.nn.Module, part: str) -> torch.nn.Module:
    """The module a stage trains: ``model`` itself for ``all``, else its block ``part``."""
    return model if part == "all" else getattr(model, part)
