"""The command line: a thin layer over each stage's public entry point.

Each command imports its stage lazily so that ``landslide-hazard --help`` is instant. Results
(the paths written, tables, ``--json``) go to stdout through :func:`result`; progress, logs,
warnings and next-step hints to stderr through ``console`` (:mod:`.streams`), never wrapped.
"""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from .errors import InputError, LandslideHazardError
from .runtime import set_openmp_wait_env
from .streams import log_console

# Before any library with an OpenMP pool is loaded (typer and rich load none): its threads then
# sleep when idle instead of spinning against other processes (runtime.OPENMP_WAIT_ENV).
set_openmp_wait_env()

#: Exit code of a foreseen failure (bad input, config, run folder); an unforeseen one exits 1.
EXIT_USER_ERROR = 2
EXIT_BUG = 1


def _is_cli_control_flow(exc: BaseException) -> bool:
    """--help, --version, usage errors: the CLI framework's own exits (typer >= 0.2x vendors
    click, so its Exit and UsageError are not click's classes)."""
    return type(exc).__module__.split(".")[0] in ("click", "typer")


class _ErrorBoundary(TyperGroup):
    """The one place where failures become messages.

    A :class:`LandslideHazardError` or an ``OSError`` (a file the system refuses) is foreseen:
    one ``error: ...`` line, exit 2. Anything else is a bug: one line naming the exception and
    a hint to re-run with ``--debug``, which lets the traceback through instead.
    """

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except LandslideHazardError as exc:
            if ctx.params.get("debug"):
                raise
            _fail(exc)
        except OSError as exc:  # a file the system refuses: one sentence, not an errno
            if ctx.params.get("debug"):
                raise
            from .errors import describe_os_error

            _fail(describe_os_error(exc))
        except Exception as exc:
            if ctx.params.get("debug") or _is_cli_control_flow(exc):
                raise
            from rich.markup import escape

            console.print(
                f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))} "
                f"(a bug; re-run as `landslide-hazard --debug {escape(ctx.invoked_subcommand or 'CMD')} ...` "
                "for the traceback and report it)",
                soft_wrap=True,
            )
            raise typer.Exit(code=EXIT_BUG) from None


app = typer.Typer(
    name="landslide-hazard",
    help="Space-time landslide hazard modelling with an Ensemble Neural Network (Dahal et al. 2024).",
    cls=_ErrorBoundary,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
console = log_console()


def result(text: str) -> None:
    """A result line on stdout, as is (no markup, no wrapping)."""
    typer.echo(text)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        help="print the version and exit",
        is_eager=True,
        callback=_print_version,
    ),
    debug: bool = typer.Option(
        False, "--debug", help="show the full traceback of an unexpected error"
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=0,
        help="threads per process (torch, BLAS, numba); 0: all available cores. Default: "
        "the config's runtime.threads, else OMP_NUM_THREADS, else 1",
    ),
) -> None:
    """Space-time landslide hazard: prepare -> train -> predict -> evaluate -> report."""
    from .malloc import tune_malloc
    from .runtime import configure_cli_process

    configure_cli_process(threads)
    tune_malloc()


def _score(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _warn(message: str) -> None:
    """A warning on one line (not wrapped: file names stay whole), markup escaped."""
    console.print(f"[yellow]warning:[/] {_escape(message)}", soft_wrap=True)


def _fail(exc: Exception | str) -> None:
    """Print an error without a traceback and exit 2.

    The message is escaped (messages quote lists such as ``[a, b]``, which rich would read as
    markup) and not wrapped, so file names stay whole for copying and grepping.
    """
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(code=EXIT_USER_ERROR)


@app.command("config")
def config_cmd(
    show_defaults: bool = typer.Option(False, "--show-defaults", help="print every default"),
    check: Path | None = typer.Option(None, "--check", help="validate a config file"),
) -> None:
    """Show the config defaults, or validate a config file."""
    from .config import defaults_yaml, load_config

    if show_defaults:
        typer.echo(defaults_yaml())
        return
    if check is not None:
        cfg = load_config(check)
        typer.echo(f"{check}: valid ({len(cfg.periods)} periods, grid {cfg.grid.shape_cells})")
        return
    typer.echo("use --show-defaults or --check CONFIG")


# Stage commands are registered below, one block per stage (keep them thin: parse, call, report).


# ---- evaluate (owner: evaluation) ------------------------------------------------------------
@app.command("evaluate")
def evaluate_cmd(
    observed: Path = typer.Option(
        ..., "--observed", help="observed density GeoTIFF (%, band per period)"
    ),
    susceptibility: Path = typer.Option(
        ..., "--susceptibility", help="susceptibility GeoTIFF (0-1)"
    ),
    density: Path | None = typer.Option(None, "--density", help="predicted density GeoTIFF (%)"),
    hazard: Path | None = typer.Option(None, "--hazard", help="hazard GeoTIFF (%); default S x D"),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="class threshold; default the max-F1 one on these data (optimistic)",
    ),
    folds: Path | None = typer.Option(None, "--folds", help="fold id per cell GeoTIFF (1 band)"),
    min_density: float = typer.Option(
        0.0, "--min-density", help="occurrence = observed > this (%)"
    ),
    out: Path = typer.Option(..., "--out", help="output folder for metrics.json"),
    uncertainty: Path | None = typer.Option(
        None, "--uncertainty", help="uncertainty GeoTIFF to show in the report (not scored)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print the table as JSON on stdout (rows per period and pooled)"
    ),
    run: Path | None = typer.Option(
        None, "--run", help="the run folder the maps came from: its held-out scores join the report"
    ),
) -> None:
    """Score maps against observed density: metrics.json + a table (stdout)."""
    from .evaluation import MapFiles, evaluate_files
    from .run import METRICS_FILE

    maps = MapFiles(observed, susceptibility, density, hazard, folds, uncertainty)
    metrics = evaluate_files(
        maps,
        out,
        threshold=threshold,
        min_density=min_density,
        show_table=not as_json,
        run=run,
    )
    if as_json:
        import json

        from .evaluation.evaluate import metrics_table_rows

        table = {
            "metrics_json": str(out / METRICS_FILE),
            "threshold": metrics["threshold"],
            "threshold_source": metrics["threshold_source"],
            "rows": metrics_table_rows(metrics),
        }
        result(json.dumps(table, indent=2))
        return
    result(f"wrote {out / METRICS_FILE}")


# ---- terrain (owner: predictors) -------------------------------------------------------------
@app.command("terrain")
def terrain_cmd(
    dem: Path = typer.Argument(..., help="DEM GeoTIFF (metres, projected CRS, north-up)"),
    out: Path = typer.Argument(..., help="output GeoTIFF with the terrain bands"),
    nodata: float | None = typer.Option(
        None, "--nodata", help="nodata value of the DEM (overrides the file's; skips detection)"
    ),
    no_collar: bool = typer.Option(
        False, "--no-collar", help="do not look for an undeclared constant fill around the edges"
    ),
    curvature: str = typer.Option(
        "zevenbergen_thorne", "--curvature", help="zevenbergen_thorne or heerdegen_beran"
    ),
) -> None:
    """Terrain bands of Table 1 (slope, aspect, northness, eastness, curvatures, TWI) as one GeoTIFF."""
    from rich.progress import Progress

    from .bands import TERRAIN_BANDS
    from .predictors.static import write_terrain
    from .predictors.terrain import curvature_method_named

    steps = ("read", "terrain", "write")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"terrain {dem.name}", total=len(steps))

        def advance(name: str) -> None:
            progress.update(task, completed=steps.index(name), description=f"terrain: {name}")

        summary = write_terrain(
            dem,
            out,
            nodata=nodata,
            detect_collar=not no_collar,
            curvature_method=curvature_method_named(curvature),
            progress=advance,
        )
        progress.update(task, completed=len(steps))
    how = {
        "declared": "the file's declared nodata",
        "--nodata": f"--nodata {nodata:g}" if nodata is not None else "--nodata",
        "detected": f"an undeclared fill value {summary.fill_value:g} detected at the edges"
        if summary.fill_value is not None
        else "",
        "none": "no nodata found",
    }[summary.nodata_source]
    console.print(
        f"masked {summary.collar_pixels:,} nodata collar pixels ({how}); "
        f"{summary.shape[0]} x {summary.shape[1]} px of {summary.pixel_size_m:g} m"
    )
    console.print(f"{len(TERRAIN_BANDS)} bands: {', '.join(TERRAIN_BANDS)}")
    result(f"wrote {summary.path}")


# ---- prepare (owner: prepare) ----------------------------------------------------------------
@app.command("prepare")
def prepare_cmd(
    config: Path = typer.Argument(..., help="run config YAML"),
    out: Path | None = typer.Option(
        None, "--out", help="cube path (default: <output.dir>/cube.zarr of the config)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing cube"),
    tile_px: int = typer.Option(
        512, "--tile-px", min=16, help="fine pixels per side of the static tiles (memory)"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="run the static tiles on dask.distributed: 'local', 'local:N' or a scheduler "
        "address tcp://HOST:8786 (default: $LANDSLIDE_HAZARD_SCHEDULER, else in-process)",
    ),
) -> None:
    """Validate the inputs and write the predictor cube (<output.dir>/cube.zarr)."""
    import warnings

    from .config import load_config
    from .prepare import prepare

    cfg = load_config(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = prepare(
            cfg,
            out=out,
            progress=not no_progress,
            overwrite=overwrite,
            tile_px=tile_px,
            scheduler=scheduler,
        )
    for w in caught:
        _warn(str(w.message))
    from .cube import open_cube

    cube = open_cube(path)
    for line in cube.meta.provenance.get("log", []):
        console.print(f"  {_escape(line)}", soft_wrap=True)
    g = cube.grid
    console.print(
        f"{len(cube.meta.periods)} periods, {g.cell_shape[0]} x {g.cell_shape[1]} cells "
        f"({int(cube.valid_cells.sum()):,} valid), {g.fine_shape[0]} x {g.fine_shape[1]} px; "
        f"next: `landslide-hazard train {config}`"
    )
    result(f"wrote {path}")


# ---- report (owner: evaluation) --------------------------------------------------------------
@app.command("report")
def report_cmd(
    directory: Path = typer.Argument(
        ..., help="a run folder or an evaluate --out folder (metrics.json)"
    ),
) -> None:
    """Write DIR/report.html: maps, plots, tables and an offline map viewer in one file."""
    from .report import build_report

    out = build_report(directory, show_progress=True)
    result(f"wrote {out}")


# ---- train / predict (owner: training) -------------------------------------------------------
@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="run config YAML (its cube must be prepared)"),
    protocol: str | None = typer.Option(
        None, "--protocol", help="paper, spatial, temporal or spacetime (default: the config's)"
    ),
    fold: int | None = typer.Option(None, "--fold", help="test fold (default: the config's)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar or log echo"),
) -> None:
    """Train a run (<output.dir>/runs/<name>/) and print its held-out scores."""
    import json
    import os

    from .config import load_config
    from .run import RunFolder
    from .training import train

    cfg = load_config(config)
    run = train(cfg, protocol=protocol, fold=fold, progress=not no_progress)
    metrics = json.loads(RunFolder(run).metrics.read_text())
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports, once
        return

    leaky = " (paper protocol: leaky, optimistic)" if metrics.get("leaky") else ""
    result(f"wrote {run}{leaky}")
    result(
        f"held-out AUC {_score(metrics.get('held_out_auc'))}  oracle AUC "
        f"{_score(metrics.get('oracle_auc'))}  skill {_score(metrics.get('skill_pooled'))}"
    )
    console.print(f"next: `landslide-hazard predict {run}`")


@app.command("calibrate")
def calibrate_cmd(
    run: Path = typer.Argument(..., help="a trained run folder (<output.dir>/runs/<name>)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar or log echo"),
) -> None:
    """Refit a trained run's stored calibration with this version, keeping its weights."""
    from .training import recalibrate

    m = recalibrate(run, progress=not no_progress)
    before, after = _score(m.get("previous_held_out_auc")), _score(m.get("held_out_auc"))
    result(f"recalibrated {run}: held-out AUC {before} -> {after}")


@app.command("predict")
def predict_cmd(
    run: Path = typer.Argument(..., help="a run folder (<output.dir>/runs/<name>)"),
    scenario: Path | None = typer.Option(
        None, "--scenario", help="what-if YAML: new rain / shaking for some periods"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    mc_samples: int = typer.Option(
        0, "--mc-samples", help="also write uncertainty.tif: std over N MC-dropout passes"
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="run the rows of patches on dask.distributed: 'local', 'local:N' or a scheduler "
        "address tcp://HOST:8786 (default: $LANDSLIDE_HAZARD_SCHEDULER, else in-process)",
    ),
    bf16: bool = typer.Option(
        False,
        "--bf16",
        help="bf16 autocast on the CPU: faster on CPUs with AMX / AVX512-BF16, values move ~1e-3",
    ),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="the network's own probabilities, without the run's calibration (to RUN/maps-raw/)",
    ),
    cube: Path | None = typer.Option(
        None, "--cube", help="the predictor cube, if not at <output.dir>/cube.zarr of the run"
    ),
) -> None:
    """Wall-to-wall maps of a trained run (RUN/maps/ or RUN/scenarios/<name>/)."""
    import warnings

    from .predict import predict

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        out = predict(
            run,
            scenario=scenario,
            progress=not no_progress,
            mc_samples=mc_samples,
            scheduler=scheduler,
            cpu_bf16=bf16,
            raw=raw,
            cube=cube,
        )
    for w in caught:
        _warn(str(w.message))
    result(f"wrote {out}")
    console.print(f"next: `landslide-hazard report {run}`")


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="folder to write the scenario into"),
    size: str | None = typer.Option(
        None,
        "--size",
        help="tiny | demo | regional | gorkha | large (default demo; not with --dem)",
    ),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same files)"),
    dem: Path | None = typer.Option(
        None,
        "--dem",
        help="your own DEM (GeoTIFF, projected CRS in metres) as the terrain; it sets the grid",
    ),
    legacy: bool = typer.Option(False, "--legacy-process", help="failed ground fails again"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """Write a synthetic scenario: the inputs a user brings, config.yaml, and truth/."""
    from .synthetic import generate_scenario

    if dem is not None and size is not None:
        raise InputError(
            f"--size {size} and --dem exclude each other: the DEM sets the grid (its pixel "
            "size, ~1 km cells, its extent); drop --size"
        )
    progress = not no_progress
    summary = generate_scenario(size or "demo", seed, out, progress, dem=dem, legacy_process=legacy)
    console.print(
        f"{summary['n_cells']} cells x {len(summary['periods'])} periods "
        f"({summary['timings_s']['total_s']:.1f} s); next: `landslide-hazard prepare "
        f"{Path(out) / 'config.yaml'}`"
    )
    result(f"wrote {out}")


@app.command("validate")
def validate_cmd(
    configs: list[Path] = typer.Argument(
        ...,
        help="run config YAML(s), cubes prepared; several (seeds, scenarios) share one report",
    ),
    protocols: str = typer.Option(
        "paper,spatial,temporal,spacetime", "--protocols", help="comma-separated protocols"
    ),
    max_folds: int | None = typer.Option(
        None, "--max-folds", help="folds per block protocol (default: all evaluation.n_folds)"
    ),
    out: Path | None = typer.Option(None, "--out", help="default: <output.dir>/validation"),
    doc: Path | None = typer.Option(None, "--doc", help="also write the markdown report here"),
) -> None:
    """The protocol x model table: ENN, baselines and (synthetic data) the oracle."""
    from rich.table import Table

    from .config import load_config
    from .validate import combine, validate
    from .validate_report import render_markdown

    cfgs = [load_config(c) for c in configs]  # every config checked before any training
    if out is not None and len(cfgs) > 1:
        raise InputError(
            "--out with several configs would mix their runs in one folder; leave it out (each "
            "config validates into its own <output.dir>/validation)"
        )
    protocol_list = [p.strip() for p in protocols.split(",") if p.strip()]
    outcome = combine(
        [validate(cfg, protocol_list, max_folds=max_folds, out_dir=out) for cfg in cfgs]
    )
    cfg = cfgs[0]
    table = Table(title="validation (pooled test cells, mean over folds and seeds)")
    columns = ["auc", "skill", "pr_auc", "f1", "ece", "hazard_mae", "hazard_r"]
    for name in ["scenario", "protocol", "model", *columns]:
        table.add_column(name)
    for e in outcome["summary"]:
        table.add_row(
            e["scenario"],
            e["protocol"] + (" (leaky)" if e["leaky"] else ""),
            e["model"],
            *[f"{e[c]:.3f}" if e[c] == e[c] else "n/a" for c in columns],
        )
    from .streams import result_console

    result_console().print(table)
    if doc is not None:
        import shlex
        import sys

        from .io import atomic_write_text
        from .validate import plot_reliability

        command = "landslide-hazard " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        figure = doc.with_name(f"{doc.stem}_reliability.png")
        plot_reliability(outcome, figure, cfg.evaluation.ece_bins)
        atomic_write_text(doc, render_markdown(outcome, command, figure=figure.name))
        result(f"wrote {doc}")


@app.command("real-forecast")
def real_forecast_cmd(
    out: Path = typer.Option(
        Path("docs/real_forecast.md"), "--out", help="the Markdown report (a PNG goes beside it)"
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="the gorkha2015 folder (default <shared>/data/gorkha2015)"
    ),
    seed: int = typer.Option(0, "--seed", help="random state of the gradient-boosting baseline"),
) -> None:
    """Rolling next-period forecasts on the real Gorkha record from the landslide legacy."""
    import shlex

    from .evaluation.real_forecast import FORECASTER
    from .evaluation.real_forecast_doc import write_real_forecast

    words = ["landslide-hazard", "real-forecast", "--out", str(out)]
    words += ["--data-dir", str(data_dir)] if data_dir is not None else []
    words += ["--seed", str(seed)] if seed != 0 else []
    command = " ".join(shlex.quote(w) for w in words)
    rep = write_real_forecast(out, data_dir, seed=seed, command=command)
    aucs = ", ".join(
        f"{p['index'] + 1}: {p['scores'][FORECASTER]['auc']:.3f}" for p in rep["periods"]
    )
    console.print(f"forecaster AUC per period: {aucs}")
    result(f"wrote {out}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="folder for everything the demo writes"
    ),
    size: str = typer.Option("demo", "--size", help="synthetic scenario size: tiny | demo"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic scenario and the training"),
    force: bool = typer.Option(
        False, "--force", help="start over instead of reusing finished stages"
    ),
    mc_samples: int = typer.Option(
        8, "--mc-samples", help="MC-dropout passes for the uncertainty map (0: none)"
    ),
) -> None:
    """synth -> prepare -> train -> predict -> evaluate -> report on a synthetic scenario."""
    from .demo import run_demo

    s = run_demo(out, size=size, seed=seed, force=force, console=console, mc_samples=mc_samples)
    console.print(
        f"\n[bold]held-out ({s['protocol']} protocol)[/]: AUC {_score(s['held_out_auc'])}, "
        f"oracle AUC {_score(s['oracle_auc'])}, skill {_score(s['skill'])}"
    )
    result(f"run folder: {s['run']}")
    result(f"report: {s['report']}")
