"""Scores for the two model components: occurrence (susceptibility) and density (and hazard).

Pure functions on arrays. Every function drops the cells that are NaN in any of its inputs, and
never crashes on degenerate data: a metric that is undefined for the data (AUC with one class,
precision with no predicted positive, Pearson r of a constant) is NaN and the returned dict
carries a ``notes`` list that says why.

Conventions (see docs/metrics.md):

* occurrence label ``y`` is 0/1 (or bool); a cell is predicted positive when ``score >= threshold``;
* AUC is the area under the ROC curve with ties counted one half (Mann-Whitney U / (n1 n0));
* PR-AUC is the average precision, sum over distinct thresholds of (R_k - R_k-1) P_k
  (scikit-learn's definition, no interpolation);
* ECE uses ``n_bins`` equal-width bins on [0, 1], bin k = (k/n, (k+1)/n] and the first bin
  includes 0 (scikit-learn's ``calibration_curve`` binning); ECE = sum_k n_k / N |ybar_k - pbar_k|;
* soft F1 is the probability-weighted F1 of the paper's code, 2 sum(p g) / (sum p + sum g).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError

N_BINS_DEFAULT = 15
_PROB_TOL = 1e-6


# --------------------------------------------------------------------------------------------
# input handling


def _flat_float(a: Any) -> np.ndarray:
    return np.asarray(a, dtype="float64").ravel()


def _binary_labels(y: np.ndarray, name: str = "y_true") -> np.ndarray:
    """0/1 floats (NaN already removed) -> bool; anything else is an error that says the fix."""
    bad = (y != 0) & (y != 1)
    if bad.any():
        example = y[bad][:3].tolist()
        raise InputError(
            f"{name}: occurrence labels must be 0/1 or bool, got values such as {example}; "
            "threshold the density first (e.g. observed > min_density)"
        )
    return y == 1


def _drop_nan(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Keep the positions finite in every array; return the kept arrays and how many dropped."""
    if len({a.size for a in arrays}) != 1:
        sizes = ", ".join(str(a.size) for a in arrays)
        raise InputError(f"inputs differ in size ({sizes}); pass arrays of the same shape")
    keep = np.ones(arrays[0].size, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    return [a[keep] for a in arrays], int(keep.size - keep.sum())


def _prepare_occurrence(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, int]:
    (y, s), dropped = _drop_nan(_flat_float(y_true), _flat_float(score))
    return _binary_labels(y), s, dropped


# --------------------------------------------------------------------------------------------
# threshold-free ranking scores


def _descending_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP and FP when predicting ``score >= t`` for each distinct score t (descending).

    Returns (thresholds, tp, fp), one entry per distinct score value.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order].astype("int64")
    # last index of each run of equal scores
    last = np.flatnonzero(np.diff(s_sorted) != 0)
    last = np.append(last, s_sorted.size - 1)
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return s_sorted[last], tp.astype("float64"), fp.astype("float64")


def roc_auc(y_true: Any, score: Any) -> float:
    """Area under the ROC curve (ties count 1/2); NaN when only one class is present."""
    y, s, _ = _prepare_occurrence(y_true, score)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # mid-ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true: Any, score: Any) -> float:
    """PR-AUC as average precision, sum_k (R_k - R_k-1) P_k; NaN when there is no positive."""
    y, s, _ = _prepare_occurrence(y_true, score)
    n_pos = y.sum()
    if y.size == 0 or n_pos == 0:
        return math.nan
    _, tp, fp = _descending_counts(y, s)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def roc_curve_points(y_true: Any, score: Any) -> dict[str, np.ndarray]:
    """ROC curve: false and true positive rates at each distinct threshold, from (0, 0)."""
    y, s, _ = _prepare_occurrence(y_true, score)
    n_pos, n_neg = y.sum(), y.size - y.sum()
    if n_pos == 0 or n_neg == 0:
        return {"fpr": np.array([]), "tpr": np.array([]), "thresholds": np.array([])}
    thr, tp, fp = _descending_counts(y, s)
    return {
        "fpr": np.concatenate([[0.0], fp / n_neg]),
        "tpr": np.concatenate([[0.0], tp / n_pos]),
        "thresholds": np.concatenate([[np.inf], thr]),
    }


def pr_curve_points(y_true: Any, score: Any) -> dict[str, np.ndarray]:
    """Precision-recall curve at each distinct threshold (descending score)."""
    y, s, _ = _prepare_occurrence(y_true, score)
    n_pos = y.sum()
    if n_pos == 0:
        return {"precision": np.array([]), "recall": np.array([]), "thresholds": np.array([])}
    thr, tp, fp = _descending_counts(y, s)
    return {"precision": tp / (tp + fp), "recall": tp / n_pos, "thresholds": thr}


def best_f1_threshold(y_true: Any, score: Any) -> float:
    """The score threshold t (one of the scores) maximising F1 of ``score >= t`` on these data.

    Ties go to the highest such threshold. NaN when the data hold no positive (F1 is 0 or
    undefined at every threshold). Use it on validation data and pass the result to
    :func:`occurrence_metrics` for test data.
    """
    y, s, _ = _prepare_occurrence(y_true, score)
    n_pos = y.sum()
    if y.size == 0 or n_pos == 0:
        return math.nan
    thr, tp, fp = _descending_counts(y, s)
    f1 = 2 * tp / (tp + fp + n_pos)
    return float(thr[int(np.argmax(f1))])


# --------------------------------------------------------------------------------------------
# calibration


def reliability_curve(y: Any, p: Any, n_bins: int = N_BINS_DEFAULT) -> dict[str, np.ndarray]:
    """Per equal-width probability bin: mean predicted p, observed frequency, count.

    Bins are (k/n, (k+1)/n] with the first one closed at 0; empty bins hold NaN and count 0.
    Probabilities outside [0, 1] raise a ValueError.
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be >= 1, got {n_bins}")
    yy, pp, _ = _prepare_occurrence(y, p)
    if pp.size and (pp.min() < -_PROB_TOL or pp.max() > 1 + _PROB_TOL):
        raise InputError(
            f"scores span [{pp.min():.4g}, {pp.max():.4g}]: a reliability curve needs "
            "probabilities in [0, 1]"
        )
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], pp)  # side='left': a value on an edge joins the lower bin
    count = np.bincount(ids, minlength=n_bins).astype("float64")
    sum_p = np.bincount(ids, weights=pp, minlength=n_bins)
    sum_y = np.bincount(ids, weights=yy.astype("float64"), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        frac = np.where(count > 0, sum_y / count, np.nan)
    return {
        "bin_edges": edges,
        "mean_predicted": mean_p,
        "fraction_positive": frac,
        "count": count.astype("int64"),
    }


def expected_calibration_error(y: Any, p: Any, n_bins: int = N_BINS_DEFAULT) -> float:
    """ECE = sum_k n_k / N |observed frequency_k - mean p_k| over equal-width bins; NaN if empty."""
    curve = reliability_curve(y, p, n_bins)
    n = curve["count"].sum()
    if n == 0:
        return math.nan
    used = curve["count"] > 0
    gap = np.abs(curve["fraction_positive"][used] - curve["mean_predicted"][used])
    return float(np.sum(curve["count"][used] / n * gap))


# --------------------------------------------------------------------------------------------
# occurrence


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def occurrence_metrics(
    y_true: Any,
    score: Any,
    threshold: float | None = None,
    n_bins: int = N_BINS_DEFAULT,
) -> dict[str, Any]:
    """Occurrence scores of a susceptibility ``score`` against 0/1 labels ``y_true``.

    ``threshold`` turns scores into classes (``score >= threshold``); when None the max-F1
    threshold **on these data** is used (optimistic: callers scoring test data pass the
    threshold found on validation data). Returns a dict with ``n``, ``n_positive``,
    ``prevalence``, ``auc``, ``pr_auc``, ``threshold``, ``threshold_source``, ``tp``, ``fp``,
    ``fn``, ``tn``, ``precision``, ``recall``, ``f1``, ``iou``, ``soft_f1``, ``brier``, ``ece``,
    ``n_dropped_nan`` and ``notes`` (why a metric is NaN). Scores are probabilities for Brier,
    ECE and soft F1; otherwise those three are NaN with a note.
    """
    y, s, dropped = _prepare_occurrence(y_true, score)
    notes: list[str] = []
    n = int(y.size)
    n_pos = int(y.sum())
    out: dict[str, Any] = {"n": n, "n_positive": n_pos, "n_dropped_nan": dropped}
    out["prevalence"] = _ratio(n_pos, n)
    if n == 0:
        notes.append("no valid cell (every cell is NaN in an input): all metrics are NaN")
    elif n_pos == 0:
        notes.append(
            "no positive cell (all-negative data): AUC, PR-AUC, recall, the max-F1 threshold "
            "and (if nothing is predicted positive) F1 and IoU are undefined"
        )
    elif n_pos == n:
        notes.append("no negative cell (all-positive data): AUC is undefined")
    if n > 0 and np.ptp(s) == 0:
        notes.append(
            f"constant prediction ({s[0]:.4g}): it does not rank cells, AUC is 0.5 at best"
        )

    out["auc"] = roc_auc(y, s) if n else math.nan
    out["pr_auc"] = average_precision(y, s) if n else math.nan

    if threshold is None:
        t = best_f1_threshold(y, s) if n else math.nan
        out["threshold_source"] = "max-F1 on these data (optimistic)"
    else:
        t = float(threshold)
        out["threshold_source"] = "given"
    out["threshold"] = t

    if math.isnan(t):
        tp = fp = fn = tn = math.nan
        if threshold is None and n:
            notes.append("no threshold: the data hold no positive to maximise F1 on")
        elif threshold is not None:
            notes.append("the threshold is NaN: no class metrics (F1, IoU, precision, recall)")
    else:
        pred = s >= t
        tp = int(np.sum(pred & y))
        fp = int(np.sum(pred & ~y))
        fn = int(np.sum(~pred & y))
        tn = int(np.sum(~pred & ~y))
    out.update(tp=tp, fp=fp, fn=fn, tn=tn)
    if math.isnan(t):
        out.update(precision=math.nan, recall=math.nan, f1=math.nan, iou=math.nan)
    else:
        out["precision"] = _ratio(tp, tp + fp)
        out["recall"] = _ratio(tp, tp + fn)
        out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
        out["iou"] = _ratio(tp, tp + fp + fn)
        if tp + fp == 0 and n:
            notes.append(f"no cell predicted positive at threshold {t:.4g}: precision undefined")

    is_prob = n > 0 and s.min() >= -_PROB_TOL and s.max() <= 1 + _PROB_TOL
    if n and not is_prob:
        notes.append(
            f"scores span [{s.min():.4g}, {s.max():.4g}], not probabilities: Brier, ECE and soft "
            "F1 are NaN"
        )
    if is_prob:
        g = y.astype("float64")
        out["soft_f1"] = _ratio(2 * np.sum(s * g), s.sum() + g.sum())
        out["brier"] = float(np.mean((s - g) ** 2))
        out["ece"] = expected_calibration_error(g, s, n_bins)
    else:
        out.update(soft_f1=math.nan, brier=math.nan, ece=math.nan)
    out["notes"] = notes
    return out


# --------------------------------------------------------------------------------------------
# density (and hazard)


def pearson_r(x: Any, y: Any) -> float:
    """Pearson correlation of two equal-size samples (NaN pairs dropped); NaN if one is constant."""
    (a, b), _ = _drop_nan(_flat_float(x), _flat_float(y))
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
    if den == 0:
        return math.nan
    return float(np.clip(np.sum(da * db) / den, -1.0, 1.0))


def spearman_r(x: Any, y: Any) -> float:
    """Spearman rank correlation (Pearson r of mid-ranks); NaN if one sample is constant."""
    (a, b), _ = _drop_nan(_flat_float(x), _flat_float(y))
    if a.size < 2:
        return math.nan
    return pearson_r(rankdata(a), rankdata(b))


def _regression_block(obs: np.ndarray, pred: np.ndarray, subset: str) -> dict[str, Any]:
    notes: list[str] = []
    n = int(obs.size)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        notes.append(f"no {subset} cell: all metrics are NaN")
        out.update(
            mae=math.nan,
            rmse=math.nan,
            bias=math.nan,
            pearson_r=math.nan,
            spearman_r=math.nan,
            mean_observed=math.nan,
            mean_predicted=math.nan,
        )
        out["notes"] = notes
        return out
    err = pred - obs
    out["mae"] = float(np.mean(np.abs(err)))
    out["rmse"] = float(math.sqrt(np.mean(err * err)))
    out["bias"] = float(np.mean(err))
    out["mean_observed"] = float(obs.mean())
    out["mean_predicted"] = float(pred.mean())
    out["pearson_r"] = pearson_r(obs, pred)
    out["spearman_r"] = spearman_r(obs, pred)
    if n < 2:
        notes.append(f"one {subset} cell only: correlations are undefined")
    elif np.ptp(obs) == 0 or np.ptp(pred) == 0:
        which = "observed" if np.ptp(obs) == 0 else "predicted"
        notes.append(f"{which} values are constant on {subset} cells: correlations are undefined")
    out["notes"] = notes
    return out


def density_metrics(observed: Any, predicted: Any) -> dict[str, Any]:
    """Density (or hazard) scores, in the units of the inputs (% of cell area here).

    Returns ``{"all": {...}, "positive": {...}}``: each with ``n``, ``mae``, ``rmse``, ``bias``
    (mean predicted - observed), ``mean_observed``, ``mean_predicted``, ``pearson_r``,
    ``spearman_r`` and ``notes``; ``all`` is every valid cell, ``positive`` the cells with
    observed > 0. Also ``n_dropped_nan``.
    """
    (obs, pred), dropped = _drop_nan(_flat_float(observed), _flat_float(predicted))
    pos = obs > 0
    return {
        "all": _regression_block(obs, pred, "valid"),
        "positive": _regression_block(obs[pos], pred[pos], "positive"),
        "n_dropped_nan": dropped,
    }


def skill(auc: float, oracle_auc: float) -> float:
    """Skill relative to an oracle, (AUC - 0.5) / (oracle AUC - 0.5); NaN if the oracle <= 0.5."""
    if not (math.isfinite(auc) and math.isfinite(oracle_auc)) or oracle_auc <= 0.5:
        return math.nan
    return float((auc - 0.5) / (oracle_auc - 0.5))
