"""Density block, cell reshaping, the ENN product, and a tiny model that can overfit."""

from __future__ import annotations

import pytest
import torch

from landslide_hazard.models import (
    ENN,
    DensityBlock,
    ENNOutput,
    build_enn,
    build_susceptibility,
    count_parameters,
    patch_to_cells,
)
from landslide_hazard.training.losses import focal_tversky_loss, masked_mae


def test_patch_to_cells_matches_a_loop():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    cells = patch_to_cells(x, 4)
    assert cells.shape == (2 * 2 * 3, 3, 4, 4)
    i = 0
    for b in range(2):
        for cy in range(2):
            for cx in range(3):
                assert torch.equal(cells[i], x[b, :, 4 * cy : 4 * cy + 4, 4 * cx : 4 * cx + 4])
                i += 1
    with pytest.raises(ValueError, match="whole number"):
        patch_to_cells(x, 5)


def test_density_block_paper_layout_count():
    # conv 4x4 13->64, BN, 1x1 conv 64->128, BN, dense 128*3*3 -> 512 -> 128 -> 32 -> 1
    expected = (
        (4 * 4 * 13 * 64 + 64)
        + 128
        + (64 * 128 + 128)
        + 256
        + (1152 * 512 + 512)
        + (512 * 128 + 128)
        + (128 * 32 + 32)
        + (32 + 1)
    )
    block = DensityBlock(13, 32)
    assert block.flat_features == 128 * 3 * 3
    assert count_parameters(block) == expected


@pytest.mark.parametrize(("cell_pixels", "side"), [(32, 3), (16, 1), (8, 2), (4, 1)])
def test_density_shapes_and_non_negative(cell_pixels, side):
    torch.manual_seed(0)
    block = DensityBlock(13, cell_pixels, dropout=0.2)
    assert block.flat_features == 128 * side * side
    x = torch.randn(3, 13, 4 * cell_pixels, 4 * cell_pixels) * 3
    out = block(x)
    assert out.shape == (3, 4, 4)
    assert torch.all(out >= 0)
    soft = DensityBlock(13, cell_pixels, output_activation="softplus")
    assert torch.all(soft(x) > 0)


def test_density_of_a_cell_ignores_its_neighbours():
    torch.manual_seed(0)
    block = DensityBlock(13, 8, output_activation="softplus").eval()
    x = torch.randn(1, 13, 32, 32)
    y = x.clone()
    y[:, :, 8:16, 16:24] += 5.0  # change only cell (1, 2)
    with torch.no_grad():
        diff = (block(x) - block(y)).abs()[0]
    assert diff[1, 2] > 0
    diff[1, 2] = 0
    assert torch.all(diff == 0)
    # forward on the patch equals forward on its cells
    with torch.no_grad():
        per_cell = block.forward_cells(patch_to_cells(x, 8)).reshape(1, 4, 4)
        assert torch.allclose(per_cell, block(x))


def test_forward_selected_computes_only_the_selected_cells():
    """Evaluation mode: the masked full forward, outputs and gradients. Training mode: the
    batch norms see the selected cells only, so an unselected cell's input changes nothing
    (while the full forward's batch statistics move with it). No cell: an empty output whose
    loss still backpropagates."""
    torch.manual_seed(3)
    block = DensityBlock(13, 8, dropout=0.0, output_activation="softplus").double()
    x = torch.randn(2, 13, 32, 32, dtype=torch.float64)
    selected = torch.rand(2, 4, 4) < 0.3
    selected[0, 0, 0], selected[1, 3, 3] = True, False
    block.eval()
    got = block.forward_selected(x, selected)
    want = block(x)[selected]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grads = []
    for out in (got, want):
        block.zero_grad()
        out.square().sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    block.train()
    y = x.clone()
    y[1, :, 24:32, 24:32] += 10.0  # cell (1, 3, 3), not selected
    torch.testing.assert_close(
        block.forward_selected(y, selected), block.forward_selected(x, selected)
    )
    assert not torch.allclose(block(y)[selected], block(x)[selected])
    none = block.forward_selected(x, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert none.shape == (0,)
    masked_mae(none, none.detach()).backward()
    with pytest.raises(ValueError, match="selected has shape"):
        block.forward_selected(x, selected[:, :2])


def test_density_first_conv_pads_as_the_published_zero_pad_does():
    """The conv's own padding = 3 against the published ZeroPad2d(3) and an unpadded conv."""
    torch.manual_seed(5)
    block = DensityBlock(13, 8).eval()
    conv = block.features[1]
    assert isinstance(conv, torch.nn.Conv2d)
    cells = torch.randn(6, 13, 8, 8, dtype=torch.float64)
    padded = torch.nn.functional.pad(cells, (3, 3, 3, 3))
    want = torch.nn.functional.conv2d(padded, conv.weight.double(), conv.bias.double(), stride=2)
    with torch.no_grad():
        got = block.double().features[:2](cells)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset", ["tiny", "resnet18"])
def test_channels_last_gives_the_nchw_outputs_and_gradients(preset):
    """The layout training uses by default (``training.channels_last``) changes float
    rounding only: outputs and every weight's gradient agree with NCHW's."""
    torch.manual_seed(6)
    nchw = build_enn(preset, 13, 4, 8, dropout=0.0, wide="pixel").double()
    last = build_enn(preset, 13, 4, 8, dropout=0.0, wide="pixel").double()
    last.load_state_dict(nchw.state_dict())
    last = last.to(memory_format=torch.channels_last)
    x = torch.randn(3, 13, 32, 32, dtype=torch.float64)
    grads = []
    for model, inputs in ((nchw, x), (last, x.contiguous(memory_format=torch.channels_last))):
        out = model(inputs)
        (out.hazard.sum() + out.susceptibility.sum()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_enn_hazard_is_the_product_and_parts_are_separate():
    torch.manual_seed(3)
    enn = build_enn("tiny", in_channels=13, patch_cells=4, cell_pixels=8, dropout=0.1)
    assert isinstance(enn, ENN)
    enn.eval()
    x = torch.randn(2, 13, 32, 32)
    with torch.no_grad():
        out = enn(x)
        assert isinstance(out, ENNOutput)
        assert torch.equal(out.susceptibility, enn.susceptibility(x))
        assert torch.equal(out.density, enn.density(x))
    assert out.hazard.shape == out.susceptibility.shape == out.density.shape == (2, 4, 4)
    assert torch.equal(out.hazard, out.susceptibility * out.density)
    assert torch.all(out.hazard >= 0)
    # the parts can be swapped in from separately trained models
    torch.manual_seed(4)
    other = build_susceptibility("tiny", cell_pixels=8)
    combined = ENN(other, enn.density, 4, 8).eval()
    with torch.no_grad():
        assert torch.equal(combined(x).susceptibility, other.eval()(x))


def test_build_enn_is_deterministic():
    def weights(seed):
        torch.manual_seed(seed)
        return build_enn("tiny", cell_pixels=16).state_dict()

    a, b = weights(11), weights(11)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_args_rebuild_the_same_architecture():
    torch.manual_seed(0)
    enn = build_enn("tiny", in_channels=5, patch_cells=2, cell_pixels=8, dropout=0.1)
    rebuilt = build_enn(**enn.build_args)
    rebuilt.load_state_dict(enn.state_dict())
    x = torch.randn(1, 5, 16, 16)
    enn.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(enn(x).hazard, rebuilt(x).hazard)
    assert ENN(enn.susceptibility, enn.density, 2, 8).build_args is None


def _toy_batch(cell_pixels: int = 4, seed: int = 0):
    """4 patches of 4 x 4 cells; occurrence = mean of channel 0 over the cell > 0.3, density from
    channel 1: a learnable, spatially varying target."""
    gen = torch.Generator().manual_seed(seed)
    k = cell_pixels
    x = torch.randn(4, 13, 4 * k, 4 * k, generator=gen)
    cells = patch_to_cells(x, k)
    occ = (cells[:, 0].mean(dim=(1, 2)) > 0.3).float().reshape(4, 4, 4)
    dens = (1 + 2 * torch.sigmoid(cells[:, 1].mean(dim=(1, 2)) * 3)).reshape(4, 4, 4)
    return x, occ, dens


def test_tiny_susceptibility_overfits_a_tiny_batch():
    torch.manual_seed(0)
    x, occ, _ = _toy_batch()
    assert 0 < occ.mean() < 0.6
    model = build_susceptibility("tiny", cell_pixels=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = focal_tversky_loss(model(x), occ)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    model.eval()
    with torch.no_grad():
        assert torch.equal((model(x) > 0.5).float(), occ)


def test_density_block_overfits_a_tiny_batch():
    torch.manual_seed(0)
    x, _, dens = _toy_batch()
    block = DensityBlock(13, 4, output_activation="softplus")
    opt = torch.optim.Adam(block.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = masked_mae(block(x), dens)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_density_activation_is_selectable_and_softplus_never_zero():
    torch.manual_seed(0)
    relu = build_enn("tiny", 13, 2, 8, density_activation="relu")
    torch.manual_seed(0)
    soft = build_enn("tiny", 13, 2, 8, density_activation="softplus")
    assert relu.build_args["density_activation"] == "relu"
    assert soft.build_args["density_activation"] == "softplus"
    # the same weights: softplus of the last pre-activation is > 0 wherever relu clips to 0
    soft.load_state_dict(relu.state_dict())
    x = torch.randn(4, 13, 16, 16)
    with torch.no_grad():
        d_relu = relu.eval()(x).density
        d_soft = soft.eval()(x).density
    assert torch.all(d_soft > 0)
    assert torch.all(d_soft >= d_relu)
    with pytest.raises(ValueError, match="output_activation"):
        build_enn("tiny", 13, 2, 8, density_activation="tanh")


@pytest.mark.parametrize("channels_last", [False, True])
def test_patch_to_cells_selects_in_one_gather_and_keeps_the_layout(channels_last):
    """The selected cells equal the full split indexed by the mask, in row-major order; the
    cells come back in the patch's memory layout (channels-last in, channels-last out)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 8, 12, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    selected = torch.rand(3, 2, 3, generator=g) < 0.4
    every = patch_to_cells(x, 4)
    assert torch.equal(every, patch_to_cells(x.contiguous(), 4))
    some = patch_to_cells(x, 4, selected)
    assert torch.equal(some, every[selected.reshape(-1)])
    for cells in (every, some):
        want = torch.channels_last if channels_last else torch.contiguous_format
        assert cells.is_contiguous(memory_format=want)
    with pytest.raises(ValueError, match="selected has shape"):
        patch_to_cells(x, 4, selected[:, :1])


def test_density_block_reads_a_batch_in_either_layout_the_same():
    """The density stages leave their batches as built (``training.epochs.device_batches``):
    a channels-last block gives bitwise the same densities and gradients from an NCHW batch
    as from the channels-last one, since its cells are gathered into its own layout."""
    torch.manual_seed(0)
    block = DensityBlock(5, 8).to(memory_format=torch.channels_last)
    x = torch.randn(2, 5, 32, 32)
    selected = torch.rand(2, 4, 4) < 0.5
    outs, grads = [], []
    for batch in (x, x.contiguous(memory_format=torch.channels_last)):
        block.zero_grad()
        d = block.forward_selected(batch, selected)
        d.sum().backward()
        outs.append(d.detach())
        grads.append(block.features[1].weight.grad.clone())
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
