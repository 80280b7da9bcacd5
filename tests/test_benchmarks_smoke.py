"""Smoke tests of the benchmark harness and the model benchmark (never asserts on speed)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"_smoke_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, oversubscribed machine two threads of tiny ops can be
    hundreds of times slower (each OpenMP barrier waits for a descheduled thread)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def harness():
    return _load("run")


@pytest.fixture(scope="module")
def common():
    return _load("_common")


@pytest.fixture(scope="module")
def bench_models():
    return _load("bench_models")


def test_flop_counter_counts_two_flops_per_multiply_add(bench_models):
    import torch

    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64)
    assert bench_models.count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32


def test_gemm_flops_is_positive(bench_models):
    value = bench_models.gemm_flops(32, 1)
    assert math.isfinite(value) and value > 0


def test_model_benchmark_smallest_setting_gives_well_formed_rows(bench_models, common):
    settings = bench_models.ModelBenchSettings.smoke()
    rows = common.validate_rows(bench_models.run_settings(settings), "bench_models")
    names = {r["name"] for r in rows}
    assert {"gemm float32 n=64 t1", "tiny FLOP/patch", "tiny infer nchw b2 t1"} <= names
    assert {"tiny infer cl b2 t1", "tiny train b2 t1 nchw", "tiny train b2 t1 cl"} <= names
    assert {"tiny infer cl b2 t1 bf16", "tiny infer cl b1 t1", "peak RSS"} <= names
    for r in rows:
        assert r["value"] is not None and r["value"] > 0, r
    by_name = {r["name"]: r for r in rows}
    assert "gemm bfloat16 n=64 t1" in names
    # every inference variant computes the same ENN output as eager NCHW fp32 (bf16: to ~1e-2)
    for r in rows:
        if " infer " in r["name"] and r["unit"] == "patches/s":
            diff = float(r["note"].rsplit(" ", 1)[1])
            assert diff < (0.1 if r["name"].endswith("bf16") else 1e-4), r
    # the ENN row counts both blocks: susceptibility + density, each counted on its own
    import torch

    from landslide_hazard.models import build_enn

    enn = build_enn("tiny", 13, settings.patch_cells, settings.cell_pixels).eval()
    x = torch.randn(1, 13, 16, 16)
    with torch.inference_mode():
        parts = bench_models.count_flops(lambda: enn.susceptibility(x))
        parts += bench_models.count_flops(lambda: enn.density(x))
    assert by_name["tiny FLOP/patch"]["value"] == parts > 0


def test_flop_counter_on_a_convolution_matches_a_hand_count(bench_models):
    import torch

    conv = torch.nn.Conv2d(13, 16, 3, padding=1)
    x = torch.randn(2, 13, 16, 16)
    assert bench_models.count_flops(lambda: conv(x)) == 2 * 2 * 16 * 13 * 9 * 16 * 16


def test_validate_rows_rejects_bad_rows(common):
    good = [common.row("a", 1.0, "s"), common.row("b", 2.0, "s", ratio_to="a")]
    assert len(common.validate_rows(good)) == 2
    with pytest.raises(ValueError, match="keys"):
        common.validate_rows([{"name": "a", "value": 1.0}])
    with pytest.raises(ValueError, match="duplicate"):
        common.validate_rows([common.row("a", 1.0, "s"), common.row("a", 2.0, "s")])
    with pytest.raises(ValueError, match="ratio_to"):
        common.validate_rows([common.row("a", 1.0, "s", ratio_to="zzz")])
    with pytest.raises(ValueError, match="list"):
        common.validate_rows({"name": "a"})
    assert common.validate_rows([common.row("a", float("nan"), "s")])[0]["value"] is None


def test_add_ratios_divides_by_the_reference_row(common):
    rows = common.add_ratios(
        [
            common.row("base", 4.0, "patches/s"),
            common.row("fast", 6.0, "patches/s", ratio_to="base"),
            common.row("gone", None, "patches/s", ratio_to="base", note="failed"),
        ]
    )
    assert [r["ratio"] for r in rows] == [None, 1.5, None]


def test_interleaved_best_keeps_each_variants_minimum(common):
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    best = common.interleaved_best({"a": make("a"), "b": make("b")}, rounds=3, warmup=2)
    assert calls == {"a": 5, "b": 5}
    assert set(best) == {"a", "b"} and all(0 <= t < 1 for t in best.values())


def test_discover_and_protocol_detection(harness):
    assert harness.has_run_function("def run(quick: bool) -> list:\n    return []\n")
    assert not harness.has_run_function("def main():\n    pass\n")
    assert not harness.has_run_function("def run(size):\n    pass\n")
    specs = {s.name: s for s in harness.discover()}
    assert specs["models"].protocol
    with pytest.raises(SystemExit, match="no such benchmark"):
        harness.discover(only=["no-such-bench"])


def test_parse_rows_from_stdout_takes_the_last_json_list(harness):
    text = "progress\n[1, 2]\n" + json.dumps([{"name": "x"}]) + "\ndone\n"
    assert harness.parse_rows_from_stdout(text) == [{"name": "x"}]
    assert harness.parse_rows_from_stdout("no json here\n") is None


def _write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def test_run_benchmark_protocol_script_and_legacy_modes(harness, tmp_path):
    proto = _write(
        tmp_path / "bench_proto.py",
        """
        from _common import row

        def run(quick: bool) -> list:
            return [row("base", 2.0, "s"), row("other", 3.0, "s", ratio_to="base",
                    note=f"quick={quick}")]
        """,
    )
    script = _write(
        tmp_path / "bench_script.py",
        """
        import json, os, sys
        rows = [{"name": "n", "value": 5, "unit": "s", "ratio_to": None,
                 "note": " ".join(sys.argv[1:])}]
        open(os.environ["LANDSLIDE_BENCH_JSON"], "w").write(json.dumps(rows))
        print("--quick is understood")
        """,
    )
    legacy = _write(tmp_path / "bench_legacy.py", "print('step  ms\\nfill  1.0')\n")
    failing = _write(tmp_path / "bench_fail.py", "raise SystemExit('boom')\n")
    (tmp_path / "_common.py").write_text((BENCH_DIR / "_common.py").read_text())
    specs = {s.name: s for s in harness.discover(tmp_path)}
    assert specs["proto"].protocol and not specs["script"].protocol

    res = harness.run_benchmark(specs["proto"], quick=True, timeout=60)
    assert res["error"] is None and res["mode"] == "run(quick)"
    assert [r["ratio"] for r in res["rows"]] == [None, 1.5]
    assert res["rows"][1]["note"] == "quick=True"
    assert res["peak_rss_mib"] > 0

    res = harness.run_benchmark(specs["script"], quick=True, timeout=60)
    assert res["error"] is None and res["rows"][0]["note"] == "--quick"
    assert proto.exists() and script.exists()

    res = harness.run_benchmark(specs["legacy"], quick=True, timeout=60)
    assert res["rows"] == [] and "fill  1.0" in res["output"]

    res = harness.run_benchmark(specs["fail"], quick=False, timeout=60)
    assert "exit code 1" in res["error"] and "boom" in res["error"]
    assert legacy.exists() and failing.exists()


def test_run_benchmark_timeout_is_reported(harness, tmp_path):
    _write(tmp_path / "bench_slow.py", "import time\ntime.sleep(30)\n")
    spec = harness.discover(tmp_path)[0]
    res = harness.run_benchmark(spec, quick=True, timeout=0.5)
    assert "timed out" in res["error"] and res["seconds"] < 10


def test_main_writes_json_and_doc(harness, tmp_path):
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "_common.py").write_text((BENCH_DIR / "_common.py").read_text())
    _write(
        bench_dir / "bench_one.py",
        """
        from _common import row

        def run(quick: bool) -> list:
            return [row("base", 4.0, "patches/s"), row("fast", 8.0, "patches/s", ratio_to="base")]
        """,
    )
    doc = tmp_path / "performance.md"
    doc.write_text(harness.DOC_TEMPLATE + "\n## Analysis\n\nKept.\n")
    out = tmp_path / "out.json"
    argv = ["--quick", "--bench-dir", str(bench_dir), "--json", str(out), "--doc", str(doc)]
    assert harness.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["quick"] and report["machine"]["logical_cores"] >= 1
    (res,) = report["benchmarks"]
    assert res["name"] == "one" and res["rows"][1]["ratio"] == 2.0
    text = doc.read_text()
    assert "| fast | 8 | patches/s | 2 | base |  |" in text and "Kept." in text


def test_markdown_update_keeps_handwritten_text(harness, common):
    report = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python benchmarks/run.py --quick",
        "quick": True,
        "machine": common.machine_info(),
        "benchmarks": [
            {
                "name": "models",
                "file": "benchmarks/bench_models.py",
                "mode": "run(quick)",
                "seconds": 12.0,
                "peak_rss_mib": 300.0,
                "rows": common.add_ratios(
                    [
                        common.row("gemm", 5e10, "FLOP/s"),
                        common.row("infer", 2.5e10, "FLOP/s", ratio_to="gemm", note="a | b"),
                    ]
                ),
                "output": None,
                "error": None,
            }
        ],
    }
    text = harness.DOC_TEMPLATE + "\n## Analysis\n\nHand-written.\n"
    blocks = {"machine": harness.markdown_machine(report)}
    blocks["models"] = harness.markdown_benchmark(report["benchmarks"][0], report)
    once = harness.update_markdown(text, blocks)
    assert "Hand-written." in once and "| infer | 25 | GFLOP/s | 0.5 | gemm | a \\| b |" in once
    assert once.index("bench:models:start") < once.index(harness.SECTIONS_END)
    report["benchmarks"][0]["rows"][1]["note"] = "changed"
    blocks["models"] = harness.markdown_benchmark(report["benchmarks"][0], report)
    twice = harness.update_markdown(once, blocks)
    assert twice.count("bench:models:start") == 1 and "| changed |" in twice
    assert "a \\| b" not in twice and "Hand-written." in twice


def test_format_value(harness):
    assert harness.format_value(5.25e10, "FLOP/s") == ("52.5", "GFLOP/s")
    assert harness.format_value(None, "s") == ("n/a", "s")
    assert harness.format_value(12345.6, "MiB") == ("12,346", "MiB")
    assert harness.format_value(3.14159, "patches/s") == ("3.142", "patches/s")


def test_predict_benchmark_quick_rows_and_layouts_agree(common):
    """bench_predict --quick: well-formed rows, channels-last maps equal NCHW ones (rounding)."""
    rows = _load("bench_predict").run(quick=True)
    common.validate_rows(rows, "bench_predict")
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {
        "predict nchw",
        "predict channels_last",
        "predict channels_last + 1 input thread(s)",
        "input assembly, static per period",
        "input assembly, dynamic bands in numpy",
        "input assembly alone",
        "copying the patches' bytes only",
        "write maps",
        "predict channels_last bf16",
        "predict channels_last glibc default heap",
        "predict channels_last tuned heap",
    }
    assert all(r["value"] > 0 for r in rows)
    assert by_name["predict channels_last"]["ratio_to"] == "predict nchw"
    assembly = by_name["input assembly alone"]
    assert "per-period path: True;" in assembly["note"] and assembly["value"] is not None
    assert float(assembly["note"].split("vs numpy ")[1].split()[0]) < 1e-5
    assert assembly["ratio_to"] == "input assembly, dynamic bands in numpy"
    diff = float(by_name["predict channels_last"]["note"].split("NCHW ")[1].split()[0])
    assert diff < 1e-4
    assert by_name["predict channels_last + 1 input thread(s)"]["note"].endswith("maps identical")


def test_mc_benchmark_quick_rows_and_the_shared_route_writes_the_same_maps(common):
    """bench_mc --quick (2 passes): well-formed rows; the shared-input route's maps are
    predict_arrays' bit for bit."""
    rows = _load("bench_mc").run(quick=True, n_samples=2)
    common.validate_rows(rows, "bench_mc")
    by_name = {r["name"]: r for r in rows}
    before, after = "predict + 2 MC passes, per pass", "predict + 2 MC passes, shared inputs"
    assert set(by_name) == {"predict, maps only", before, after}
    assert all(r["value"] > 0 for r in rows)
    assert by_name[after]["ratio_to"] == before
    assert "maps identical to predict_arrays" in by_name[after]["note"]


def test_train_benchmark_quick_rows_and_the_same_computation(common):
    """bench_train --quick: well-formed rows, and each stage's default path computes the same
    loss and gradients as the round-2 path (else its row has no value)."""
    rows = _load("bench_train").run(quick=True)
    common.validate_rows(rows, "bench_train")
    by_name = {r["name"]: r for r in rows}
    for stage in ("susceptibility", "density", "finetune"):
        default = by_name[f"{stage} default"]
        assert default["value"] is not None and default["value"] > 0, default["note"]
        assert default["note"].endswith("same loss and gradients as round-2 (batch norm frozen)")
        assert default["ratio_to"] == f"{stage} round-2"


def test_train_benchmark_check_catches_the_wrong_density_cells(monkeypatch):
    """The density stage's same-computation check fails when the default path computes other
    cells than those whose loss counts (here: every cell's density, in the selected order)."""
    from landslide_hazard.models import DensityBlock
    from landslide_hazard.models.layers import patch_to_cells

    bench = _load("bench_train")
    batch = bench._batch("density")
    assert bench._same_computation("density", batch) == ""

    def wrong(self, x, selected):
        n = int(selected.sum())
        return self.forward_cells(patch_to_cells(x, self.cell_pixels)[:n])

    monkeypatch.setattr(DensityBlock, "forward_selected", wrong)
    assert bench._same_computation("density", batch) != ""
