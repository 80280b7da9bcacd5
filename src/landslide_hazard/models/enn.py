"""The Ensemble Neural Network: susceptibility x density = hazard (paper Fig. 5).

The two parts are separate modules (``.susceptibility`` and ``.density``) so they can be trained
separately and then combined and fine-tuned (DESIGN section 4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import numpy as np
import torch
from torch import nn

from ..evaluation.levels import by_period, calibrated_density, calibrated_probability
from .density import DensityBlock
from .susceptibility import build_susceptibility

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack


class ENNOutput(NamedTuple):
    """Per-cell outputs, each (B, n, n).

    susceptibility: P(new failure in the period), in [0, 1].
    density: E[D | D > 0], new failed area in % of the cell.
    hazard: susceptibility * density = E[D], % of the cell.
    """

    susceptibility: torch.Tensor
    density: torch.Tensor
    hazard: torch.Tensor


class ENN(nn.Module):
    """Susceptibility and density blocks on the same patch; hazard is their product.

    ``build_args`` holds the keyword arguments of ``build_enn`` when the ENN came from it (None
    otherwise), so a checkpoint can store them and rebuild with ``build_enn(**build_args)``.
    """

    build_args: dict[str, Any] | None = None
    # declared for type checkers (nn.Module's attribute lookup is typed Tensor | Module)
    susceptibility: nn.Module
    density: DensityBlock
    calibration: torch.Tensor
    use_calibration: bool

    def __init__(
        self,
        susceptibility: nn.Module,
        density: DensityBlock,
        patch_cells: int,
        cell_pixels: int,
    ) -> None:
        super().__init__()
        self.susceptibility = susceptibility
        self.density = density
        self.patch_cells = patch_cells
        self.cell_pixels = cell_pixels
        # Platt scaling of the susceptibility maps, fitted after training on validation cells
        # (training.calibrate): [slope, intercept, on]; off (the raw network) until set
        self.register_buffer("calibration", torch.tensor([1.0, 0.0, 0.0]))
        self.use_calibration = True  # False: maps of the raw network output (predict --raw)
        # per-period logit shifts on top of it, by period name (fitted on the training and
        # validation cells of each period, training.calibrate); a period with neither (a
        # forecast) gets none
        self.period_shifts: dict[str, float] = {}
        # (weight, constant) of the density maps' blend toward a constant, fitted on the
        # validation cells (training.calibrate); None: the density block's maps as they are
        self.density_blend: tuple[float, float] | None = None
        # per-period factors on the (blended) density maps, by period name (fitted on the
        # positive training and validation cells of each period, training.calibrate), and the
        # factor of a period with neither (a forecast: a scenario's new period): the common level
        self.period_density_factors: dict[str, float] = {}
        self.density_level = 1.0

    def clear_calibration(self) -> None:
        """Back to the raw network's maps, as built: no Platt scaling, period shifts, density
        blend or density levels (``training.calibrate`` fits them again)."""
        with torch.no_grad():
            self.calibration.copy_(torch.tensor([1.0, 0.0, 0.0]))
        self.period_shifts = {}
        self.density_blend = None
        self.period_density_factors = {}
        self.density_level = 1.0

    def set_calibration(self, slope: float, intercept: float) -> None:
        """Calibrate the susceptibility maps with ``sigmoid(slope * logit(p) + intercept)``;
        stored with the weights (a buffer of the state dict)."""
        self.calibration.copy_(torch.tensor([float(slope), float(intercept), 1.0]))

    @property
    def calibrated(self) -> bool:
        return bool(self.calibration[2] > 0)

    def calibrate_map(
        self, p: np.ndarray, period_names: list[str] | None = None
    ) -> np.ndarray | None:
        """The stored calibration applied to susceptibility maps (after the lattices are
        merged, where it was fitted); None when there is none or ``use_calibration`` is off.

        ``p``: (P, ...) maps of the periods ``period_names``; each period whose name has a
        stored shift (:attr:`period_shifts`) gets it added to its logit. Without names, or for
        a period without a shift, the pooled calibration alone applies.
        """
        if not (self.use_calibration and self.calibrated):
            return None
        slope, intercept = (float(v) for v in self.calibration[:2])
        shifts = None
        if period_names is not None and self.period_shifts:
            shifts = by_period(self.period_shifts, period_names, 0.0, p.shape[0])
        return calibrated_probability(p, slope, intercept, shifts)

    def calibrate_density(
        self, d: np.ndarray, period_names: list[str] | None = None
    ) -> np.ndarray | None:
        """The stored density calibration applied to (merged) density maps: the blend
        ``constant + weight (d - constant)``, then each named period's level factor
        (:attr:`period_density_factors`), or the common level (:attr:`density_level`) for a
        period without one or without names; None when there is nothing stored or
        ``use_calibration`` is off. ``d``: (P, ...) maps of the periods ``period_names``."""
        factors = self.period_density_factors if period_names is not None else {}
        stored = self.density_blend is not None or factors or self.density_level != 1.0
        if not (self.use_calibration and stored):
            return None
        n = np.shape(d)[0]
        if period_names is None:
            scale = np.full(n, self.density_level)
        else:
            scale = by_period(factors, period_names, self.density_level, n)
        return calibrated_density(d, self.density_blend, scale)

    def forward(self, x: torch.Tensor) -> ENNOutput:
        """(B, C, n*k, n*k) -> ENNOutput of three (B, n, n) tensors (the raw network: the
        calibration applies to the merged maps, ``predict.predict_arrays``)."""
        s = self.susceptibility(x)
        d = self.density(x)
        return ENNOutput(susceptibility=s, density=d, hazard=s * d)


class ArchitectureOptions(TypedDict, total=False):
    """``build_enn``'s architecture options beside preset and grid; defaults:
    ``run.ARCHITECTURE_DEFAULTS``."""

    dropout: float
    density_activation: str
    wide: str  # models.susceptibility
    members: int
    glm: bool  # a fitted per-cell regression (models.layers.CellSummaryGLM)
    glm_fit: str  # start or stack (SusceptibilityNet.add_glm)


def build_enn(
    preset: str,
    in_channels: int = 13,
    patch_cells: int = 4,
    cell_pixels: int = 32,
    **options: Unpack[ArchitectureOptions],
) -> ENN:
    """An ENN: the preset's susceptibility block plus the code's density block, Glorot-initialised.

    The susceptibility block is built first and the density block second, so one
    ``torch.manual_seed`` before the call fixes every weight. Options not given take
    ``run.ARCHITECTURE_DEFAULTS`` (the defaults ``model.pt`` files are read with).
    """
    from ..run import ARCHITECTURE_DEFAULTS

    unknown = set(options) - set(ARCHITECTURE_DEFAULTS)
    if unknown:
        raise TypeError(f"build_enn() got unknown architecture option(s) {sorted(unknown)}")
    opts: dict[str, Any] = {**ARCHITECTURE_DEFAULTS, **options}
    dropout = opts["dropout"]
    sus = build_susceptibility(
        preset,
        in_channels,
        patch_cells,
        cell_pixels,
        dropout,
        wide=opts["wide"],
        members=opts["members"],
        glm=opts["glm_fit"] if opts["glm"] else None,
    )
    den = DensityBlock(
        in_channels, cell_pixels, dropout, output_activation=opts["density_activation"]
    )
    enn = ENN(sus, den, patch_cells, cell_pixels)
    enn.build_args = {
        "preset": preset,
        "in_channels": in_channels,
        "patch_cells": patch_cells,
        "cell_pixels": cell_pixels,
        **opts,
    }
    return enn
