"""Benchmark: ``predict --mc-samples N``, each batch's inputs built once vs once per pass (CPU).

Before, ``predict`` ran ``predict_arrays`` for the maps and then ``mc_dropout_maps`` over
``predict_arrays`` for the uncertainty map (``predict.stage.mc_uncertainty``): every patch's
inputs (static windows read and normalised, triggers upsampled, ...) were built 1 + N times.
``predict_with_mc_dropout`` (``predict.mc``) builds each batch once and runs the model 1 + N
times on it. Both routes run here as ``predict`` runs them in this process: the maps with
``default_input_threads`` input threads, the old route's MC passes without, batch 16, one torch
thread, channels-last, the heap tuning of the CLI. Same random cube
(``landslide_hazard.testing.make_cube``, at the demo's 16-px cells), same model (the ``tiny``
preset with dropout 0.3, untrained: the speed does not depend on the weights), timed in
alternating rounds (best of ``rounds``, ``_common.interleaved_best``).

Rows: the maps alone (``predict_arrays``), both routes with N passes in patch-periods of the
maps per second, and their ratio; the new route's note says whether its maps equal
``predict_arrays``' bit for bit, and how its mean std compares with the old route's (different
masks: equal within Monte-Carlo error, not bit for bit).

Usage: ``python benchmarks/bench_mc.py [--quick]``, or ``python benchmarks/run.py --only mc``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, interleaved_best, random_reader, row  # noqa: E402


def run(quick: bool, n_samples: int | None = None, cells: tuple[int, int] | None = None) -> list:
    """The rows (module doc); quick: 8 x 8 cells, 2 periods, 4 passes, best of 2; else
    24 x 24 cells, 8 periods, 8 passes (the demo's), best of 2."""
    from landslide_hazard.bands import INPUT_NAMES
    from landslide_hazard.malloc import tune_malloc
    from landslide_hazard.models import build_enn
    from landslide_hazard.predict import (
        Inference,
        MCPasses,
        default_input_threads,
        predict_arrays,
        predict_with_mc_dropout,
    )
    from landslide_hazard.predict.core import _patch_rows
    from landslide_hazard.predict.uncertainty import mc_dropout_maps

    tune_malloc()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    k, shape, periods, passes, rounds = (16, (8, 8), 2, 4, 2) if quick else (16, (24, 24), 8, 8, 2)
    shape, passes = cells or shape, n_samples or passes
    cpu = torch.device("cpu")
    maps_inference = Inference(batch_size=16, input_threads=default_input_threads(cpu))
    pass_inference = Inference(batch_size=16)  # mc_uncertainty's: Inference.of_run
    try:
        with tempfile.TemporaryDirectory(prefix="bench_mc_") as tmp:
            reader, norm = random_reader(tmp, shape, k, periods)
            patches = sum(len(r) for r in _patch_rows(reader, "mean", list(range(periods))))
            torch.manual_seed(0)
            model = build_enn(
                "tiny", in_channels=len(INPUT_NAMES), patch_cells=4, cell_pixels=k, dropout=0.3
            )
            got: dict[str, tuple] = {}

            def maps_only():
                got["maps"] = (predict_arrays(model, reader, norm, inference=maps_inference),)

            def per_pass():
                maps = predict_arrays(model, reader, norm, inference=maps_inference)
                stats = mc_dropout_maps(
                    model,
                    lambda m: predict_arrays(m, reader, norm, inference=pass_inference),
                    passes,
                    seed=0,
                )
                got["per pass"] = (maps, stats)

            def shared():
                got["shared"] = predict_with_mc_dropout(
                    model, reader, norm, MCPasses(passes), inference=maps_inference
                )

            best = interleaved_best(
                {"maps": maps_only, "per pass": per_pass, "shared": shared}, rounds
            )
    finally:
        torch.set_num_threads(threads)
    (old_maps, old), (new_maps, new) = got["per pass"], got["shared"]
    same = all(np.array_equal(new_maps[q], old_maps[q], equal_nan=True) for q in old_maps)
    std_ratio = np.nanmean(new.std["susceptibility"]) / np.nanmean(old.std["susceptibility"])
    setting = (
        f"tiny (dropout 0.3), k={k}, {shape[0]}x{shape[1]} cells, {periods} periods, "
        f"{patches} patch-periods per pass, b16, cpu t1, {maps_inference.input_threads} input "
        "thread(s) for the maps"
    )
    before = f"predict + {passes} MC passes, per pass"
    after = f"predict + {passes} MC passes, shared inputs"
    return [
        row("predict, maps only", patches / best["maps"], "patches/s", note=setting),
        row(
            before,
            patches / best["per pass"],
            "patches/s",
            ratio_to="predict, maps only",
            note=f"before: predict_arrays, then mc_dropout_maps over predict_arrays; inputs "
            f"built {1 + passes} times",
        ),
        row(
            after,
            patches / best["shared"],
            "patches/s",
            ratio_to=before,
            note="predict_with_mc_dropout: inputs built once, the ENN run once and its "
            f"susceptibility block {passes} times per batch; maps "
            + ("identical to predict_arrays" if same else "DIFFER FROM predict_arrays")
            + f"; mean susceptibility std {std_ratio:.3f}x the per-pass route's (other masks)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--passes", type=int, default=None, help="MC-dropout passes")
    parser.add_argument("--cells", default=None, help="cell grid ROWSxCOLS, e.g. 48x48")
    args = parser.parse_args()
    cells = tuple(int(v) for v in args.cells.lower().split("x")) if args.cells else None
    emit(run(args.quick, args.passes, cells))


if __name__ == "__main__":
    main()
