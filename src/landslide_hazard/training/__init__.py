"""Training: the staged ENN training loop (susceptibility, density curriculum, fine-tune)."""

from .loop import (
    STAGES,
    Stage,
    run_training,
    stages_from_config,
    train,
)

__all__ = [
    "STAGES",
    "Stage",
    "run_training",
    "stages_from_config",
    "train",
]
