"""Predictive uncertainty: MC dropout, deep-ensemble statistics, reliability diagrams, std maps.

Both methods measure the **epistemic** spread of the model's prediction (how much the fitted
function itself is uncertain given the training data), not the aleatoric noise of landslide
occurrence (a cell with P = 0.3 fails or not; that randomness is already in P). See
``docs/uncertainty.md``.

* :func:`mc_dropout_predict` runs a model ``n_samples`` times with its dropout layers active and
  everything else (BatchNorm above all) in evaluation mode; mean and std per output and cell.
* :func:`ensemble_predict` / :func:`ensemble_stats`: the same statistics over the members of a
  deep ensemble (models trained from different seeds), from models or from their saved maps.
  The std is that of the equally weighted mixture of members (``ddof=0`` by default).
* :func:`reliability_diagram`: observed frequency against mean predicted probability per bin,
  with the bin counts and the ECE (``landslide_hazard.evaluation.metrics``), as a matplotlib figure.
* :func:`write_uncertainty_tif`: std maps (period, y, x) as a COG with one band per period.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from affine import Affine
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from rasterio.crs import CRS

    from ..cube import PeriodInfo

# Every dropout flavour torch offers; MC dropout switches exactly these to training mode.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

# Units of a std map, by the quantity it belongs to (same units as the quantity itself).
STD_UNITS: dict[str, str] = {
    "susceptibility": "probability",
    "density": "% of cell area",
    "hazard": "% of cell area",
}


@dataclass(frozen=True)
class PredictiveStats:
    """Mean and standard deviation per output over MC-dropout samples or ensemble members.

    ``mean`` and ``std`` map the output names (``susceptibility``, ``density``, ``hazard`` for an
    ENN; ``output`` for a model returning one tensor) to float32 arrays of the output's shape,
    e.g. (B, n, n). ``n_samples``: forward passes (MC) or members (ensemble);
    ``n_dropout_layers``: dropout layers with p > 0 that were active (0 for an ensemble).
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    n_samples: int
    n_dropout_layers: int = 0


# --------------------------------------------------------------------------------------------
# model outputs


def _outputs_as_dict(out: Any) -> dict[str, torch.Tensor]:
    """ENNOutput (or any NamedTuple of tensors) -> dict by field; a single tensor -> 'output'."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return {name: getattr(out, name) for name in out._fields}
    if isinstance(out, Mapping):
        return dict(out)
    raise TypeError(
        f"model returned {type(out).__name__}; expected a tensor, a NamedTuple of tensors "
        "(such as ENNOutput) or a dict of tensors"
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class _Moments:
    """Streaming NaN-aware mean and sum of squared deviations (Welford), float64.

    Each position counts only the samples that are finite there, so maps with NaN outside the
    study mask (or where a member predicted nothing) accumulate without stacking the samples.
    """

    def __init__(self) -> None:
        self.n = 0
        self.count: dict[str, np.ndarray] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.m2: dict[str, np.ndarray] = {}

    def add(self, values: Mapping[str, Any]) -> None:
        if self.mean and set(values) != set(self.mean):
            raise ValueError(
                f"samples return different outputs ({sorted(values)} vs {sorted(self.mean)}); "
                "combine predictions of the same kind"
            )
        self.n += 1
        for k, v in values.items():
            v = np.asarray(v, dtype="float64")
            if k not in self.mean:
                self.count[k] = np.zeros(v.shape, dtype="int64")
                self.mean[k] = np.zeros(v.shape)
                self.m2[k] = np.zeros(v.shape)
            elif v.shape != self.mean[k].shape:
                raise ValueError(
                    f"'{k}' has shape {v.shape} in sample {self.n} but {self.mean[k].shape} "
                    "before; every sample must cover the same cells and periods"
                )
            ok = np.isfinite(v)
            self.count[k] += ok
            delta = np.where(ok, v - self.mean[k], 0.0)
            self.mean[k] += delta / np.maximum(self.count[k], 1)
            self.m2[k] += np.where(ok, delta * (v - self.mean[k]), 0.0)

    def result(self, ddof: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        mean: dict[str, np.ndarray] = {}
        std: dict[str, np.ndarray] = {}
        for k, count in self.count.items():
            den = count - ddof
            with np.errstate(invalid="ignore", divide="ignore"):
                sd = np.where(den > 0, np.sqrt(np.maximum(self.m2[k], 0.0) / den), np.nan)
            mean[k] = np.where(count > 0, self.mean[k], np.nan).astype("float32")
            std[k] = sd.astype("float32")
        return mean, std


def _forward_batches(
    model: nn.Module, x: torch.Tensor, batch_size: int | None
) -> dict[str, np.ndarray]:
    """One pass over ``x`` in batches; outputs concatenated along the batch axis, on the CPU."""
    step = x.shape[0] if not batch_size else int(batch_size)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, x.shape[0], step):
        out = _outputs_as_dict(model(x[i : i + step]))
        for k, v in out.items():
            parts.setdefault(k, []).append(v.detach().float().cpu().numpy())
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# MC dropout


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The model's dropout modules with a drop probability > 0."""
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and _drop_p(m) > 0]


def _drop_p(module: nn.Module) -> float:
    """A dropout module's drop probability (``p``, a float on every torch dropout)."""
    p = module.p
    return float(p) if isinstance(p, int | float) else 0.0


class MCDropout(nn.Module):
    """Wraps a model so that its dropout layers stay active whatever ``train()``/``eval()`` says.

    Everything else (BatchNorm above all) is kept in evaluation mode, so the wrapper can be handed
    to code that calls ``model.eval()`` and runs under ``torch.inference_mode()``, such as
    ``predict.predict_arrays``: each call then gives one stochastic sample of the maps. Creating
    the wrapper puts the wrapped model into that state; :func:`mc_dropout_maps` restores the
    model's own flags afterwards.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.dropout_count = len(dropout_layers(model))
        self.train(False)

    def train(self, mode: bool = True) -> MCDropout:
        self.training = mode
        self.model.eval()
        for m in dropout_layers(self.model):
            m.train(True)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def calibrate_map(self, p: Any, period_names: list[str] | None = None) -> Any:
        """The wrapped model's map calibration (``ENN.calibrate_map``), if it has one."""
        calibrate = getattr(self.model, "calibrate_map", None)
        return calibrate(p, period_names) if calibrate is not None else None

    def calibrate_density(self, d: Any, period_names: list[str] | None = None) -> Any:
        """The wrapped model's density calibration (``ENN.calibrate_density``), if it has one."""
        blend = getattr(self.model, "calibrate_density", None)
        return blend(d, period_names) if blend is not None else None


def _warn_no_dropout(stacklevel: int) -> None:
    warnings.warn(
        "the model has no dropout layer with p > 0 (built with dropout=0?): every MC pass is "
        "the same and the std is zero; build it with dropout > 0 or use a deep ensemble",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def accumulate_stats(
    samples: Iterable[Mapping[str, Any]], ddof: int = 0, n_dropout_layers: int = 0
) -> PredictiveStats:
    """Streaming NaN-aware mean and std over samples, each a dict ``{output name: array}``.

    ``samples`` can be a generator (e.g. one ensemble member's maps at a time), so only the
    accumulators are held in memory: three float64 arrays and a count per output. At each
    position NaN samples are left out; positions with no finite sample, or count <= ddof, are
    NaN. Float32 results, like :func:`ensemble_stats`.
    """
    moments = _Moments()
    for sample in samples:
        moments.add(sample)
    if moments.n == 0:
        raise ValueError("no sample to summarise; pass at least one prediction")
    mean, std = moments.result(ddof)
    return PredictiveStats(mean, std, n_samples=moments.n, n_dropout_layers=n_dropout_layers)


def mc_dropout_maps(
    model: nn.Module,
    predict_maps: Callable[[nn.Module], Mapping[str, Any]],
    n_samples: int = 20,
    seed: int = 0,
    ddof: int = 0,
) -> PredictiveStats:
    """MC dropout over any prediction routine: ``predict_maps(wrapped_model)`` ``n_samples`` times.

    ``predict_maps`` receives the model wrapped in :class:`MCDropout` and returns a dict of arrays,
    e.g. ``lambda m: predict_arrays(m, reader, norm)`` for wall-to-wall (period, y, x) maps with
    NaN outside the mask. Statistics are streamed (NaN-aware), the RNG is forked and seeded with
    ``seed`` (the caller's random stream is untouched), and the model's train/eval flags are
    restored afterwards. BatchNorm stays in evaluation mode throughout.
    """
    if not dropout_layers(model):
        _warn_no_dropout(stacklevel=2)
    return _mc_dropout(model, predict_maps, n_samples, seed, ddof)


def _mc_dropout(
    model: nn.Module,
    predict_maps: Callable[[nn.Module], Mapping[str, Any]],
    n_samples: int,
    seed: int,
    ddof: int,
) -> PredictiveStats:
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    with seeded_passes(model, seed):
        wrapped = MCDropout(model)
        return accumulate_stats(
            (predict_maps(wrapped) for _ in range(n_samples)),
            ddof=ddof,
            n_dropout_layers=wrapped.dropout_count,
        )


@contextmanager
def seeded_passes(model: nn.Module, seed: int) -> Iterator[None]:
    """The state MC-dropout passes run in: inside, the global torch RNG is forked (the CPU's,
    and the CUDA one of the model's device) and seeded with ``seed``; on exit the caller's
    random stream and every module's train/eval flag are as they were before."""
    device = _model_device(model)
    saved_modes = {m: m.training for m in model.modules()}
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            yield
    finally:
        for m, mode in saved_modes.items():
            m.training = mode


def mc_dropout_predict(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    n_samples: int = 20,
    seed: int = 0,
    batch_size: int | None = None,
    ddof: int = 0,
) -> PredictiveStats:
    """Monte-Carlo dropout: mean and std of each output over ``n_samples`` stochastic passes.

    Only the dropout layers run in training mode (random masks); BatchNorm and every other layer
    stay in evaluation mode, so BatchNorm uses, and never updates, its running statistics. The
    model's own train/eval flags are restored afterwards, and the global torch RNG is left as it
    was (the passes draw from a generator forked and seeded with ``seed``), so the result is
    reproducible for a seed and does not disturb the caller's random stream.

    ``x``: the normalised input (B, C, H, W) as the model expects it (moved to the model's device).
    ``batch_size``: split B into chunks of this size per pass (None: all at once).
    ``ddof``: 0 (default) gives the std of the predictive distribution formed by the passes.
    Returns :class:`PredictiveStats`; for an ENN the keys are susceptibility (probability),
    density and hazard (% of cell area), each (B, n, n). Hazard statistics are of the per-pass
    product S x D, not the product of the mean maps. A model without an active dropout layer
    gives a zero std (with a warning): use a deep ensemble for it instead.
    """
    xt = torch.as_tensor(x, dtype=torch.float32).to(_model_device(model))
    if not dropout_layers(model):
        _warn_no_dropout(stacklevel=2)

    def one_pass(wrapped: nn.Module) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return _forward_batches(wrapped, xt, batch_size)

    return _mc_dropout(model, one_pass, n_samples, seed, ddof)


# --------------------------------------------------------------------------------------------
# deep ensembles


def ensemble_stats(
    member_maps: Sequence[np.ndarray], ddof: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean and std over ensemble members' maps of one quantity (float32 out).

    ``member_maps``: one array per member, all of the same shape (e.g. (period, y, x)). At each
    position the members that are NaN there are left out; mean and std use the others, the std
    with divisor (count - ddof). Positions with no finite member (or count <= ddof) are NaN.
    Equals ``np.nanmean(stack, 0)`` and ``np.nanstd(stack, 0, ddof=ddof)`` without stacking the
    members (one member's size of extra memory per accumulator) and without all-NaN warnings.
    """
    if len(member_maps) == 0:
        raise ValueError("ensemble_stats needs at least one member map")
    shape = np.shape(member_maps[0])
    for i, m in enumerate(member_maps):
        if np.shape(m) != shape:
            raise ValueError(
                f"member {i} has shape {np.shape(m)}, member 0 {shape}; all members must be "
                "predicted on the same grid and periods"
            )
    count = np.zeros(shape, dtype="int64")
    total = np.zeros(shape, dtype="float64")
    for m in member_maps:
        a = np.asarray(m, dtype="float64")
        ok = np.isfinite(a)
        count += ok
        total += np.where(ok, a, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    ss = np.zeros(shape, dtype="float64")
    for m in member_maps:
        a = np.asarray(m, dtype="float64")
        d = np.where(np.isfinite(a), a - mean, 0.0)
        ss += d * d
    den = count - ddof
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(den > 0, np.sqrt(ss / np.where(den > 0, den, 1)), np.nan)
    mean[count == 0] = np.nan
    return mean.astype("float32"), std.astype("float32")


def ensemble_predict(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    batch_size: int | None = None,
    ddof: int = 0,
) -> PredictiveStats:
    """Deep ensemble: every member in evaluation mode on ``x``; mean and std per output.

    Members must return the same outputs (e.g. ENNs of any presets). Their train/eval flags are
    restored afterwards. Hazard statistics are of each member's own S x D.
    """
    if len(models) == 0:
        raise ValueError("ensemble_predict needs at least one model")
    moments = _Moments()
    for model in models:
        was_training = model.training
        try:
            model.eval()
            xt = torch.as_tensor(x, dtype=torch.float32).to(_model_device(model))
            with torch.no_grad():
                out = _forward_batches(model, xt, batch_size)
        finally:
            model.train(was_training)
        moments.add(out)
    mean, std = moments.result(ddof)
    return PredictiveStats(mean, std, n_samples=len(models), n_dropout_layers=0)


# --------------------------------------------------------------------------------------------
# reliability diagram


def reliability_diagram(
    y: Any,
    p: Any | Mapping[str, Any],
    n_bins: int = 15,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: observed frequency vs mean predicted probability per equal-width bin.

    ``y``: 0/1 labels; ``p``: probabilities of the same size (NaN pairs are dropped), or a dict
    ``{label: p}`` to overlay several (e.g. before/after calibration) on the same labels. Bins and
    ECE are those of ``evaluation.metrics.reliability_curve`` / ``expected_calibration_error``.

    With ``ax=None`` a new figure has two panels: the curve(s) with the diagonal, and below them
    the cell count per bin (log scale; landslide data are dominated by the low bins). With an
    ``ax`` the curve(s) go there and the counts on a twin y axis. The ECE is in the title (one
    curve) or in each legend label. Returns the figure. Each curve's line has ``gid``
    ``'reliability:<label>'`` and each count histogram ``'count:<label>'``.
    """
    import matplotlib.pyplot as plt

    from ..evaluation.metrics import expected_calibration_error, reliability_curve

    series = dict(p) if isinstance(p, Mapping) else {"model": p}
    if not series:
        raise ValueError("reliability_diagram: no probabilities given")
    if ax is None:
        fig, (ax_curve, ax_count) = plt.subplots(
            2, 1, figsize=(5.0, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
    else:
        root = ax.get_figure(root=True)
        if root is None:
            raise ValueError("reliability_diagram: ax belongs to no figure")
        fig = root
        ax_curve, ax_count = ax, ax.twinx()
    ax_curve.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    eces: dict[str, float] = {}
    any_count = False
    width = 1.0 / n_bins
    for i, (label, probs) in enumerate(series.items()):
        curve = reliability_curve(y, probs, n_bins)
        ece = expected_calibration_error(y, probs, n_bins)
        eces[label] = ece
        used = curve["count"] > 0
        any_count |= bool(used.any())
        color = f"C{i}"
        shown = label if len(series) == 1 else f"{label} (ECE {ece:.3f})"
        ax_curve.plot(
            curve["mean_predicted"][used],
            curve["fraction_positive"][used],
            marker="o",
            color=color,
            label=shown,
            gid=f"reliability:{label}",
        )
        ax_count.bar(
            curve["bin_edges"][:-1],
            curve["count"],
            width=width,
            align="edge",
            fill=False,
            edgecolor=color,
            alpha=0.7 if ax is None else 0.35,
            gid=f"count:{label}",
        )
    ax_curve.set_xlim(0, 1)
    ax_curve.set_ylim(0, 1)
    ax_curve.set_ylabel("observed frequency")
    ax_curve.legend(loc="upper left", fontsize="small")
    if any_count:  # a log axis needs a positive value
        ax_count.set_yscale("log")
    ax_count.set_ylabel("cells per bin")
    (ax_count if ax is None else ax_curve).set_xlabel("mean predicted probability")
    if title is None:
        title = "Reliability"
    if len(series) == 1:
        (only,) = eces.values()
        ece_text = "nan" if math.isnan(only) else f"{only:.3f}"
        title = f"{title} (ECE = {ece_text}, {n_bins} bins)"
    ax_curve.set_title(title)
    if ax is None:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# output


def write_uncertainty_tif(
    path: str | Path,
    std_maps: np.ndarray,
    transform: Affine,
    crs: str | CRS,
    periods: Sequence[str] | Sequence[PeriodInfo],
    quantity: str = "susceptibility",
    method: str = "",
    tags: dict[str, str] | None = None,
) -> Path:
    """Write per-period std maps (period, y, x) as a COG, one band per period named after it.

    ``periods``: the period names in band order, or the cube's periods (:class:`PeriodInfo`),
    which also add each band's period dates and units as band tags.

    ``quantity`` (susceptibility, density or hazard) sets the unit (a probability, or % of cell
    area) and a tag; ``method`` (e.g. ``"mc_dropout n=20"`` or ``"deep_ensemble m=5"``) is tagged
    too. NaN is nodata. Written atomically via ``io.write_raster``.
    """
    from ..io import RasterTags, write_raster
    from .maps import period_band_tags

    path = Path(path)
    infos = [p for p in periods if not isinstance(p, str)]
    period_names = [p if isinstance(p, str) else p.name for p in periods]
    arr = np.asarray(std_maps, dtype="float32")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{path}: std maps must be (period, y, x), got shape {arr.shape}")
    if len(period_names) != arr.shape[0]:
        raise ValueError(
            f"{path}: {len(period_names)} period names for {arr.shape[0]} std maps; pass one "
            "name per period, in the order of the maps"
        )
    if quantity not in STD_UNITS:
        raise ValueError(f"quantity {quantity!r} unknown; use one of {', '.join(STD_UNITS)}")
    finite = arr[np.isfinite(arr)]
    if finite.size and finite.min() < 0:
        raise ValueError(
            f"{path}: negative values ({finite.min():.4g}) in the std maps; a standard deviation "
            "is >= 0 (did you pass a mean or a difference?)"
        )
    all_tags = {
        **(tags or {}),
        "quantity": quantity,
        "statistic": "standard deviation",
        "description": f"predictive standard deviation of the {quantity} (epistemic)",
    }
    if method:
        all_tags["method"] = method
    return write_raster(
        path,
        arr,
        transform,
        crs,
        band_names=list(period_names),
        units=STD_UNITS[quantity],
        tags=RasterTags(all_tags, period_band_tags(infos, STD_UNITS[quantity]) if infos else None),
    )
