"""The errors a user can meet, as one hierarchy.

Every failure the package foresees (a bad input, a config that does not validate, a run folder
that is missing, foreign or truncated, a resume that cannot continue) is a
:class:`LandslideHazardError`. The CLI turns one into a single ``error: ...`` line and exit
code 2; anything else is a bug, printed as one line with a hint to re-run with
``landslide-hazard --debug CMD`` for the traceback.

A message names the file, the problem and the fix. Subclasses also derive from the built-in
exception a Python caller would expect (``ValueError`` for bad values, ``FileNotFoundError`` for a
missing file), so ``except ValueError`` keeps working for library users.

Stage-specific classes (``RasterError``, ``VectorError``, ``DemError``, ``InventoryError``,
``PrepareError``) live beside the code that raises them and derive from :class:`InputError`.
"""

from __future__ import annotations


class LandslideHazardError(Exception):
    """Base of every foreseen failure; the message is shown to the user as is."""


class InputError(LandslideHazardError, ValueError):
    """A user input (file, value, option) that cannot be used as given."""


class ConfigError(InputError):
    """A config file that does not validate; the message names the field and the fix."""


class MissingFileError(LandslideHazardError, FileNotFoundError):
    """A file or folder the step needs is not there; the message says which step writes it."""


class RunFolderError(InputError):
    """A run folder that cannot be used: a foreign, truncated or incompatible ``model.pt``,
    or a folder that holds a different run."""


class ResumeError(RunFolderError):
    """A checkpoint that cannot be resumed (a different config, a truncated file)."""


class MissingDependencyError(LandslideHazardError, ModuleNotFoundError):
    """An optional dependency the asked-for feature needs is not installed."""


class CubeFormatError(InputError):
    """A ``cube.zarr`` written in another layout (format version) than this version reads;
    the message says to re-run ``prepare --overwrite``."""


class OutputError(LandslideHazardError, OSError):
    """An output that cannot be written: an unwritable folder, a full disk."""


def describe_os_error(exc: OSError) -> str:
    """One sentence for an ``OSError`` the system raised: the file, what happened and the fix
    (not an errno). Errors without a known errno keep their own text, prefixed by the file."""
    import errno

    name = exc.filename if exc.filename is not None else None
    where = f"{name}: " if name is not None else ""
    code = exc.errno
    if code == errno.ENOSPC:
        return (
            f"{where}no space left on the disk while writing; free some space or point the "
            "output (output.dir, --out) at a disk with room, then run the command again (a "
            "finished step is not redone; the half-written file was removed)"
        )
    if code == getattr(errno, "EDQUOT", -1):
        return f"{where}disk quota exceeded while writing; free space or write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"{where}permission denied; write to a folder you may write to (set output.dir in "
            "the config, or --out) or ask for write access to this one"
        )
    if code == errno.EROFS:
        return f"{where}the file system is read-only; set output.dir (or --out) elsewhere"
    if code == errno.ENOENT:
        return f"{where}no such file or folder; check the path"
    if code == errno.EISDIR:
        return f"{where}is a folder where a file was expected; check the path"
    if code == errno.ENOTDIR:
        return f"{where}a part of this path is a file, not a folder; check the path"
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}{text}"
