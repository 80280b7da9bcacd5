"""ENN models: susceptibility presets, the per-cell density block and their product (hazard)."""

from .density import DensityBlock
from .enn import ENN, ENNOutput, build_enn
from .layers import count_parameters, glorot_init, patch_to_cells
from .susceptibility import (
    PAPER_TRAINABLE_PARAMETERS,
    SUSCEPTIBILITY_PRESETS,
    SusceptibilityNet,
    build_susceptibility,
)

__all__ = [
    "ENN",
    "PAPER_TRAINABLE_PARAMETERS",
    "SUSCEPTIBILITY_PRESETS",
    "DensityBlock",
    "ENNOutput",
    "SusceptibilityNet",
    "build_enn",
    "build_susceptibility",
    "count_parameters",
    "glorot_init",
    "patch_to_cells",
]
