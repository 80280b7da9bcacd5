"""Where the code runs: device choice, mixed precision, progress bars, the thread policy.

Training, predict and prepare take these from here so that a change of runtime policy (a new
device, a different autocast rule) is made once.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports this module at start
    import torch

ModuleT = TypeVar("ModuleT", bound="torch.nn.Module")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; otherwise the named device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"training.device = {name} but no CUDA device is available; use auto or cpu"
        )
    return dev


def autocast(device: torch.device, amp: bool, cpu_bf16: bool = False):
    """bf16 (else fp16) autocast on CUDA when ``amp``; bf16 on the CPU only when ``cpu_bf16``."""
    import torch

    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def to_memory_format(
    module: ModuleT,
    memory_format: torch.memory_format,
    device: torch.device | str | None = None,
) -> ModuleT:
    """``module.to(device, memory_format=...)`` (in place; returns the module)."""
    # torch accepts memory_format in Module.to at run time, but its type stubs' overloads omit it
    return module.to(device, memory_format=memory_format)  # type: ignore[call-overload]


def progress_bar(enabled: bool):
    """A transient rich progress bar (description, bar, n/N, time left); drawn only if enabled."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from .streams import log_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
        console=log_console(),
    )


# -- thread policy ---------------------------------------------------------------------------
#: Threads per process when nothing asks for more (--threads, runtime.threads, OMP_NUM_THREADS).
#: One: these models' ops are small, and with any other work on the machine more threads than
#: free cores make every OpenMP barrier wait for a descheduled thread (measured: 2-4x slower
#: training on a loaded 2-core machine, docs/performance.md "Thread policy"). A fixed default
#: also keeps results the same from machine to machine: CPU training results depend on the
#: thread count (reductions are split per thread), so it must not follow the load or the cores.
DEFAULT_THREADS = 1
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Environment read by OpenMP when it loads: threads that finish a parallel region sleep at once
#: instead of spinning (libgomp spins ~300,000 iterations by default; Intel OpenMP 200 ms),
#: which on a shared machine burns the cores other processes (and our own workers) need.
OPENMP_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

_cli_threads: int | None = None
#: OMP_NUM_THREADS as the user set it, saved when the CLI replaces it (configure_cli_process).
_user_omp_threads: tuple[str | None] | None = None
#: (pid, count) the process-wide pools were last sized to by :func:`set_threads` (a forked child
#: inherits its parent's record, hence the pid)
_pools_sized: tuple[int, int] | None = None
_pools_lock = threading.Lock()


@dataclass(frozen=True)
class ThreadChoice:
    """The threads a process uses, and why: ``source`` is ``cli``, ``config``, ``environment``
    (OMP_NUM_THREADS) or ``default``; ``requested`` what was asked for (0: all available
    cores); ``available`` the cores this process may use (affinity and cgroup quota)."""

    threads: int
    source: str
    requested: int
    available: int

    def describe(self) -> str:
        capped = (
            f", {self.requested} asked for but only {self.available} available"
            if self.requested > self.available
            else ""
        )
        asked = "all available cores" if self.requested == 0 else f"{self.requested}"
        return (
            f"threads: {self.threads} ({self.source}: {asked}{capped}; "
            f"{self.available} core(s) available)"
        )


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); None: no limit."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100_000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None: no limit
    (quota -1)."""
    try:
        quota, period = float(quota_text.strip()), float(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path, proc_cgroup: str | None) -> list[Path]:
    """The cgroup folders that may limit this process: its own (from /proc/self/cgroup) and
    every parent up to ``root`` (a parent's quota limits its children)."""
    dirs = [root]
    for line in (proc_cgroup or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers not in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu") or not path.strip("/"):
            continue
        parts = Path(path.strip("/")).parts
        for base in (root, root / "cpu", root / "cpu,cpuacct"):
            dirs.extend(base.joinpath(*parts[: i + 1]) for i in range(len(parts)))
    return dirs


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The smallest CPU quota (in CPUs) of the cgroups of this process, v2 or v1; None if none.

    ``proc_cgroup``: the text of /proc/self/cgroup (read when None)."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    limits = []
    for d in _own_cgroup_dirs(root, proc_cgroup):
        v2 = _read(d / "cpu.max")
        if v2 is not None:
            limits.append(parse_cpu_max(v2))
        for v1_dir in (d, d / "cpu", d / "cpu,cpuacct"):
            quota, period = _read(v1_dir / "cpu.cfs_quota_us"), _read(v1_dir / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                limits.append(parse_cfs_quota(quota, period))
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def available_cores(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int:
    """Cores this process may use: its CPU affinity, lowered to a cgroup CPU quota (rounded
    down: a 1.5-CPU quota gives 1), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, int(quota))
    return max(1, cores)


def request_threads(threads: int | None) -> None:
    """Record the CLI's ``--threads`` for this process (it outranks the config); None clears it."""
    global _cli_threads
    if threads is not None and threads < 0:
        raise InputError(f"--threads {threads}: give N >= 1 threads, or 0 for all available cores")
    _cli_threads = threads


def resolve_threads(
    config_threads: int | None = None,
    cli_threads: int | None = None,
    environ: Mapping[str, str] | None = None,
    available: int | None = None,
) -> ThreadChoice:
    """The thread count, by precedence: CLI ``--threads`` > config ``runtime.threads`` >
    ``OMP_NUM_THREADS`` > :data:`DEFAULT_THREADS`. 0 asks for every available core; more than
    are available is lowered to the available cores (more would only oversubscribe them)."""
    environ = os.environ if environ is None else environ
    available = available_cores() if available is None else int(available)
    env_value = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if cli_threads is not None:
        requested, source = int(cli_threads), "cli"
    elif config_threads is not None:
        requested, source = int(config_threads), "config"
    elif env_value.isdigit() and int(env_value) > 0:
        requested, source = int(env_value), "environment"
    else:
        requested, source = DEFAULT_THREADS, "default"
    if requested < 0:
        raise InputError(f"{requested} threads ({source}): give N >= 1, or 0 for all cores")
    threads = available if requested == 0 else min(requested, available)
    return ThreadChoice(threads, source, requested, available)


def set_openmp_wait_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Passive OpenMP waiting (:data:`OPENMP_WAIT_ENV`), unless the user set these variables.
    Takes effect for OpenMP runtimes loaded after this call (this process's before torch is
    imported, and child processes)."""
    environ = os.environ if environ is None else environ
    for key, value in OPENMP_WAIT_ENV.items():
        environ.setdefault(key, value)


def set_threads(threads: int) -> None:
    """Size every thread pool of this process: torch (intra- and inter-op), the BLAS / OpenMP
    pools numpy and scipy use (threadpoolctl), and numba's when numba is loaded."""
    global _pools_sized
    threads = max(1, int(threads))
    # numba first: launching its OpenMP threading layer resets the process's OpenMP thread
    # count to NUMBA_NUM_THREADS (the cores), which torch's pool reads, so a torch set before
    # it would run with every core after it (measured: 1 -> 2 on a 2-core machine)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch = sys.modules.get("torch")
    if torch is not None:  # not loaded yet: it starts with OMP_NUM_THREADS (configure_cli_process)
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # possible only before the first inter-op work; later it stays
            pass
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # pragma: no cover - a dependency of scikit-learn
        pass
    else:
        threadpool_limits(limits=threads)
    _pools_sized = (os.getpid(), threads)


def apply_thread_policy(config_threads: int | None = None) -> ThreadChoice:
    """Resolve the thread count (:func:`resolve_threads`, the CLI's request included) and size
    this process's pools with it; returns the choice (runs record it).

    Called by the stages' entry points (``prepare``, ``train``, ``predict``) with their config's
    ``runtime.threads``."""
    set_openmp_wait_env()
    environ: Mapping[str, str] = os.environ
    if _user_omp_threads is not None:  # judge the user's OMP_NUM_THREADS, not the CLI's copy
        environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if _user_omp_threads[0] is not None:
            environ["OMP_NUM_THREADS"] = _user_omp_threads[0]
    choice = resolve_threads(config_threads, _cli_threads, environ)
    set_threads(choice.threads)
    return choice


def configure_cli_process(cli_threads: int | None) -> ThreadChoice:
    """The CLI's start, before torch, numba or BLAS are loaded: passive OpenMP waiting, and
    ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to the thread
    count known so far (``--threads``, else the environment, else the default), so that each
    library starts its pool at that size. A stage's config (``runtime.threads``) may still
    change it when the stage starts (:func:`apply_thread_policy`)."""
    global _user_omp_threads
    request_threads(cli_threads)
    if _user_omp_threads is None:
        _user_omp_threads = (os.environ.get("OMP_NUM_THREADS"),)
    choice = apply_thread_policy()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(choice.threads)
    return choice


def single_thread_worker(worker_id: int | None = None) -> None:
    """One thread in a worker process (DataLoader ``worker_init_fn``, dask tasks): parallelism
    comes from the workers, so threads inside each would only oversubscribe the cores.

    The process-wide pools (torch's, the BLAS and OpenMP pools threadpoolctl finds) are sized
    once per process, not on every task: threadpoolctl scans the loaded libraries each time,
    and a scan from a dask worker thread while other threads load or free libraries could hang
    (seen once in the suite, threaded `LocalCluster`). Numba's count is per thread, so each
    calling thread sets its own."""
    with _pools_lock:
        if _pools_sized != (os.getpid(), 1):
            set_threads(1)
            return
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(1)
