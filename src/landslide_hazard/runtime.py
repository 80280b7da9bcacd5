"""Where the code runs: device choice, mixed precision, progress bars (and, later, threads).

Training, predict and prepare take these from here so that a change of runtime policy (a new
device, a different autocast rule) is made once.
"""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; otherwise the named device."""
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
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def progress_bar(enabled: bool):
    """A transient rich progress bar (description, bar, n/N, time left); drawn only if enabled."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


# -- thread policy ---------------------------------------------------------------------------
def apply_thread_policy() -> None:
    """The place for the thread policy (torch / OpenMP / BLAS / numba pools per stage and
    device). Not decided yet: the speed issue fills it in; until then it does nothing and the
    libraries' own defaults (or OMP_NUM_THREADS) apply."""
