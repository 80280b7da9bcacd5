"""The thread policy (runtime.py): cores from affinity and cgroup quotas, precedence, workers."""

from __future__ import annotations

import os

import pytest

from landslide_hazard import runtime
from landslide_hazard.errors import InputError


def test_cpu_max_parsing():
    assert runtime.parse_cpu_max("max 100000\n") is None
    assert runtime.parse_cpu_max("200000 100000\n") == 2.0
    assert runtime.parse_cpu_max("150000 100000") == 1.5
    assert runtime.parse_cpu_max("") is None
    assert runtime.parse_cfs_quota("-1\n", "100000\n") is None
    assert runtime.parse_cfs_quota("50000\n", "100000\n") == 0.5


def test_cgroup_v2_quota_of_own_cgroup_and_parents(tmp_path):
    (tmp_path / "job" / "task").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "job" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "job" / "task" / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(tmp_path, "0::/job/task\n") == 3.0
    assert runtime.cgroup_cpu_limit(tmp_path, "0::/\n") is None


def test_cgroup_v1_quota(tmp_path):
    cpu = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("150000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert runtime.cgroup_cpu_limit(tmp_path, proc) == 1.5


def test_available_cores_rounds_a_quota_down_and_keeps_one(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert runtime.available_cores(tmp_path, "0::/\n") == 1  # half a CPU: still one thread
    (tmp_path / "cpu.max").write_text("100000000 100000\n")  # 1000 CPUs: affinity decides
    assert runtime.available_cores(tmp_path, "0::/\n") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cli", "config", "env", "expected"),
    [
        (None, None, {}, (runtime.DEFAULT_THREADS, "default")),
        (None, None, {"OMP_NUM_THREADS": "3"}, (3, "environment")),
        (None, None, {"OMP_NUM_THREADS": "junk"}, (runtime.DEFAULT_THREADS, "default")),
        (None, 2, {"OMP_NUM_THREADS": "3"}, (2, "config")),
        (4, 2, {"OMP_NUM_THREADS": "3"}, (4, "cli")),
        (0, None, {}, (8, "cli")),  # 0: every available core
        (None, 64, {}, (8, "config")),  # more than available: capped
    ],
)
def test_precedence_cli_config_environment_default(cli, config, env, expected):
    choice = runtime.resolve_threads(config, cli, env, available=8)
    assert (choice.threads, choice.source) == expected
    assert "threads:" in choice.describe()


def test_capped_request_is_said():
    choice = runtime.resolve_threads(64, None, {}, available=2)
    assert choice.threads == 2 and "64 asked for but only 2 available" in choice.describe()


def test_negative_threads_name_the_fix():
    with pytest.raises(InputError, match="0 for all"):
        runtime.request_threads(-1)


def test_config_runtime_threads_validated():
    from landslide_hazard.config import RuntimeConfig

    assert RuntimeConfig().threads is None
    with pytest.raises(ValueError):
        RuntimeConfig(threads=-2)


def test_apply_sets_torch_and_blas(monkeypatch):
    import torch
    from threadpoolctl import threadpool_info

    old = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_cli_threads", None)
    try:
        choice = runtime.apply_thread_policy(1)
        assert choice.threads == 1 and choice.source == "config"
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
        assert os.environ.get("OMP_WAIT_POLICY") or os.environ.get("KMP_BLOCKTIME")
    finally:
        torch.set_num_threads(old)


def test_cli_threads_option_outranks_the_config(monkeypatch):
    from typer.testing import CliRunner

    from landslide_hazard.cli import app

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # restored after the test
    monkeypatch.setattr(runtime, "_cli_threads", None)
    monkeypatch.setattr(runtime, "_user_omp_threads", None)
    result = CliRunner().invoke(app, ["--threads", "1", "config", "--show-defaults"])
    assert result.exit_code == 0, result.output
    assert "runtime:\n  threads: null" in result.output  # listed with every default
    assert runtime._cli_threads == 1
    assert runtime.resolve_threads(2, runtime._cli_threads, {}, available=4).threads == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # libraries loaded later start with it
    bad = CliRunner().invoke(app, ["--threads", "-1", "config"])
    assert bad.exit_code != 0


class _ThreadsSeen:
    """A dataset whose items report the threads of the process that builds them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        import torch
        from threadpoolctl import threadpool_info

        blas = max((p["num_threads"] for p in threadpool_info()), default=1)
        return torch.tensor([torch.get_num_threads(), blas, os.getpid()])


def test_a_dataloader_worker_gets_one_thread():
    import torch

    from landslide_hazard.runtime import single_thread_worker

    loader = torch.utils.data.DataLoader(
        _ThreadsSeen(), batch_size=1, num_workers=1, worker_init_fn=single_thread_worker
    )
    for batch in loader:
        torch_threads, blas_threads, pid = batch[0].tolist()
        assert pid != os.getpid()
        assert (torch_threads, blas_threads) == (1, 1)


def test_numba_launching_its_threads_does_not_resize_torch():
    """A fresh process where torch already ran and numba is loaded but has not started its
    threading layer (a library user's first ``train``): numba's OpenMP layer, started by the
    policy, resets the OpenMP thread count to NUMBA_NUM_THREADS, which torch reads; the policy
    must still leave torch at the chosen count (it once left it at every core)."""
    import subprocess
    import sys

    code = (
        "import torch; torch.get_num_threads(); import numba\n"
        "from landslide_hazard.runtime import apply_thread_policy\n"
        "c = apply_thread_policy(1)\n"
        "print(c.threads, torch.get_num_threads(), numba.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "1", "1"], out.stdout + out.stderr


def test_a_worker_sizes_the_process_pools_once(monkeypatch):
    """``single_thread_worker`` sizes the process-wide pools (a threadpoolctl scan of the loaded
    libraries) once per process, not on every dask task; again after the process was set to
    another count."""
    import torch

    real, calls = runtime.set_threads, []

    def counting(n):
        calls.append(n)
        real(n)

    old = torch.get_num_threads()
    monkeypatch.setattr(runtime, "set_threads", counting)
    monkeypatch.setattr(runtime, "_pools_sized", None)
    try:
        for _ in range(3):
            runtime.single_thread_worker()
        assert calls == [1] and torch.get_num_threads() == 1
        runtime.set_threads(2)  # a stage's policy in the same process
        runtime.single_thread_worker()
        assert calls == [1, 2, 1] and torch.get_num_threads() == 1
    finally:
        real(old)
