"""The area-density block: each cell's k x k x C block -> E[D | D > 0] in % of the cell area.

As in the published code (paper Sect. 6.1, Fig. 5): the patch is reshaped to one sample per cell
(paper: 16 x 32 x 32 x 13), then zero-pad 3, conv 64 (4x4, stride 2), BN, ReLU, max-pool 3/2,
a per-pixel dense layer of 128 units (a 1x1 conv) + BN, max-pool 3/2, flatten, and dense layers
512 -> 128 -> 32 -> 1 with ReLU, so the output is non-negative. The text adds dropout (here
configurable, after each hidden dense layer). Cells never see their neighbours.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_cell_pixels, glorot_init, is_channels_last, patch_to_cells

DENSITY_OUTPUT_ACTIVATIONS: tuple[str, ...] = ("relu", "softplus")


def _pool_or_identity(size: int) -> tuple[nn.Module, int]:
    """Max-pool 3/2 (no padding) and the new size; identity when the map is already under 3 px."""
    if size >= 3:
        return nn.MaxPool2d(3, stride=2), (size - 3) // 2 + 1
    return nn.Identity(), size


class DensityBlock(nn.Module):
    """Per-cell density regressor.

    Args:
        in_channels: predictor channels C.
        cell_pixels: k, fine pixels per cell side (power of two >= 2).
        dropout: dropout rate after each hidden dense layer (the code: 0).
        output_activation: ``relu`` (the code) or ``softplus`` (smooth, never stuck at exactly 0).

    ``forward(x)``: (B, C, n*k, n*k) -> (B, n, n) density given occurrence, % of cell area, >= 0.
    ``forward_cells(cells)``: (N, C, k, k) -> (N,); ``forward_selected(x, selected)``: the
    densities of the selected cells of a patch batch, computing only those (the density stages
    train on positive cells only).
    """

    def __init__(
        self,
        in_channels: int = 13,
        cell_pixels: int = 32,
        dropout: float = 0.0,
        output_activation: str = "relu",
    ) -> None:
        super().__init__()
        check_cell_pixels(cell_pixels, 2, "DensityBlock")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        if output_activation not in DENSITY_OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={output_activation!r}; choose one of {DENSITY_OUTPUT_ACTIVATIONS}"
            )
        self.in_channels = in_channels
        self.cell_pixels = cell_pixels
        size = (cell_pixels + 6 - 4) // 2 + 1  # zero-pad 3 then 4x4 stride-2 conv
        pool1, size = _pool_or_identity(size)
        pool2, size = _pool_or_identity(size)
        self.features = nn.Sequential(
            # the code's ZeroPad2d(3) is the conv's own zero padding here: the same output
            # without a padded copy of every cell (1.14x on the block's training step, channels-
            # last; bench_train). The Identity keeps the layers' indices (state_dict keys).
            nn.Identity(),
            nn.Conv2d(in_channels, 64, 4, stride=2, padding=3),
            nn.BatchNorm2d(64),
            # the code's ReLU then max-pool, swapped: max and ReLU commute exactly (ReLU is
            # monotone), values and gradients alike, and the ReLU runs on the pooled map
            # (4 x 4 instead of 10 x 10 for k = 16; bench_train). Neither has weights, so
            # state_dict keys do not move.
            pool1,
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 1),  # the code's per-pixel Dense(128)
            nn.BatchNorm2d(128),
            pool2,
            nn.Flatten(),
        )
        self.flat_features = 128 * size * size
        dense: list[nn.Module] = []
        widths = (self.flat_features, 512, 128, 32)
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            dense += [nn.Linear(a, b), nn.ReLU(inplace=True)]
            if dropout > 0:
                dense.append(nn.Dropout(dropout))
        dense.append(nn.Linear(32, 1))
        dense.append(nn.ReLU() if output_activation == "relu" else nn.Softplus())
        self.regressor = nn.Sequential(*dense)
        glorot_init(self)

    def _reads_channels_last(self) -> bool:
        """Whether the first convolution's weights are channels-last (``to_memory_format``):
        its cells are then gathered in that layout, which it would convert them to anyway."""
        conv = self.features[1]
        assert isinstance(conv, nn.Conv2d)
        return is_channels_last(conv.weight)

    def forward_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """(N, C, k, k) cell blocks -> (N,) densities in % of the cell area."""
        k = self.cell_pixels
        if cells.ndim != 4 or tuple(cells.shape[1:]) != (self.in_channels, k, k):
            raise ValueError(
                f"DensityBlock expects cells of shape (N, {self.in_channels}, {k}, {k}), "
                f"got {tuple(cells.shape)}"
            )
        return self.regressor(self.features(cells))[:, 0]

    def forward_selected(self, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """(B, C, n*k, n*k) patches and (B, n, n) bool -> (N,) densities of the N selected
        cells, in row-major order of ``selected``; no other cell is computed.

        In evaluation mode this is ``forward(x)[selected]``. In training mode the batch norms
        normalise over the selected cells only (``forward`` would use every cell of the batch).
        No cell selected: an empty tensor, still attached to the weights (a loss over it is 0
        and ``backward`` works).
        """
        b, _, h, w = x.shape
        k = self.cell_pixels
        if selected.shape != (b, h // k, w // k):
            raise ValueError(
                f"selected has shape {tuple(selected.shape)}; expected {(b, h // k, w // k)}"
            )
        if not bool(selected.any()):  # batch norm cannot normalise over no cell
            last = self.regressor[-2]  # the last Linear (the activation follows it)
            assert isinstance(last, nn.Linear)
            return last.bias[:0] * 0.0
        return self.forward_cells(patch_to_cells(x, k, selected, self._reads_channels_last()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n*k, n*k) patch -> (B, n, n) densities in % of the cell area."""
        if x.ndim != 4:
            raise ValueError(f"DensityBlock expects (B, C, n*k, n*k), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        k = self.cell_pixels
        values = self.forward_cells(patch_to_cells(x, k, channels_last=self._reads_channels_last()))
        return values.reshape(b, h // k, w // k)
