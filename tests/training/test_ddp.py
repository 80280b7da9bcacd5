"""Data-parallel training (training.ddp) on 2 gloo processes on CPU.

The processes are started with ``torch.multiprocessing.start_processes(..., start_method="fork")``:
a forked child inherits this module (pytest imports test files by path, so a spawned child
could not import the worker functions) and skips re-importing torch. Each child gets the
torchrun variables (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) with a port the OS
picked, and reports back through files in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from landslide_hazard.run import CHECKPOINT
from landslide_hazard.training import epochs, loop, stages
from landslide_hazard.training import fit as fit_module
from landslide_hazard.training.ddp import average_gradients, shard_batches

WORLD = 2
BATCH = 2  # per process
DDP_TRAINING = {
    "batch_size": BATCH,
    "max_epochs_susceptibility": 2,
    "max_epochs_density_log": 1,
    "max_epochs_density": 1,
    "max_epochs_finetune": 1,
}


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS reports free (all bound at once, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


LAUNCH_TIMEOUT_S = 180.0  # a collective that one rank never reaches would otherwise hang


def _launch(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on WORLD forked processes with torchrun's variables;
    a rank's exception is raised here, and ranks still running after LAUNCH_TIMEOUT_S fail."""
    (port,) = _free_ports(1)
    ctx = mp.start_processes(
        _as_torchrun_rank, args=(port, worker, args), nprocs=WORLD, join=False, start_method="fork"
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            pytest.fail(f"{worker.__name__}: ranks still running after {LAUNCH_TIMEOUT_S} s")


def _as_torchrun_rank(rank, port, worker, args) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    worker(rank, port, *args)


# --------------------------------------------------------------------------------------------
# gradient averaging


def _grad_of(name: str, rank: int) -> torch.Tensor | None:
    """The gradient rank ``rank`` holds for parameter ``name`` in the unit test (None: none)."""
    if name == "weight":  # a non-contiguous gradient (a transposed view)
        return (torch.arange(6.0).reshape(2, 3) * (rank + 1) - 3 * rank).t()
    if name == "bias":
        return torch.tensor([1.5, -2.0, 0.25, 8.0]) * (1 - 3 * rank)
    if name == "rank0_only":  # unused on rank 1, e.g. a branch its batch did not take
        return torch.tensor([4.0, -6.0]) if rank == 0 else None
    return None  # "unused": no gradient anywhere


PARAM_SHAPES = {"weight": (3, 2), "bias": (4,), "rank0_only": (2,), "unused": (5,)}


def _average_worker(rank, port, out_dir) -> None:
    dist.init_process_group("gloo")
    params = {}
    for name, shape in PARAM_SHAPES.items():
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = _grad_of(name, rank)
        params[name] = p
    calls = []
    real = dist.all_reduce

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    dist.all_reduce = counting
    try:
        average_gradients(list(params.values()), WORLD)
    finally:
        dist.all_reduce = real
        dist.destroy_process_group()
    grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in params.items()}
    torch.save({"grads": grads, "all_reduce_calls": len(calls)}, out_dir / f"rank{rank}.pt")


def test_average_gradients_is_the_mean_over_ranks(tmp_path):
    _launch(_average_worker, tmp_path)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["all_reduce_calls"] == 1  # one flat buffer per step, not one call per tensor
        for name in ("weight", "bias"):
            expected = sum(_grad_of(name, r) for r in range(WORLD)) / WORLD
            torch.testing.assert_close(got["grads"][name], expected, rtol=0, atol=0)
        # None on one rank counts as zeros there; None everywhere stays None everywhere
        torch.testing.assert_close(got["grads"]["rank0_only"], torch.tensor([2.0, -3.0]))
        assert got["grads"]["unused"] is None


def test_shard_batches_equal_counts():
    batches = [[i] for i in range(7)]
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert shards == [[[0], [3]], [[1], [4]], [[2], [5]]]  # batch 6 dropped: equal counts


# --------------------------------------------------------------------------------------------
# end to end: run_training on 2 ranks


def _train_worker(rank, port, cfg, out_dir) -> None:
    """run_training as one torchrun rank, recording what this rank computed and wrote."""
    record = {"checkpoint_writes": 0, "model_writes": 0, "train": [], "val": []}
    # each name where run_training looks it up
    home = {
        "save_checkpoint": fit_module,
        "save_trained_model": loop,
        "train_epoch": fit_module,
        "eval_loss": fit_module,
        "fit": loop,
    }
    real = {name: getattr(module, name) for name, module in home.items()}

    def save_checkpoint(*a, **k):
        record["checkpoint_writes"] += 1
        return real["save_checkpoint"](*a, **k)

    def save_model(*a, **k):
        record["model_writes"] += 1
        return real["save_trained_model"](*a, **k)

    def train_epoch(*a, **k):
        record["train"].append(real["train_epoch"](*a, **k))
        return record["train"][-1]

    def eval_loss(*a, **k):
        record["val"].append(real["eval_loss"](*a, **k))
        return record["val"][-1]

    def fit(*a, **k):
        model = real["fit"](*a, **k)
        record["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def after_epoch(stage, epoch):
        if (stage, epoch) == ("density", 0) and rank == 0:
            run = cfg.output.dir / "runs" / "spatial-fold0"
            shutil.copy(run / "checkpoints" / CHECKPOINT, out_dir / "density-epoch1.pt")

    for name, fn in (
        ("save_checkpoint", save_checkpoint),
        ("save_trained_model", save_model),
        ("train_epoch", train_epoch),
        ("eval_loss", eval_loss),
        ("fit", fit),
    ):
        setattr(home[name], name, fn)
    run = loop.run_training(cfg, progress=False, epoch_callback=after_epoch)
    record["run"] = str(run)
    record["group_left_open"] = dist.is_initialized()
    torch.save(record, out_dir / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, config_factory):
    """One 2-rank run of the test config (batch 2 per rank); returns (cfg, run, records)."""
    cfg = config_factory(tmp_path_factory.mktemp("ddp"), **DDP_TRAINING)
    out = tmp_path_factory.mktemp("ddp-records")
    _launch(_train_worker, cfg, out)
    records = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return cfg, cfg.output.dir / "runs" / "spatial-fold0", records, out


CALIBRATION_KEY = "calibration"  # the ENN's stored Platt scaling (a buffer)


def test_ddp_run_writes_once_and_ranks_agree(ddp_run):
    cfg, run, (rank0, rank1), _ = ddp_run
    assert rank0["run"] == rank1["run"] == str(run)
    for name in ("model.pt", "metrics.json", "config.yaml", "splits.npz", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert rank0["checkpoint_writes"] > 0 and rank0["model_writes"] == 1
    assert rank1["checkpoint_writes"] == 0 and rank1["model_writes"] == 0
    log = (run / "train.log").read_text()
    assert log.count("susceptibility epoch 1/2") == 1 and log.count("held-out AUC") == 1
    assert not rank0["group_left_open"] and not rank1["group_left_open"]
    # the same model on both ranks, bit for bit (batch-norm buffers included), and in model.pt
    saved = torch.load(run / "model.pt", weights_only=False)["state_dict"]
    assert rank0["weights"].keys() == rank1["weights"].keys() == saved.keys()
    for k in saved:
        assert torch.equal(rank0["weights"][k], rank1["weights"][k]), k
        if k != CALIBRATION_KEY:  # fitted after _fit returns, on rank 0 (training.calibrate)
            assert torch.equal(rank0["weights"][k], saved[k]), k
    # the same losses on both ranks every epoch, so the same early-stopping decisions (the
    # default stacks its per-cell regression after training: no start is scored first), and
    # the same stacking weights on both (compared with every weight above)
    assert "susceptibility.glm_stack" in saved
    n_epochs = sum(DDP_TRAINING[f"max_epochs_{s}"] for s in stages.STAGES)
    assert len(rank0["train"]) == len(rank0["val"]) == n_epochs
    assert rank0["train"] == rank1["train"] and rank0["val"] == rank1["val"]
    history = torch.load(run / "checkpoints" / CHECKPOINT, weights_only=False)["history"]
    assert [h["val_loss"] for h in history] == rank0["val"]


def test_ddp_run_folder_resumes_in_one_process(ddp_run, tmp_path):
    """A 2-rank run folder opened again by one process: a finished run gives the same model
    again; a run stopped mid-way finishes, with a warning that the process count changed."""
    cfg, run, (rank0, _), out = ddp_run
    finished = tmp_path / "finished"
    shutil.copytree(run, finished)
    loop.run_training(cfg, progress=False, run_dir=finished)
    assert "process(es)" not in (finished / "train.log").read_text()  # nothing left to train
    again = torch.load(finished / "model.pt", weights_only=False)["state_dict"]
    for k, v in rank0["weights"].items():
        if k != CALIBRATION_KEY:
            assert torch.equal(again[k], v), k

    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "model.pt").unlink()
    shutil.copy(out / "density-epoch1.pt", stopped / "checkpoints" / CHECKPOINT)
    loop.run_training(cfg, progress=False, run_dir=stopped)
    log = (stopped / "train.log").read_text()
    assert "written by 2 process(es), resuming with 1" in log
    assert log.count("finetune epoch 1/1") == 2 and (stopped / "model.pt").is_file()


def _stage_items(ds, batch):
    return torch.utils.data.default_collate([ds[i] for i in batch])


def test_density_epoch_equals_averaged_shard_gradients(ddp_run):
    """Independent maths: the density epoch on 2 ranks x B equals, step by step, Adam driven by
    the mean of the two shards' gradients computed here in one process.

    The density loss (masked MAE) is a mean over the valid cells of a batch, whose count differs
    between batches, so 2 x B is not one batch of 2B; the reference is therefore the mean of the
    two shards' own batch gradients, which is what data-parallel training promises. Comparing
    Adam's first moment checks the gradient's scale, which Adam's step itself hides.
    """
    from landslide_hazard.cube import open_cube
    from landslide_hazard.models import build_enn
    from landslide_hazard.run import enn_arguments
    from landslide_hazard.sampling.dataset import (
        CubeReader,
        PatchDataset,
        batches_of,
        epoch_order,
    )
    from landslide_hazard.sampling.normalisation import Normalisation
    from landslide_hazard.sampling.splits import Split

    cfg, run, _, out = ddp_run
    t = cfg.training
    stage = stages.stages_from_config(t)[2]
    assert stage.name == "density" and not t.balance_patches and cfg.model.dropout == 0
    reader = CubeReader(
        open_cube(cfg.output.dir / "cube.zarr"), dynamic_bands=cfg.model_dynamic_bands
    )
    split = Split.load(run / "splits.npz")
    norm = Normalisation.load(run / "normalisation.json")
    min_density = cfg.inventory.min_density
    ds = PatchDataset(reader, split.train_patches, split.train_cells, norm, True, min_density)
    keep = ds.cells_per_patch() > 0
    ds = PatchDataset(
        reader, split.train_patches.subset(keep), split.train_cells, norm, True, min_density
    )
    batches = batches_of(epoch_order(len(ds), cfg.seed, stage.index, 0), t.batch_size)
    per_rank = len(batches) // WORLD
    assert per_rank >= 2, "the test needs several steps per rank"
    shards = [[batches[r + WORLD * i] for i in range(per_rank)] for r in range(WORLD)]

    start = torch.load(run / "checkpoints" / "density_log.pt", weights_only=False)["model"]
    models, optims, scheds = [], [], []
    for _ in range(WORLD):  # one replica per rank, as the ranks hold them
        g = reader.grid
        m = build_enn(**enn_arguments(cfg.model, g, reader.dynamic_bands))
        m.load_state_dict(start)
        m.eval()
        # the layout training uses (training.channels_last): a conv bias followed by batch
        # norm has a zero gradient up to rounding, which Adam's normalisation turns into steps
        layout = torch.channels_last if t.channels_last else torch.contiguous_format
        m = m.to(memory_format=layout)
        m.density.train()
        opt = torch.optim.Adam(m.density.parameters(), lr=stage.lr)
        decay = stages.ExponentialDecay(t.lr_decay_rate, t.lr_decay_steps)
        models.append(m)
        optims.append(opt)
        scheds.append(torch.optim.lr_scheduler.LambdaLR(opt, decay))
    first_own, first_mean = None, None
    for step in range(per_rank):
        for m, opt, shard in zip(models, optims, shards, strict=True):
            opt.zero_grad(set_to_none=True)
            b = _stage_items(ds, shard[step])
            x = b["x"].contiguous(memory_format=layout)
            loss = stages.stage_loss("density", m, x, b["target"], b["mask"], t, min_density)
            loss.backward()
        params = [list(m.density.parameters()) for m in models]
        if step == 0:
            first_own = torch.cat([p.grad.reshape(-1) for p in params[0]])
        for replicas in zip(*params, strict=True):
            mean = sum(p.grad for p in replicas) / WORLD
            for p in replicas:
                p.grad = mean.clone()
        if step == 0:
            first_mean = torch.cat([p.grad.reshape(-1) for p in params[0]])
        for opt, sched in zip(optims, scheds, strict=True):
            opt.step()
            sched.step()

    got = torch.load(out / "density-epoch1.pt", weights_only=False)
    ref = models[0].state_dict()  # rank 0: its own batch-norm statistics, broadcast to all
    for k, v in ref.items():
        torch.testing.assert_close(got["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    ref_moments = [optims[0].state[p]["exp_avg"] for p in models[0].density.parameters()]
    got_moments = [s["exp_avg"] for _, s in sorted(got["optimizer"]["state"].items())]
    assert len(got_moments) == len(ref_moments)
    for a, b in zip(got_moments, ref_moments, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    # the check can fail: rank 0's own gradient (no averaging) is far from the mean, and so
    # would be the first moment built from it
    assert not torch.allclose(first_own, first_mean, rtol=1e-3, atol=1e-6)


class _Crash(RuntimeError):
    pass


def _crash_then_resume_worker(rank, port, cfg_whole, cfg_crash, more_ports, out_dir) -> None:
    """An uninterrupted 2-rank run; then a 2-rank run that dies after the first susceptibility
    epoch and a second 2-rank call on its folder (a fresh process group, as after a restart).

    Each call gets its own MASTER_PORT, as each torchrun job would: rank 0 hosts the rendezvous
    store, and a rank that re-joins at once on the same port may reach the store being closed.
    """
    loop.run_training(cfg_whole, progress=False)
    os.environ["MASTER_PORT"] = str(more_ports[0])

    def crash(stage, epoch):
        if (stage, epoch) == ("susceptibility", 0):
            raise _Crash(f"simulated crash on rank {rank}")

    try:
        loop.run_training(cfg_crash, progress=False, epoch_callback=crash)
    except _Crash:
        crashed = True
    else:
        crashed = False
    run = cfg_crash.output.dir / "runs" / "spatial-fold0"
    model_after_crash = (run / "model.pt").exists()
    os.environ["MASTER_PORT"] = str(more_ports[1])
    loop.run_training(cfg_crash, progress=False)
    torch.save(
        {"crashed": crashed, "model_after_crash": model_after_crash}, out_dir / f"r{rank}.pt"
    )


def test_ddp_resume_after_crash_is_exact(tmp_path, config_factory):
    """With dropout, so the per-rank random streams must resume exactly too."""

    def config(name):
        cfg = config_factory(tmp_path / name, **DDP_TRAINING)
        return cfg.model_copy(update={"model": cfg.model.model_copy(update={"dropout": 0.3})})

    whole, crash = config("whole"), config("crash")
    _launch(_crash_then_resume_worker, whole, crash, _free_ports(2), tmp_path)
    for rank in range(WORLD):
        rec = torch.load(tmp_path / f"r{rank}.pt")
        assert rec["crashed"] and not rec["model_after_crash"]
    run = crash.output.dir / "runs" / "spatial-fold0"
    log = (run / "train.log").read_text()
    assert log.count("resuming from") == 1
    assert log.count("susceptibility epoch 1/2") == 1  # not trained again after the resume
    a = torch.load(whole.output.dir / "runs" / "spatial-fold0" / "model.pt", weights_only=False)
    b = torch.load(run / "model.pt", weights_only=False)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


# --------------------------------------------------------------------------------------------
# WORLD_SIZE=1 is the single-process path


def test_world_size_one_is_single_process(tmp_path, config_factory, monkeypatch):
    small = {"max_epochs_susceptibility": 1, "max_epochs_density_log": 0}
    small |= {"max_epochs_density": 1, "max_epochs_finetune": 0}
    plain = loop.run_training(config_factory(tmp_path / "plain", **small), progress=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    seen = []
    one = loop.run_training(
        config_factory(tmp_path / "one", **small),
        progress=False,
        epoch_callback=lambda stage, epoch: seen.append(dist.is_initialized()),
    )
    assert seen and not any(seen)  # no process group for one process
    a = torch.load(plain / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(one / "model.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_world_size_names_the_fix(tmp_path, config_factory, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        loop.run_training(config_factory(tmp_path), progress=False)
    assert not dist.is_initialized()


def test_rank_batches_reseed_per_rank_not_per_history():
    """Each rank draws its own dropout stream, fixed by (seed, stage, epoch, rank) alone, so a
    resumed rank draws what it would have drawn (the checkpoint holds rank 0's RNG only)."""
    from landslide_hazard.training.ddp import DistContext

    stage = stages.Stage(0, "susceptibility", "susceptibility", 3, 1e-3, False)
    batches = [[0, 1], [2, 3], [4, 5]]

    def draws(rank, noise_before):
        torch.manual_seed(noise_before)  # whatever the RNG held before the epoch
        ctx = DistContext(rank, WORLD, torch.device("cpu"))
        shard = epochs.rank_batches(batches, stage, 1, 3, 2, ctx)
        return shard, torch.rand(4)

    (s0, a0), (_, b0) = draws(0, 11), draws(0, 99)
    (s1, a1) = draws(1, 11)
    assert s0 == [[0, 1]] and s1 == [[2, 3]]
    assert torch.equal(a0, b0) and not torch.equal(a0, a1)
    with pytest.raises(ValueError, match="lower training.batch_size"):
        epochs.rank_batches([[0, 1]], stage, 0, 3, 2, DistContext(0, WORLD, torch.device("cpu")))


def test_every_stage_is_checked_for_a_batch_per_process_before_training(config_factory, tmp_path):
    """density_log gets 3 patches = 1 batch of 4 for 2 processes: refused, naming that stage,
    although susceptibility (40 patches, 10 batches) would have trained first."""
    t = config_factory(tmp_path).training  # batch_size 4, every stage with epochs
    sizes = {"susceptibility": 40, "density_log": 3, "density": 3, "finetune": 40}
    with pytest.raises(ValueError, match="stage density_log: 1 training batch"):
        epochs.check_stage_batches(sizes, t, WORLD)
    epochs.check_stage_batches(sizes, t, 1)  # one process: always fine
    epochs.check_stage_batches({**sizes, "density_log": 5, "density": 8}, t, WORLD)
    no_density = t.model_copy(update={"max_epochs_density_log": 0, "max_epochs_density": 0})
    epochs.check_stage_batches(sizes, no_density, WORLD)  # stages that do not train are skipped
    epochs.check_stage_batches(
        {**sizes, "density_log": 0}, t.model_copy(update={"max_epochs_density": 0}), WORLD
    )  # no positive patch: the stage is skipped
