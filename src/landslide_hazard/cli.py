"""The command line: a thin layer over each stage's public entry point.

Each command imports its stage lazily so that ``landslide-hazard --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    name="landslide-hazard",
    help="Space-time landslide hazard modelling with an Ensemble Neural Network (Dahal et al. 2024).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
) -> None:
    """Space-time landslide hazard: prepare -> train -> predict -> evaluate -> report."""
    if version:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.command("config")
def config_cmd(
    show_defaults: bool = typer.Option(False, "--show-defaults", help="print every default"),
    check: Path | None = typer.Option(None, "--check", help="validate a config file"),
) -> None:
    """Show the config defaults, or validate a config file."""
    from .config import ConfigError, defaults_yaml, load_config

    if show_defaults:
        typer.echo(defaults_yaml())
        return
    if check is not None:
        try:
            cfg = load_config(check)
        except ConfigError as exc:
            _fail(exc)
        typer.echo(f"{check}: valid ({len(cfg.periods)} periods, grid {cfg.grid.shape_cells})")
        return
    typer.echo("use --show-defaults or --check CONFIG")


# Stage commands are registered below, one block per stage (keep them thin: parse, call, report).


# ---- evaluate (owner: evaluation) ------------------------------------------------------------
@app.command("evaluate")
def evaluate_cmd(
    observed: Path = typer.Option(..., "--observed", help="observed density GeoTIFF (%, band per period)"),
    susceptibility: Path = typer.Option(..., "--susceptibility", help="susceptibility GeoTIFF (0-1)"),
    density: Path | None = typer.Option(None, "--density", help="predicted density GeoTIFF (%)"),
    hazard: Path | None = typer.Option(None, "--hazard", help="hazard GeoTIFF (%); default S x D"),
    threshold: float | None = typer.Option(
        None, "--threshold", help="class threshold; default the max-F1 one on these data (optimistic)"
    ),
    folds: Path | None = typer.Option(None, "--folds", help="fold id per cell GeoTIFF (1 band)"),
    min_density: float = typer.Option(0.0, "--min-density", help="occurrence = observed > this (%)"),
    out: Path = typer.Option(..., "--out", help="output folder for metrics.json"),
) -> None:
    """Score maps against observed density: metrics.json + a table."""
    from .evaluation import evaluate_files

    try:
        evaluate_files(observed, susceptibility, density, hazard, threshold=threshold,
                       folds=folds, out_dir=out, min_density=min_density)
    except (OSError, ValueError) as exc:
        _fail(exc)
    console.print(f"wrote {out / 'metrics.json'}")
