"""Data-parallel training over several processes with plain ``torch.distributed``.

``train`` runs data-parallel when it is launched by ``torchrun`` with more than one process
(``WORLD_SIZE > 1`` in the environment); see docs/training.md, "Several GPUs / processes". The
helpers here are the only places the training loop talks to ``torch.distributed``:

- :func:`process_group` joins (and at the end leaves) the process group the launcher set up:
  NCCL on CUDA, gloo on CPU, one device ``cuda:LOCAL_RANK`` per process;
- :func:`shard_batches` deals an epoch's batches to the ranks (equal counts, so every rank
  makes the same number of collective calls);
- :func:`average_gradients` averages the gradients of the trained parameters in one
  all-reduce per step;
- :func:`broadcast_module` copies rank 0's parameters and buffers (batch-norm statistics) to
  every rank;
- :func:`all_reduce_sums` adds loss sums and counts over the ranks.

PyTorch's ``DistributedDataParallel`` wrapper is not used: a stage trains one block of the ENN
while its loss calls the whole model, and the loop's exact resume and determinism stay as they
are (docs/decisions.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

# Long enough for rank 0 to score the held-out cells while the other ranks wait at the final
# barrier (NCCL's default is 10 minutes). A crashed rank ends the job through torchrun anyway.
DDP_TIMEOUT = datetime.timedelta(hours=2)
_LAUNCH_VARS: tuple[str, ...] = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel job: ``rank`` of ``world_size`` processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        if self.device.type == "cuda":
            torch.distributed.barrier(device_ids=[self.device.index])
        else:
            torch.distributed.barrier()


def world_size_from_env() -> int:
    """``WORLD_SIZE`` from the environment (set by torchrun); 1 when unset."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    if not raw:
        return 1
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(
            f"WORLD_SIZE={raw!r} is not a process count >= 1; launch with "
            "`torchrun --nproc_per_node=G ...` or unset WORLD_SIZE"
        )
    return size


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistContext | None]:
    """Join the data-parallel job of the environment, or yield None when there is none.

    ``WORLD_SIZE`` unset or 1 and no group initialised: yields None (single process). Otherwise
    initialises the default process group from the torchrun variables (``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with backend NCCL when ``device`` is CUDA
    (each rank then uses ``cuda:LOCAL_RANK``) and gloo on CPU, and destroys it on exit. A group
    the caller initialised already is used as it is and left open.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world == 1:
            yield None
            return
        yield DistContext(dist.get_rank(), world, _rank_device(device))
        return
    world = world_size_from_env()
    if world == 1:
        yield None
        return
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world} but this torch build has no torch.distributed; "
            "install a build with distributed support or run one process"
        )
    missing = [v for v in _LAUNCH_VARS if not os.environ.get(v)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} unset; launch with "
            "`torchrun --nproc_per_node=G $(which landslide-hazard) train CONFIG`, "
            "or unset WORLD_SIZE to train in one process"
        )
    rank_device = _rank_device(device)
    if rank_device.type == "cuda":
        torch.cuda.set_device(rank_device)
        dist.init_process_group("nccl", timeout=DDP_TIMEOUT, device_id=rank_device)
    else:
        dist.init_process_group("gloo", timeout=DDP_TIMEOUT)
    try:
        yield DistContext(dist.get_rank(), dist.get_world_size(), rank_device)
    finally:
        dist.destroy_process_group()


def _rank_device(device: torch.device) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA device (one GPU per process), else ``device``."""
    if device.type != "cuda":
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
            "visible; start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def shard_batches(batches: Sequence[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s batches of an epoch: ``rank, rank + W, ...``, truncated so that every
    rank gets ``len(batches) // W`` batches (the last ``len(batches) % W`` are dropped)."""
    per_rank = len(batches) // world_size
    return list(batches[rank::world_size][:per_rank])


def average_gradients(params: Sequence[torch.nn.Parameter], world_size: int) -> None:
    """Replace each parameter's ``grad`` by its mean over the ranks, in one all-reduce.

    The gradients are flattened into one buffer (plus one presence flag per parameter, so a
    ``grad`` that is None on some ranks counts as zeros there). After the call a parameter has
    a gradient on every rank if it had one on any rank, and None on every rank otherwise, so
    the optimiser step is the same everywhere.
    """
    params = list(params)
    if not params:
        return
    ref = params[0]
    dtype = next((p.grad.dtype for p in params if p.grad is not None), ref.dtype)
    pieces = []
    for p in params:
        if p.grad is None:
            pieces.append(torch.zeros(p.numel(), dtype=dtype, device=p.device))
        else:
            pieces.append(p.grad.detach().reshape(-1).to(dtype))
    flags = torch.tensor(
        [0.0 if p.grad is None else 1.0 for p in params], dtype=dtype, device=ref.device
    )
    flat = torch.cat([*pieces, flags])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    flat_grads = flat[: flat.numel() - len(params)].div_(world_size)
    present = flat[flat.numel() - len(params) :]
    offset = 0
    for p, on_some_rank in zip(params, present.tolist(), strict=True):
        n = p.numel()
        if on_some_rank > 0:
            mean = flat_grads[offset : offset + n].view(p.shape)
            if p.grad is None:
                p.grad = torch.empty_like(p)
            p.grad.copy_(mean)
        offset += n


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite every rank's parameters and buffers with those of rank ``src``."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(tensor.data, src=src)


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """The element-wise sums of ``values`` over all ranks (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()
