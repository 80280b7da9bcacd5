"""Training: the staged ENN training loop (susceptibility, density curriculum, fine-tune)."""

from .loop import (
    STAGES,
    Stage,
    evaluate_run,
    run_training,
    stages_from_config,
    train,
)

__all__ = [
    "STAGES",
    "Stage",
    "evaluate_run",
    "run_training",
    "stages_from_config",
    "train",
]
