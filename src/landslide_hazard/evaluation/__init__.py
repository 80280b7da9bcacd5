"""The evaluate stage: occurrence and density metrics, per period, pooled and per fold."""

from .evaluate import MapFiles, evaluate_arrays, evaluate_files, metrics_table, metrics_to_json
from .metrics import (
    average_precision,
    best_f1_threshold,
    density_metrics,
    expected_calibration_error,
    occurrence_metrics,
    pearson_r,
    pr_curve_points,
    reliability_curve,
    roc_auc,
    roc_curve_points,
    skill,
    spearman_r,
)

__all__ = [
    "average_precision",
    "best_f1_threshold",
    "density_metrics",
    "evaluate_arrays",
    "evaluate_files",
    "MapFiles",
    "expected_calibration_error",
    "metrics_table",
    "metrics_to_json",
    "occurrence_metrics",
    "pearson_r",
    "pr_curve_points",
    "reliability_curve",
    "roc_auc",
    "roc_curve_points",
    "skill",
    "spearman_r",
]
