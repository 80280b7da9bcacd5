"""The report stage: one self-contained ``report.html`` from a run or an evaluation folder.

Input contract: ``directory/metrics.json`` whose ``inputs`` entry names the ``observed``,
``susceptibility`` and optionally ``density``, ``hazard``, ``folds`` and ``uncertainty`` GeoTIFFs
(one band per period, band descriptions = period names). Relative paths are resolved against
the directory; a file that moved with the folder is also looked for in ``directory`` and
``directory/maps``. Images are embedded as base64 PNG, CSS and JS inline: the page works offline
and loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.evaluate import evaluate_arrays
from ..evaluation.metrics import expected_calibration_error, reliability_curve
from ..run import MAPS_DIR, METRICS_FILE

REPORT_FILE = "report.html"
ASSETS = Path(__file__).resolve().parent
MAX_VIEWER_CELLS = 250_000
_OPTIONAL = ("density", "hazard", "uncertainty", "folds")


@dataclass
class ReportInputs:
    """Everything the report draws: maps (period, y, x) on one grid plus the metrics."""

    directory: Path
    metrics: dict[str, Any]
    names: list[str]
    transform: tuple[float, ...]
    crs_name: str
    observed: np.ndarray
    susceptibility: np.ndarray
    density: np.ndarray | None = None
    hazard: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    folds: np.ndarray | None = None
    hazard_source: str | None = None
    metrics_source: str = METRICS_FILE
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        t = self.metrics.get("threshold")
        return float(t) if t is not None and math.isfinite(float(t)) else 0.5

    @property
    def min_density(self) -> float:
        return float(self.metrics.get("min_density") or 0.0)


def _resolve(directory: Path, key: str, value: str) -> Path:
    from ..io import RasterError

    p = Path(value)
    candidates = [
        p if p.is_absolute() else directory / p,
        directory / p.name,
        directory / MAPS_DIR / p.name,
    ]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise RasterError(
        f"{directory / METRICS_FILE}: inputs.{key} = {value} not found (also looked in "
        f"{directory} and {directory / 'maps'}); fix the path in metrics.json or re-run evaluate"
    )


def load_report_inputs(directory: str | Path) -> ReportInputs:
    """Read metrics.json and the rasters it names; check they share one grid."""
    from ..evaluation.evaluate import check_bands, check_same_grid
    from ..io import RasterError, raster_info, read_raster

    directory = Path(directory)
    mfile = directory / METRICS_FILE
    if not mfile.exists():
        raise RasterError(
            f"{mfile}: not found; run `landslide-hazard evaluate ... --out {directory}` first"
        )
    try:
        metrics = json.loads(mfile.read_text())
    except json.JSONDecodeError as exc:
        raise RasterError(f"{mfile}: not valid JSON ({exc}); re-run evaluate") from None
    inputs = dict(metrics.get("inputs") or {})
    if not (inputs.get("observed") and inputs.get("susceptibility")):
        # a run folder: predict writes its maps (observed included) to RUN/maps/
        found = {
            k: f"maps/{k}.tif"
            for k in ("observed", "susceptibility", "density", "hazard", "uncertainty")
            if (directory / MAPS_DIR / f"{k}.tif").exists()
        }
        inputs = {**found, **{k: v for k, v in inputs.items() if v}}
    for key in ("observed", "susceptibility"):
        if not inputs.get(key):
            raise RasterError(
                f"{mfile}: the 'inputs' entry names no {key} GeoTIFF and "
                f"{directory / 'maps'} holds no {key}.tif; the report needs observed and "
                "susceptibility maps (run `predict` on the run, or `evaluate ... --out` to name "
                "them)"
            )
    paths = {
        k: _resolve(directory, k, v)
        for k, v in inputs.items()
        if k in ("observed", "susceptibility", *_OPTIONAL) and v
    }
    infos = {k: raster_info(p) for k, p in paths.items()}
    ref = infos["observed"]
    for key, info in infos.items():
        if key != "observed":
            check_same_grid(ref, info, key)
            if key != "folds":
                check_bands(ref, info, key)
    arrays = {k: read_raster(p, dtype="float64")[0] for k, p in paths.items() if k != "folds"}
    for k, a in arrays.items():
        if a.ndim == 2:
            arrays[k] = a[None]
    names = [d or f"period {i + 1}" for i, d in enumerate(ref.descriptions)]
    folds = read_raster(paths["folds"], bands=1)[0] if "folds" in paths else None
    hazard = arrays.get("hazard")
    hazard_source = "given" if hazard is not None else None
    if hazard is None and "density" in arrays:
        hazard = arrays["susceptibility"] * arrays["density"]
        hazard_source = "susceptibility x density"
    data = ReportInputs(
        directory=directory,
        metrics=metrics,
        names=names,
        transform=tuple(ref.transform)[:6],
        crs_name=ref.crs.to_string() if ref.crs is not None else "unknown CRS",
        observed=arrays["observed"],
        susceptibility=arrays["susceptibility"],
        density=arrays.get("density"),
        hazard=hazard,
        uncertainty=arrays.get("uncertainty"),
        folds=folds,
        hazard_source=hazard_source,
        paths={k: str(p) for k, p in paths.items()},
    )
    if not _is_evaluation(metrics, names):
        data.metrics = {
            **evaluate_arrays(
                data.observed,
                data.susceptibility,
                data.density,
                arrays.get("hazard"),
                period_names=names,
                threshold=metrics.get("threshold"),
                folds=folds,
                min_density=float(metrics.get("min_density") or 0.0),
            ),
            "inputs": inputs,
        }
        data.metrics_source = (
            "computed by the report from the maps, on every cell with data (metrics.json holds "
            "no per-period metrics for these maps)"
        )
        if isinstance(metrics.get("model"), dict) and "pooled" in metrics["model"]:
            data.metrics["held_out"] = metrics["model"]  # a run's scores on its test cells
            for key in ("protocol", "fold", "leaky", "oracle_auc", "skill_pooled"):
                data.metrics[key] = metrics.get(key)
    return data


def _is_evaluation(metrics: dict[str, Any], names: list[str]) -> bool:
    periods = metrics.get("periods")
    return (
        isinstance(periods, list)
        and [p.get("name") for p in periods] == names
        and isinstance(metrics.get("pooled"), dict)
        and "occurrence" in metrics["pooled"]
    )


# --------------------------------------------------------------------------------------------
# the interactive viewer's data


def block_mean(stack: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor blocks of a (period, y, x) stack, NaN ignored (all-NaN -> NaN)."""
    if factor == 1:
        return stack
    p, h, w = stack.shape
    hh, ww = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.full((p, hh, ww), np.nan)
    padded[:, :h, :w] = stack
    blocks = padded.reshape(p, hh // factor, factor, ww // factor, factor)
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0.0).sum(axis=(2, 4))
    count = valid.sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _lut(name: str) -> str:
    import matplotlib.pyplot as plt

    rgb = (plt.get_cmap(name)(np.linspace(0, 1, 256))[:, :3] * 255).round().astype("uint8")
    return base64.b64encode(rgb.tobytes()).decode("ascii")


def _norm_spec(kind: str, values: np.ndarray, floor: float = 0.01) -> dict[str, float | str]:
    finite = values[np.isfinite(values)]
    if kind == "log":
        pos = finite[finite > 0]
        top = float(np.percentile(pos, 99.9)) if pos.size else 1.0
        return {"kind": "log", "vmin": floor, "vmax": max(top, floor * 10)}
    if kind == "symlog":
        top = float(np.percentile(np.abs(finite), 99.9)) if finite.size else 1.0
        return {"kind": "symlog", "vmin": -max(top, 0.2), "vmax": max(top, 0.2), "linthresh": 0.1}
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return {"kind": "linear", "vmin": 0.0, "vmax": max(top, 1e-6)}


def viewer_payload(data: ReportInputs, max_cells: int = MAX_VIEWER_CELLS) -> dict[str, Any]:
    """The JSON the inline viewer reads: masks, float16 layers, colour tables, scales."""
    from .figures import CONFUSION_COLORS, CONFUSION_LABELS

    h, w = data.observed.shape[1:]
    factor = max(1, math.ceil(math.sqrt(h * w / max_cells)))
    layers_in: dict[str, np.ndarray] = {"hazard": data.hazard} if data.hazard is not None else {}
    layers_in["susceptibility"] = data.susceptibility
    if data.density is not None:
        layers_in["density"] = data.density
    layers_in["observed"] = data.observed
    if data.uncertainty is not None:
        layers_in["uncertainty"] = data.uncertainty
    small = {k: block_mean(v, factor) for k, v in layers_in.items()}
    mask = np.zeros(small["observed"].shape[1:], dtype=bool)
    for v in small.values():
        mask |= np.isfinite(v).any(axis=0)
    flat_mask = mask.ravel()
    dens_obs = np.concatenate(
        [small["observed"].ravel()] + ([small["density"].ravel()] if "density" in small else [])
    )
    styles = {
        "hazard": (
            "hazard",
            "%",
            "cividis",
            _norm_spec("log", small.get("hazard", dens_obs)),
            "expected new failed area, % of the cell (susceptibility x density)",
        ),
        "susceptibility": (
            "susceptibility",
            "",
            "viridis",
            {"kind": "linear", "vmin": 0.0, "vmax": 1.0},
            "probability of at least one new landslide in the cell",
        ),
        "density": (
            "predicted density",
            "%",
            "magma",
            _norm_spec("log", dens_obs),
            "predicted new failed area, % of the cell",
        ),
        "observed": (
            "observed density",
            "%",
            "magma",
            _norm_spec("log", dens_obs),
            "observed new failed area, % of the cell",
        ),
        "uncertainty": (
            "uncertainty",
            "",
            "cividis",
            _norm_spec("linear", small.get("uncertainty", dens_obs)),
            "predictive uncertainty from the run",
        ),
    }
    layers: dict[str, Any] = {}
    for key, stack in small.items():
        label, unit, cmap, norm, desc = styles[key]
        periods = []
        for p in range(stack.shape[0]):
            vals = np.clip(stack[p].ravel()[flat_mask], -65000, 65000).astype("<f2")
            periods.append(base64.b64encode(vals.tobytes()).decode("ascii"))
        layers[key] = {
            "label": label,
            "unit": unit,
            "cmap": cmap,
            "norm": norm,
            "description": desc,
            "periods": periods,
        }
    if "density" in small:
        resid = small["observed"] - small["density"]
        layers["residual"] = {
            "label": "residual",
            "unit": "%",
            "cmap": "RdBu",
            "norm": _norm_spec("symlog", resid),
            "derived": "residual",
            "description": "observed - predicted density (blue: under-predicted)",
        }
    layers["confusion"] = {
        "label": "confusion",
        "unit": "",
        "derived": "confusion",
        "norm": {"kind": "categorical", "vmin": 0, "vmax": 3},
        "description": f"TP/FP/FN/TN at threshold {data.threshold:.3g}",
    }
    a, b, c, d, e, f = data.transform
    return {
        "grid": {
            "height": int(mask.shape[0]),
            "width": int(mask.shape[1]),
            "transform": [a * factor, b * factor, c, d * factor, e * factor, f],
            "crs_name": data.crs_name,
            "factor": factor,
        },
        "mask": base64.b64encode(np.packbits(flat_mask, bitorder="little").tobytes()).decode(),
        "periods": data.names,
        "layers": layers,
        "default_layer": "hazard" if "hazard" in layers else "susceptibility",
        "colormaps": {
            name: _lut(name) for name in {v["cmap"] for v in layers.values() if "cmap" in v}
        },
        "threshold": data.threshold,
        "min_density": data.min_density,
        "confusion_colors": [[int(x * 255) for x in _hex_rgb(col)] for col in CONFUSION_COLORS],
        "confusion_names": [CONFUSION_LABELS[k] for k in ("TN", "FP", "FN", "TP")],
    }


def _hex_rgb(col: str) -> tuple[float, float, float]:
    from matplotlib import colors as mcolors

    return mcolors.to_rgb(col)


# --------------------------------------------------------------------------------------------
# HTML


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{float(v):.{digits}f}"


def _figure(png: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _occurrence_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    cols = [
        ("n", "n", 0),
        ("prevalence", "prevalence", 3),
        ("auc", "AUC", 3),
        ("pr_auc", "PR-AUC", 3),
        ("f1", "F1", 3),
        ("iou", "IoU", 3),
        ("precision", "precision", 3),
        ("recall", "recall", 3),
        ("soft_f1", "soft F1", 3),
        ("brier", "Brier", 4),
        ("ece", "ECE", 3),
    ]
    head = "".join(f"<th>{label}</th>" for _, label, _ in cols)
    body = []
    for name, block in rows:
        o = block["occurrence"]
        cls = ' class="pooled"' if name == "pooled" else ""
        cells = "".join(f"<td>{_f(o.get(k), d) if d else _f(o.get(k))}</td>" for k, _, d in cols)
        body.append(f"<tr{cls}><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        f'<div class="table-wrap"><table class="metrics"><thead><tr><th>period</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _density_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    spec = [
        ("density", "all", "D"),
        ("density", "positive", "D+"),
        ("hazard", "all", "H"),
        ("hazard", "positive", "H+"),
    ]
    head = "".join(f"<th>{p} MAE %</th><th>{p} r</th><th>{p} &rho;</th>" for *_, p in spec)
    body = []
    for name, block in rows:
        cls = ' class="pooled"' if name == "pooled" else ""
        cells = []
        for comp, subset, _ in spec:
            m = (block.get(comp) or {}).get(subset) or {}
            cells += [_f(m.get("mae")), _f(m.get("pearson_r")), _f(m.get("spearman_r"))]
        body.append(
            f"<tr{cls}><td>{html.escape(name)}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return (
        f'<div class="table-wrap"><table class="metrics"><thead><tr><th>period</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _cards(m: dict[str, Any]) -> str:
    pooled = m["pooled"]
    o = pooled["occurrence"]
    items = [
        ("AUC-ROC", o["auc"], "pooled"),
        ("PR-AUC", o["pr_auc"], "average precision"),
        ("F1", o["f1"], f"at threshold {_f(m.get('threshold'))}"),
        ("IoU", o["iou"], "at the same threshold"),
        ("soft F1", o["soft_f1"], "paper code"),
        ("ECE", o["ece"], "15 bins"),
    ]
    if pooled.get("density"):
        d = pooled["density"]
        items += [
            ("density MAE", d["all"]["mae"], "% of cell, all cells"),
            ("density r", d["all"]["pearson_r"], "Pearson, all cells"),
            ("density r (+)", d["positive"]["pearson_r"], "positive cells"),
        ]
    if pooled.get("hazard"):
        items += [("hazard r", pooled["hazard"]["all"]["pearson_r"], "Pearson, all cells")]
    out = _card_row(items)
    held = _held_out(m)
    if held is not None:
        what, block = held
        ho = block["occurrence"]
        hitems = [
            ("AUC-ROC", ho["auc"], "held out"),
            ("PR-AUC", ho["pr_auc"], "held out"),
            ("F1", ho["f1"], "held out"),
            ("IoU", ho["iou"], "held out"),
        ]
        if block.get("hazard"):
            hitems.append(("hazard r", block["hazard"]["all"]["pearson_r"], "held out"))
        if m.get("oracle_auc") is not None:
            hitems += [
                ("oracle AUC", m["oracle_auc"], "truth's P, same cells"),
                ("skill", m.get("skill_pooled"), "(AUC-0.5)/(oracle-0.5)"),
            ]
        out = (
            f"<h3>All cells with data</h3>{out}<h3>Held out: {html.escape(what)}</h3>"
            "<p class='note'>Only these scores measure prediction on cells the model did not "
            f"train on.</p>{_card_row(hitems)}"
        )
    return out


def _card_row(items: list[tuple[str, Any, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{k}</div><div class="v">{_f(v)}</div>'
            f'<div class="s">{html.escape(s)}</div></div>'
            for k, v, s in items
        )
        + "</div>"
    )


def _held_out(m: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The held-out block, if any: a run's test-cell scores or an evaluation's "test" fold."""
    if isinstance(m.get("held_out"), dict):
        what = f"the run's test cells (protocol {m.get('protocol')}, fold {m.get('fold')})"
        return what, m["held_out"]["pooled"]
    for f in m.get("folds") or []:
        if str(f.get("label", "")).lower() == "test":
            return f"the test cells (fold {f['fold']} of the folds raster)", f
    return None


def _limitations(data: ReportInputs) -> str:
    m = data.metrics
    items = [
        "<b>Not for long-term prediction or climate scenarios.</b> The model learns how new "
        "failures in this region responded to the rain, shaking and earthquake legacy of the "
        "periods it was trained on. Dahal et al. (2024, Sect. 8.2) restrict their model to the "
        "area and the 2015-2018 window with verifiable inventories, note that three years are "
        "too short for return periods, and call it valid only where it was tested. Rain or "
        "shaking outside the training range (future climates, other earthquakes) is "
        "extrapolation.",
        "<b>Not a landslide-by-landslide forecast.</b> Susceptibility is the probability of at "
        "least one new failure in a cell and period; density is the new failed area as % of "
        "the cell; hazard = susceptibility x density is the expected failed area. None of them "
        "says where in the cell, how far debris runs out, or what it damages.",
        "<b>Optimistic validation in the paper.</b> The paper's validation patches come from a "
        "lattice shifted by 2 km that regroups the same cells and periods as its training "
        "patches, so its scores are not held-out scores (protocol <code>paper</code>). Trust "
        "the <code>spatial</code>, <code>temporal</code> and <code>space-time</code> protocols "
        "for skill on unseen places and times.",
        "<b>Inventory limits.</b> Small landslides may be missing from satellite mapping; "
        "the pre-monsoon 2017 and 2018 inventories of Gorkha cover longer windows (their "
        "rebound is partly a mapping effect); unmapped cells are excluded, not counted as zero.",
    ]
    src = str(m.get("threshold_source") or "")
    if "optimistic" in src:
        items.append(
            "<b>Threshold chosen on the scored data.</b> F1, IoU and the confusion maps use the "
            "max-F1 threshold found on these same cells, which flatters them; pass a threshold "
            "found on validation data (<code>--threshold</code>) when scoring test data."
        )
    return '<ul class="limits">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _notes(m: dict[str, Any]) -> str:
    notes = []
    for p in [*m["periods"], {"name": "pooled", **m["pooled"]}]:
        for comp in ("occurrence",):
            for n in p[comp].get("notes", []):
                notes.append(f"{html.escape(p['name'])}: {html.escape(n)}")
        for comp in ("density", "hazard"):
            for subset in ("all", "positive"):
                for n in ((p.get(comp) or {}).get(subset) or {}).get("notes", []):
                    notes.append(f"{html.escape(p['name'])} ({comp}, {subset}): {html.escape(n)}")
    if not notes:
        return ""
    return (
        '<h3>Notes on undefined metrics</h3><ul class="notes">'
        + "".join(f"<li>{n}</li>" for n in notes)
        + "</ul>"
    )


class _FigureList(list):
    """A list that reports each rendered figure to a callback (for the progress bar)."""

    def __init__(self, on_add: Callable[[str], None] | None) -> None:
        super().__init__()
        self._on_add = on_add

    def append(self, item: tuple[str, str, str, str]) -> None:
        super().append(item)
        if self._on_add is not None:
            self._on_add(item[1])


def _render_figures(
    data: ReportInputs, on_figure: Callable[[str], None] | None = None
) -> list[tuple[str, str, str, str]]:
    """(section id, title, caption, png) for every figure; ``on_figure(title)`` after each."""
    from matplotlib import colors as mcolors

    from . import figures as fg

    out = _FigureList(on_figure)
    t, names, tr, crs = data.threshold, data.names, data.transform, data.crs_name
    dens_like = [data.observed] + ([data.density] if data.density is not None else [])
    dnorm = fg.log_norm(np.concatenate([a.ravel() for a in dens_like]))
    if data.hazard is not None:
        out.append(
            (
                "maps",
                "Hazard",
                f"Hazard = expected new failed area per cell and period "
                f"(% of the cell; {data.hazard_source}); log colour scale, values at or "
                f"below {fg.DENSITY_FLOOR} % in the darkest colour; white = no data.",
                fg.to_png_base64(
                    fg.map_panels(
                        data.hazard,
                        names,
                        tr,
                        crs,
                        "cividis",
                        fg.log_norm(data.hazard),
                        "hazard, %",
                        "Hazard (expected new failed area)",
                        extend="both",
                    )
                ),
            )
        )
    out.append(
        (
            "maps",
            "Susceptibility",
            "Probability of at least one new landslide in the cell and period.",
            fg.to_png_base64(
                fg.map_panels(
                    data.susceptibility,
                    names,
                    tr,
                    crs,
                    "viridis",
                    mcolors.Normalize(0, 1),
                    "susceptibility (probability)",
                    "Susceptibility",
                )
            ),
        )
    )
    if data.density is not None:
        out.append(
            (
                "maps",
                "Predicted density",
                "Predicted new failed area, % of the cell (same log scale as the observed maps).",
                fg.to_png_base64(
                    fg.map_panels(
                        data.density,
                        names,
                        tr,
                        crs,
                        "magma",
                        dnorm,
                        "density, %",
                        "Predicted area density",
                        extend="both",
                    )
                ),
            )
        )
    out.append(
        (
            "maps",
            "Observed density",
            "Observed new failed area (inventory), % of the cell.",
            fg.to_png_base64(
                fg.map_panels(
                    data.observed,
                    names,
                    tr,
                    crs,
                    "magma",
                    dnorm,
                    "density, %",
                    "Observed area density",
                    extend="both",
                )
            ),
        )
    )
    if data.uncertainty is not None:
        unorm = mcolors.Normalize(0, float(np.nanpercentile(data.uncertainty, 99.5)))
        out.append(
            (
                "maps",
                "Uncertainty",
                "Predictive uncertainty written by the run.",
                fg.to_png_base64(
                    fg.map_panels(
                        data.uncertainty,
                        names,
                        tr,
                        crs,
                        "cividis",
                        unorm,
                        "uncertainty",
                        "Uncertainty",
                    )
                ),
            )
        )
    classes = fg.confusion_classes(data.observed, data.susceptibility, t, data.min_density)
    out.append(
        (
            "confusion",
            "Confusion maps",
            "True/false positives and negatives per cell at "
            f"threshold {t:.3g} (paper Fig. 8); insets count the cells on a log scale.",
            fg.to_png_base64(fg.confusion_maps(classes, names, tr, crs, t)),
        )
    )
    if data.density is not None:
        out.append(
            (
                "residuals",
                "Residuals",
                "Observed minus predicted density (paper Fig. 9); "
                "symmetric log scale, linear within +-0.1 %.",
                fg.to_png_base64(fg.residual_maps(data.observed - data.density, names, tr, crs)),
            )
        )
    valid = np.isfinite(data.observed) & np.isfinite(data.susceptibility)
    ys = [(data.observed[i][valid[i]] > data.min_density).astype(float) for i in range(len(names))]
    ss = [data.susceptibility[i][valid[i]] for i in range(len(names))]
    out.append(
        (
            "curves",
            "ROC and precision-recall",
            "Per period (colours, early = dark) and pooled (black).",
            fg.to_png_base64(fg.roc_pr_figure(ys, ss, names)),
        )
    )
    y_all, s_all = np.concatenate(ys), np.concatenate(ss)
    if s_all.size and s_all.min() >= 0 and s_all.max() <= 1:
        curve = reliability_curve(y_all, s_all)
        out.append(
            (
                "curves",
                "Reliability",
                "Observed frequency of occurrence against the "
                "predicted probability, 15 equal-width bins, pooled.",
                fg.to_png_base64(
                    fg.reliability_figure(curve, expected_calibration_error(y_all, s_all))
                ),
            )
        )
    if data.density is not None or data.hazard is not None:
        out.append(
            (
                "scatter",
                "Predicted vs observed",
                "Hexagonal bins with log counts; dashed: 1:1 (paper Fig. 7, right).",
                fg.to_png_base64(
                    fg.density_scatter_figure(data.observed, data.density, data.hazard)
                ),
            )
        )
    if data.density is not None:
        out.append(
            (
                "scatter",
                "Susceptibility vs density",
                "Smoothed 2-D density of cells "
                "over predicted susceptibility and predicted density per period (paper "
                "Fig. 11).",
                fg.to_png_base64(
                    fg.susceptibility_density_kde(data.susceptibility, data.density, names)
                ),
            )
        )
    out.append(
        (
            "bars",
            "Metrics per period",
            "Occurrence scores at the report threshold; "
            "Pearson r and MAE of density and hazard on all and on positive cells.",
            fg.to_png_base64(fg.metric_bars(data.metrics["periods"], names)),
        )
    )
    return out


def render_html(
    data: ReportInputs,
    max_viewer_cells: int = MAX_VIEWER_CELLS,
    on_figure: Callable[[str], None] | None = None,
) -> str:
    """The whole page as one string (no external resource)."""
    from .. import __version__

    m = data.metrics
    figs = _render_figures(data, on_figure)
    payload = viewer_payload(data, max_viewer_cells)
    payload_json = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    css = (ASSETS / "report.css").read_text()
    js = (ASSETS / "viewer.js").read_text()
    rows = [(p["name"], p) for p in m["periods"]] + [("pooled", m["pooled"])]
    fold_rows = [
        (f"fold {f['fold']}" + (f" ({f['label']})" if f.get("label") else ""), f)
        for f in m.get("folds") or []
    ]
    if isinstance(m.get("held_out"), dict):
        fold_rows += [(f"held out: {p['name']}", p) for p in m["held_out"]["periods"]]
        fold_rows.append(("held out: pooled", m["held_out"]["pooled"]))

    def section_figs(sid: str) -> str:
        return "".join(
            _figure(png, f"<b>{html.escape(title)}.</b> {cap}", title)
            for s, title, cap, png in figs
            if s == sid
        )

    h, w = data.observed.shape[1:]
    factor = payload["grid"]["factor"]
    cell_km = abs(data.transform[0]) / 1000
    inputs = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in data.paths.items()
    )
    sections = [
        (
            "summary",
            "Summary",
            f"""
<p class="lead">{len(data.names)} periods on a {h} x {w} grid of {cell_km:g} km cells
({html.escape(data.crs_name)}); {_f(m["pooled"]["occurrence"]["n"])} cell-periods with data,
{_f(m["pooled"]["occurrence"]["n_positive"])} with new failures (observed density &gt;
{data.min_density:g} %). Threshold {_f(m.get("threshold"))}
({html.escape(str(m.get("threshold_source")))}). Metrics: {html.escape(data.metrics_source)}.</p>
{_cards(m)}""",
        ),
        (
            "viewer",
            "Interactive map",
            f"""
<p class="lead">Pick a layer and a period; drag to pan, scroll (or +/-) to zoom, hover to read a
cell, click to pin it, arrow keys step through periods.{
                " Shown at " + str(factor) + " x " + str(factor) + " block means."
                if factor > 1
                else ""
            }</p>
<div class="viewer"><div>
<div class="viewer-controls"><div id="viewer-layers" role="group" aria-label="layer"></div></div>
<div class="viewer-controls"><button type="button" id="viewer-prev" aria-label="previous period">&#9664;</button>
<select id="viewer-period" aria-label="period"></select>
<button type="button" id="viewer-next" aria-label="next period">&#9654;</button>
<input type="range" id="viewer-period-range" min="0" value="0" step="1" aria-label="period slider">
<button type="button" id="viewer-zoom-in" aria-label="zoom in">+</button>
<button type="button" id="viewer-zoom-out" aria-label="zoom out">&minus;</button>
<button type="button" id="viewer-reset">fit</button></div>
<div class="canvas-wrap"><canvas id="viewer-canvas" tabindex="0" aria-label="map"></canvas></div>
<div id="viewer-legend"></div></div>
<div><div id="viewer-readout"></div>
<p class="help">Values are stored as 16-bit floats (about 3 significant digits). Confusion and
residual layers are computed in the page from the observed, susceptibility and density layers.</p>
</div></div>""",
        ),
        ("maps", "Maps per period", section_figs("maps")),
        ("confusion", "Confusion maps", section_figs("confusion")),
        (
            "residuals",
            "Residual maps",
            section_figs("residuals") or "<p class='note'>No density map: no residuals.</p>",
        ),
        ("curves", "ROC, PR and reliability", section_figs("curves")),
        (
            "scatter",
            "Predicted vs observed",
            section_figs("scatter") or "<p class='note'>No density map.</p>",
        ),
        ("bars", "Metrics per period", section_figs("bars")),
        (
            "table",
            "Metrics table",
            f"""
<h3>Occurrence</h3>{_occurrence_table(rows)}
{"<h3>Density and hazard</h3>" + _density_table(rows) if m["pooled"].get("density") or m["pooled"].get("hazard") else ""}
<p class="note">D: density, H: hazard; +: cells with observed density &gt; 0; r: Pearson, &rho;:
Spearman. Pooled = every cell of every period together. Definitions: docs/metrics.md.</p>
{("<h3>Per fold / held out</h3>" + _occurrence_table(fold_rows)) if fold_rows else ""}
{_notes(m)}""",
        ),
        ("limits", "Limitations", _limitations(data)),
    ]
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
        for sid, title, content in sections
    )
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Landslide hazard report: {html.escape(data.directory.name or str(data.directory))}</title>
<style>{css}</style></head>
<body>
<header class="top"><h1>Space-time landslide hazard report</h1>
<p>{html.escape(str(data.directory.resolve()))} &middot; {len(data.names)} periods:
{html.escape(", ".join(data.names))}</p></header>
<nav class="toc">{nav}</nav>
<main>{body}
<section id="inputs"><h2>Inputs</h2><ul>{inputs}</ul></section></main>
<footer>landslide-hazard {__version__} &middot; generated {created} &middot; self-contained:
no network access needed.</footer>
<script type="application/json" id="viewer-data">{payload_json}</script>
<script>{js}</script>
</body></html>
"""


def build_report(
    directory: str | Path,
    max_viewer_cells: int = MAX_VIEWER_CELLS,
    show_progress: bool = False,
) -> Path:
    """Write ``directory/report.html`` (atomically) and return its path.

    ``max_viewer_cells`` caps the interactive viewer's grid (larger maps are shown as block
    means); ``show_progress`` draws a progress bar on stderr while the figures render.
    """
    from ..io import atomic_write_text

    directory = Path(directory)
    data = load_report_inputs(directory)
    out = directory / REPORT_FILE
    if not show_progress:
        atomic_write_text(out, render_html(data, max_viewer_cells))
        return out
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..streams import log_console

    with Progress(
        TextColumn("report: {task.description}"),
        BarColumn(),
        TextColumn("{task.completed} figures"),
        TimeElapsedColumn(),
        console=log_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("rendering figures", total=None)

        def on_figure(title: str) -> None:
            progress.update(task, advance=1, description=f"rendered {title}")

        html_text = render_html(data, max_viewer_cells, on_figure)
    atomic_write_text(out, html_text)
    return out
