"""Shared building blocks: Glorot initialisation, cell reshaping and residual blocks.

Everything here is written from scratch (no torchvision / timm) so that the layer order and the
parameter count of each preset are under our control and documented.
"""

from __future__ import annotations

import torch
from torch import nn

# Keras BatchNormalization defaults used by keras.applications.ResNet50: epsilon 1.001e-5 and a
# moving-average momentum of 0.99, i.e. torch momentum 1 - 0.99.
KERAS_BN_EPS = 1.001e-5
KERAS_BN_MOMENTUM = 0.01


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv / linear layer (the Keras default).

    Batch norms get weight 1 and bias 0. Applied in place, recursively.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.ConvTranspose2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters; batch-norm running statistics are buffers, not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_cell_pixels(cell_pixels: int, minimum: int, what: str) -> int:
    """log2(cell_pixels) after checking it is a power of two >= minimum; a clear error otherwise."""
    if cell_pixels < minimum or cell_pixels & (cell_pixels - 1):
        raise ValueError(
            f"{what}: cell_pixels={cell_pixels} must be a power of two >= {minimum}; "
            "choose grid.k accordingly"
        )
    return cell_pixels.bit_length() - 1


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out channels-last (NHWC memory), and not also plain contiguous
    (a tensor with one channel or 1 x 1 pixels is both, and counts as NCHW)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def patch_to_cells(
    x: torch.Tensor,
    cell_pixels: int,
    selected: torch.Tensor | None = None,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Split a patch into its cells: (B, C, n*k, m*k) -> (B*n*m, C, k, k), cells in row-major
    order; with ``selected`` ((B, n, m) bool), only the selected cells, in the same order.

    One gather, from either layout of ``x``, into channels-last cells (``channels_last`` True:
    what a channels-last density block reads, with no copy of its own) or contiguous NCHW ones
    (False); None: ``x``'s own layout. The density stages select their positive cells here, so
    the other cells are never copied.
    """
    b, c, h, w = x.shape
    k = cell_pixels
    if h % k or w % k:
        raise ValueError(
            f"input of {h} x {w} pixels is not a whole number of {k} x {k}-pixel cells; "
            "patches must be n*k pixels on a side"
        )
    ny, nx = h // k, w // k
    if channels_last is None:
        channels_last = is_channels_last(x)
    # (B, n, m, k, k, C) or (B, n, m, C, k, k): views whichever the layout of x (splitting a
    # dimension always is one), so the one copy is the reshape or the selection below
    blocks = x.unflatten(3, (nx, k)).unflatten(2, (ny, k))
    blocks = blocks.permute(0, 2, 4, 3, 5, 1) if channels_last else blocks.permute(0, 2, 4, 1, 3, 5)
    if selected is None:
        cells = blocks.reshape(b * ny * nx, *blocks.shape[3:])
    else:
        if selected.shape != (b, ny, nx):
            raise ValueError(f"selected has shape {tuple(selected.shape)}; expected {(b, ny, nx)}")
        cells = blocks[selected.to(torch.bool)]
    # channels-last: (N, k, k, C) seen as (N, C, k, k) with channels-last strides
    return cells.permute(0, 3, 1, 2) if channels_last else cells


def cell_percentiles(x: torch.Tensor, cell_pixels: int, qs: tuple[float, ...]) -> torch.Tensor:
    """Per-band percentiles of each cell's pixels, numpy's default ('linear') method.

    (B, C, n*k, m*k) -> (B, C * len(qs), n, m), the percentiles of a band together. Sorts each
    cell's k*k values (``torch.quantile`` refuses inputs above 16M values, which a whole-tile
    prediction exceeds).
    """
    b, c, h, w = x.shape
    k = cell_pixels
    cells = x.reshape(b, c, h // k, k, w // k, k).permute(0, 1, 2, 4, 3, 5)
    ordered = cells.reshape(b, c, h // k, w // k, k * k).sort(dim=-1).values
    out = []
    for q in qs:
        pos = (k * k - 1) * q / 100.0
        lo, frac = int(pos), pos - int(pos)
        hi = min(lo + 1, k * k - 1)
        out.append(ordered[..., lo] + frac * (ordered[..., hi] - ordered[..., lo]))
    return torch.stack(out, dim=2).reshape(b, c * len(qs), h // k, w // k)


#: the percentiles of :func:`cell_summaries` (those of the per-cell baselines)
CELL_PERCENTILES = (10.0, 90.0)


def n_summary_stats(percentiles: bool) -> int:
    """Statistics per band in :func:`cell_summaries`: mean and std, and the percentiles."""
    return 2 + (len(CELL_PERCENTILES) if percentiles else 0)


def cell_summaries(x: torch.Tensor, cell_pixels: int, percentiles: bool = False) -> torch.Tensor:
    """Each band's mean and standard deviation over each cell, then (``percentiles``) its 10th
    and 90th percentiles: (B, C, n*k, m*k) -> (B, 2C or 4C, n, m), all means first."""
    k = cell_pixels
    mean = nn.functional.avg_pool2d(x, k)
    # two passes (the squared deviations from the cell mean), not E[x^2] - E[x]^2: a band that is
    # constant over a cell (a period-wide trigger) then has a std of exactly the floor, where the
    # one-pass formula leaves float noise that a fitted regression could read as a signal
    dev = x - nn.functional.interpolate(mean, scale_factor=k, mode="nearest")
    var = nn.functional.avg_pool2d(dev * dev, k)
    std = torch.sqrt(var + 1e-6)
    parts = [mean, std]
    if percentiles:
        parts.append(cell_percentiles(x, k, CELL_PERCENTILES))
    return torch.cat(parts, dim=1)


class CellSummaryLinear(nn.Module):
    """The "wide" path: a linear score on summaries of each band over each cell.

    (B, C, n*k, n*k) -> (B, n, n). ``linear``: each band's cell mean and standard deviation;
    ``summary`` (``percentiles=True``): also its 10th and 90th percentiles, the four statistics the
    per-cell baselines read (``evaluation.baselines.CELL_STATISTICS``). It is a per-cell
    generalised linear model on those summaries (docs/models.md, "wide & deep"), added to the
    deep network's logit, so the network can always represent the per-cell linear model and
    spends its capacity on what that model misses. Weights start at 0: at initialisation the
    network is the deep path alone.
    """

    PERCENTILES = CELL_PERCENTILES

    def __init__(self, in_channels: int, cell_pixels: int, percentiles: bool = False) -> None:
        super().__init__()
        self.cell_pixels = cell_pixels
        self.percentiles = percentiles
        self.linear = nn.Conv2d(n_summary_stats(percentiles) * in_channels, 1, 1)
        nn.init.zeros_(self.linear.weight)
        assert self.linear.bias is not None  # Conv2d(bias=True)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(cell_summaries(x, self.cell_pixels, self.percentiles))[:, 0]


class CellSummaryGLM(nn.Module):
    """A per-cell logistic regression, fitted on the training cells and then held fixed.

    (B, C, n*k, n*k) -> (B, n, n): ``weight . s + bias`` on the cell summaries ``s`` of
    :func:`cell_summaries`, the mean and standard deviation of every input band over the cell
    (``percentiles``: also the 10th and 90th percentiles, as the per-cell baselines read; a
    sort per cell that makes training ~2x slower on a CPU). Its coefficients are buffers, not
    parameters: they are fitted exactly (convex, scikit-learn, ``training.glm.fit_glm_offset``)
    on the training cells and no optimiser moves them. How it joins the network's logit is
    ``model.glm_fit`` (:meth:`SusceptibilityNet.add_glm`): added after training with equal
    weight (stack), or as the start whose residual the deep path learns (a "combined actuarial
    neural network", Wuethrich & Merz 2019); docs/models.md. Zero until fitted.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, in_channels: int, cell_pixels: int, percentiles: bool = False) -> None:
        super().__init__()
        self.cell_pixels, self.percentiles, self.in_channels = cell_pixels, percentiles, in_channels
        self.n_features = n_summary_stats(percentiles) * in_channels
        self.register_buffer("weight", torch.zeros(self.n_features))
        self.register_buffer("bias", torch.zeros(()))

    def read_mask(self, n_static: int) -> torch.Tensor:
        """(F,) bool: the summaries a fit reads, every band's mean and the spread (std,
        percentiles) of the first ``n_static`` bands only, the fine-grid ones. A band given per
        cell varies inside a cell only through its bilinear upsampling, so its spread is the
        interpolated field's local gradient: it marks places, not hazard."""
        band = torch.arange(self.in_channels)
        parts = [torch.ones(self.in_channels, dtype=torch.bool), band < n_static]
        if self.percentiles:  # a band's percentiles together (cell_percentiles)
            parts.append(band.repeat_interleave(len(CELL_PERCENTILES)) < n_static)
        return torch.cat(parts)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n*k, n*k) -> (B, F, n, n), the summaries the regression reads."""
        return cell_summaries(x, self.cell_pixels, self.percentiles)

    def set_coefficients(self, weight: torch.Tensor, bias: float) -> None:
        """Store fitted coefficients (on the features of :meth:`features`, unstandardised)."""
        weight = torch.as_tensor(weight, dtype=self.weight.dtype).reshape(-1)
        if weight.numel() != self.n_features:
            raise ValueError(f"{weight.numel()} coefficients for {self.n_features} features")
        self.weight.copy_(weight)
        self.bias.fill_(float(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.einsum("bfhw,f->bhw", f, self.weight.to(f.dtype)) + self.bias.to(f.dtype)


class PixelRatePool(nn.Module):
    """The "pixel" wide path: a per-pixel score, pooled to each cell as a log-mean-exp.

    (B, C, n*k, n*k) -> (B, n, n). A small per-pixel MLP (1 x 1 convs) gives each fine pixel a
    log failure rate ``r_i``; the cell's term is ``log(mean_i exp(r_i))``, the log of the cell's
    mean pixel rate: landslides start on pixels, and a cell's rate is the sum of its pixels'
    (docs/models.md). Added to the deep logit it lets a few steep, wet pixels drive a cell, as the
    cell's mean alone cannot. The last layer starts at 0, so the term starts at 0.
    """

    def __init__(self, in_channels: int, cell_pixels: int, hidden: int = 16) -> None:
        super().__init__()
        self.cell_pixels = cell_pixels
        self.pixel = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        glorot_init(self.pixel)
        last = self.pixel[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.cell_pixels
        hidden = self.pixel[:-1](x)
        last = self.pixel[-1]
        assert isinstance(last, nn.Conv2d)
        # the last 1 x 1 conv (hidden -> 1) as a matrix-vector product on the pixels: oneDNN's
        # one-output-channel conv is slow, most of all its backward (bench_train)
        r = nn.functional.linear(hidden.permute(0, 2, 3, 1), last.weight.flatten(1), last.bias)
        b, h, w, _ = r.shape
        r = r.reshape(b, h // k, k, w // k, k)
        # log-mean-exp per cell, shifted by the cell's own maximum (held constant, as in any
        # log-sum-exp): every cell keeps one term exp(0) = 1, so nothing underflows to log(0)
        top = r.detach().amax(dim=(2, 4), keepdim=True)
        pooled = torch.exp(r - top).mean(dim=(2, 4))
        return torch.log(pooled) + top[:, :, 0, :, 0]


def cells_to_grid(values: torch.Tensor, batch: int, ny: int, nx: int) -> torch.Tensor:
    """Inverse of the cell split for one value per cell: (B*ny*nx, ...) -> (B, ny, nx)."""
    return values.reshape(batch, ny, nx)


def conv_bn_relu(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dropout: float = 0.0
) -> nn.Sequential:
    """Conv ('same' padding for odd kernels) -> BN -> dropout -> ReLU, the order the paper's text gives."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class KerasBottleneck(nn.Module):
    """keras.applications ResNet50 ``block1``: 1x1 (stride) -> 3x3 -> 1x1 (x4), all convs with bias.

    The shortcut is a strided 1x1 conv + BN in the first block of a stage (``conv_shortcut``),
    identity otherwise. Output channels = 4 * filters.
    """

    def __init__(
        self,
        in_ch: int,
        filters: int,
        stride: int = 1,
        conv_shortcut: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

        def bn(ch: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(ch, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)

        out_ch = 4 * filters
        if conv_shortcut:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride), bn(out_ch)
            )
        else:
            if in_ch != out_ch or stride != 1:
                raise ValueError("an identity shortcut needs in_ch == 4*filters and stride 1")
            self.shortcut = nn.Identity()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, filters, 1, stride=stride),
            bn(filters),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, padding=1),
            bn(filters),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, out_ch, 1),
            bn(out_ch),
        )
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.body(x) + self.shortcut(x)))


class BasicBlock(nn.Module):
    """ResNet18/34 basic block: 3x3 conv -> BN -> dropout -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU.

    The shortcut is a strided 1x1 conv + BN when the shape changes, identity otherwise.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))
