"""The interactive viewer's data: block means of the maps as float16 layers, a mask, colour
tables and scales, as one JSON object that ``viewer.js`` reads from the page."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from .inputs import ReportInputs

MAX_VIEWER_CELLS = 250_000


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
    styles = _layer_styles(data, small, dens_obs)
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
    layers.update(_derived_layers(data, small))
    a, b, c, d, e, f = data.transform
    height, width = np.shape(mask)
    return {
        "grid": {
            "height": int(height),
            "width": int(width),
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


def _layer_styles(
    data: ReportInputs, small: dict[str, np.ndarray], dens_obs: np.ndarray
) -> dict[str, tuple[str, str, str, dict[str, float | str], str]]:
    """Layer -> (label, unit, colour map, norm, description) of the viewer's value layers."""
    return {
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
            data.uncertainty_meta.get("units", ""),
            "cividis",
            _norm_spec("linear", small.get("uncertainty", dens_obs)),
            _uncertainty_description(data),
        ),
    }


def _uncertainty_description(data: ReportInputs) -> str:
    meta = data.uncertainty_meta
    if meta.get("statistic") != "standard deviation":
        return data.uncertainty_label
    method = f"; {meta['method']}" if meta.get("method") else ""
    return f"{data.uncertainty_label}: the model's own (epistemic) spread{method}"


def _derived_layers(data: ReportInputs, small: dict[str, np.ndarray]) -> dict[str, Any]:
    """The layers the page computes itself: the residual (with a density map) and confusion."""
    layers: dict[str, Any] = {}
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
    return layers
