"""The prepare stage's entry point: validate, then write the cube part by part, resumably.

The cube is built in ``.<name>.partial`` beside the final path and renamed onto it at the end,
so a reader never sees half a cube. A marker file in the partial store records the parts (and
static tiles) already written, together with a fingerprint of the resolved config, the inputs
(sha256 of small files, size + mtime of big ones) and the package version. A rerun after an
interruption with the same fingerprint skips what is marked done; a different fingerprint
starts afresh. The global passes are always recomputed (they are not stored).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import DYNAMIC_NAMES
from ..config import RunConfig
from ..cube import CUBE_FORMAT_VERSION, Cube, CubeMeta, create_cube
from ..distributed import resolve_scheduler
from ..io.atomic import atomic_write_text, ensure_writable_dir
from ..run import PREPARE_PROGRESS_FILE as PROGRESS_FILE
from ..run import cube_path
from .dynamic import compute_dynamic
from .inputs import PrepareError, ValidatedInputs, cells_all, period_infos, validate_inputs
from .legacy import legacy_bands
from .static import (
    DEFAULT_TILE_PX,
    compute_static_tile,
    global_passes,
    static_tiles,
    write_static_tile,
)
from .targets import compute_targets

logger = logging.getLogger(__name__)


def _fingerprint(provenance: dict[str, Any], tile_px: int, chunk_px: int) -> str:
    blob = json.dumps(
        {"p": provenance, "tile": tile_px, "chunk": chunk_px, "format": CUBE_FORMAT_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_progress(store: Path) -> dict[str, Any]:
    try:
        return json.loads((store / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_progress(store: Path, progress: dict[str, Any]) -> None:
    atomic_write_text(store / PROGRESS_FILE, json.dumps(progress))


# --------------------------------------------------------------------------------------------
# The entry point


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..streams import log_console

    with Progress(
        TextColumn("[bold]prepare[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=False,
        console=log_console(),
    ) as bar:
        yield bar


def prepare(
    cfg: RunConfig,
    out: Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    tile_px: int = DEFAULT_TILE_PX,
    chunk_px: int = 256,
    scheduler: str | None = None,
) -> Path:
    """Validate the inputs of ``cfg`` and write the predictor cube; return its path.

    out: the cube path (default ``<cfg.output.dir>/cube.zarr``); progress: show a rich progress
    bar; overwrite: replace an existing cube (it stays intact until the new one is complete);
    tile_px: fine pixels per side of the static tiles (memory of the tile loop); chunk_px: Zarr
    chunk of the static array (a divisor of tile_px keeps writes chunk-aligned); scheduler:
    run the static tiles on dask.distributed - ``"local"`` for a LocalCluster on this machine,
    or a scheduler address such as ``tcp://10.0.0.5:8786`` (None: the environment variable
    ``LANDSLIDE_HAZARD_SCHEDULER`` if set, else in this process). The cube is the same either
    way (docs/scale.md).
    """
    from ..runtime import apply_thread_policy

    threads = apply_thread_policy(cfg.runtime.threads)
    scheduler = resolve_scheduler(scheduler)
    out = Path(out) if out is not None else cube_path(cfg)
    if out.exists() and not overwrite:
        raise PrepareError(f"{out}: a cube already exists; pass --overwrite to replace it")
    partial = out.parent / f".{out.name}.partial"
    log: list[str] = [threads.describe()]
    with _progress_bar(progress) as bar:
        task = bar.add_task("validating inputs", total=None) if bar else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inputs = validate_inputs(cfg, log)
        for w in caught:
            log.append(f"warning: {w.message}")
        ensure_writable_dir(out.parent, "output folder (output.dir or --out)")
        fingerprint = _fingerprint(inputs.provenance, tile_px, chunk_px)
        cube, state = _open_partial(cfg, inputs, partial, fingerprint, chunk_px, log)
        build = _CubeBuild(cfg, inputs, cube, partial, state, log, bar, task)
        valid_cells = cells_all(inputs.valid_pixels, inputs.grid.cell_pixels)
        if "valid_cells" not in build.parts:
            cube.array("valid_cells")[:] = valid_cells.astype(np.uint8)
            build.done("valid_cells")
        if "targets" not in build.parts:
            _write_targets(build, valid_cells)
        if "dynamic" not in build.parts:
            _write_dynamic(build, valid_cells)
        if "static" not in build.parts:
            _write_static(build, tile_px, scheduler=scheduler)
            build.done("static")
        if bar:
            bar.update(task, description="finishing", total=1, completed=1)
        provenance = dict(inputs.provenance)
        provenance["log"] = log
        provenance["prepared"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        cube.set_provenance(provenance)
        (partial / PROGRESS_FILE).unlink()
    _replace(partial, out)
    for line in log:
        logger.info(line)
    return out


def _open_partial(
    cfg: RunConfig,
    inputs: ValidatedInputs,
    partial: Path,
    fingerprint: str,
    chunk_px: int,
    log: list[str],
) -> tuple[Cube, dict[str, Any]]:
    """The partial store to write into and its progress state: an interrupted build of the
    same fingerprint is resumed, any other leftover removed, else a new empty cube created."""
    state = _read_progress(partial) if partial.exists() else {}
    if partial.exists() and state.get("fingerprint") != fingerprint:
        log.append(f"{partial}: leftover from another config or inputs; starting afresh")
        shutil.rmtree(partial)
        state = {}
    if partial.exists():
        # keep what the interrupted run logged about the parts it finished
        log.extend(line for line in state.get("log", []) if line not in log)
        log.append(
            f"{partial}: resuming (done: {state.get('parts', [])}, "
            f"{len(state.get('tiles', []))} static tile(s))"
        )
        return Cube(partial, mode="r+"), state
    meta = CubeMeta(inputs.grid, period_infos(cfg), provenance=inputs.provenance)
    cube = create_cube(partial, meta, chunk_px=chunk_px)
    state = {"fingerprint": fingerprint, "parts": [], "tiles": []}
    _write_progress(partial, state)
    return cube, state


@dataclass
class _CubeBuild:
    """A cube being built in ``partial``: its progress state (parts and static tiles done),
    the log, the progress bar and its task (None when progress is off)."""

    cfg: RunConfig
    inputs: ValidatedInputs
    cube: Cube
    partial: Path
    state: dict[str, Any]
    log: list[str]
    bar: Any
    task: Any

    @property
    def parts(self) -> list[str]:
        return self.state["parts"]

    def done(self, part: str) -> None:
        self.parts.append(part)
        self.state["log"] = self.log
        _write_progress(self.partial, self.state)

    def show(self, description: str, total: int | None, completed: int | None = 0) -> None:
        """Name the current step; ``completed`` None keeps the count."""
        if self.bar:
            extra = {} if completed is None else {"completed": completed}
            self.bar.update(self.task, description=description, total=total, **extra)

    def advance(self, *_: Any) -> None:
        if self.bar:
            self.bar.advance(self.task)


def _write_targets(build: _CubeBuild, valid_cells: np.ndarray) -> None:
    cfg = build.cfg
    n_dates = len(cfg.periods) + (cfg.inventory.kind == "cumulative")
    build.show("inventories", n_dates)
    build.cube.target_density[:] = compute_targets(
        cfg, valid_cells, build.log, on_date=build.advance if build.bar else None
    )
    build.done("targets")


def _write_dynamic(build: _CubeBuild, valid_cells: np.ndarray) -> None:
    """The trigger bands per period; refused where a valid cell has none."""
    cfg = build.cfg
    build.show("trigger bands", 1)
    dynamic, monsoons = compute_dynamic(cfg, build.inputs.rain, build.inputs.grid, build.log)
    dynamic[:, :, ~valid_cells] = np.nan
    gap = np.isnan(dynamic[:, :, valid_cells]).any(axis=(0, 2))
    if gap.any():
        names = [DYNAMIC_NAMES[b] for b in np.nonzero(gap)[0]]
        files = [str(cfg.inputs.rain)] if gap[:2].any() else []
        files += [str(e.pga) for e in cfg.inputs.earthquakes] if gap[2:].any() else []
        raise PrepareError(
            f"{', '.join(files)}: {', '.join(names)} NaN on "
            f"{int(np.isnan(dynamic[:, :, valid_cells]).any(axis=(0, 1)).sum())} valid "
            "cell(s): the raster(s) hold nodata or do not reach there; fill them, give "
            "rasters that cover the study area, or exclude those cells with a study mask"
        )
    legacy = legacy_bands(
        build.cube.target_density[:],
        build.cube.meta.periods,
        valid_cells,
        min_density=build.cfg.inventory.min_density,
    )
    build.cube.dynamic[:] = np.concatenate([dynamic, legacy], axis=1)
    build.cube.array("monsoons_since_eq")[:] = monsoons
    build.advance()
    build.done("dynamic")


def _write_static(build: _CubeBuild, tile_px: int, scheduler: str | None = None) -> None:
    """Global passes (spilled to a scratch folder), then the static bands tile by tile.

    Resumable per tile. The tiles run in this process, or on a dask.distributed cluster when
    ``scheduler`` is given (``"local"``: a LocalCluster; else a scheduler address).
    """
    from .. import distributed as dist

    cube, partial, state, log = build.cube, build.partial, build.state, build.log
    grid = build.inputs.grid
    tiles = static_tiles(grid.fine_shape, tile_px)
    done_tiles = set(state.get("tiles", []))
    chunk = cube.static.chunks[1:]
    if scheduler is not None and (tile_px % chunk[0] or tile_px % chunk[1]):
        raise PrepareError(
            f"tile_px {tile_px} is not a multiple of the cube's chunk {chunk[0]} px: parallel "
            "tiles would write into the same Zarr chunks; choose tile_px as a multiple of "
            "chunk_px"
        )

    def step(what: str) -> None:
        build.show(what, None, completed=None)

    folder = partial.parent / (partial.name.removesuffix(".partial") + ".scratch")
    try:
        src = global_passes(build.cfg, build.inputs, folder, log, step)
        pending = [(i, t) for i, t in enumerate(tiles) if i not in done_tiles]
        build.show("static bands", len(tiles), len(done_tiles))

        def finished(i: int) -> None:
            state["tiles"].append(i)
            _write_progress(partial, state)
            build.advance()

        if scheduler is None:
            for i, (rows, cols) in pending:
                cube.static[:, rows, cols] = compute_static_tile(src, rows, cols)
                finished(i)
        else:
            with dist.client_for(scheduler) as client:
                log.append(f"static tiles computed on dask.distributed ({dist.describe(client)})")
                for i in dist.run_tiles(client, write_static_tile, src, str(partial), pending):
                    finished(i)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _replace(partial: Path, out: Path) -> None:
    """Move the finished store onto ``out``; an old cube is removed only after the move."""
    if out.exists():
        trash = out.parent / f".{out.name}.old"
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash)
    else:
        os.replace(partial, out)
