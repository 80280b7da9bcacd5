"""The report's HTML pieces: score cards, metric tables, figures, limitations and notes."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from .inputs import ReportInputs


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{float(v):.{digits}f}"


def figure_html(png: str, caption: str, alt: str, marks: dict[str, Any] | None = None) -> str:
    """A figure with its caption; ``marks`` (a static map's :func:`cartography.map_annotations`)
    become ``data-`` attributes saying what the map carries: its scale bar's label, a north
    arrow, each colour bar's tick labels."""
    attrs = ""
    if marks is not None:
        ticks = " | ".join(", ".join(labels) for labels in marks["colorbar_tick_labels"])
        attrs = (
            f' class="map" data-scale-bar="{html.escape(marks["scale_bar"] or "")}"'
            f' data-north-arrow="{"yes" if marks["north_arrow"] else "no"}"'
            f' data-colorbar-ticks="{html.escape(ticks)}"'
        )
    return (
        f'<figure{attrs}><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def occurrence_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
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
        cells = "".join(f"<td>{fmt(o.get(k), d) if d else fmt(o.get(k))}</td>" for k, _, d in cols)
        body.append(f"<tr{cls}><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        f'<div class="table-wrap"><table class="metrics"><thead><tr><th>period</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def density_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
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
            cells += [fmt(m.get("mae")), fmt(m.get("pearson_r")), fmt(m.get("spearman_r"))]
        body.append(
            f"<tr{cls}><td>{html.escape(name)}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return (
        f'<div class="table-wrap"><table class="metrics"><thead><tr><th>period</th>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def cards(m: dict[str, Any]) -> str:
    """The headline score cards: all cells with data, then (if known) the held-out cells with
    the oracle and skill of a synthetic scenario."""
    pooled = m["pooled"]
    o = pooled["occurrence"]
    items = [
        ("AUC-ROC", o["auc"], "pooled"),
        ("PR-AUC", o["pr_auc"], "average precision"),
        ("F1", o["f1"], f"at threshold {fmt(m.get('threshold'))}"),
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
    held = held_out(m)
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
            f'<div class="card"><div class="k">{k}</div><div class="v">{fmt(v)}</div>'
            f'<div class="s">{html.escape(s)}</div></div>'
            for k, v, s in items
        )
        + "</div>"
    )


def held_out(m: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The held-out block, if any: a run's test-cell scores (its protocol and test fold) or the
    cells a folds raster labels "test" (named by their value in that raster, not as a fold)."""
    if isinstance(m.get("held_out"), dict):
        what = f"the run's test cells (protocol {m.get('protocol')}, test fold {m.get('fold')})"
        return what, m["held_out"]["pooled"]
    for f in m.get("folds") or []:
        if str(f.get("label", "")).lower() == "test":
            return f"the cells labelled test (value {f['fold']}) in the folds raster", f
    return None


def limitations(data: ReportInputs) -> str:
    """What the maps are not, fitted to the data (a synthetic scenario or real inventories);
    paper sections cited are those of Dahal et al. (2024)."""
    items = [_SYNTHETIC_DATA if data.synthetic else _REAL_DATA, *_ALWAYS]
    src = str(data.metrics.get("threshold_source") or "")
    if "optimistic" in src:
        items.append(
            "<b>Threshold chosen on the scored data.</b> F1, IoU and the confusion maps use the "
            "max-F1 threshold found on these same cells, which flatters them; pass a threshold "
            "found on validation data (<code>--threshold</code>) when scoring test data."
        )
    if data.uncertainty is not None:
        items.append(
            f"<b>Uncertainty.</b> The uncertainty layer is the {html.escape(data.uncertainty_label)}"
            " over dropout masks or ensemble members: the model's own (epistemic) spread, not "
            "the randomness of landslide occurrence (already in the probability) nor the error "
            "of the inputs or the inventory (docs/uncertainty.md)."
        )
    return '<ul class="limits">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


_SYNTHETIC_DATA = (
    "<b>Synthetic data.</b> These maps score the model on a synthetic scenario: terrain, rain, "
    "shaking and landslides drawn from a known process (the scenario's <code>truth/</code>). "
    "The oracle (that process's own probabilities) shows the best score the noisy inventory "
    "allows, and skill compares the model with it. The numbers say how well the pipeline "
    "recovers a known process; they say nothing about real landslides."
)
_REAL_DATA = (
    "<b>Not for long-term prediction or climate scenarios.</b> The model learns how new "
    "failures in this region responded to the rain, shaking and earthquake legacy of the "
    "periods it was trained on. Dahal et al. (2024, Sect. 8.2) limit their predictors to the "
    "time window of their inventories (2015-2018), note that three years are too short for "
    "return periods, and consider the model valid only for the area they tested. Rain or "
    "shaking outside the training range (future climates, other earthquakes) is "
    "extrapolation. <b>Inventory limits</b> (Sect. 8.2): satellite mapping misses small "
    "landslides, which matters most for the density; unmapped cells are excluded here, not "
    "counted as zero."
)
_ALWAYS = (
    "<b>Not a landslide-by-landslide forecast.</b> Susceptibility is the probability of at "
    "least one new failure in a cell and period; density is the new failed area as % of "
    "the cell; hazard = susceptibility x density is the expected failed area. None of them "
    "says where in the cell, how far debris runs out, or what it damages; the paper finds "
    "1 km cells far too coarse for infrastructure planning (Sect. 8.2).",
    "<b>Optimistic validation in the paper.</b> The paper's second patch lattice is the first "
    "shifted by 2 km (Sect. 4) and its validation set a random share of the patches "
    "(Sect. 6.2), so validation patches regroup cells and periods seen in training: its "
    "scores are not held-out scores (protocol <code>paper</code>). Trust the "
    "<code>spatial</code>, <code>temporal</code> and <code>spacetime</code> protocols for "
    "skill on unseen places and times.",
)


def calibration_note(m: dict[str, Any]) -> str:
    """What the run's stored calibration does to its maps (``metrics.json`` ``calibration``,
    fitted on validation cells by ``train``); empty when the run has none."""
    cal = m.get("calibration")
    if not isinstance(cal, dict) or cal.get("slope") is None:
        return ""
    parts = [
        f"Platt scaling of the susceptibility, slope {fmt(cal['slope'])}, intercept "
        f"{fmt(cal['intercept'])}, fitted on {fmt(cal.get('n_cells'))} validation cells "
        f"(their ECE {fmt(cal.get('ece_raw'))} raw, {fmt(cal.get('ece_calibrated'))} calibrated)"
    ]
    shifts = cal.get("period_shifts") or {}
    if shifts:
        listed = ", ".join(f"{html.escape(str(k))} {v:+.2f}" for k, v in shifts.items())
        n_level = cal.get("n_level_cells")
        on = f"{fmt(n_level)} training and validation cells" if n_level else "validation cells"
        parts.append(f"a logit shift per period, fitted on its {on} ({listed})")
    blend = cal.get("density_blend")
    if isinstance(blend, dict):
        parts.append(
            f"the density blended toward {fmt(blend['constant'])} % (the positive training "
            f"cells' mean) with weight {fmt(blend['weight'])} on the density block, fitted on "
            f"{fmt(blend.get('n_cells'))} positive validation cells"
        )
    factors = cal.get("period_density_factors") or {}
    if factors:
        listed = ", ".join(f"{html.escape(str(k))} x{v:.2f}" for k, v in factors.items())
        parts.append(
            "the density level set per period on its "
            f"{fmt(cal.get('n_density_level_cells'))} positive training and validation cells "
            f"({listed}), and x{float(cal.get('density_level', 1.0)):.2f} for a period "
            "without its own (a forecast: a scenario's new period)"
        )
    return (
        '<h3>Calibration stored in the run</h3><p class="note">'
        + "; ".join(parts)
        + ". Every map of the run carries it; <code>predict --raw</code> gives the network's "
        "own output (docs/training.md).</p>"
    )


def notes(m: dict[str, Any]) -> str:
    """The undefined-metric notes of every period and the pooled block, as a list."""
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
