"""Benchmark: peak memory and time of ``prepare`` and ``predict`` as the grid grows (docs/scale.md).

For each size (``demo`` with ``--quick``; ``demo`` and ``large`` = 10,240 x 10,240 fine pixels,
102,400 km2, otherwise) two phases run in their own fresh Python process, so each peak RSS
(``resource.getrusage``, the high-water mark of the process) is that phase's own:

1. **read once**: read the DEM, the daily rain stack and every PGA / sigma raster once into
   memory (float32) - the floor for any preparation that looks at all the inputs;
2. **prepare**: ``landslide_hazard.prepare.prepare`` from the raw inputs to the finished cube;
3. **predict**: ``landslide_hazard.predict.predict_arrays`` over that cube, every period and both
   lattices, with the ``tiny`` preset (untrained weights: speed and memory do not depend on
   them) and one torch thread; the static array is read row by row from Zarr when it exceeds
   the reader's 2 GiB budget (always with ``--scheduler``, where the workers read their rows).

Rows: seconds and peak RSS (MiB) of each phase, with the ratios of prepare and predict to
read-once, prepare's peak RSS per fine pixel (bytes/px) and predict's patches/s. Checks while
measuring: the cube's static bands are finite on every valid cell (the cube is complete), and
so are the predicted hazard maps.

The scenarios are generated with ``landslide-hazard synth`` (not timed). ``large`` takes a long
time to generate on 2 cores: set ``LANDSLIDE_BENCH_LARGE`` to the folder of an existing
``synth --size large`` scenario to reuse it (its config's output dir is not touched; the cube
goes to a temporary folder).

Usage::

    python benchmarks/bench_scale.py [--quick] [--sizes demo,large] [--scheduler local:2]

or through the harness: ``python benchmarks/run.py --only scale [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, row  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
phase, config, out, scheduler = sys.argv[1:5]
from landslide_hazard.config import load_config
cfg = load_config(config)
t0 = time.perf_counter()
if phase == "read":
    from landslide_hazard.io.rasters import read_raster, read_rain_stack
    read_raster(cfg.inputs.dem, bands=1)
    read_rain_stack(cfg.inputs.rain)
    for eq in cfg.inputs.earthquakes:
        read_raster(eq.pga, bands=1)
        if eq.sigma_ln_pga is not None:
            read_raster(eq.sigma_ln_pga, bands=1)
    check = ""
elif phase == "prepare":
    import numpy as np
    from landslide_hazard.cube import open_cube
    from landslide_hazard.prepare import prepare
    path = prepare(cfg, out=out, progress=False, scheduler=scheduler or None)
    seconds = time.perf_counter() - t0
    cube = open_cube(path)
    valid = cube.valid_cells[:].astype(bool)
    k = cube.grid.cell_pixels
    # complete cube: the elevation band is finite on a valid cell's first pixel (strided read)
    ok = bool(np.isfinite(cube.static[0, ::k, ::k][valid]).all())
    check = "static finite on valid cells" if ok else "INCOMPLETE CUBE"
if phase == "predict":
    import numpy as np
    import torch
    from landslide_hazard.bands import INPUT_NAMES
    from landslide_hazard.cube import open_cube
    from landslide_hazard.models import build_enn
    from landslide_hazard.predict import predict_arrays
    from landslide_hazard.predict.core import _patch_rows
    from landslide_hazard.sampling.dataset import DEFAULT_MEMORY_BUDGET_BYTES, CubeReader
    from landslide_hazard.sampling.normalisation import Normalisation
    torch.set_num_threads(1)
    cube = open_cube(out)
    g = cube.grid
    torch.manual_seed(0)
    model = build_enn("tiny", in_channels=len(INPUT_NAMES), patch_cells=g.patch_cells,
                      cell_pixels=g.cell_pixels)
    nb = len(INPUT_NAMES)
    norm = Normalisation(INPUT_NAMES, np.zeros(nb), np.ones(nb), np.zeros(nb), np.ones(nb),
                         np.ones(nb, dtype=np.int64))
    t0 = time.perf_counter()
    reader = CubeReader(cube, memory_budget_bytes=0 if scheduler else DEFAULT_MEMORY_BUDGET_BYTES)
    patches = sum(len(r) for r in _patch_rows(reader, "mean", list(range(reader.n_periods))))
    if scheduler:
        from landslide_hazard.distributed import client_for
        with client_for(scheduler) as client:
            maps = predict_arrays(model, reader, norm, client=client)
    else:
        maps = predict_arrays(model, reader, norm)
    seconds = time.perf_counter() - t0
    ok = bool(np.isfinite(maps["hazard"][:, reader.valid]).all())
    check = f"{patches} patches; " + ("hazard finite on valid cells" if ok else "NAN IN MAPS")
if phase == "read":
    seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps([seconds, rss, check]))
"""


def _child(phase: str, config: Path, out: Path, scheduler: str) -> tuple[float, float, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", _CHILD, phase, str(config), str(out), scheduler]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{done.stderr[-4000:]}")
    seconds, rss, check = json.loads(done.stdout.strip().splitlines()[-1])
    return float(seconds), float(rss), str(check)


def _scenario(size: str, workdir: Path) -> Path:
    if size == "large" and os.environ.get("LANDSLIDE_BENCH_LARGE"):
        return Path(os.environ["LANDSLIDE_BENCH_LARGE"])
    from landslide_hazard.synthetic import generate_scenario

    root = workdir / size
    generate_scenario(size, 0, root, progress=False)
    return root


def measure(size: str, workdir: Path, scheduler: str = "") -> list[dict]:
    """The rows of one size (see the module doc)."""
    from landslide_hazard.synthetic.spec import get_spec

    spec = get_spec(size)
    pixels = spec.grid.fine_shape[0] * spec.grid.fine_shape[1]
    root = _scenario(size, workdir)
    config = root / "config.yaml"
    read_s, read_rss, _ = _child("read", config, workdir / "unused", scheduler)
    out = workdir / f"{size}_cube.zarr"
    prep_s, prep_rss, check = _child("prepare", config, out, scheduler)
    pred_s, pred_rss, pred_check = _child("predict", config, out, scheduler)
    shutil.rmtree(out, ignore_errors=True)
    patches = int(pred_check.split()[0])
    where = f"dask {scheduler}" if scheduler else "in-process"
    shape = f"{spec.grid.fine_shape[0]} x {spec.grid.fine_shape[1]} px"
    return [
        row(f"{size}_read_once_s", read_s, "s", note=f"{shape}; DEM, rain, PGA rasters once"),
        row(f"{size}_read_once_rss", read_rss, "MiB"),
        row(f"{size}_prepare_s", prep_s, "s", f"{size}_read_once_s", f"{where}; {check}"),
        row(f"{size}_prepare_rss", prep_rss, "MiB", f"{size}_read_once_rss"),
        row(
            f"{size}_prepare_bytes_per_px",
            prep_rss * 2**20 / pixels,
            "B/px",
            note=f"{pixels / 1e6:.1f} Mpx fine grid",
        ),
        row(
            f"{size}_predict_s",
            pred_s,
            "s",
            f"{size}_read_once_s",
            f"{where}; tiny preset (untrained), all periods, both lattices; {pred_check}",
        ),
        row(f"{size}_predict_patches_per_s", patches / pred_s, "patches/s"),
        row(f"{size}_predict_rss", pred_rss, "MiB", f"{size}_read_once_rss"),
    ]


def run(quick: bool, sizes: list[str] | None = None, scheduler: str = "") -> list[dict]:
    """Rows for ``demo`` (quick) or ``demo`` and ``large`` (full)."""
    sizes = sizes or (["demo"] if quick else ["demo", "large"])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for size in sizes:
            rows += measure(size, Path(tmp), scheduler)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated sizes, e.g. demo,large")
    parser.add_argument("--scheduler", default="", help="'local:N' or a scheduler address")
    args = parser.parse_args()
    sizes = args.sizes.split(",") if args.sizes else None
    rows = run(args.quick, sizes, args.scheduler)
    emit(rows)


if __name__ == "__main__":
    main()
