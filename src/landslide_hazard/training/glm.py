"""The fitted per-cell regression of the susceptibility block (``model.glm``).

:func:`fit_glm_offset` reads every training cell once (the cell summaries
:class:`models.layers.CellSummaryGLM` computes from the network's own normalised inputs), fits a
standardised logistic regression with scikit-learn (the same estimator and regularisation as the
per-cell baseline, ``evaluation.baselines``), and stores its coefficients, folded back to
unstandardised features, in every network of the block. With ``model.glm_fit: stack`` (the
default) that happens after the network has trained alone, and :func:`stack_glm` then adds the
two logits on the validation cells. With ``start`` it happens before the susceptibility stage:
the deep path's head starts at zero, so the network starts as that regression, and the stage
keeps this start unless an epoch validates better (``training.fit``). Why: docs/models.md, "The
default model", and docs/decisions.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ..bands import STATIC_NAMES
from ..errors import InputError
from ..evaluation.calibration import binary_nll
from ..models.layers import CellSummaryGLM
from ..models.susceptibility import SusceptibilityNet
from ..sampling.dataset import PatchDataset, batches_of
from .epochs import Steps, device_batches

#: scikit-learn's default (the per-cell baseline's): L2 penalty 1/(2C) on the standardised weights
GLM_C = 1.0
#: the stacking's penalty (``stack_glm``): two weights on thousands of cells, barely penalised
STACK_C = 1e4
#: summaries whose std over the training cells is below this (normalised units) are left out
CONSTANT_STD = 1e-4


def glm_modules(model: torch.nn.Module) -> list[CellSummaryGLM]:
    """Every :class:`CellSummaryGLM` in ``model`` (one per ensemble member; none: ``[]``)."""
    return [m for m in model.modules() if isinstance(m, CellSummaryGLM)]


def training_cell_table(
    glm: CellSummaryGLM, ds: PatchDataset, steps: Steps, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The summaries (N, F) float64 and occurrences (N,) bool of every cell whose loss counts in
    ``ds``, each cell once (the two patch lattices overlap)."""
    n = ds.n
    shape = ds.cell_mask.shape  # (period, cy, cx)
    period = ds.patches.period
    row0, col0 = ds.patches.row0, ds.patches.col0
    offsets = np.arange(n)
    ids, feats, occ = [], [], []
    order = np.arange(len(ds))
    batches = batches_of(order, batch_size)
    with torch.inference_mode():
        for items, (x, target, mask) in zip(
            batches, device_batches(ds, batches, steps), strict=True
        ):
            f = glm.features(x.float()).permute(0, 2, 3, 1)  # (B, n, n, F)
            m = mask.cpu().numpy()
            rows = row0[items][:, None, None] + offsets[None, :, None]
            cols = col0[items][:, None, None] + offsets[None, None, :]
            t = np.broadcast_to(period[items][:, None, None], rows.shape[:1] + (n, n))
            flat = np.ravel_multi_index(
                (t, np.broadcast_to(rows, t.shape), np.broadcast_to(cols, t.shape)),
                shape,
                mode="clip",  # a shifted lattice's patch overhangs the grid: masked cells
            )
            ids.append(flat[m])
            feats.append(f.cpu().numpy().astype(np.float64)[m])
            occ.append((target > steps.min_density).cpu().numpy()[m])
    if not ids:
        return np.empty((0, glm.n_features)), np.empty(0, dtype=bool)
    all_ids = np.concatenate(ids)
    _, first = np.unique(all_ids, return_index=True)
    return np.concatenate(feats)[first], np.concatenate(occ)[first]


def fit_glm_offset(
    model: torch.nn.Module, ds: PatchDataset, steps: Steps, n_static: int = len(STATIC_NAMES)
) -> dict[str, Any] | None:
    """Fit the per-cell regression of ``model``'s susceptibility block on ``ds`` (the training
    patches) and store it in every :class:`CellSummaryGLM`; None when the model has none.

    It reads every band's cell mean and the spread of the first ``n_static`` bands, the
    fine-grid ones (:meth:`CellSummaryGLM.read_mask`); the other summaries keep weight 0.
    Returns what was fitted: cells, positives, summaries read, summaries left out as constant.
    Raises :class:`InputError` when the training cells hold one class only.
    """
    glms = glm_modules(model)
    if not glms:
        return None
    x, y = training_cell_table(glms[0], ds, steps, steps.t.batch_size)
    if y.all() or not y.any():
        raise InputError(
            f"the {y.size} training cells hold only one class (all or no landslides); the fitted "
            "regression (model.glm) needs both; set model.glm: false or add inventories"
        )
    read = glms[0].read_mask(n_static).numpy()
    # a summary that does not vary over the training cells (the std of a band constant within
    # cells, a trigger constant over the grid) says nothing the intercept does not: weight 0
    varies = read & (x.std(axis=0) > CONSTANT_STD)
    scaler = StandardScaler().fit(x[:, varies])
    reg = LogisticRegression(C=GLM_C, max_iter=2000).fit(scaler.transform(x[:, varies]), y)
    w = np.zeros(x.shape[1])
    w[varies] = reg.coef_[0] / scaler.scale_
    b = float(reg.intercept_[0] - np.sum(w[varies] * scaler.mean_))
    for glm in glms:
        glm.set_coefficients(torch.from_numpy(w), b)
    return {
        "n_cells": int(y.size),
        "n_positive": int(y.sum()),
        "n_features": int(varies.sum()),
        "n_constant": int((read & ~varies).sum()),
    }


def stack_glm(model: torch.nn.Module, ds: PatchDataset, steps: Steps) -> dict[str, Any] | None:
    """Fit each network's ``glm_stack`` (``model.glm_fit: stack``) on ``ds``, the validation
    patches: the network's own logit (deep and wide paths) and the fitted per-cell regression's
    are added with equal weights, and the sum is scaled and shifted by a logistic regression of
    the occurrences on it, so the logit becomes ``s * (network + regression) + c``
    (``glm_stack`` = (s, s, c)). Equal weights, not two fitted ones: fitted weights follow the
    validation cells' noise where they are few (docs/decisions.md, "Stacked, not started").
    Every (patch, cell) whose loss counts is one sample (the two lattices overlap, as early
    stopping scores them); every data-parallel rank reads them all, so all get the same weights.
    The per-cell regression must be fitted already (:func:`fit_glm_offset`). None when no network
    stacks; a report of the fit otherwise, with the validation log-loss of the network alone
    (scaled and shifted the same way) and stacked. Validation cells of one class only leave
    (1, 0, 0): the network alone.
    """
    nets = [
        m
        for m in model.modules()
        if isinstance(m, SusceptibilityNet) and m.glm is not None and hasattr(m, "glm_stack")
    ]
    if not nets:
        return None
    batches = batches_of(np.arange(len(ds)), steps.t.batch_size)
    columns: list[list[np.ndarray]] = [[] for _ in nets]
    labels = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for x, target, mask in device_batches(ds, batches, steps):
            keep = mask.bool()
            labels.append((target[keep] > steps.min_density).cpu().numpy())
            for i, net in enumerate(nets):
                z_net = net.network_logit(x)[:, 0].float()[keep]
                z_glm = net.glm(x).float()[keep]  # type: ignore[misc]  # filtered above
                columns[i].append(torch.stack([z_net, z_glm], 1).cpu().numpy().astype(np.float64))
    model.train(was_training)
    y = np.concatenate(labels) if labels else np.empty(0, dtype=bool)
    report: dict[str, Any] = {"n_cells": int(y.size), "n_positive": int(y.sum()), "weights": []}
    if y.size == 0 or y.all() or not y.any():
        report["note"] = "validation cells of one class (or none): the network alone"
        return report
    for net, parts in zip(nets, columns, strict=True):
        z = np.concatenate(parts)
        s, c = _scale_and_shift(z.sum(axis=1), y)
        stack = net.get_buffer("glm_stack")
        stack.copy_(torch.tensor([s, s, c], dtype=stack.dtype))
        report["weights"].append([s, s, c])
        s_net, c_net = _scale_and_shift(z[:, 0], y)
        report.setdefault("log_loss_network", []).append(binary_nll(y, s_net * z[:, 0] + c_net))
        report.setdefault("log_loss_stacked", []).append(binary_nll(y, s * z.sum(axis=1) + c))
    return report


def _scale_and_shift(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(s, c) of the logistic regression of 0/1 ``y`` on one logit ``z`` (barely penalised)."""
    fit = LogisticRegression(C=STACK_C, max_iter=1000).fit(z[:, None], y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])
