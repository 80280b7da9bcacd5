"""Model speed: ENN inference and training throughput against the machine's GEMM FLOP/s.

Measured in one run, side by side (so the ratios survive a noisy shared machine):

- the limit: dense GEMM FLOP/s (``torch.matmul`` of square matrices, best of several; fp32 on CPU,
  bf16 on a GPU), once per thread count tried;
- inference of the main preset (``paper``) on batches of (13, 128, 128) patches, eval mode under
  ``torch.inference_mode``: NCHW vs channels_last, batch sizes, thread counts, oneDNN (mkldnn) off,
  and ``torch.compile`` (inductor, weight freezing); patches/s with the speed-up over the NCHW
  baseline, and the achieved FLOP/s as a fraction of the GEMM FLOP/s at the same thread count;
- the other presets (``tiny``, ``resnet18``) at the main preset's best eager setting;
- training samples/s (Adam, full ENN forward + backward, focal Tversky + masked MAE losses) with
  the fraction of GEMM FLOP/s;
- the peak RSS of the process.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs;
convolutions, matmuls and their backward; batch norm, activations and pooling are not counted).

``run(quick)`` is the harness entry point. As a script: ``python benchmarks/bench_models.py
[--quick]`` prints the rows; ``--profile`` prints a ``torch.profiler`` table of the main preset's
CPU inference (eager NCHW and channels_last).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_best, peak_rss_mib, row  # noqa: E402

# torch warns that oneDNN TF32 needs an Intel GPU whenever the mkldnn flags are toggled
_TF32_WARNING = "TF32 acceleration on top of oneDNN"


@dataclass(frozen=True)
class ModelBenchSettings:
    """What to measure; ``quick()``, ``full()`` and ``smoke()`` are the presets.

    main_preset: the preset whose inference is measured under every variant.
    base_batch: batch of the NCHW baseline and of the layout/thread/oneDNN/compile variants.
    batches: further batch sizes tried (channels_last, most threads).
    threads: the default intra-op thread count (None: torch's, e.g. from OMP_NUM_THREADS).
    thread_counts: further thread counts tried (CPU).
    other_presets: presets measured at the main preset's best eager setting.
    train: (preset, batch) pairs whose training step is timed.
    train_layouts: memory formats of the training steps (False = NCHW, True = channels_last).
    rounds: interleaved timing rounds (best time kept per variant).
    try_bf16: on CPU also time bf16 autocast inference (fast where the CPU has AMX or
        AVX512-BF16) against a bf16 GEMM (on a GPU, bf16 autocast is the default).
    """

    main_preset: str = "paper"
    base_batch: int = 16
    batches: tuple[int, ...] = (1, 4, 32)
    threads: int | None = None
    thread_counts: tuple[int, ...] = (1,)
    other_presets: tuple[str, ...] = ("tiny", "resnet18")
    train: tuple[tuple[str, int], ...] = (("tiny", 16), ("paper", 8))
    train_layouts: tuple[bool, ...] = (False, True)
    train_steps: int = 3
    rounds: int = 3
    gemm_size: int = 3072
    gemm_repeats: int = 4
    try_mkldnn_off: bool = True
    try_compile: bool = True
    try_bf16: bool = True
    patch_cells: int = 4
    cell_pixels: int = 32
    in_channels: int = 13
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def full(cls) -> ModelBenchSettings:
        return cls()

    @classmethod
    def quick(cls) -> ModelBenchSettings:
        return cls(
            base_batch=4,
            batches=(),
            thread_counts=(1,),  # on a busy shared machine 1 thread can beat 2 by far
            train=(("tiny", 8), ("paper", 2)),
            train_layouts=(True,),
            train_steps=2,
            rounds=3,
            gemm_size=2048,
            gemm_repeats=3,
            try_mkldnn_off=False,
            try_compile=False,
        )

    @classmethod
    def smoke(cls) -> ModelBenchSettings:
        """The smallest setting (tests): tiny preset on 2 x 2 cells of 8 px, one round and step."""
        return cls(
            main_preset="tiny",
            base_batch=2,
            batches=(1,),
            threads=1,
            thread_counts=(),
            other_presets=(),
            train=(("tiny", 2),),
            train_layouts=(False, True),
            train_steps=1,
            rounds=1,
            gemm_size=64,
            gemm_repeats=1,
            try_mkldnn_off=True,
            try_compile=False,
            patch_cells=2,
            cell_pixels=8,
            device="cpu",
        )


# --------------------------------------------------------------------------- measurement pieces


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``FlopCounterMode`` (multiply-add = 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _sync_fn(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def gemm_call(
    size: int, device: str = "cpu", dtype: torch.dtype = torch.float32, threads: int | None = None
) -> Callable[[], object]:
    """A callable multiplying two (size, size) matrices (2 size^3 FLOPs) with ``threads``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    n = threads or torch.get_num_threads()

    def call() -> object:
        with _threads(n):
            return torch.matmul(a, b)

    return call


def gemm_flops(
    size: int, repeats: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Best FLOP/s of ``torch.matmul`` of two (size, size) matrices (2 size^3 FLOPs per call)."""
    call = gemm_call(size, device, dtype)
    best = interleaved_best({"mm": call}, repeats, _sync_fn(device))["mm"]
    return 2.0 * size**3 / best


@dataclass(frozen=True)
class _Variant:
    name: str
    batch: int
    threads: int
    channels_last: bool = True
    mkldnn: bool = True
    compiled: bool = False
    autocast: bool = False


def _patches(batch: int, s: ModelBenchSettings, seed: int = 0) -> torch.Tensor:
    side = s.patch_cells * s.cell_pixels
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, s.in_channels, side, side, generator=gen)


def _build(preset: str, s: ModelBenchSettings) -> nn.Module:
    from landslide_hazard.models import build_enn

    torch.manual_seed(0)
    return build_enn(preset, s.in_channels, s.patch_cells, s.cell_pixels)


def _variant_call(
    model: nn.Module, v: _Variant, s: ModelBenchSettings, compile_seconds: dict[str, float]
) -> tuple[Callable[[], object], torch.Tensor]:
    """A no-argument callable running one batch of variant ``v``, and its input batch.

    ``model`` must already be in the variant's memory format (``Module.to`` works in place, so
    NCHW and channels_last variants need separate copies).
    """
    device = s.device
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format
    x = _patches(v.batch, s).to(device).contiguous(memory_format=fmt)
    m = model
    if v.compiled:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled = torch.compile(m)
            t0 = time.perf_counter()
            with _threads(v.threads):
                compiled(x)
            compile_seconds[v.name] = time.perf_counter() - t0
        m = compiled

    def call() -> object:
        with (
            torch.inference_mode(),
            _threads(v.threads),
            torch.backends.mkldnn.flags(enabled=v.mkldnn),
            torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=v.autocast),
        ):
            return m(x)

    return call, x


def _max_abs_diff(out: object, ref: object) -> float:
    """Largest |difference| over the ENNOutput fields, on the first patch (the reference's)."""
    return max(
        float((p[:1].float() - q.float()).abs().max()) for p, q in zip(out, ref, strict=True)
    )


def _fmt_threads(v: _Variant) -> str:
    return f"t{v.threads}"


def _variant_label(preset: str, v: _Variant, gpu: bool) -> str:
    parts = [preset, "infer", "cl" if v.channels_last else "nchw", f"b{v.batch}"]
    if not gpu:
        parts.append(_fmt_threads(v))
    if v.autocast:
        parts.append("bf16")
    if not v.mkldnn:
        parts.append("no-onednn")
    if v.compiled:
        parts.append("compiled")
    return " ".join(parts)


def _inference_variants(s: ModelBenchSettings, max_threads: int) -> list[_Variant]:
    gpu = s.device.startswith("cuda")
    t = max_threads
    b = s.base_batch
    variants = [_Variant("", b, t, channels_last=False)]  # the baseline, first
    variants.append(_Variant("", b, t, channels_last=True, autocast=gpu))
    for bb in s.batches:
        if bb != b:
            variants.append(_Variant("", bb, t, channels_last=True, autocast=gpu))
    if not gpu:
        for tt in sorted({t, *s.thread_counts}, reverse=True):
            if tt != t:
                variants.append(_Variant("", b, tt, channels_last=True))
            if s.try_bf16:
                variants.append(_Variant("", b, tt, channels_last=True, autocast=True))
        if s.try_mkldnn_off:
            variants.append(_Variant("", b, t, channels_last=False, mkldnn=False))
    if s.try_compile:
        variants.append(_Variant("", b, t, channels_last=True, compiled=True, autocast=gpu))
    return [replace(v, name=_variant_label(s.main_preset, v, gpu)) for v in variants]


# --------------------------------------------------------------------------- the benchmark


def run_settings(s: ModelBenchSettings, log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Measure everything ``s`` asks for; returns the result rows (see ``_common.row``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TF32_WARNING)
        return _measure(s, log)


def _measure(s: ModelBenchSettings, log: Callable[[str], None]) -> list[dict]:
    gpu = s.device.startswith("cuda")
    sync = _sync_fn(s.device)
    max_threads = s.threads or torch.get_num_threads()  # the default for every variant
    thread_counts = sorted({max_threads, *s.thread_counts}) if not gpu else [max_threads]
    rows: list[dict[str, Any]] = []

    # the limit: GEMM FLOP/s, fp32 and bf16 per thread count. The GEMMs are timed first
    # (gemm_repeats times) and then again inside every interleaved timing phase below, so a slow
    # spell of a shared machine cannot make the limit look low; the best time over the run counts.
    gemm_name: dict[tuple[int, bool], str] = {}  # (threads, bf16) -> row name
    gemm_calls: dict[str, Callable[[], object]] = {}
    for t in thread_counts:
        for bf16 in (False, True) if gpu or s.try_bf16 else (False,):
            dtype = torch.bfloat16 if bf16 else torch.float32
            name = f"gemm {str(dtype).removeprefix('torch.')} n={s.gemm_size}"
            name += "" if gpu else f" t{t}"
            gemm_name[t, bf16] = name
            gemm_calls[name] = gemm_call(s.gemm_size, s.device, dtype, t)
    log(f"timing {len(gemm_calls)} GEMMs")
    gemm_best = interleaved_best(gemm_calls, s.gemm_repeats, sync)
    gemm_timings = {name: s.gemm_repeats for name in gemm_calls}

    def timed(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1):
        """interleaved_best of ``variants`` with the GEMMs in the same rounds."""
        best = interleaved_best({**variants, **gemm_calls}, rounds, sync, warmup=warmup)
        for name in gemm_calls:
            gemm_best[name] = min(gemm_best[name], best.pop(name))
            gemm_timings[name] += rounds
        return best

    # inference of the main preset, all variants timed in interleaved rounds
    preset = s.main_preset
    model = _build(preset, s).to(s.device).eval()
    one = _patches(1, s).to(s.device)
    with torch.inference_mode():
        flops_per_patch = count_flops(functools.partial(model, one))
    rows.append(
        row(
            f"{preset} FLOP/patch",
            flops_per_patch,
            "FLOP",
            note="FlopCounterMode, ENN forward (susceptibility + density)",
        )
    )
    variants = _inference_variants(s, max_threads)
    compile_seconds: dict[str, float] = {}
    calls: dict[str, Callable[[], object]] = {}
    notes: dict[str, str] = {}
    by_format = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    for v in variants:
        log(f"preparing {v.name}")
        m = by_format[v.channels_last] if not v.compiled else copy.deepcopy(by_format[True])
        try:
            call, x = _variant_call(m, v, s, compile_seconds)
            out = call()
        except Exception as exc:  # a variant that does not run here is reported, not fatal
            notes[v.name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        with torch.inference_mode():  # eager NCHW fp32 on the batch's first patch
            reference = model(x[:1].contiguous())
        notes[v.name] = f"max abs diff vs eager NCHW {_max_abs_diff(out, reference):.1e}"
        calls[v.name] = call
    log(f"timing {len(calls)} inference variants, {s.rounds} rounds")
    best = timed(calls, s.rounds, warmup=0)  # each variant was run once above
    baseline = variants[0].name
    rate: dict[str, float] = {}
    for v in variants:
        if v.name in best:
            rate[v.name] = v.batch / best[v.name]
        rows.append(
            row(
                v.name,
                rate.get(v.name),
                "patches/s",
                ratio_to=baseline if v.name != baseline and baseline in best else None,
                note=notes.get(v.name, ""),
            )
        )
    for name, seconds in compile_seconds.items():
        rows.append(row(f"{name}: compile time", seconds, "s", note="first call, inductor"))

    # achieved FLOP/s of the best eager variant per dtype and of the compiled one, against the
    # GEMM of the same dtype and thread count
    by_name = {v.name: v for v in variants}
    picks: list[tuple[str, str]] = []
    for bf16 in (False, True):
        eager = [n for n in rate if not by_name[n].compiled and by_name[n].autocast == bf16]
        if eager:
            label = f"best eager {'bf16' if bf16 else 'fp32'}"
            picks.append((label, max(eager, key=rate.__getitem__)))
    picks += [("compiled", n) for n in rate if by_name[n].compiled]
    for label, name in picks:
        v = by_name[name]
        rows.append(
            row(
                f"{preset} infer FLOP/s ({label})",
                rate[name] * flops_per_patch,
                "FLOP/s",
                ratio_to=gemm_name[v.threads, v.autocast],
                note=f"{name}; ratio = fraction of GEMM FLOP/s (goal >= 0.5)",
            )
        )
    # the other presets run at the best eager setting of the default dtype (bf16 on a GPU)
    default = [n for n in rate if not by_name[n].compiled and by_name[n].autocast == gpu]
    best_eager = by_name[max(default, key=rate.__getitem__)] if default else variants[1]
    del model, by_format, calls

    # other presets at the main preset's best eager setting
    others: dict[str, Callable[[], object]] = {}
    other_flops: dict[str, int] = {}
    other_variant = best_eager
    other_fmt = torch.channels_last if other_variant.channels_last else torch.contiguous_format
    for other in s.other_presets:
        m = _build(other, s).to(s.device).eval().to(memory_format=other_fmt)
        with torch.inference_mode():
            other_flops[other] = count_flops(lambda m=m: m(one))
        name = _variant_label(other, other_variant, gpu)
        others[name] = _variant_call(m, other_variant, s, compile_seconds)[0]
    if others:
        log(f"timing {len(others)} other presets")
        best_other = timed(others, s.rounds)
        for (name, seconds), other in zip(best_other.items(), s.other_presets, strict=True):
            value = other_variant.batch / seconds
            rows.append(row(name, value, "patches/s", note="main preset's best eager setting"))
            rows.append(
                row(
                    f"{other} infer FLOP/s",
                    value * other_flops[other],
                    "FLOP/s",
                    ratio_to=gemm_name[other_variant.threads, other_variant.autocast],
                    note=f"{other_flops[other] / 1e9:.3f} GFLOP/patch; ratio = fraction of GEMM",
                )
            )

    # training: Adam steps of the whole ENN, forward + backward, NCHW and/or channels_last
    steps: dict[str, Callable[[], object]] = {}
    train_info: dict[str, tuple[int, int, str | None, bool, int]] = {}
    for preset_t, batch in s.train:
        for t in sorted(thread_counts, reverse=True):
            base = f"{preset_t} train b{batch}" + ("" if gpu else f" t{t}")
            for channels_last in s.train_layouts:
                name = base + (" cl" if channels_last else " nchw")
                ref = base + " nchw" if channels_last and False in s.train_layouts else None
                step = _train_step(preset_t, batch, s, channels_last, t)
                flops = count_flops(step)  # also the warm-up step
                train_info[name] = (flops, batch, ref, channels_last, t)
                steps[name] = step
    if steps:
        log(f"timing {len(steps)} training steps, {s.train_steps} rounds")
        best_step = timed(steps, s.train_steps, warmup=0)
        for name, seconds in best_step.items():
            flops, batch, ref, channels_last, t = train_info[name]
            layout = "channels_last" if channels_last else "NCHW"
            rows.append(
                row(
                    name,
                    batch / seconds,
                    "samples/s",
                    ratio_to=ref,
                    note=f"Adam, ENN forward+backward, {layout}"
                    + (", bf16 autocast" if gpu else ""),
                )
            )
            rows.append(
                row(
                    f"{name} FLOP/s",
                    flops / seconds,
                    "FLOP/s",
                    ratio_to=gemm_name[t, gpu],
                    note=f"{flops / batch / 1e9:.3g} GFLOP/sample fwd+bwd; ratio = fraction of GEMM",
                )
            )

    gemm_rows = [
        row(
            name,
            2.0 * s.gemm_size**3 / gemm_best[name],
            "FLOP/s",
            note=f"the limit: best of {gemm_timings[name]} timings spread over the run",
        )
        for name in gemm_calls
    ]
    rows[:0] = gemm_rows
    rows.append(row("peak RSS", peak_rss_mib(), "MiB", note="resource.getrusage, this process"))
    if gpu:
        rows.append(
            row("peak GPU memory", torch.cuda.max_memory_allocated() / 2**20, "MiB", note="")
        )
    return rows


def _train_step(
    preset: str,
    batch: int,
    s: ModelBenchSettings,
    channels_last: bool = False,
    threads: int | None = None,
) -> Callable[[], object]:
    """One Adam step of the whole ENN on random patches and targets (a closure)."""
    from landslide_hazard.training.losses import focal_tversky_loss, masked_mae

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = _build(preset, s).to(s.device).train().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    x = _patches(batch, s, seed=1).to(s.device).contiguous(memory_format=fmt)
    cells = (batch, s.patch_cells, s.patch_cells)
    occurrence = (torch.rand(cells, generator=gen) < 0.3).float().to(s.device)
    density = (torch.rand(cells, generator=gen) * 10.0).to(s.device)
    gpu = s.device.startswith("cuda")

    n_threads = threads or torch.get_num_threads()

    def step() -> object:
        with _threads(n_threads):  # forward, backward and the optimizer step
            opt.zero_grad(set_to_none=True)
            with torch.autocast(s.device.split(":")[0], dtype=torch.bfloat16, enabled=gpu):
                out = model(x)
                loss = focal_tversky_loss(out.susceptibility.float(), occurrence) + masked_mae(
                    out.density.float(), density, mask=occurrence > 0
                )
            loss.backward()
            opt.step()
        return loss

    return step


def run(quick: bool) -> list[dict]:
    """Harness entry point: the quick (about a minute on 2 cores) or full setting."""
    s = ModelBenchSettings.quick() if quick else ModelBenchSettings.full()
    return run_settings(s, log=lambda msg: print(f"[models] {msg}", file=sys.stderr, flush=True))


# --------------------------------------------------------------------------- profiling


def profile_inference(preset: str = "paper", batch: int = 16, row_limit: int = 12) -> str:
    """``torch.profiler`` tables (self CPU time per op) of eager NCHW and channels_last inference."""
    from torch.profiler import ProfilerActivity, profile

    s = ModelBenchSettings(main_preset=preset, device="cpu")
    tables = []
    for channels_last in (False, True):
        model = _build(preset, s).eval()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        x = _patches(batch, s).contiguous(memory_format=fmt)
        with torch.inference_mode():
            model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(x)
        title = f"{preset} b{batch} {'channels_last' if channels_last else 'NCHW'}, "
        title += f"{torch.get_num_threads()} threads"
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)
        tables.append(f"{title}\n{table}")
    return "\n".join(tables)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (~1 min)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table")
    parser.add_argument("--batch", type=int, default=16, help="batch for --profile")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_inference(batch=args.batch))
        return 0
    rows = run(args.quick)
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        print(f"{r['name']:<45} {value:>12} {r['unit']:<10} {r['note']}")
    out = os.environ.get("LANDSLIDE_BENCH_JSON")
    if out:
        Path(out).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
