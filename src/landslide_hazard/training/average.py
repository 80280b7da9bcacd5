"""Polyak averaging of the weights a stage trains (``training.average_epochs``).

On a small training set the validation loss of one epoch's last weights is noisy: early
stopping picks the epoch whose last batches happened to suit the validation cells. A moving
average of the weights over the last epoch or so is a better estimate of where the optimiser
sits (Polyak & Juditsky 1992; "SWA", Izmailov et al. 2018), and it is what is validated,
early-stopped and kept. Training itself goes on from the raw weights.

The average starts as the running mean of the stage's steps so far and turns into an
exponential moving average once that mean spans ``average_epochs`` epochs, so the random
initial weights do not linger in it. Batch-norm statistics are averaged the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    """A moving average of ``module``'s floating-point parameters and buffers.

    ``horizon_steps``: the exponential average's span, in optimiser steps (its weight on the
    newest step is ``1 / horizon_steps``; before that many steps, it is the plain mean).
    """

    def __init__(self, module: torch.nn.Module, horizon_steps: float) -> None:
        if horizon_steps < 1:
            raise ValueError(f"horizon_steps={horizon_steps} must be >= 1")
        self.module = module
        self.horizon_steps = float(horizon_steps)
        self.count = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current weights into the average (after an optimiser step)."""
        self.count += 1
        weight = max(1.0 / self.count, 1.0 / self.horizon_steps)
        for key, value in self.module.state_dict().items():
            kept = self.shadow[key]
            if kept.is_floating_point():
                kept.lerp_(value.detach().to(kept.dtype), weight)
            else:  # counters (num_batches_tracked): the latest
                kept.copy_(value)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the module holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.shadow)
        try:
            yield
        finally:
            self.module.load_state_dict(own)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
