"""Benchmark: model-input assembly, per patch in numpy against in batches on the device.

The numpy path is today's: ``predict.core.assemble_inputs`` (static window once per patch and
batch, triggers upsampled, normalised, NaN -> 0, one patch at a time) for predict, and a
``DataLoader`` over a ``PatchDataset`` with its ``StaticPatchCache`` (filled first) for training.
The device path is ``sampling.device.DeviceInputs`` (the static cube normalised once, a batch
gathered and upsampled with tensor operations on the model's device; here the CPU unless
``--device cuda``). Both build the same patches (the rows of patches ``predict_arrays`` walks,
batch 16; a training epoch's order, with and without flips / rotations), timed in alternating
rounds (best of ``rounds``), and the largest input difference between the two is in the notes.

Full setting: a random cube (``landslide_hazard.testing.make_cube``) of 16 x 16 cells, k = 32
(patches of 4 x 4 cells = 128 x 128 px), 8 periods, 13 bands (bench_predict's); ``--quick``:
8 x 8 cells, k = 16, 2 periods. One torch thread, the CLI's heap tuning.

Usage: ``python benchmarks/bench_inputs.py [--quick] [--device cuda]``, or through the harness:
``python benchmarks/run.py --only inputs [--quick]``.
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


def _differences(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """The largest |difference|, and the largest |difference| / max(1, |value|) (the
    upsampling rounds differently: a few float32 steps of values of several units)."""
    d = np.abs(got - want)
    return float(d.max()), float((d / np.maximum(1.0, np.abs(want))).max())


def _predict_variants(reader, norm, inputs, batch: int):
    """Predict's input assembly over every row of patches, both paths, and their largest
    input difference on the first batch."""
    from landslide_hazard.predict.core import _patch_rows, assemble_inputs

    rows = _patch_rows(reader, "mean", list(range(reader.n_periods)))
    chunks = [r[i : i + batch] for r in rows for i in range(0, len(r), batch)]
    arrays = [np.asarray(c, dtype=np.int64).T for c in chunks]

    def numpy_path():
        for r in rows:
            reader.hold_rows(r[0][1], reader.grid.patch_cells)
            for i in range(0, len(r), batch):
                assemble_inputs(reader, norm, r[i : i + batch])
        reader.release_rows()

    def device_path():
        for t, r0, c0 in arrays:
            inputs.inputs(t, r0, c0)

    diff = max(
        _differences(inputs.inputs(*a).cpu().numpy(), assemble_inputs(reader, norm, c))
        for a, c in zip(arrays, chunks, strict=True)
    )
    return sum(len(c) for c in chunks), numpy_path, device_path, diff


def _training_variants(reader, norm, inputs, batch: int, augment: bool):
    """One training epoch's batches (all patches), both paths, and their largest difference."""
    from landslide_hazard.sampling.dataset import (
        PatchDataset,
        StaticPatchCache,
        batches_of,
        epoch_order,
    )
    from landslide_hazard.sampling.lattice import build_patch_index

    label = reader.label_mask
    cache = StaticPatchCache(reader, norm, 1024**3)
    ds = PatchDataset(reader, build_patch_index(label, reader.grid.patch_cells), label, norm)
    ds = PatchDataset(reader, ds.patches, label, norm, cache=cache)
    cache.fill(ds.patches)
    batches = batches_of(epoch_order(len(ds), 0, 0, 0, augment=augment), batch)
    on_device = inputs.patches(ds)

    def numpy_path():
        for b in torch.utils.data.DataLoader(ds, batch_sampler=batches):
            b["x"].to(inputs.device)

    def device_path():
        for items in batches:
            on_device.batch(items)

    first = next(iter(torch.utils.data.DataLoader(ds, batch_sampler=batches[:1])))
    diff = _differences(on_device.batch(batches[0])[0].cpu().numpy(), first["x"].numpy())
    return sum(map(len, batches)), numpy_path, device_path, diff


def run(quick: bool, device: str = "cpu") -> list[dict]:
    """The rows (module doc)."""
    from landslide_hazard.malloc import tune_malloc
    from landslide_hazard.sampling.device import DeviceInputs

    tune_malloc()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    k, shape, periods, rounds = (16, (8, 8), 2, 2) if quick else (32, (16, 16), 8, 3)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    batch = 16
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_inputs_") as tmp:
            reader, norm = random_reader(tmp, shape, k, periods)
            inputs = DeviceInputs(reader, norm, dev)
            setting = (
                f"k={k}, {shape[0]}x{shape[1]} cells, {periods} periods, "
                f"{reader.n_channels} bands, b{batch}, t1"
            )
            cases = {
                "predict": _predict_variants(reader, norm, inputs, batch),
                "train": _training_variants(reader, norm, inputs, batch, False),
                "train augmented": _training_variants(reader, norm, inputs, batch, True),
            }
            for name, (patches, numpy_path, device_path, diff) in cases.items():
                best = interleaved_best({"numpy": numpy_path, "device": device_path}, rounds, sync)
                base = f"{name} inputs, numpy per patch"
                how = "assemble_inputs" if name == "predict" else "DataLoader + StaticPatchCache"
                rows.append(
                    row(base, patches / best["numpy"], "patches/s", note=f"{how}; {setting}")
                )
                rows.append(
                    row(
                        f"{name} inputs, batched on {device}",
                        patches / best["device"],
                        "patches/s",
                        ratio_to=base,
                        note=f"sampling.device.DeviceInputs; max |input diff| {diff[0]:.1e}, "
                        f"relative to max(1, |x|) {diff[1]:.1e}",
                    )
                )
    finally:
        torch.set_num_threads(threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args()
    rows = run(args.quick, args.device)
    emit(rows)
    for r in rows:
        if r["ratio_to"]:
            ref = next(x for x in rows if x["name"] == r["ratio_to"])
            print(f"ratio {r['name']} / numpy: {r['value'] / ref['value']:.2f}")


if __name__ == "__main__":
    main()
