import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from landslide_hazard.sampling.normalisation import Normalisation, compute_normalisation
from landslide_hazard.sampling.splits import Split
from landslide_hazard.training import epochs, hparam, stages
from landslide_hazard.training import fit as fit_module
from landslide_hazard.training.loop import run_training, train
from landslide_hazard.training.stages import stage_loss


def _weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=False)["state_dict"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


DROPOUT_EXTRA = {"max_epochs_susceptibility": 3, "balance_patches": True}


def _with_dropout(cfg, rate=0.3):
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"dropout": rate})})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, config_factory):
    """One uninterrupted run with the default test config, shared by several tests."""
    cfg = config_factory(tmp_path_factory.mktemp("reference"))
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="module")
def reference_dropout_run(tmp_path_factory, config_factory):
    """An uninterrupted run with dropout (RNG used in training) and balanced patches."""
    cfg = _with_dropout(config_factory(tmp_path_factory.mktemp("ref-dropout"), **DROPOUT_EXTRA))
    return train(cfg, progress=False)


def test_run_folder_contents_and_normalisation(reference_run):
    cfg, run = reference_run
    assert run == cfg.output.dir / "runs" / "spatial-fold0"
    for name in (
        "config.yaml",
        "normalisation.json",
        "model.pt",
        "train.log",
        "splits.npz",
        "metrics.json",
        "checkpoints/last.pt",
        "checkpoints/finetune.pt",
    ):
        assert (run / name).is_file(), name
    split = Split.load(run / "splits.npz")
    assert not (split.train_cells & split.test_cells).any()
    from landslide_hazard.cube import open_cube
    from landslide_hazard.sampling.dataset import CubeReader

    reader = CubeReader(
        open_cube(cfg.output.dir / "cube.zarr"), dynamic_bands=cfg.model_dynamic_bands
    )
    ref = compute_normalisation(
        reader.static,
        reader.dynamic,
        reader.monsoons,
        split.train_cells,
        4,
        dynamic_names=reader.dynamic_bands,
    )
    got = Normalisation.load(run / "normalisation.json")
    np.testing.assert_allclose(got.mean, ref.mean)
    meta = torch.load(run / "model.pt", weights_only=False)
    np.testing.assert_allclose(meta["normalisation"]["std"], ref.std)
    assert meta["bands"][0] == "elevation" and meta["cell_pixels"] == 4 and meta["patch_cells"] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"] == "spatial" and metrics["leaky"] is False
    assert metrics["model"]["pooled"]["occurrence"]["n"] == int(split.test_cells.sum())
    assert metrics["oracle"] is None
    log = (run / "train.log").read_text()
    for stage in stages.STAGES:
        assert f"{stage} epoch 1/" in log


def test_period_shifts_are_fitted_on_each_periods_training_and_validation_cells(reference_run):
    """model.pt holds one logit shift per period with training or validation cells; recomputed
    from the loaded model's raw maps on those cells, the stored Platt scaling and
    ``level_shift``, they agree."""
    from scipy.special import logit

    from landslide_hazard.cube import open_cube
    from landslide_hazard.evaluation.levels import level_shift
    from landslide_hazard.predict import load_run, predict_arrays
    from landslide_hazard.sampling.dataset import CubeReader

    cfg, run_dir = reference_run
    run = load_run(run_dir)
    split = Split.load(run_dir / "splits.npz")
    reader = CubeReader(open_cube(cfg.output.dir / "cube.zarr"), dynamic_bands=run.dynamic_bands)
    level_cells = split.train_cells | split.val_cells
    with_cells = [reader.period_names[t] for t in np.flatnonzero(level_cells.any(axis=(1, 2)))]
    assert sorted(run.model.period_shifts) == sorted(with_cells)
    run.model.use_calibration = False
    raw = predict_arrays(run.model, reader, run.norm)["susceptibility"]
    slope, intercept = (float(v) for v in run.model.calibration[:2])
    for t, name in enumerate(reader.period_names):
        cells = level_cells[t] & np.isfinite(reader.target[t]) & np.isfinite(raw[t])
        if name not in run.model.period_shifts:
            continue
        z = slope * logit(np.clip(raw[t][cells].astype(np.float64), 1e-7, 1 - 1e-7)) + intercept
        want = level_shift(z, reader.target[t][cells] > cfg.inventory.min_density)
        assert run.model.period_shifts[name] == pytest.approx(want, abs=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["period_shifts"] == pytest.approx(run.model.period_shifts)


def test_recalibrate_refits_what_train_stored(reference_run):
    """``recalibrate`` on a copy of a finished run whose stored calibration was spoilt gives
    back the calibration, model.pt state and held-out scores ``train`` wrote; a folder with no
    finished run is refused."""
    import shutil

    from landslide_hazard.errors import InputError
    from landslide_hazard.training import recalibrate

    cfg, run_dir = reference_run
    copy = run_dir.parent / "recalibrated"
    shutil.copytree(run_dir, copy)
    spoilt = torch.load(copy / "model.pt", weights_only=False)
    spoilt["state_dict"]["calibration"] = torch.tensor([2.0, 1.0, 1.0])
    spoilt["period_shifts"] = {"no such period": 3.0}
    spoilt["density_level"] = 9.0
    torch.save(spoilt, copy / "model.pt")
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["held_out_auc"] = 0.0
    (copy / "metrics.json").write_text(json.dumps(metrics))

    after = recalibrate(copy)
    assert after["previous_held_out_auc"] == 0.0
    want = json.loads((run_dir / "metrics.json").read_text())
    assert after["held_out_auc"] == want["held_out_auc"]
    assert after["calibration"]["period_shifts"] == want["calibration"]["period_shifts"]
    got_file, want_file = (torch.load(d / "model.pt", weights_only=False) for d in (copy, run_dir))
    _assert_same_weights(got_file["state_dict"], want_file["state_dict"])
    assert got_file["period_shifts"] == want_file["period_shifts"]
    assert got_file["density_blend"] == want_file["density_blend"]
    assert got_file["period_density_factors"] == want_file["period_density_factors"]
    assert got_file["density_level"] == want_file["density_level"] != 9.0
    assert "recalibrate:" in (copy / "train.log").read_text()
    (copy / "metrics.json").unlink()
    with pytest.raises(InputError, match="no finished run to recalibrate"):
        recalibrate(copy)


def test_density_blend_is_fitted_on_the_positive_validation_cells(reference_run):
    """model.pt holds the density maps' blend toward the positive training cells' mean and a
    level factor per period; the weight recomputed from the loaded model's raw density maps
    by least squares agrees, the factors recomputed from the blended maps agree, and the maps
    predict writes are the blend times its period's factor."""
    from landslide_hazard.cube import open_cube
    from landslide_hazard.evaluation.levels import density_levels
    from landslide_hazard.predict import load_run, predict_arrays
    from landslide_hazard.sampling.dataset import CubeReader

    cfg, run_dir = reference_run
    run = load_run(run_dir)
    split = Split.load(run_dir / "splits.npz")
    reader = CubeReader(open_cube(cfg.output.dir / "cube.zarr"), dynamic_bands=run.dynamic_bands)
    obs = np.where(reader.valid[None], reader.target, np.nan)
    md = cfg.inventory.min_density
    assert run.model.density_blend is not None
    weight, constant = run.model.density_blend
    train_pos = split.train_cells & (obs > md)
    assert constant == pytest.approx(float(np.mean(obs[train_pos])), rel=1e-9)
    run.model.use_calibration = False
    raw = predict_arrays(run.model, reader, run.norm)["density"]
    val = split.val_cells & (obs > md) & np.isfinite(raw)
    y, d = obs[val].astype(np.float64), raw[val].astype(np.float64)
    # the least-squares weight by brute force over [0, 1]
    grid = np.linspace(0.0, 1.0, 10001)
    sse = [np.sum((y - constant - w * (d - constant)) ** 2) for w in grid]
    assert weight == pytest.approx(grid[int(np.argmin(sse))], abs=2e-4)
    run.model.use_calibration = True
    maps = predict_arrays(run.model, reader, run.norm)
    ok = np.isfinite(raw)
    blended = constant + weight * (raw - constant)
    # then each period's level factor, from the observed and the blended densities of the
    # periods' positive training and validation cells
    level = (split.train_cells | split.val_cells) & (obs > md) & ok
    factors = run.model.period_density_factors
    with_cells = [reader.period_names[t] for t in np.flatnonzero(level.any(axis=(1, 2)))]
    assert sorted(factors) == sorted(with_cells) and with_cells
    common = run.model.density_level
    scale = np.array([factors.get(name, common) for name in reader.period_names])[:, None, None]
    period = np.nonzero(level)[0]
    want = density_levels(obs[level], blended[level], period)
    assert common == pytest.approx(want.common, rel=1e-5) and common != 1.0
    for t, name in enumerate(reader.period_names):
        if name in factors:
            assert factors[name] == pytest.approx(want.factors[t], rel=1e-5)
    assert any(abs(f - 1.0) > 0.01 for f in factors.values())  # not a no-op on this run
    np.testing.assert_allclose(maps["density"][ok], (blended * scale)[ok], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        maps["hazard"][ok], (maps["susceptibility"] * maps["density"])[ok], rtol=1e-6
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["density_blend"]["weight"] == pytest.approx(weight)
    assert metrics["calibration"]["period_density_factors"] == pytest.approx(factors)
    assert metrics["calibration"]["density_level"] == pytest.approx(common)


def test_same_seed_same_weights(tmp_path, config_factory, reference_run):
    b = train(config_factory(tmp_path / "b"), progress=False)
    _assert_same_weights(_weights(reference_run[1]), _weights(b))


def test_nchw_layout_trains_the_same_model_to_rounding(tmp_path, config_factory, reference_run):
    """``training.channels_last: false`` trains in NCHW (the log says which layout ran); the
    same computation as the channels-last default, so the same run ends close to it."""
    b = train(config_factory(tmp_path / "nchw", channels_last=False), progress=False)
    assert "model and batches in NCHW" in (b / "train.log").read_text()
    ref_log = (reference_run[1] / "train.log").read_text()
    assert "model and batches in channels-last (NHWC)" in ref_log
    auc = [
        json.loads((d / "metrics.json").read_text())["held_out_auc"] for d in (b, reference_run[1])
    ]
    assert abs(auc[0] - auc[1]) < 0.05, auc


@pytest.mark.parametrize("crash_at", [("susceptibility", 1), ("density", 0)])
def test_kill_and_resume_is_exact(tmp_path, config_factory, crash_at, reference_dropout_run):
    ref = reference_dropout_run
    cfg = _with_dropout(config_factory(tmp_path / "crash", **DROPOUT_EXTRA))

    class Crash(RuntimeError):
        pass

    def boom(stage, epoch):
        if (stage, epoch) == crash_at:
            raise Crash(f"simulated crash after {stage} epoch {epoch}")

    with pytest.raises(Crash):
        run_training(cfg, progress=False, epoch_callback=boom)
    assert not (cfg.output.dir / "runs" / "spatial-fold0" / "model.pt").exists()
    resumed = train(cfg, progress=False)
    assert "resuming from" in (resumed / "train.log").read_text()
    _assert_same_weights(_weights(ref), _weights(resumed))


def test_resume_after_crash_at_stage_boundary(
    tmp_path, config_factory, monkeypatch, reference_dropout_run
):
    ref = reference_dropout_run
    cfg = _with_dropout(config_factory(tmp_path / "crash", **DROPOUT_EXTRA))
    real = fit_module.save_checkpoint

    class Crash(RuntimeError):
        pass

    def save_then_crash(path, payload):
        real(path, payload)
        if "optimizer" not in payload and payload["stage_index"] == 2:
            raise Crash("killed right after the density_log stage ended")

    monkeypatch.setattr(fit_module, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(cfg, progress=False)
    monkeypatch.setattr(fit_module, "save_checkpoint", real)
    resumed = train(cfg, progress=False)
    _assert_same_weights(_weights(ref), _weights(resumed))


def test_resume_refuses_other_config(tmp_path, config_factory):
    make_config = config_factory
    cfg = make_config(tmp_path)
    run_training(cfg, progress=False)
    other = cfg.model_copy(update={"seed": 99})
    with pytest.raises(ValueError, match="different config"):
        train(other, progress=False)


def test_early_stopping_keeps_patience(tmp_path, config_factory, susceptibility_val_losses):
    make_config = config_factory
    cfg = make_config(tmp_path, max_epochs_susceptibility=20, patience=2)
    # the default stacks its per-cell regression after training: no start to score first
    susceptibility_val_losses([1.0, 0.5, 0.7, 0.8] + [0.1] * 100)
    run = train(cfg, progress=False)
    log = (run / "train.log").read_text()
    assert "susceptibility epoch 4/20" in log and "susceptibility epoch 5/20" not in log
    assert "susceptibility: done, best validation loss 0.50000" in log


class _ConstDensity(torch.nn.Module):
    """density d everywhere (B, 2, 2); ``forward_selected`` as the density block's."""

    def __init__(self, d, w):
        super().__init__()
        self.d, self.w = d, w

    def forward(self, x):
        return torch.full((x.shape[0], 2, 2), self.d) + 0 * self.w

    def forward_selected(self, x, selected):
        return self(x)[selected]


class _ConstModel(torch.nn.Module):
    """susceptibility p, density d everywhere (B, 2, 2)."""

    def __init__(self, p, d):
        super().__init__()
        self.p = p
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.density = _ConstDensity(d, self.w)

    def susceptibility(self, x):
        return torch.full((x.shape[0], 2, 2), self.p) + 0 * self.w

    def forward(self, x):
        s, d = self.susceptibility(x), self.density(x)
        from landslide_hazard.models import ENNOutput

        return ENNOutput(s, d, s * d)


def test_stage_losses_hand_computed():
    from landslide_hazard.config import TrainingConfig

    t = TrainingConfig(loss="bce", bce_pos_weight=2.0)
    x = torch.zeros(1, 13, 8, 8)
    target = torch.tensor([[[0.0, 2.0], [0.5, 0.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    m = _ConstModel(0.25, 1.0)
    # density on the log1p scale (curriculum step 1): mean |1 - log1p(y)| over masked cells
    want = np.mean([abs(1 - np.log1p(v)) for v in (0.0, 2.0, 0.5)])
    assert float(stage_loss("density_log", m, x, target, mask, t, 0.0).detach()) == pytest.approx(
        want, rel=1e-6
    )
    want = np.mean([1.0, 1.0, 0.5])
    assert float(stage_loss("density", m, x, target, mask, t, 0.0).detach()) == pytest.approx(
        want, rel=1e-6
    )
    # susceptibility with BCE 1:2 on occurrence = density > 0
    bce = [-np.log(0.75), -2 * np.log(0.25), -2 * np.log(0.25)]
    assert float(
        stage_loss("susceptibility", m, x, target, mask, t, 0.0).detach()
    ) == pytest.approx(np.mean(bce), rel=1e-5)
    # min_density moves the occurrence threshold: 0.5 is no longer an occurrence
    bce2 = [-np.log(0.75), -2 * np.log(0.25), -np.log(0.75)]
    assert float(
        stage_loss("susceptibility", m, x, target, mask, t, 0.5).detach()
    ) == pytest.approx(np.mean(bce2), rel=1e-5)
    # fine-tune: squared error of hazard (0.25 x 1) against the observed density with zeros,
    # plus the BCE
    mse = np.mean([0.25**2, 1.75**2, 0.25**2])
    assert float(stage_loss("finetune", m, x, target, mask, t, 0.0).detach()) == pytest.approx(
        mse + np.mean(bce), rel=1e-5
    )
    # training.hazard_loss = mae: the paper code's absolute error instead
    paper = t.model_copy(update={"hazard_loss": "mae"})
    mae = np.mean([0.25, 1.75, 0.25])
    assert float(stage_loss("finetune", m, x, target, mask, paper, 0.0).detach()) == pytest.approx(
        mae + np.mean(bce), rel=1e-5
    )


@pytest.mark.parametrize("density_loss", ["mae", "gamma"])
def test_density_stages_score_the_counted_cells_as_the_full_block_does(density_loss):
    """The density stages compute the block on the cells whose loss counts only; with batch
    norm frozen (evaluation) that is the full block masked, as the stages computed it before."""
    from landslide_hazard.config import TrainingConfig
    from landslide_hazard.models import build_enn
    from landslide_hazard.training.losses import masked_gamma_deviance, masked_mae

    torch.manual_seed(4)
    t = TrainingConfig(density_loss=density_loss)
    m = build_enn("tiny", 13, 4, 8, dropout=0.0, density_activation="softplus").double().eval()
    x = torch.randn(3, 13, 32, 32, dtype=torch.float64)
    target = torch.where(torch.rand(3, 4, 4) < 0.4, 5 * torch.rand(3, 4, 4), 0.0).double()
    target[0, 1, 1] = float("nan")
    mask = target > 0
    mask[0, 1, 1] = True  # counted by the mask, dropped as not finite
    full = m.density(x)
    want = {
        "density_log": masked_mae(full, torch.log1p(target), mask),
        "density": masked_gamma_deviance(full, target, mask)
        if density_loss == "gamma"
        else masked_mae(full, target, mask),
    }
    for stage, loss in want.items():
        got = stage_loss(stage, m, x, target, mask, t, 0.0)  # float32, as training scores
        assert float(got.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_oracle_and_skill_on_synthetic_truth(tmp_path, config_factory):
    make_config = config_factory
    from landslide_hazard.io import write_raster

    cfg = make_config(tmp_path)
    from landslide_hazard.cube import open_cube

    cube = open_cube(cfg.output.dir / "cube.zarr")
    target = np.asarray(cube.target_density[:])
    rng = np.random.default_rng(5)
    truth_p = np.clip((target > 0) * 0.6 + rng.random(target.shape) * 0.5, 0, 1).astype("float32")
    truth_d = np.full(target.shape, 1.0, dtype="float32")
    truth = tmp_path / "truth"  # the config's inputs live in tmp_path: truth/ sits beside them
    g = cube.grid
    names = cube.meta.period_names
    write_raster(truth / "p_occurrence.tif", truth_p, g.cell_transform, g.crs, names)
    write_raster(truth / "density_given_occurrence.tif", truth_d, g.cell_transform, g.crs, names)
    write_raster(truth / "expected_density.tif", truth_p * truth_d, g.cell_transform, g.crs, names)
    run = train(cfg, progress=False)
    m = json.loads((run / "metrics.json").read_text())
    split = Split.load(run / "splits.npz")
    y = target[split.test_cells] > 0
    assert m["oracle_auc"] == pytest.approx(roc_auc_score(y, truth_p[split.test_cells]), abs=1e-9)
    assert m["skill_pooled"] == pytest.approx((m["held_out_auc"] - 0.5) / (m["oracle_auc"] - 0.5))
    assert set(m["skill_per_period"]) <= set(names)


def test_hparam_search_picks_lowest_validation_loss(tmp_path, config_factory):
    cfg = config_factory(tmp_path, hparam_search_trials=3, max_epochs_susceptibility=2)
    run = train(cfg, progress=False)
    table = json.loads((run / "hparam_search.json").read_text())
    trials = table["trials"]
    assert len(trials) == 3
    # trial 0 is the config's own setting; the others are seeded draws from the search space
    assert trials[0]["lr_susceptibility"] == cfg.training.lr_susceptibility
    assert all(1e-4 <= t["lr_susceptibility"] <= 1e-2 for t in trials[1:])
    best = min(trials, key=lambda t: t["val_loss"])
    assert table["best_trial"] == best["trial"]
    from landslide_hazard.config import load_config

    used = load_config(run / "config.yaml")
    assert used.training.lr_susceptibility == best["lr_susceptibility"]
    assert used.model.dropout == best["dropout"]
    meta = torch.load(run / "model.pt", weights_only=False)
    assert meta["dropout"] == best["dropout"]
    assert hparam.sample_hparams(cfg, 3, cfg.seed) == hparam.sample_hparams(cfg, 3, cfg.seed)


@pytest.mark.parametrize("protocol", ["paper", "temporal", "spacetime"])
def test_other_protocols_score_their_test_cells(tmp_path, config_factory, protocol):
    cfg = config_factory(tmp_path, max_epochs_susceptibility=1)
    run = train(cfg, protocol=protocol, fold=1, progress=False)
    assert run.name == f"{protocol}-fold1"
    m = json.loads((run / "metrics.json").read_text())
    split = Split.load(run / "splits.npz")
    assert m["leaky"] is (protocol == "paper")
    assert m["model"]["pooled"]["occurrence"]["n"] == int(split.test_cells.sum())
    scored = [p["name"] for p in m["model"]["periods"]]
    with_test = [f"P{i}" for i in range(4) if split.test_cells[i].any()]
    assert scored == with_test
    if protocol != "paper":
        assert scored == ["P2", "P3"]  # the last two periods
    from landslide_hazard.config import load_config

    saved = load_config(run / "config.yaml")
    assert saved.evaluation.protocol == protocol and saved.evaluation.test_fold == 1


def test_num_workers_give_the_same_weights_and_fill_the_cache(tmp_path, config_factory):
    """Persistent DataLoader workers (num_workers > 0) train exactly as the parent alone, and
    the static-patch cache is filled in the parent before they fork."""
    from landslide_hazard.sampling.dataset import StaticPatchCache

    fills = []
    original = StaticPatchCache.fill

    def spy(self, patches):
        original(self, patches)
        fills.append(len(self.windows))

    weights = []
    for workers in (0, 2):
        cfg = config_factory(tmp_path / f"w{workers}", num_workers=workers)
        StaticPatchCache.fill = spy
        try:
            run = train(cfg, progress=False)
        finally:
            StaticPatchCache.fill = original
        weights.append(torch.load(run / "model.pt", weights_only=False)["state_dict"])
        m = json.loads((run / "metrics.json").read_text())
        assert m["threads"] >= 1
        assert "threads:" in (run / "train.log").read_text()
    assert fills and all(n > 0 for n in fills)
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert not epochs._LOADERS  # workers stopped at the end of the fit


def test_inputs_built_on_the_device_train_as_the_numpy_path(
    tmp_path, config_factory, reference_dropout_run, monkeypatch
):
    """The batched device path (here on the CPU) gives the numpy path's inputs within float
    rounding and the same random stream (dropout masks), so the same weights within rounding;
    train.log says which path built the inputs."""
    from landslide_hazard.sampling import device as device_mod

    monkeypatch.setattr(device_mod, "ON_CPU", True)
    cfg = _with_dropout(config_factory(tmp_path / "device", **DROPOUT_EXTRA))
    run = train(cfg, progress=False)
    assert "inputs built in batches on cpu" in (run / "train.log").read_text()
    assert "inputs built per patch in numpy" in (reference_dropout_run / "train.log").read_text()
    got, want = _weights(run), _weights(reference_dropout_run)
    assert got.keys() == want.keys()
    worst = max(float((got[k].double() - want[k].double()).abs().max()) for k in got)
    print("max |weight difference|", worst)
    assert worst < 1e-3
    a = json.loads((run / "metrics.json").read_text())
    b = json.loads((reference_dropout_run / "metrics.json").read_text())
    assert a["held_out_auc"] == pytest.approx(b["held_out_auc"], abs=1e-3)


def test_stage_optimiser_updates_bitwise_as_the_plain_loop():
    """``epochs._optimizer`` asks for torch's foreach Adam (faster on the CPU): the same weights
    as the per-tensor loop torch runs by default, to the bit, with the wide path's own group."""
    from landslide_hazard.config import TrainingConfig
    from landslide_hazard.models import build_enn
    from landslide_hazard.training.epochs import _optimizer

    t = TrainingConfig()
    weights = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = build_enn("tiny", 13, 4, 8, wide="pixel")
        opt = _optimizer(model, 1e-3, t)
        assert len(opt.param_groups) == 2 and all(g["foreach"] for g in opt.param_groups)
        for g in opt.param_groups:
            g["foreach"] = foreach
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
