"""Atomic writes: write to a temporary sibling, then rename, so no reader sees half a file."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import LandslideHazardError, OutputError, describe_os_error

#: Suffixes of :func:`atomic_path`'s temporaries (a killed run leaves them behind).
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
#: errnos of a write the system refuses (full disk, quota, permissions, read-only).
WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS")
    if hasattr(errno, name)
)


def _output_error(exc: OSError, path: Path) -> OutputError:
    """The OSError of writing ``path`` (or its temporary) as an OutputError naming ``path``."""
    named = OSError(exc.errno, exc.strerror, str(path))
    return OutputError(describe_os_error(named))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and directories (e.g. a Zarr store). On error the temporary is removed and
    any existing ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _output_error(exc, path) from exc
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # the old folder leaves under a temporary name first, so that a reader never
            # sees half of it; it is deleted once the new one is in place
            old = Path(
                tempfile.mkdtemp(prefix=f".{path.name}.", suffix=OLD_SUFFIX, dir=path.parent)
            )
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OutputError as exc:  # a file inside a temporary folder: name the final place
        raise OutputError(str(exc).replace(str(tmp), str(path))) from exc
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS and not isinstance(exc, LandslideHazardError):
            raise _output_error(exc, path) from exc
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Delete the temporaries that :func:`atomic_path` ``(folder / name)`` leaves when its
    process is killed (``.<name>.*.tmp`` and ``.<name>.*.old``); returns what was removed.

    Only the process that writes ``folder / name`` may call this (another one's temporary
    would vanish under it): the stages call it when they start writing their output."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for suffix in (TMP_SUFFIX, OLD_SUFFIX):
        for stale in folder.glob(f".{glob.escape(name)}.*{suffix}"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def ensure_writable_dir(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it, before long
    work; an OutputError with the fix otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        named = OSError(exc.errno, exc.strerror, str(folder))
        raise OutputError(f"{what}: {describe_os_error(named)}") from exc
    return folder
