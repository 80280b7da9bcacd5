"""The fitted per-cell regression of the susceptibility block (``model.glm``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from landslide_hazard.bands import STATIC_NAMES
from landslide_hazard.models import build_enn
from landslide_hazard.models.layers import CellSummaryGLM
from landslide_hazard.training.epochs import Steps
from landslide_hazard.training.glm import fit_glm_offset, training_cell_table
from landslide_hazard.training.loop import _training_data, train


def _with_glm(cfg, fit: str = "start"):
    update = {"glm": True, "glm_fit": fit}
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=update)})


def _cells_by_hand(x: np.ndarray, k: int) -> np.ndarray:
    """(B, 2C, h/k, w/k): every channel's cell mean, then its population std, with loops."""
    b, c, h, w = x.shape
    out = np.zeros((b, 2 * c, h // k, w // k))
    for i in range(h // k):
        for j in range(w // k):
            block = x[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].reshape(b, c, -1)
            out[:, :c, i, j] = block.mean(-1)
            out[:, c:, i, j] = block.std(-1)
    return out


def test_glm_module_is_a_linear_model_of_cell_means_and_stds():
    rng = np.random.default_rng(0)
    k, c = 4, 3
    glm = CellSummaryGLM(c, k).double()
    x = torch.from_numpy(rng.normal(size=(2, c, 8, 12)))
    assert torch.count_nonzero(glm(x)) == 0  # zero until fitted
    w = rng.normal(size=2 * c)
    glm.set_coefficients(torch.from_numpy(w), 0.5)
    want = np.einsum("bfhw,f->bhw", _cells_by_hand(x.numpy(), k), w) + 0.5
    np.testing.assert_allclose(glm(x).numpy(), want, atol=1e-5)  # the std's 1e-6 floor
    assert not any(p.requires_grad for p in glm.parameters())  # buffers: no optimiser moves them
    assert set(glm.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="coefficients"):
        glm.set_coefficients(torch.zeros(5), 0.0)
    # what a fit reads: every band's mean, the first (fine-grid) bands' spread only
    assert glm.read_mask(2).tolist() == [True] * 3 + [True, True, False]
    wide = CellSummaryGLM(c, k, percentiles=True)  # p10, p90 of a band together
    assert (
        wide.read_mask(1).tolist() == [True] * 3 + [True, False, False] + [True, True] + [False] * 4
    )


def test_a_glm_network_starts_as_the_fitted_regression(tmp_path, config_factory):
    """After ``fit_glm_offset`` the untrained network's logit on every training cell is the
    decision function of scikit-learn's standardised logistic regression fitted on the same
    cells' summaries (an independent fit), and the summaries are the cells' means and stds."""
    cfg = _with_glm(config_factory(tmp_path))
    data = _training_data(cfg, 1 << 30)
    torch.manual_seed(0)
    enn = build_enn("tiny", data.reader.n_channels, 4, 4, wide="pixel", glm=True).eval()
    steps = Steps(torch.device("cpu"), False, cfg.training, cfg.inventory.min_density)
    from landslide_hazard.sampling.dataset import PatchDataset

    ds = PatchDataset(data.reader, data.split.train_patches, data.split.train_cells, data.norm)
    fitted = fit_glm_offset(enn, ds, steps)
    assert fitted is not None
    n_static = len(STATIC_NAMES)  # every band's mean, the fine-grid bands' std
    assert fitted["n_features"] + fitted["n_constant"] == data.reader.n_channels + n_static
    # each training cell once, though the two lattices' patches overlap
    in_patches = np.zeros_like(data.split.train_cells)
    for i in range(len(ds)):
        t, r0, c0 = (int(a[i]) for a in (ds.patches.period, ds.patches.row0, ds.patches.col0))
        _, mask = ds.target_and_mask(i)
        rows, cols = np.nonzero(mask)
        in_patches[t, r0 + rows, c0 + cols] = True
    assert fitted["n_cells"] == int(in_patches.sum())
    x_table, y = training_cell_table(enn.susceptibility.glm, ds, steps, 3)
    n_cell_bands = data.reader.n_channels - n_static  # their spread inside a cell is not read
    read = np.r_[np.ones(data.reader.n_channels + n_static), np.zeros(n_cell_bands)].astype(bool)
    varies = read & (x_table.std(axis=0) > 1e-4)  # constant summaries left out
    assert fitted["n_constant"] == int((read & ~varies).sum())
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    reference.fit(x_table[:, varies], y)
    # the network, patch by patch: its logit on a cell = the reference's decision function
    item = ds[0]
    x = item["x"][None]
    with torch.no_grad():
        p = enn.susceptibility(x)[0].double().numpy()
    feats = _cells_by_hand(x.double().numpy(), 4)[0]  # (F, n, n)
    mask = item["mask"].numpy()
    table = feats.reshape(feats.shape[0], -1).T[:, varies]
    want = reference.decision_function(table).reshape(mask.shape)
    got = np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(got[mask], want[mask], atol=2e-4)


def test_training_keeps_the_regression_when_no_epoch_validates_better(
    tmp_path, config_factory, susceptibility_val_losses
):
    cfg = _with_glm(
        config_factory(tmp_path, max_epochs_susceptibility=20, patience=2, max_epochs_finetune=0)
    )
    susceptibility_val_losses([0.3, 0.5, 0.6] + [0.1] * 100)  # the regression alone, then epochs
    run = train(cfg, progress=False)
    log = (run / "train.log").read_text()
    assert "per-cell regression (model.glm): fitted on" in log
    assert "the fitted regression alone, validation loss 0.30000" in log
    assert "susceptibility epoch 2/20" in log and "susceptibility epoch 3/20" not in log
    state = torch.load(run / "checkpoints" / "susceptibility.pt", weights_only=False)["model"]
    assert torch.count_nonzero(state["susceptibility.head.weight"]) == 0  # the start, kept
    assert torch.count_nonzero(state["susceptibility.glm.weight"]) > 0
    saved = torch.load(run / "model.pt", weights_only=False)
    assert saved["glm"] is True


def test_paper_preset_refuses_the_regression(tmp_path, config_factory):
    from landslide_hazard.config import ModelConfig, parse_config

    with pytest.raises(ValueError, match="no logit to add a fitted regression to"):
        build_enn("paper", glm=True)
    assert ModelConfig().glm is True  # the default of the other presets
    cfg = config_factory(tmp_path)
    data = cfg.model_dump(mode="json")
    data["model"] = {"preset": "paper"}
    assert parse_config(data, tmp_path).model.glm is False  # the published recipe
    data["model"]["glm"] = True
    with pytest.raises(ValueError, match="model.glm = true with the paper preset"):
        parse_config(data, tmp_path)


def test_one_class_training_cells_are_refused(monkeypatch):
    from landslide_hazard.config import TrainingConfig
    from landslide_hazard.errors import InputError
    from landslide_hazard.training import glm as glm_module

    enn = build_enn("tiny", 13, 4, 4, glm=True)
    table = (np.zeros((10, 26)), np.zeros(10, dtype=bool))
    monkeypatch.setattr(glm_module, "training_cell_table", lambda *a: table)
    with pytest.raises(InputError, match="only one class.*model.glm: false"):
        fit_glm_offset(enn, None, Steps(torch.device("cpu"), False, TrainingConfig(), 0.0))


def test_a_stacked_network_weighs_itself_and_the_regression():
    """``glm_fit: stack``: logit = a * network + b * regression + c; while training (b = 0
    until stacking) the regression is skipped."""
    torch.manual_seed(0)
    enn = build_enn("tiny", 13, 4, 4, wide="pixel", glm=True, glm_fit="stack")
    net = enn.susceptibility
    assert net.get_buffer("glm_stack").tolist() == [1.0, 0.0, 0.0]
    assert torch.count_nonzero(net.head.weight) > 0  # the network's own start, not zero
    net.glm.set_coefficients(torch.linspace(-1, 1, net.glm.n_features), -0.7)
    x = torch.randn(2, 13, 16, 16)
    net.get_buffer("glm_stack").copy_(torch.tensor([0.6, 0.8, -0.3]))
    net.eval()
    with torch.no_grad():
        z = torch.logit(net(x).double())
        want = 0.6 * net.network_logit(x)[:, 0] + 0.8 * net.glm(x) - 0.3
    torch.testing.assert_close(z, want.double(), atol=1e-4, rtol=1e-5)
    state = enn.state_dict()
    assert "susceptibility.glm_stack" in state
    again = build_enn("tiny", 13, 4, 4, wide="pixel", glm=True, glm_fit="stack")
    again.load_state_dict(state)  # a saved stack loads into the same architecture
    with pytest.raises(ValueError, match="unknown model.glm_fit"):
        build_enn("tiny", glm=True, glm_fit="blend")


def test_stacking_is_scikit_learns_regression_on_the_summed_logits(tmp_path, config_factory):
    """``stack_glm`` adds the network's logit and the regression's with equal weights and fits
    (s, c) as scikit-learn's logistic regression of the validation cells' occurrences on the
    sum, every (patch, cell) whose loss counts once, collected here by hand."""
    from landslide_hazard.sampling.dataset import PatchDataset
    from landslide_hazard.training.glm import STACK_C, stack_glm

    cfg = _with_glm(config_factory(tmp_path), "stack")
    data = _training_data(cfg, 1 << 30)
    torch.manual_seed(0)
    enn = build_enn("tiny", data.reader.n_channels, 4, 4, wide="pixel", glm=True, glm_fit="stack")
    steps = Steps(torch.device("cpu"), False, cfg.training, cfg.inventory.min_density)
    train_ds = PatchDataset(
        data.reader, data.split.train_patches, data.split.train_cells, data.norm
    )
    val_ds = PatchDataset(data.reader, data.split.val_patches, data.split.val_cells, data.norm)
    fit_glm_offset(enn, train_ds, steps)
    net = enn.susceptibility
    net.eval()
    rows, labels = [], []
    with torch.no_grad():
        for i in range(len(val_ds)):
            item = val_ds[i]
            x, mask = item["x"][None], item["mask"].numpy()
            z_net = net.network_logit(x)[0, 0].numpy()[mask]
            z_glm = net.glm(x)[0].numpy()[mask]
            rows.append(z_net.astype(np.float64) + z_glm)
            labels.append(item["target"].numpy()[mask] > cfg.inventory.min_density)
    z, y = np.concatenate(rows), np.concatenate(labels)
    want = LogisticRegression(C=STACK_C, max_iter=1000).fit(z[:, None], y)
    report = stack_glm(enn, val_ds, steps)
    assert report is not None and report["n_cells"] == y.size
    s, s_again, c = net.get_buffer("glm_stack").tolist()
    assert s == s_again  # equal weights
    assert s == pytest.approx(want.coef_[0, 0], rel=1e-3, abs=1e-4)
    assert c == pytest.approx(want.intercept_[0], rel=1e-3, abs=1e-4)
    # the model's own probability is now sigmoid(s * (network + regression) + c)
    net.eval()  # stack_glm leaves the model in the mode it found (training, here)
    item = val_ds[0]
    with torch.no_grad():
        p = net(item["x"][None])[0].double()
        z0 = net.network_logit(item["x"][None])[0, 0].double() + net.glm(item["x"][None])[0]
    torch.testing.assert_close(torch.logit(p), s * z0 + c, atol=1e-4, rtol=1e-5)


def test_the_default_trains_the_network_alone_then_stacks(tmp_path, config_factory):
    from landslide_hazard.predict import load_run

    cfg = config_factory(tmp_path)
    assert cfg.model.glm and cfg.model.glm_fit == "stack"  # the default
    run = train(cfg, progress=False)
    log = (run / "train.log").read_text()
    assert "the fitted regression alone" not in log  # no start candidate
    assert log.index("finetune: done") < log.index("per-cell regression (model.glm): fitted on")
    assert "stacked on" in log and "x (network + per-cell regression)" in log
    saved = torch.load(run / "model.pt", weights_only=False)
    assert saved["glm"] is True and saved["glm_fit"] == "stack"
    stack = saved["state_dict"]["susceptibility.glm_stack"]
    assert stack.tolist() != [1.0, 0.0, 0.0]  # fitted
    loaded = load_run(run)
    assert torch.equal(loaded.model.susceptibility.get_buffer("glm_stack"), stack)
