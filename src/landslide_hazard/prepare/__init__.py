"""The prepare stage (being split into modules; see docs/architecture.md)."""

from .inputs import PROGRESS_FILE, PrepareError, input_paths, prepare, static_tile

__all__ = ["PROGRESS_FILE", "PrepareError", "input_paths", "prepare", "static_tile"]
