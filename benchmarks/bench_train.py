"""CPU training throughput of the demo's default model: today's path against the round-2 path.

Measured at one thread, in one run, in alternating rounds (``_common.interleaved_best``), on
batches of the demo's shape (16 patches of 15 bands x 64 x 64 px, 4 x 4 cells of 16 px): one
optimiser step (forward, loss, backward, Adam) of each training stage
(``training.stages.stage_loss``), in samples (patches) per second.

- ``round-2``: the model and batches in NCHW, the density block's first conv on a zero-padded
  copy of each cell (``nn.ZeroPad2d(3)``), its first ReLU before the max-pool, the pixel wide path's last 1 x 1 conv as a conv and
  its log-mean-exp through ``max_pool2d`` / ``repeat_interleave`` / ``avg_pool2d``, and the
  density stages computing the density block on every cell of a patch and masking the loss to
  the positive ones (the code as it was before this benchmark; rebuilt here from today's
  modules, with the same weights);
- ``default``: ``training.channels_last`` (the model and batches in NHWC), the conv's own
  padding, the last layer as a matrix-vector product, the pooling on a reshaped view, the
  density stages computing the block on the positive cells only
  (``DensityBlock.forward_selected``), gathered in one copy from the batch as built, the
  density block's first ReLU after its max-pool (they commute), and the stage optimisers'
  foreach Adam (``training.epochs._optimizer``; round 2 ran torch's per-tensor loop).

The density stages' batches count their positive cells only (23 % of the cells here), as the
positive-only datasets of those stages do; the other stages count every cell. Each pair is
checked first: with the same weights, dropout off and batch norm frozen (evaluation mode), both
paths' losses and gradients must agree to float32 rounding, else the row fails (value None)
instead of reporting a speed of a different computation. In training mode the one difference
is by design: the density stages' batch norms normalise over the positive cells they learn
from, not over every cell of the batch. The glibc malloc tuning training uses is applied to
both.

``run(quick)`` is the harness entry point; ``python benchmarks/bench_train.py [--quick]`` prints
the rows.
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_best, row  # noqa: E402

from landslide_hazard.bands import input_names  # noqa: E402

# the demo's spatial runs: no legacy, the rain anomalies (15 input bands)
BATCH, PATCH_CELLS, CELL_PIXELS = 16, 4, 16
BANDS = len(input_names(legacy=False, anomalies=True))
STAGES = ("susceptibility", "density", "finetune")


def _round2_pixel_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``PixelRatePool.forward`` as it was (conv stack, pooled through max/avg pooling)."""
    k = self.cell_pixels
    r = self.pixel(x)
    top = nn.functional.max_pool2d(r, k).detach()
    shift = top.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
    pooled = nn.functional.avg_pool2d(torch.exp(r - shift), k)
    return (torch.log(pooled) + top)[:, 0]


def _demo_model():
    from landslide_hazard.models import build_enn

    # the demo's model section (synthetic/config.py writes it): the tiny preset, dropout 0.3,
    # a softplus density head, the pixel wide path and the fitted per-cell regression, stacked
    # after training (model.glm_fit: stack), so not computed in a training step; here with
    # random coefficients and a random deep head, so that every weight gets a gradient and the
    # same-gradients check means something
    model = build_enn(
        "tiny",
        BANDS,
        PATCH_CELLS,
        CELL_PIXELS,
        dropout=0.3,
        density_activation="softplus",
        wide="pixel",
        glm=True,
        glm_fit="stack",
    )
    sus = model.susceptibility
    g = torch.Generator().manual_seed(1)
    sus.glm.set_coefficients(0.1 * torch.randn(sus.glm.n_features, generator=g), -1.5)
    nn.init.xavier_uniform_(sus.head.weight, generator=g)
    return model


def _round2_stage_loss(stage, model, x, target, mask, t, min_density):
    """``stage_loss`` as it was: the density stages on every cell, the loss masked."""
    from landslide_hazard.training.losses import masked_mae
    from landslide_hazard.training.stages import stage_loss

    if stage == "density_log":
        return masked_mae(model.density(x).float(), torch.log1p(target), mask)
    if stage == "density" and t.density_loss == "mae":
        return masked_mae(model.density(x).float(), target, mask)
    return stage_loss(stage, model, x, target, mask, t, min_density)


def _round2(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights) computing as the round-2 code did."""
    old = copy.deepcopy(model)
    conv = old.density.features[1]
    conv.padding = (0, 0)
    old.density.features[0] = nn.ZeroPad2d(3)
    features = old.density.features  # ReLU before the first max-pool, as the code has it
    features[3], features[4] = features[4], features[3]
    wide = old.susceptibility.wide
    wide.forward = types.MethodType(_round2_pixel_forward, wide)
    return old


def _batch(stage: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of ``stage``: the density stage counts the positive cells only."""
    g = torch.Generator().manual_seed(seed)
    side = PATCH_CELLS * CELL_PIXELS
    x = torch.randn(BATCH, BANDS, side, side, generator=g)
    occurs = torch.rand(BATCH, PATCH_CELLS, PATCH_CELLS, generator=g) < 0.2
    target = torch.where(occurs, 5 * torch.rand(occurs.shape, generator=g), 0.0)
    mask = occurs if stage == "density" else torch.ones_like(occurs)
    return x, target, mask


def _stepper(model, stage: str, channels_last: bool, batch) -> Callable[[], float]:
    """One optimiser step of ``stage`` (its part, lr 1e-3); returns the loss. ``channels_last``
    False: the round-2 path (NCHW, its stage losses)."""
    from landslide_hazard.config import TrainingConfig
    from landslide_hazard.training.epochs import _optimizer
    from landslide_hazard.training.stages import part_of, stage_loss

    t = TrainingConfig()
    loss_of = stage_loss if channels_last else _round2_stage_loss
    part_name = {"susceptibility": "susceptibility", "density": "density", "finetune": "all"}
    x, target, mask = batch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        opt = _optimizer(part_of(model, part_name[stage]), 1e-3, t)  # training's optimiser
    else:  # round 2's: one Adam, a loop over the tensors
        opt = torch.optim.Adam(part_of(model, part_name[stage]).parameters(), lr=1e-3)

    def step() -> float:
        if channels_last and stage != "density":  # as training does with each batch (the
            # density stages gather their cells from the batch as built, training.epochs)
            inputs = x.contiguous(memory_format=torch.channels_last)
        else:
            inputs = x
        opt.zero_grad(set_to_none=True)
        loss = loss_of(stage, model, inputs, target, mask, t, 0.0)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _same_computation(stage: str, batch) -> str:
    """'' when both paths give the same loss and gradients (dropout off, batch norm frozen),
    else what differs."""
    from landslide_hazard.config import TrainingConfig
    from landslide_hazard.training.stages import stage_loss

    torch.manual_seed(1)
    new = _demo_model()
    old = _round2(new)
    x, target, mask = batch
    t = TrainingConfig()
    grads = []
    paths = (
        (old, torch.contiguous_format, _round2_stage_loss),
        (new, torch.channels_last, stage_loss),
    )
    for model, layout, loss_of in paths:
        model = model.to(memory_format=layout).eval()  # eval: no dropout, batch norm frozen
        loss = loss_of(stage, model, x.contiguous(memory_format=layout), target, mask, t, 0.0)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad for p in model.parameters()]))
    (loss_old, g_old), (loss_new, g_new) = grads
    if abs(loss_old - loss_new) > 1e-4 * max(1.0, abs(loss_old)):
        return f"losses differ: {loss_old:.6g} vs {loss_new:.6g}"
    for a, b in zip(g_old, g_new, strict=True):
        if (a is None) != (b is None):
            return "different parameters get gradients"
        if a is not None and not torch.allclose(a, b, rtol=1e-3, atol=1e-5):
            return f"gradients differ by up to {float((a - b).abs().max()):.3g}"
    return ""


def run(quick: bool) -> list[dict]:
    from landslide_hazard.malloc import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()
    rounds = 4 if quick else 12
    steps_per_round = 3 if quick else 5
    rows: list[dict] = []
    totals = {"round-2": 0.0, "default": 0.0}
    for stage in STAGES:
        batch = _batch(stage)
        problem = _same_computation(stage, batch)
        torch.manual_seed(0)
        model = _demo_model()
        variants = {
            "round-2": _stepper(_round2(model), stage, False, batch),
            "default": _stepper(copy.deepcopy(model), stage, True, batch),
        }

        def repeat(fn: Callable[[], float]) -> Callable[[], None]:
            return lambda: [fn() for _ in range(steps_per_round)] and None

        best = interleaved_best({k: repeat(v) for k, v in variants.items()}, rounds)
        for name, seconds in best.items():
            per_step = seconds / steps_per_round
            totals[name] += per_step
            failed = name == "default" and problem
            rows.append(
                row(
                    f"{stage} {name}",
                    None if failed else BATCH / per_step,
                    "samples/s",
                    ratio_to=None if name == "round-2" else f"{stage} round-2",
                    note=problem
                    if failed
                    else f"1 thread, batch {BATCH}, best of {rounds} rounds of "
                    f"{steps_per_round} steps"
                    + (
                        "; same loss and gradients as round-2 (batch norm frozen)"
                        if name == "default"
                        else ""
                    ),
                )
            )
    for name, seconds in totals.items():
        rows.append(
            row(
                f"one step of each stage, {name}",
                BATCH * len(STAGES) / seconds,
                "samples/s",
                ratio_to=None if name == "round-2" else "one step of each stage, round-2",
                note="the three stages' best step times added",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (~20 s)")
    args = parser.parse_args(argv)
    ref = {}
    for r in run(args.quick):
        ref[r["name"]] = r["value"]
        ratio = ""
        if r["ratio_to"] and r["value"] and ref.get(r["ratio_to"]):
            ratio = f"  {r['value'] / ref[r['ratio_to']]:.2f}x"
        value = "failed" if r["value"] is None else f"{r['value']:.1f} {r['unit']}"
        print(f"{r['name']:40s} {value:>20s}{ratio}  {r['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
