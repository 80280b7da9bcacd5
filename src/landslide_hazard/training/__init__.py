"""Training: the staged ENN training loop (susceptibility, density curriculum, fine-tune)."""

from .loop import recalibrate, run_training, train
from .stages import STAGES, Stage, stages_from_config

__all__ = [
    "STAGES",
    "Stage",
    "recalibrate",
    "run_training",
    "stages_from_config",
    "train",
]
