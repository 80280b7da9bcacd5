"""Training: the staged ENN training loop (susceptibility, density curriculum, fine-tune)."""

from .loop import (
    STAGES,
    Stage,
    evaluate_run,
    find_truth_dir,
    run_training,
    stages_from_config,
    train,
)

__all__ = [
    "STAGES",
    "Stage",
    "cube_path",
    "evaluate_run",
    "find_truth_dir",
    "read_truth",
    "run_training",
    "score_on_split",
    "stages_from_config",
    "train",
    "validation_threshold",
]
