"""Running tile loops on a dask.distributed cluster (``prepare --scheduler``).

``scheduler`` is ``"local"`` (a LocalCluster on this machine: one single-threaded worker
process per core, or ``"local:N"`` for N workers) or the address of a running scheduler
(``tcp://host:8786``, started with ``dask scheduler`` and ``dask worker tcp://host:8786
--nthreads 1`` on each machine). Workers read and write files by path, so on many machines
the output folder must be on a file system they all mount at the same path (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import InputError, MissingDependencyError

# The scheduler prepare and predict use when none is passed (unset: run in this process).
SCHEDULER_ENV = "LANDSLIDE_HAZARD_SCHEDULER"


def resolve_scheduler(scheduler: str | None) -> str | None:
    """``scheduler`` if given, else ``$LANDSLIDE_HAZARD_SCHEDULER``, else None (in process)."""
    return scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None


def _local_workers(scheduler: str) -> int:
    if scheduler == "local":
        return max(1, os.cpu_count() or 1)
    _, _, n = scheduler.partition(":")
    try:
        workers = int(n)
    except ValueError:
        workers = 0
    if workers < 1:
        raise InputError(
            f"scheduler '{scheduler}': write 'local', 'local:N' with N >= 1 workers, or a "
            "scheduler address such as tcp://10.0.0.5:8786"
        )
    return workers


@contextlib.contextmanager
def client_for(scheduler: str, *, processes: bool = True) -> Iterator[Any]:
    """A dask.distributed Client for ``scheduler`` ("local", "local:N" or an address).

    A LocalCluster is started (and closed again on exit) for "local"; an address connects to
    the running scheduler (it is not shut down on exit). processes: LocalCluster workers as
    processes (True) or threads in this process (False).
    """
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "a dask scheduler was asked for, but dask.distributed is not installed; install it "
            "with `pip install 'landslide-hazard[distributed]'` (or drop --scheduler)"
        ) from None

    if scheduler == "local" or scheduler.startswith("local:"):
        cluster = LocalCluster(
            n_workers=_local_workers(scheduler),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
        )
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as exc:
        raise InputError(
            f"cannot reach the dask scheduler at {scheduler} ({exc}); start one (`dask "
            "scheduler`) and workers (`dask worker ADDRESS --nthreads 1`), check the address, "
            "or use --scheduler local"
        ) from None
    with client:
        yield client


def describe(client: Any) -> str:
    """'N worker(s), T thread(s) at ADDRESS' for the log."""
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return f"{len(workers)} worker(s), {threads} thread(s) at {client.scheduler.address}"


def run_tiles(
    client: Any,
    func: Callable[..., int],
    src: Any,
    store: str,
    tiles: Sequence[tuple[int, tuple[slice, slice]]],
) -> Iterator[int]:
    """Submit ``func(src, store, index, rows, cols)`` per tile; yield each index as it ends.

    func must return its index. The first failing tile raises its error here (the remaining
    tasks are cancelled), so the caller's resume markers hold only finished tiles.
    """
    from distributed import as_completed

    if not tiles:
        return
    token = uuid.uuid4().hex[:12]  # unique keys: other runs may share the scheduler
    futures = [
        client.submit(func, src, store, i, rows, cols, key=f"tile-{token}-{i}", pure=False)
        for i, (rows, cols) in tiles
    ]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.cancel(futures)
