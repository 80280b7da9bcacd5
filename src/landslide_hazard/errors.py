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
