"""Benchmark: wall-to-wall ``predict_arrays`` in channels-last against NCHW layout (CPU).

One random cube (``landslide_hazard.testing.make_cube``) at the paper's cell size in pixels
(k = 32, patches of 4 x 4 cells = 128 x 128 px; ``--quick``: k = 16), every period and both
lattices, the ``tiny`` preset (untrained weights: speed does not depend on them) at batch 16 and
one torch thread, with the heap tuning the CLI applies (``landslide_hazard.malloc``). The two
layouts are timed in alternating rounds (best of ``rounds``), so a
noisy phase of the shared machine hits both; the rows give patches/s and the speed-up of
channels-last over NCHW, plus the largest difference between the two maps (the same model, so
it should be rounding only).

This is the before/after of making channels-last predict's default on every device (it had
been GPU-only). A third variant builds the next batches' inputs in one extra thread
(``predict_arrays(input_threads=1)``) while the model runs; a fourth runs the model under
bf16 autocast (``predict --bf16``; fast on CPUs with AMX or AVX512-BF16).

Second pair, each in fresh processes (the setting is process-wide), alternating, best of
``rounds``: the same channels-last prediction with glibc's default heap thresholds
(``LANDSLIDE_HAZARD_NO_MALLOC_TUNING=1``) and with ``landslide_hazard.malloc.tune_malloc``
(what the CLI, ``predict`` and ``train`` do): wall time and its system-time share.

Usage: ``python benchmarks/bench_predict.py [--quick]``, or through the harness:
``python benchmarks/run.py --only predict [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, interleaved_best, random_reader, row  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
import torch
from landslide_hazard.malloc import tune_malloc
print("tuned", tune_malloc(), file=sys.stderr)
torch.set_num_threads(1)
from landslide_hazard.models import build_enn
from landslide_hazard.predict import Inference, predict_arrays
from landslide_hazard.sampling.dataset import CubeReader
from landslide_hazard.sampling.normalisation import compute_normalisation
from landslide_hazard.cube import open_cube
cube = open_cube(sys.argv[1])
g = cube.grid
reader = CubeReader(cube)
norm = compute_normalisation(reader.static, reader.dynamic, reader.monsoons, reader.label_mask,
                             g.cell_pixels)
torch.manual_seed(0)
model = build_enn(sys.argv[2], in_channels=13, patch_cells=g.patch_cells,
                  cell_pixels=g.cell_pixels)
predict_arrays(model, reader, norm, periods=[0])  # warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
predict_arrays(model, reader, norm, inference=Inference(batch_size=int(sys.argv[3])))
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
print(json.dumps([t1 - t0, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt]))
"""


def _child(cube: Path, tuned: bool, preset: str, batch: int) -> tuple[float, float, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LANDSLIDE_HAZARD_NO_MALLOC_TUNING", None)
    if not tuned:
        env["LANDSLIDE_HAZARD_NO_MALLOC_TUNING"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cube), preset, str(batch)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"predict child failed:\n{done.stderr[-3000:]}")
    wall, system, faults = json.loads(done.stdout.strip().splitlines()[-1])
    return float(wall), float(system), int(faults)


def _numpy_patch_input(reader, norm, t: int, r0: int, c0: int, static, out) -> np.ndarray:
    """``CubeReader.patch_input`` as it was before ``sampling.kernels``: the dynamic bands
    upsampled (``CubeReader.dynamic_window``), normalised and NaN-zeroed in separate passes."""
    n = reader.grid.patch_cells
    dyn, mon = reader._dynamic_slice, reader._monsoon_slice
    out[: dyn.start] = static
    out[dyn] = norm.scale(reader.dynamic_window(t, r0, c0, n, n), dyn)
    out[mon] = norm.scale(np.array([reader.monsoons[t]], dtype=np.float32), mon)[0]
    rest = out[dyn.start :]
    np.copyto(rest, np.float32(0.0), where=~np.isfinite(rest))
    return out


def _numpy_reader(reader):
    """A shallow copy of ``reader`` whose ``patch_input`` is the numpy route, so that
    ``predict.core.assemble_inputs`` builds the same batches the old way."""
    numpy_reader = copy.copy(reader)
    numpy_reader.patch_input = functools.partial(_numpy_patch_input, reader)
    return numpy_reader


def run(
    quick: bool,
    device: str = "cpu",
    preset: str = "tiny",
    cells: tuple[int, int] | None = None,
    batch: int = 16,
) -> list[dict]:
    """The rows (module doc). ``device`` / ``preset`` / ``cells`` / ``batch`` are for a GPU
    session: e.g. ``--device cuda --preset paper --cells 196x220 --batch 64`` times the
    Gorkha-size grid (43,960 patch-periods) and the writing of its maps; on CUDA the bf16 row
    uses autocast (``training.amp``), the heap rows (CPU only) are left out and the input
    threads default to :func:`landslide_hazard.predict.default_input_threads`."""
    from landslide_hazard.bands import INPUT_NAMES
    from landslide_hazard.malloc import tune_malloc
    from landslide_hazard.models import build_enn
    from landslide_hazard.predict import (
        ExtraLayers,
        Inference,
        default_input_threads,
        predict_arrays,
        write_maps,
    )
    from landslide_hazard.predict.core import _patch_rows, assemble_inputs

    tune_malloc()  # in-process rows run with the heap settings the CLI uses
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    k, shape, periods, rounds = (16, (8, 8), 2, 2) if quick else (32, (16, 16), 8, 3)
    shape = cells or shape
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    prefetch_threads = default_input_threads(dev) if gpu else 1
    try:
        with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
            reader, norm = random_reader(tmp, shape, k, periods)
            patches = sum(len(r) for r in _patch_rows(reader, "mean", list(range(periods))))
            torch.manual_seed(0)
            models = {
                layout: build_enn(
                    preset, in_channels=len(INPUT_NAMES), patch_cells=4, cell_pixels=k
                ).to(dev)
                for layout in ("nchw", "channels_last")
            }
            models["channels_last"].load_state_dict(models["nchw"].state_dict())
            maps: dict[str, dict[str, np.ndarray]] = {}

            def call(layout: str, threads: int = 0, bf16: bool = False):
                def go():
                    maps[f"{layout}{threads}{'bf16' if bf16 else ''}"] = predict_arrays(
                        models[layout],
                        reader,
                        norm,
                        inference=Inference(
                            batch_size=batch,
                            device=dev,
                            channels_last=layout == "channels_last",
                            input_threads=threads,
                            amp=bf16 and gpu,
                            cpu_bf16=bf16 and not gpu,
                        ),
                    )

                return go

            variants = {lay: call(lay) for lay in models}
            variants["prefetch"] = call("channels_last", prefetch_threads)
            variants["bf16"] = call("channels_last", 0, bf16=True)
            best = interleaved_best(variants, rounds)
            rows_of_patches = _patch_rows(reader, "mean", list(range(periods)))
            numpy_reader = _numpy_reader(reader)

            def inputs_only(how: str):
                def go():
                    for r in rows_of_patches:
                        reader.hold_rows(r[0][1], 4)
                        for i in range(0, len(r), batch):
                            chunk = r[i : i + batch]
                            if how == "per patch":  # predict's: the static part once per patch
                                assemble_inputs(reader, norm, chunk)
                            elif how == "numpy":  # the same, the dynamic part in numpy
                                assemble_inputs(numpy_reader, norm, chunk)
                            else:  # before: static sliced and normalised for every period
                                np.stack([reader.patch_input(norm, *p) for p in chunk])
                    reader.release_rows()

                return go

            # the ceiling of any assembly on this machine: one thread only copying the same
            # bytes (every patch's bands, float32) from ready arrays into a batch buffer; four
            # batches of sources rotate so that they do not all sit in the cache
            side = reader.grid.patch_cells * k
            sources = np.random.default_rng(0).random(
                (4, batch, reader.n_channels, side, side), dtype=np.float32
            )
            dest = np.empty_like(sources[0])

            def copy_only():
                for i in range(-(-patches // batch)):
                    np.copyto(dest, sources[i % len(sources)])

            timed = interleaved_best(
                {
                    "per patch": inputs_only("per patch"),
                    "numpy": inputs_only("numpy"),
                    "per period": inputs_only("per period"),
                    "copy": copy_only,
                },
                rounds,
            )
            assembly, assembly_old = timed["per patch"], timed["per period"]
            chunk0 = rows_of_patches[0][:batch]
            same_inputs = np.array_equal(
                assemble_inputs(reader, norm, chunk0),
                np.stack([reader.patch_input(norm, *p) for p in chunk0]),
            )
            numpy_diff = max(
                float(
                    np.abs(
                        assemble_inputs(reader, norm, c) - assemble_inputs(numpy_reader, norm, c)
                    ).max()
                )
                for r in rows_of_patches
                for c in (r[:batch], r[-batch:])
            )
            out_maps = Path(tmp) / "maps"
            write_s = interleaved_best(
                {
                    "write": lambda: write_maps(
                        out_maps,
                        maps["channels_last0"],
                        reader.cube.grid,
                        reader.cube.meta.periods,
                        [0.01, 0.1, 1.0],
                        ExtraLayers(observed=reader.target),
                    )
                },
                1,
                warmup=0,
            )["write"]
            heap: dict[bool, tuple[float, float, int]] = {}
            for _ in range(0 if gpu else 1 if quick else rounds):
                for tuned in (False, True):
                    got = _child(Path(tmp) / "cube.zarr", tuned, preset, batch)
                    if tuned not in heap or got[0] < heap[tuned][0]:
                        heap[tuned] = got
    finally:
        torch.set_num_threads(threads)
    diff = float(np.nanmax(np.abs(maps["channels_last0"]["hazard"] - maps["nchw0"]["hazard"])))
    bf16_diff = float(
        np.nanmax(
            np.abs(
                maps["channels_last0bf16"]["susceptibility"]
                - maps["channels_last0"]["susceptibility"]
            )
        )
    )
    same = all(
        np.array_equal(maps["channels_last1"][q], maps["channels_last0"][q], equal_nan=True)
        for q in maps["channels_last0"]
    )
    # the kernel's float32 rounding differs from numpy's by a few units in the last place of
    # normalised values of order 10 (tests/sampling/test_kernels.py)
    inputs_agree = same_inputs and numpy_diff <= 1e-5
    setting = (
        f"{preset}, k={k}, {shape[0]}x{shape[1]} cells, {periods} periods, {patches} patches, "
        f"b{batch}, {device}" + ("" if gpu else " t1")
    )
    rows = [
        row("predict nchw", patches / best["nchw"], "patches/s", note=setting),
        row(
            "predict channels_last",
            patches / best["channels_last"],
            "patches/s",
            ratio_to="predict nchw",
            note=f"max |hazard diff| vs NCHW {diff:.1e} %",
        ),
        row(
            "predict channels_last bf16",
            patches / best["bf16"],
            "patches/s",
            ratio_to="predict channels_last",
            note=("autocast" if gpu else "cpu_bf16 autocast")
            + f"; max |susceptibility diff| vs fp32 {bf16_diff:.1e}",
        ),
        row(
            "input assembly, static per period",
            patches / assembly_old,
            "patches/s",
            note="before: each period of a patch sliced and normalised its static bands again",
        ),
        row(
            "input assembly, dynamic bands in numpy",
            patches / timed["numpy"],
            "patches/s",
            ratio_to="input assembly, static per period",
            note="before the compiled kernel: upsampling as matrix products, then normalisation "
            "and the NaN pass as separate numpy passes",
        ),
        row(
            "input assembly alone",
            patches / assembly if inputs_agree else None,
            "patches/s",
            ratio_to="input assembly, dynamic bands in numpy",
            note="static window (once per patch and batch) + the compiled upsampling and "
            "normalisation (sampling.kernels), one thread: the rate a GPU-bound predict needs "
            f"its input threads to reach; inputs identical to the per-period path: {same_inputs}; "
            f"max |diff| vs numpy {numpy_diff:.1e}"
            + ("" if inputs_agree else " (FAILED: the inputs differ, so the rate is not given)"),
        ),
        row(
            "copying the patches' bytes only",
            patches / timed["copy"],
            "patches/s",
            ratio_to="input assembly alone",
            note="the same float32 bytes per patch copied from ready arrays into a batch, one "
            "thread: a memory-bandwidth ceiling no assembly at one thread can pass",
        ),
        row(
            "write maps",
            write_s,
            "s",
            note="COGs (5 quantities x periods) + the per-cell GPKG, once",
        ),
        row(
            f"predict channels_last + {prefetch_threads} input thread(s)",
            patches / best["prefetch"],
            "patches/s",
            ratio_to="predict channels_last",
            note="next batches built in a thread while the model runs; "
            + ("maps identical" if same else "MAPS DIFFER"),
        ),
    ]
    for tuned, label in ((False, "glibc default heap"), (True, "tuned heap")):
        if tuned not in heap:
            continue
        wall, system, faults = heap[tuned]
        rows.append(
            row(
                f"predict channels_last {label}",
                patches / wall,
                "patches/s",
                ratio_to=None if not tuned else "predict channels_last glibc default heap",
                note=f"fresh process; system time {100 * system / wall:.0f} % of wall, "
                f"{faults:,} minor page faults",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--preset", default="tiny", help="tiny, paper, resnet18, resnet34")
    parser.add_argument("--cells", default=None, help="cell grid ROWSxCOLS, e.g. 196x220")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    cells = tuple(int(v) for v in args.cells.lower().split("x")) if args.cells else None
    rows = run(args.quick, args.device, args.preset, cells, args.batch)
    emit(rows)


if __name__ == "__main__":
    main()
