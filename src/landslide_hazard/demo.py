"""The demo: synth -> prepare -> train -> predict -> evaluate -> report on a synthetic scenario.

Each stage writes files and is skipped when its output already exists, so a re-run (or a run
after a crash) reuses the finished stages; ``force`` starts over.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from .run import (
    CONFIG_FILE,
    METRICS_FILE,
    REPORT_FILE,
    ROLES_MAP,
    TRUTH_DIR,
    UNCERTAINTY_MAP,
    RunFolder,
    cube_path,
    map_file,
    run_dir_for,
)
from .streams import log_console

ROLE_NAMES = {0: "train", 1: "validation", 2: "test"}


def write_roles(run_dir: Path, like: Path, path: Path) -> Path:
    """A cell raster of each cell's role in the run's split: 0 train, 1 validation, 2 test.

    Cells in no role (the buffer around test blocks, invalid cells) are NaN. Evaluate reads it
    as ``--folds`` so its per-fold block 2 holds the held-out scores. ``like`` is a map of the run
    (its grid is copied).
    """
    from .io import raster_info, write_raster
    from .sampling.splits import Split

    split = Split.load(RunFolder(run_dir).splits)
    info = raster_info(like)
    roles = np.full(split.test_cells.shape[1:], np.nan, dtype="float32")
    roles[split.train_cells.any(axis=0)] = 0
    roles[split.val_cells.any(axis=0)] = 1
    roles[split.test_cells.any(axis=0)] = 2
    return write_raster(
        path, roles, info.transform, info.crs, band_names=["role: 0 train, 1 val, 2 test"]
    )


def evaluate_demo_run(
    run: RunFolder, threshold: float | None, min_density: float, show_table: bool
) -> None:
    """Score the run's maps (held-out ``threshold``) with each cell's role as its fold, into
    ``RUN/evaluation``; the uncertainty map is named when predict wrote one."""
    from .evaluation.evaluate import MapFiles, evaluate_files

    uncertainty = run.map(UNCERTAINTY_MAP)
    files = MapFiles(
        observed=run.map("observed"),
        susceptibility=run.map("susceptibility"),
        density=run.map("density"),
        hazard=run.map("hazard"),
        folds=write_roles(run.path, run.map("observed"), run.evaluation / map_file(ROLES_MAP)),
        uncertainty=uncertainty if uncertainty.is_file() else None,
    )
    evaluate_files(
        files,
        run.evaluation,
        threshold=threshold,
        min_density=min_density,
        show_table=show_table,
        run=run.path,
    )


def run_demo(
    out: Path,
    size: str = "demo",
    seed: int = 0,
    protocol: str = "spatial",
    force: bool = False,
    progress: bool = True,
    console: Console | None = None,
    mc_samples: int = 8,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns paths and the held-out headline numbers.

    mc_samples > 0 (and a run trained with dropout) also writes the MC-dropout uncertainty map
    (``predict --mc-samples``), which the report shows as a layer."""
    from .config import load_config, save_config
    from .predict import predict
    from .prepare import prepare
    from .report import build_report
    from .synthetic import generate_scenario
    from .training import train

    console = console or log_console()
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    scenario = out / "scenario"
    timings: dict[str, float] = {}

    def stage(n: int, name: str, done: bool, work: Callable[[], Any]) -> None:
        if done:
            console.print(f"[dim][{n}/6] {name}: already done, reusing[/]")
            return
        console.print(f"[bold][{n}/6] {name}[/] ...")
        t0 = time.perf_counter()
        work()
        timings[name] = time.perf_counter() - t0
        console.print(f"[green][{n}/6] {name} done in {timings[name]:.1f} s[/]")

    stage(
        1,
        f"synth ({size}, seed {seed})",
        (scenario / CONFIG_FILE).is_file() and (scenario / TRUTH_DIR).is_dir(),
        lambda: generate_scenario(size, seed, scenario, progress=progress),
    )
    cfg = load_config(scenario / CONFIG_FILE)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": out.resolve()})})
    save_config(cfg, out / CONFIG_FILE)
    cube = cube_path(cfg)
    stage(2, "prepare", cube.is_dir(), lambda: prepare(cfg, progress=progress))
    run_dir = run_dir_for(cfg, protocol, cfg.evaluation.test_fold)
    run = RunFolder(run_dir)
    stage(
        3,
        f"train ({cfg.model.preset} preset, {protocol} protocol)",
        run.metrics.is_file(),
        lambda: train(cfg, protocol, cfg.evaluation.test_fold, run_dir=run_dir, progress=progress),
    )
    mc = mc_samples if cfg.model.dropout > 0 else 0
    uncertainty = run.map(UNCERTAINTY_MAP)
    stage(
        4,
        f"predict{f' ({mc} MC-dropout passes for the uncertainty map)' if mc else ''}",
        run.map("hazard").is_file() and (uncertainty.is_file() or not mc),
        lambda: predict(run_dir, progress=progress, mc_samples=mc),
    )
    held_out = json.loads(run.metrics.read_text())
    stage(
        5,
        "evaluate",
        (run.evaluation / METRICS_FILE).is_file(),
        lambda: evaluate_demo_run(
            run, held_out.get("threshold"), cfg.inventory.min_density, progress
        ),
    )
    report = run.evaluation / REPORT_FILE
    stage(
        6, "report", report.is_file(), lambda: build_report(run.evaluation, show_progress=progress)
    )
    summary = {
        "out": str(out.resolve()),
        "run": str(run_dir.resolve()),
        "report": str(report.resolve()),
        "protocol": protocol,
        "held_out_auc": held_out.get("held_out_auc"),
        "oracle_auc": held_out.get("oracle_auc"),
        "skill": held_out.get("skill_pooled"),
        "timings_s": timings,
    }
    return summary
