"""Post-hoc calibration of occurrence probabilities (susceptibility), fitted on validation cells.

A calibrator maps a model's probability ``p`` to a calibrated one with a monotone function, so the
ranking (AUC, PR-AUC) is kept (strictly for temperature and Platt scaling; isotonic regression may
merge neighbouring scores into ties) while the probabilities come to mean what they say: of the
cells given 0.2, about 20 % fail. Fit on **validation** cells (never the test cells you report),
then apply to every map. See ``docs/uncertainty.md`` for when to use which.

Methods (``fit_calibrator(kind, p_val, y_val)``):

* ``temperature``: ``sigmoid(logit(p) / T)``, one parameter T > 0 fitted by minimising the
  negative log-likelihood (NLL). T > 1 softens an over-confident model, T < 1 sharpens an
  under-confident one; p = 0.5 stays 0.5, so it cannot move the base rate.
* ``platt``: ``sigmoid(a logit(p) + b)``, logistic regression on the logit (maximum likelihood,
  no regularisation). ``b`` also corrects a shifted base rate, such as the one a class-weighted
  loss (the paper's 1:5 BCE) or a focal Tversky loss leaves behind.
* ``isotonic``: the monotone (non-decreasing) step-wise function of p that minimises the squared
  error (scikit-learn's ``IsotonicRegression``), linearly interpolated between its knots and
  clipped outside the fitted range. Most flexible; needs many validation cells (thousands, with
  hundreds of positives) and can create ties.
* ``none``: the identity, so a config can switch calibration off with the same code path.

Every calibrator has ``fit(p, y)``, ``transform(p)``, ``to_dict()`` and ``from_dict(d)``; the dict
is plain JSON (``save_calibrator`` / ``load_calibrator`` write and read it atomically). Inputs are
NaN-safe: ``fit`` drops cells that are NaN in ``p`` or ``y``, ``transform`` keeps NaN cells NaN and
the array's shape (a (period, y, x) map goes in and comes out).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit

CALIBRATION_KINDS: tuple[str, ...] = ("none", "temperature", "platt", "isotonic")

# Probabilities are clipped to [EPS, 1 - EPS] before taking the logit: a float32 sigmoid saturates
# to exactly 0 or 1, whose logit is infinite. 1e-7 is about float32's resolution just below 1.
LOGIT_EPS = 1e-7
_PROB_TOL = 1e-6
# Search range of log T for temperature scaling: T in [1e-3, 1e3] covers any sane model.
_LOG_T_BOUNDS = (math.log(1e-3), math.log(1e3))


# --------------------------------------------------------------------------------------------
# input handling


def logit(p: Any, eps: float = LOGIT_EPS) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [eps, 1 - eps] (float64; NaN stays NaN)."""
    q = np.clip(np.asarray(p, dtype="float64"), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def _check_probabilities(p: np.ndarray, what: str) -> None:
    finite = p[np.isfinite(p)]
    if finite.size and (finite.min() < -_PROB_TOL or finite.max() > 1 + _PROB_TOL):
        raise ValueError(
            f"{what}: values span [{finite.min():.4g}, {finite.max():.4g}]; calibration needs "
            "probabilities in [0, 1] (pass the susceptibility, not a logit or a density)"
        )
    if np.isinf(p).any():
        raise ValueError(f"{what}: infinite values; pass probabilities in [0, 1] (NaN = no data)")


def _fit_data(p: Any, y: Any, need_both_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validation pairs as float64 1-D arrays: NaN pairs dropped, ranges and classes checked."""
    pp = np.asarray(p, dtype="float64").ravel()
    yy = np.asarray(y, dtype="float64").ravel()
    if pp.size != yy.size:
        raise ValueError(
            f"p has {pp.size} values and y {yy.size}; pass the validation cells' probabilities "
            "and their 0/1 labels, one per cell"
        )
    _check_probabilities(pp, "p (validation probabilities)")
    keep = np.isfinite(pp) & np.isfinite(yy)
    pp, yy = np.clip(pp[keep], 0.0, 1.0), yy[keep]
    bad = (yy != 0) & (yy != 1)
    if bad.any():
        raise ValueError(
            f"y: occurrence labels must be 0/1 or bool, got values such as {yy[bad][:3].tolist()}; "
            "threshold the observed density first (e.g. observed > min_density)"
        )
    if pp.size == 0:
        raise ValueError(
            "no validation cell left after dropping NaN; calibrate on cells that have both a "
            "prediction and an observation"
        )
    n_pos = int(yy.sum())
    if need_both_classes and (n_pos == 0 or n_pos == yy.size):
        which = "negative" if n_pos == 0 else "positive"
        raise ValueError(
            f"all {yy.size} validation cells are {which}: calibration needs both occurrences and "
            "non-occurrences; use more validation cells (more periods or folds) or kind 'none'"
        )
    return pp, yy


def _apply(p: Any, fn) -> np.ndarray:
    """Apply ``fn`` to the finite values of ``p``, keep NaN and the shape; float64 out."""
    pp = np.asarray(p, dtype="float64")
    _check_probabilities(pp, "p")
    out = np.full(pp.shape, np.nan)
    ok = np.isfinite(pp)
    out[ok] = np.clip(fn(np.clip(pp[ok], 0.0, 1.0)), 0.0, 1.0)
    return out


def binary_nll(y: np.ndarray, z: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y`` under logits ``z`` (nats per cell)."""
    return float(-np.mean(y * log_expit(z) + (1.0 - y) * log_expit(-z)))


# --------------------------------------------------------------------------------------------
# calibrators


class Calibrator(ABC):
    """Common interface: ``fit(p, y)`` on validation cells, ``transform(p)``, JSON round trip."""

    kind: ClassVar[str] = ""
    _needs_both_classes: ClassVar[bool] = True

    def __init__(self) -> None:
        self.n_fit: int = 0
        self.n_positive_fit: int = 0
        self.fitted: bool = False

    def fit(self, p: Any, y: Any) -> Calibrator:
        """Fit on validation probabilities ``p`` and 0/1 labels ``y`` (NaN pairs dropped)."""
        pp, yy = _fit_data(p, y, self._needs_both_classes)
        self._fit(pp, yy)
        self.n_fit = int(pp.size)
        self.n_positive_fit = int(yy.sum())
        self.fitted = True
        return self

    def transform(self, p: Any) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``, NaN where ``p`` is NaN (float64)."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(p_val, y_val) first")
        return _apply(p, self._transform)

    def fit_transform(self, p: Any, y: Any) -> np.ndarray:
        return self.fit(p, y).transform(p)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description: ``kind``, the parameters, and the fit sizes."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: nothing to save")
        return {
            "kind": self.kind,
            **self._params(),
            "n_fit": self.n_fit,
            "n_positive_fit": self.n_positive_fit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """Rebuild from ``to_dict()`` output (the ``kind`` must match this class)."""
        if d.get("kind") != cls.kind:
            raise ValueError(
                f"calibrator dict of kind {d.get('kind')!r} given to {cls.__name__} "
                f"(kind {cls.kind!r}); use calibrator_from_dict(d) to dispatch on the kind"
            )
        obj = cls()
        obj._load(d)
        obj.n_fit = int(d.get("n_fit", 0))
        obj.n_positive_fit = int(d.get("n_positive_fit", 0))
        obj.fitted = True
        return obj

    # subclasses implement these
    @abstractmethod
    def _fit(self, p: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def _transform(self, p: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _params(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load(self, d: dict[str, Any]) -> None: ...

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items()) if self.fitted else ""
        return f"{type(self).__name__}({params})"


class IdentityCalibration(Calibrator):
    """No calibration: ``transform(p) = p`` (kind ``none``)."""

    kind = "none"
    _needs_both_classes = False

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        return None

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return p

    def _params(self) -> dict[str, Any]:
        return {}

    def _load(self, d: dict[str, Any]) -> None:
        return None


class TemperatureScaling(Calibrator):
    """``sigmoid(logit(p) / T)`` with T > 0 minimising the validation NLL (Guo et al. 2017).

    The NLL is convex in 1/T, hence unimodal in log T; a bounded Brent search on
    log T in [ln 1e-3, ln 1e3] finds the optimum to ~1e-9.
    """

    kind = "temperature"

    def __init__(self, temperature: float | None = None) -> None:
        """``temperature`` given: a ready calibrator with that T (no fit needed)."""
        super().__init__()
        self.temperature = 1.0
        self.nll_before: float = math.nan
        self.nll_after: float = math.nan
        if temperature is not None:
            self._load({"temperature": temperature})
            self.fitted = True

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        z = logit(p)
        res = optimize.minimize_scalar(
            lambda log_t: binary_nll(y, z * math.exp(-log_t)),
            bounds=_LOG_T_BOUNDS,
            method="bounded",
            options={"xatol": 1e-9},
        )
        self.temperature = float(math.exp(res.x))
        self.nll_before = binary_nll(y, z)
        self.nll_after = float(res.fun)

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(expit(logit(p) / self.temperature))

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _load(self, d: dict[str, Any]) -> None:
        t = float(d["temperature"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"temperature {t} must be a positive finite number")
        self.temperature = t


class PlattScaling(Calibrator):
    """``sigmoid(a logit(p) + b)``: logistic regression on the logit, unregularised ML fit.

    Convex in (a, b); solved with BFGS and the analytic gradient, from (1, 0).
    """

    kind = "platt"

    def __init__(self, slope: float | None = None, intercept: float = 0.0) -> None:
        """``slope`` given: a ready calibrator with that slope and intercept (no fit needed)."""
        super().__init__()
        self.slope, self.intercept = 1.0, 0.0
        if slope is not None:
            self._load({"slope": slope, "intercept": intercept})
            self.fitted = True

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        z = logit(p)
        n = float(z.size)

        def nll_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            u = theta[0] * z + theta[1]
            nll = -np.sum(y * log_expit(u) + (1.0 - y) * log_expit(-u)) / n
            r = (expit(u) - y) / n  # d nll / d u
            return float(nll), np.array([np.sum(r * z), np.sum(r)])

        res = optimize.minimize(
            nll_and_grad, np.array([1.0, 0.0]), jac=True, method="BFGS", options={"gtol": 1e-10}
        )
        self.slope, self.intercept = float(res.x[0]), float(res.x[1])

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(expit(self.slope * logit(p) + self.intercept))

    def _params(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept}

    def _load(self, d: dict[str, Any]) -> None:
        slope, intercept = float(d["slope"]), float(d["intercept"])
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            raise ValueError(f"Platt parameters must be finite, got {slope}, {intercept}")
        self.slope, self.intercept = slope, intercept


class IsotonicCalibration(Calibrator):
    """Non-decreasing step-wise map fitted by isotonic regression (scikit-learn), clipped outside.

    The fitted function is stored as its knots (``x``, ``y``) and applied with ``np.interp``, which
    is what scikit-learn's ``predict`` does with ``out_of_bounds='clip'``; so a calibrator loaded
    from JSON gives the same values as the one just fitted.
    """

    kind = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x_knots = np.array([0.0, 1.0])
        self.y_knots = np.array([0.0, 1.0])

    def _fit(self, p: np.ndarray, y: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(p, y)
        self.x_knots = np.asarray(iso.X_thresholds_, dtype="float64")
        self.y_knots = np.asarray(iso.y_thresholds_, dtype="float64")

    def _transform(self, p: np.ndarray) -> np.ndarray:
        return np.interp(p, self.x_knots, self.y_knots)

    def _params(self) -> dict[str, Any]:
        return {"x": self.x_knots.tolist(), "y": self.y_knots.tolist()}

    def _load(self, d: dict[str, Any]) -> None:
        x = np.asarray(d["x"], dtype="float64")
        y = np.asarray(d["y"], dtype="float64")
        if x.ndim != 1 or x.size == 0 or x.shape != y.shape:
            raise ValueError(
                "isotonic calibrator: 'x' and 'y' must be equal-length non-empty lists"
            )
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("isotonic calibrator: knots must be non-decreasing in x and y")
        self.x_knots, self.y_knots = x, y

    def __repr__(self) -> str:
        return f"IsotonicCalibration({self.x_knots.size} knots)"


_CLASSES: dict[str, type[Calibrator]] = {
    c.kind: c for c in (IdentityCalibration, TemperatureScaling, PlattScaling, IsotonicCalibration)
}


def _class_of(kind: str) -> type[Calibrator]:
    try:
        return _CLASSES[kind]
    except KeyError:
        raise ValueError(
            f"calibration kind {kind!r} unknown; use one of {', '.join(CALIBRATION_KINDS)}"
        ) from None


def fit_calibrator(kind: str, p_val: Any, y_val: Any) -> Calibrator:
    """A calibrator of ``kind`` (one of CALIBRATION_KINDS) fitted on validation cells.

    ``p_val``: predicted probabilities, any shape, NaN = no data; ``y_val``: 0/1 labels, same
    size. Raises ValueError when the validation cells hold one class only.
    """
    return _class_of(kind)().fit(p_val, y_val)


def calibrator_from_dict(d: dict[str, Any]) -> Calibrator:
    """Rebuild any calibrator from its ``to_dict()`` output, dispatching on ``d['kind']``."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError("calibrator dict has no 'kind'; was it written by Calibrator.to_dict()?")
    return _class_of(d["kind"]).from_dict(d)


def save_calibrator(path: str | Path, calibrator: Calibrator) -> Path:
    """Write ``calibrator.to_dict()`` as JSON, atomically."""
    from ..io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(calibrator.to_dict(), indent=2) + "\n")
    return path


def load_calibrator(path: str | Path) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: calibrator file not found; fit one with fit_calibrator")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); re-save it with save_calibrator"
        ) from None
    try:
        return calibrator_from_dict(d)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# scoring


def calibration_scores(y: Any, p: Any, n_bins: int = 15) -> dict[str, float]:
    """Calibration-relevant scores of probabilities ``p`` against 0/1 labels ``y``.

    NaN pairs are dropped. Returns ``n``, ``n_positive``, ``mean_predicted`` and ``prevalence``
    (equal for a model calibrated in the large), ``ece`` (equal-width bins, as in
    ``evaluation.metrics``), ``brier``, ``nll`` (nats per cell, probabilities clipped to
    [LOGIT_EPS, 1 - LOGIT_EPS]) and ``auc`` (unchanged by a strictly monotone calibrator).
    """
    from .metrics import expected_calibration_error, roc_auc

    pp, yy = _fit_data(p, y, need_both_classes=False)
    return {
        "n": int(pp.size),
        "n_positive": int(yy.sum()),
        "prevalence": float(yy.mean()),
        "mean_predicted": float(pp.mean()),
        "ece": expected_calibration_error(yy, pp, n_bins),
        "brier": float(np.mean((pp - yy) ** 2)),
        "nll": binary_nll(yy, logit(pp)),
        "auc": roc_auc(yy, pp),
    }


def evaluate_calibration(
    kind: str,
    p_val: Any,
    y_val: Any,
    p_test: Any,
    y_test: Any,
    n_bins: int = 15,
) -> tuple[Calibrator, dict[str, Any]]:
    """Fit a calibrator of ``kind`` on validation cells and score it there and on test cells.

    Returns the calibrator and a JSON-ready dict: ``calibrator`` (its ``to_dict()``), and for
    ``validation`` and ``test`` the :func:`calibration_scores` ``before`` and ``after``
    calibration. Only the test scores are an honest estimate; the validation ones show the fit.
    """
    cal = fit_calibrator(kind, p_val, y_val)
    report: dict[str, Any] = {"kind": kind, "calibrator": cal.to_dict(), "n_bins": n_bins}
    for name, p, y in (("validation", p_val, y_val), ("test", p_test, y_test)):
        report[name] = {
            "before": calibration_scores(y, p, n_bins),
            "after": calibration_scores(y, cal.transform(p), n_bins),
        }
    return cal, report
