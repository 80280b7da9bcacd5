"""Susceptibility presets: exact parameter counts, shapes, init, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from landslide_hazard.models import (
    PAPER_TRAINABLE_PARAMETERS,
    build_susceptibility,
    count_parameters,
)


def _buffers(module: torch.nn.Module) -> int:
    return sum(
        b.numel() for n, b in module.named_buffers() if not n.endswith("num_batches_tracked")
    )


def test_paper_preset_has_the_papers_parameter_count_and_a_4x4_output():
    torch.manual_seed(0)
    model = build_susceptibility("paper", in_channels=13, patch_cells=4, cell_pixels=32)
    assert count_parameters(model) == PAPER_TRAINABLE_PARAMETERS == 23_556_931
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 13, 128, 128))
    assert out.shape == (1, 4, 4)
    assert torch.all((out >= 0) & (out <= 1))


def test_paper_body_is_keras_resnet50():
    """Independent reference: keras.applications.ResNet50(include_top=False, 3 channels) reports
    23,534,592 trainable and 53,120 non-trainable parameters. Swap our 4x4 stem conv for Keras'
    7x7 one and drop our head: the counts must match."""
    model = build_susceptibility("paper", in_channels=3)
    ours_stem = 4 * 4 * 3 * 64 + 64
    keras_stem = 7 * 7 * 3 * 64 + 64
    head = 3 * 3 * 2048 * 1 + 1 + 2  # 3x3 conv to one channel + BN(1) gamma/beta
    assert count_parameters(model) - ours_stem + keras_stem - head == 23_534_592
    assert _buffers(model) - 2 == 53_120  # BN moving mean/var; minus the head's BN(1)


def test_paper_preset_needs_32_pixel_cells():
    with pytest.raises(ValueError, match="cell_pixels=32"):
        build_susceptibility("paper", cell_pixels=16)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model preset 'resnet50'"):
        build_susceptibility("resnet50")


@pytest.mark.parametrize(
    ("preset", "cell_pixels"),
    [("resnet18", 32), ("resnet34", 32), ("resnet18", 16), ("resnet18", 8)],
)
def test_text_presets_map_patches_to_cells(preset, cell_pixels):
    torch.manual_seed(0)
    model = build_susceptibility(preset, patch_cells=4, cell_pixels=cell_pixels, dropout=0.3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 13, 4 * cell_pixels, 4 * cell_pixels))
    assert out.shape == (2, 4, 4)
    assert torch.all((out >= 0) & (out <= 1))


def test_text_presets_parameter_counts():
    # ResNet18 / 34 basic-block encoders (no fc) with a 3x3 13-channel stem, plus our decoder.
    def basic_encoder(blocks):
        total, in_ch = 13 * 64 * 9 + 128, 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            for j in range(n):
                cin = in_ch if j == 0 else width
                total += cin * width * 9 + 2 * width + width * width * 9 + 2 * width
                if j == 0 and (i > 0 or cin != width):
                    total += cin * width + 2 * width
            in_ch = width
        return total

    decoder = (
        (512 * 256 * 4 + 256)  # up-conv
        + (512 * 256 * 9 + 512)
        + (256 * 256 * 9 + 512)
        + (256 * 128 * 4 + 128)
        + (256 * 128 * 9 + 256)
        + (128 * 128 * 9 + 256)
        + (128 * 16 + 1)  # per-cell 4x4 head
    )
    assert (
        count_parameters(build_susceptibility("resnet18")) == basic_encoder((2, 2, 2, 2)) + decoder
    )
    assert (
        count_parameters(build_susceptibility("resnet34")) == basic_encoder((3, 4, 6, 3)) + decoder
    )


def test_resnet_presets_reject_unsupported_cells():
    with pytest.raises(ValueError, match="power of two >= 8"):
        build_susceptibility("resnet18", cell_pixels=4)
    with pytest.raises(ValueError, match="8, 16 or 32"):
        build_susceptibility("resnet34", cell_pixels=64)


def _tiny_count(in_ch: int, widths: list[int]) -> int:
    """Hand count: a bias-free 2x2 stride-2 stem conv + BN, a 1x1 conv + BN, bias-free 3x3
    down convs + BN, a 2x2 up-conv, a fuse conv, a 2x2 per-cell head."""
    total = in_ch * widths[0] * 4 + 2 * widths[0]
    total += widths[0] * widths[0] + 2 * widths[0]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        total += a * b * 9 + 2 * b
    total += widths[-1] * widths[-2] * 4 + widths[-2]
    total += 2 * widths[-2] * widths[-2] * 9 + 2 * widths[-2]
    total += widths[-2] * 4 + 1
    return total


@pytest.mark.parametrize(
    ("cell_pixels", "widths"),
    [(4, [16, 24]), (8, [16, 24, 32]), (16, [16, 24, 32, 32])],
)
def test_tiny_preset_counts_and_shapes(cell_pixels, widths):
    torch.manual_seed(0)
    model = build_susceptibility("tiny", patch_cells=4, cell_pixels=cell_pixels)
    n_params = count_parameters(model)
    assert n_params == _tiny_count(13, widths)
    assert 10_000 <= n_params <= 100_000
    out = model(torch.randn(3, 13, 4 * cell_pixels, 4 * cell_pixels))
    assert out.shape == (3, 4, 4)
    # fully convolutional: a 2 x 3-cell tile predicts 2 x 3 cells
    assert model(torch.randn(1, 13, 2 * cell_pixels, 3 * cell_pixels)).shape == (1, 2, 3)


def test_tiny_rejects_bad_cells_and_bad_inputs():
    with pytest.raises(ValueError, match="power of two >= 4"):
        build_susceptibility("tiny", cell_pixels=12)
    model = build_susceptibility("tiny", cell_pixels=8)
    with pytest.raises(ValueError, match="band order"):
        model(torch.randn(1, 12, 32, 32))
    with pytest.raises(ValueError, match="whole number"):
        model(torch.randn(1, 13, 30, 32))


def test_glorot_uniform_init():
    torch.manual_seed(1)
    model = build_susceptibility("tiny", cell_pixels=8)
    conv = model.down[1][0]
    fan_in = conv.in_channels * 9
    fan_out = conv.out_channels * 9
    limit = math.sqrt(6 / (fan_in + fan_out))
    w = conv.weight.detach()
    assert float(w.abs().max()) <= limit
    # uniform on [-limit, limit] has variance limit^2 / 3
    assert float(w.var()) == pytest.approx(limit**2 / 3, rel=0.15)
    assert torch.all(model.head.bias == 0)


def test_same_seed_same_weights_other_seed_other_weights():
    def build(seed):
        torch.manual_seed(seed)
        return build_susceptibility("resnet18", cell_pixels=16, dropout=0.3).state_dict()

    a, b, c = build(7), build(7), build(8)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
