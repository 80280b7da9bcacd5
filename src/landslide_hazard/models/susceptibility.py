"""The susceptibility block: a patch of n x n cells in, one occurrence probability per cell out.

Presets (see ``docs/models.md``):

- ``paper``: the published code (ashokdahal/LandslideHazard), which reproduces the paper's
  23,556,931 trainable parameters: zero-pad 3, 4x4 stride-2 stem conv (64), BN, ReLU, max-pool 3/2
  (no padding, so 128 px -> 32), Keras ResNet50 bottleneck stages [3, 4, 6, 3] with strides
  [1, 2, 2, 2] (so 32 -> 4), no decoder; head: pad 1, 3x3 conv to one channel, ReLU, BN, sigmoid.
  Needs cell_pixels 32 (its total stride).
- ``resnet18`` / ``resnet34``: what the paper's *text* describes: 3x3 basic blocks, BN, dropout,
  ReLU, max-pooling, and a U-Net-style decoder with skip connections. The encoder reaches the cell
  scale (one feature pixel per cell); the decoder climbs two levels (to 1/8 of the input scale for
  k = 32, the text's "output scaled down by a factor of 8") fusing the encoder skips, and a 4x4
  stride-4 conv aggregates each cell's decoder block into one logit. cell_pixels 8, 16 or 32.
- ``tiny``: a small U-Net-ish CNN (tens of thousands of parameters) for CPU tests and demos,
  any cell_pixels that is a power of two >= 4; a 2 x 2 stride-2 (space-to-depth) stem.

All map (B, C, n*k, n*k) -> (B, n, n) probabilities in [0, 1] and are fully convolutional, so a
larger tile (any whole number of cells) can be predicted in one pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .layers import (
    KERAS_BN_EPS,
    KERAS_BN_MOMENTUM,
    BasicBlock,
    CellSummaryGLM,
    CellSummaryLinear,
    KerasBottleneck,
    PixelRatePool,
    check_cell_pixels,
    conv_bn_relu,
    glorot_init,
)

SUSCEPTIBILITY_PRESETS: tuple[str, ...] = ("paper", "resnet18", "resnet34", "tiny")
#: How a fitted per-cell regression joins the network (``model.glm_fit``, ``add_glm``).
GLM_FITS: tuple[str, ...] = ("stack", "start")

PAPER_TRAINABLE_PARAMETERS = 23_556_931  # paper Sect. 6.1, with 13 input channels


class SusceptibilityNet(nn.Module, ABC):
    """Common interface: shape checks and the (B, 1, n, n) -> (B, n, n) squeeze."""

    preset: str = ""

    def __init__(self, in_channels: int, patch_cells: int, cell_pixels: int) -> None:
        super().__init__()
        self.wide: nn.Module | None = None
        self.glm: CellSummaryGLM | None = None
        if in_channels < 1 or patch_cells < 1:
            raise ValueError(
                f"in_channels={in_channels} and patch_cells={patch_cells} must be >= 1"
            )
        self.in_channels = in_channels
        self.patch_cells = patch_cells
        self.cell_pixels = cell_pixels

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.preset} susceptibility expects (B, {self.in_channels}, n*k, n*k), "
                f"got {tuple(x.shape)}; check the band order and count"
            )
        k = self.cell_pixels
        if x.shape[2] % k or x.shape[3] % k or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(
                f"input of {x.shape[2]} x {x.shape[3]} px is not a whole number of {k}-px cells"
            )

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores (B, 1, n, n) (probabilities for ``paper``); each preset defines its
        network here."""

    def add_wide_path(self, kind: str = "linear") -> None:
        """Add a per-cell term to the logit: ``linear`` (:class:`CellSummaryLinear`, on each
        band's cell mean and std), ``summary`` (also its 10th and 90th percentiles) or ``pixel``
        (:class:`PixelRatePool`)."""
        if self.preset == "paper":
            raise ValueError(
                "the 'paper' preset ends in a sigmoid after batch norm (the published code), so "
                "it has no logit to add a wide path to; set model.wide: none for it"
            )
        if kind == "linear":
            self.wide = CellSummaryLinear(self.in_channels, self.cell_pixels)
        elif kind == "summary":
            self.wide = CellSummaryLinear(self.in_channels, self.cell_pixels, percentiles=True)
        elif kind == "pixel":
            self.wide = PixelRatePool(self.in_channels, self.cell_pixels)
        else:
            raise ValueError(f"unknown wide path {kind!r}; choose none, linear, summary or pixel")

    def add_glm(self, fit: str = "start") -> None:
        """Add a fixed per-cell logistic regression to the logit (:class:`CellSummaryGLM`,
        ``model.glm``).

        ``fit`` "start": zero the deep path's head, so that the network starts as that
        regression and its deep and wide paths learn the residual. "stack": the network trains
        alone (the regression is left out while training), then the logit becomes
        ``a * network + b * regression + c`` with (a, b, c) in the buffer ``glm_stack``, set on
        the validation cells after training (``training.glm.stack_glm``: a = b, equal weights);
        (1, 0, 0) until then.
        """
        if fit not in GLM_FITS:
            raise ValueError(f"unknown model.glm_fit {fit!r}; choose one of {', '.join(GLM_FITS)}")
        if self.preset == "paper":
            raise ValueError(
                "the 'paper' preset ends in a sigmoid after batch norm (the published code), so "
                "it has no logit to add a fitted regression to; set model.glm: false for it"
            )
        self.glm = CellSummaryGLM(self.in_channels, self.cell_pixels)
        if fit == "stack":
            self.register_buffer("glm_stack", torch.tensor([1.0, 0.0, 0.0]))
            return
        head = getattr(self, "head", None)
        if not isinstance(head, nn.Conv2d):  # a wiring error, never a user error
            raise RuntimeError(f"{self.preset}: no per-cell head conv to start at zero")
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)

    def network_logit(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n*k, n*k) -> (B, 1, n, n): the deep and wide paths' logit, without the
        fitted regression (not for the paper preset, whose head ends in a sigmoid)."""
        out = self.logits(x)
        if self.wide is not None:
            out = out + self.wide(x)[:, None]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n*k, n*k) -> (B, n, n) occurrence probabilities."""
        self._check_input(x)
        if self.preset == "paper":  # the paper's head returns probabilities already
            out = self.logits(x)
        else:
            out = self.network_logit(x)
            stack = getattr(self, "glm_stack", None)
            if stack is not None:
                # stacked after training; while training the regression weighs 0 and is skipped
                out = stack[0] * out + stack[2]
                if not self.training:
                    assert self.glm is not None  # add_glm registers both
                    out = out + stack[1] * self.glm(x)[:, None]
            elif self.glm is not None:
                out = out + self.glm(x)[:, None]
            out = torch.sigmoid(out)
        expected = (x.shape[2] // self.cell_pixels, x.shape[3] // self.cell_pixels)
        if tuple(out.shape[-2:]) != expected:  # a wiring error, never a user error
            raise RuntimeError(f"{self.preset}: output {tuple(out.shape)} != cells {expected}")
        return out[:, 0]


class PaperSusceptibility(SusceptibilityNet):
    """The published code's ResNet50-style encoder with a one-channel head (23,556,931 params).

    ``logits`` here returns probabilities already (the code's head ends in ReLU -> BN -> sigmoid,
    so there is no pre-sigmoid logit to expose).
    """

    preset = "paper"

    def __init__(
        self,
        in_channels: int = 13,
        patch_cells: int = 4,
        cell_pixels: int = 32,
        dropout: float = 0.0,
    ) -> None:
        if cell_pixels != 32:
            raise ValueError(
                f"the 'paper' preset has a total stride of 32 px, so it needs cell_pixels=32 "
                f"(got {cell_pixels}); use 'resnet18', 'resnet34' or 'tiny' for other cell sizes"
            )
        super().__init__(in_channels, patch_cells, cell_pixels)

        def bn(ch: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(ch, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)

        self.stem = nn.Sequential(
            nn.ZeroPad2d(3),
            nn.Conv2d(in_channels, 64, 4, stride=2),
            bn(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        stages: list[nn.Module] = []
        in_ch = 64
        for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [KerasBottleneck(in_ch, filters, stride, conv_shortcut=True, dropout=dropout)]
            in_ch = 4 * filters
            stage += [
                KerasBottleneck(in_ch, filters, 1, conv_shortcut=False, dropout=dropout)
                for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.ZeroPad2d(1),
            nn.Conv2d(in_ch, 1, 3),
            nn.ReLU(inplace=True),
            bn(1),
            nn.Sigmoid(),
        )
        glorot_init(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class ResNetUNetSusceptibility(SusceptibilityNet):
    """ResNet18/34 encoder (3x3 basic blocks) + a two-level U-Net decoder + a per-cell head."""

    def __init__(
        self,
        preset: str,
        in_channels: int = 13,
        patch_cells: int = 4,
        cell_pixels: int = 32,
        dropout: float = 0.0,
    ) -> None:
        blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[preset]
        levels = check_cell_pixels(cell_pixels, 8, f"the '{preset}' preset")
        if levels > 5:
            raise ValueError(
                f"the '{preset}' preset supports cell_pixels 8, 16 or 32 (got {cell_pixels}); "
                "resample the predictors to at most 32 px per cell"
            )
        super().__init__(in_channels, patch_cells, cell_pixels)
        self.preset = preset
        # Five places can halve the resolution: stem, max-pool, layer2, layer3, layer4. The last
        # log2(k) of them are active, so layer4 always ends at the cell scale and layer2 / layer3
        # at 4 and 2 feature pixels per cell (the decoder's skip connections).
        stem_stride = 2 if levels >= 5 else 1
        widths = (64, 128, 256, 512)
        self.stem = nn.Sequential(
            conv_bn_relu(in_channels, 64, 3, stride=stem_stride, dropout=dropout),
            nn.MaxPool2d(3, stride=2, padding=1) if levels >= 4 else nn.Identity(),
        )
        layers: list[nn.Module] = []
        in_ch = 64
        for i, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(in_ch, width, stride, dropout)]
            layer += [BasicBlock(width, width, 1, dropout) for _ in range(n_blocks - 1)]
            layers.append(nn.Sequential(*layer))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.up3 = nn.ConvTranspose2d(512, 256, 2, stride=2)
        self.dec3 = nn.Sequential(
            conv_bn_relu(512, 256, dropout=dropout), conv_bn_relu(256, 256, dropout=dropout)
        )
        self.up2 = nn.ConvTranspose2d(256, 128, 2, stride=2)
        self.dec2 = nn.Sequential(
            conv_bn_relu(256, 128, dropout=dropout), conv_bn_relu(128, 128, dropout=dropout)
        )
        self.head = nn.Conv2d(128, 1, 4, stride=4)  # each cell's 4 x 4 decoder block -> 1 logit
        glorot_init(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.layer1(self.stem(x))
        s2 = self.layer2(s1)  # 4 px per cell
        s3 = self.layer3(s2)  # 2 px per cell
        s4 = self.layer4(s3)  # 1 px per cell
        d3 = self.dec3(torch.cat([self.up3(s4), s3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), s2], dim=1))
        return self.head(d2)


class TinySusceptibility(SusceptibilityNet):
    """A small CPU-friendly U-Net-ish CNN (about 20-30 thousand parameters).

    - stem: a 2 x 2 stride-2 conv (space-to-depth: each 2 x 2 pixel block of the 13 channels
      -> 16 features), BN, ReLU, then a 1 x 1 conv, BN, ReLU (a per-pixel non-linearity of the
      terrain before any averaging). Working at half resolution from the first layer makes the
      net ~8x cheaper than a full-resolution 3 x 3 first layer for the same receptive field;
    - log2(k) - 1 strided 3 x 3 conv levels down to one feature pixel per cell;
    - one decoder level (2 x 2 up-conv, skip from 2 px per cell, 3 x 3 fuse conv) and a
      2 x 2 stride-2 per-cell head.
    """

    preset = "tiny"

    def __init__(
        self,
        in_channels: int = 13,
        patch_cells: int = 4,
        cell_pixels: int = 32,
        dropout: float = 0.0,
    ) -> None:
        levels = check_cell_pixels(cell_pixels, 4, "the 'tiny' preset")
        super().__init__(in_channels, patch_cells, cell_pixels)
        widths = [16, 24] + [32] * max(0, levels - 2)
        widths = widths[:levels]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 2, stride=2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            conv_bn_relu(widths[0], widths[0], kernel=1, dropout=dropout),
        )
        self.down = nn.ModuleList(
            conv_bn_relu(widths[i - 1], widths[i], stride=2, dropout=dropout)
            for i in range(1, levels)
        )
        self.up = nn.ConvTranspose2d(widths[-1], widths[-2], 2, stride=2)
        self.fuse = conv_bn_relu(2 * widths[-2], widths[-2], dropout=dropout)
        self.head = nn.Conv2d(widths[-2], 1, 2, stride=2)  # each cell's 2 x 2 block -> 1 logit
        glorot_init(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        fused = self.fuse(torch.cat([self.up(feats[-1]), feats[-2]], dim=1))
        return self.head(fused)


class SusceptibilityEnsemble(nn.Module):
    """A deep ensemble: ``M`` independently initialised susceptibility nets of one preset,
    each trained on its own loss (``training.stages.stage_loss``); the probability is their mean.

    Averaging members that started apart cancels much of what each one fits to noise in a small
    training set (Lakshminarayanan et al. 2017); the paper's "ensemble" combines a susceptibility
    and a density block, this adds the members.
    """

    def __init__(self, members: list[SusceptibilityNet]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.preset = first.preset
        self.in_channels = first.in_channels
        self.patch_cells = first.patch_cells
        self.cell_pixels = first.cell_pixels

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(M, B, n, n): every member's probabilities."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_probabilities(x).mean(dim=0)


def build_susceptibility(
    preset: str,
    in_channels: int = 13,
    patch_cells: int = 4,
    cell_pixels: int = 32,
    dropout: float = 0.0,
    wide: str = "none",
    members: int = 1,
    glm: str | None = None,
) -> SusceptibilityNet | SusceptibilityEnsemble:
    """The susceptibility block of a preset, Glorot-uniform initialised.

    Maps (B, in_channels, n*k, n*k) -> (B, n, n) probabilities, n = patch_cells, k = cell_pixels.
    ``glm``: None, or how each network gets a fixed per-cell regression, start or stack
    (:meth:`SusceptibilityNet.add_glm`), zero until ``training.glm`` fits it. Seed torch
    (``torch.manual_seed``) before the call for reproducible weights.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} must be in [0, 1)")
    if members < 1:
        raise ValueError(f"members={members} must be >= 1")
    if members > 1:
        return SusceptibilityEnsemble(
            [
                _single_susceptibility(
                    preset, in_channels, patch_cells, cell_pixels, dropout, wide, glm
                )
                for _ in range(members)
            ]
        )
    return _single_susceptibility(preset, in_channels, patch_cells, cell_pixels, dropout, wide, glm)


def _single_susceptibility(
    preset: str,
    in_channels: int,
    patch_cells: int,
    cell_pixels: int,
    dropout: float,
    wide: str,
    glm: str | None = None,
) -> SusceptibilityNet:
    """One network of the preset (an ensemble member, or the block itself)."""
    net: SusceptibilityNet
    if preset == "paper":
        net = PaperSusceptibility(in_channels, patch_cells, cell_pixels, dropout)
    elif preset in ("resnet18", "resnet34"):
        net = ResNetUNetSusceptibility(preset, in_channels, patch_cells, cell_pixels, dropout)
    elif preset == "tiny":
        net = TinySusceptibility(in_channels, patch_cells, cell_pixels, dropout)
    else:
        raise ValueError(
            f"unknown model preset {preset!r}; choose one of {', '.join(SUSCEPTIBILITY_PRESETS)}"
        )
    if wide != "none":
        net.add_wide_path(wide)
    if glm is not None:
        net.add_glm(glm)
    return net
