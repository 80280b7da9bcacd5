"""The benchmark harness: run every ``benchmarks/bench_*.py``, print a table, write JSON and docs.

    python benchmarks/run.py [--quick] [--only NAME] [--json OUT.json] [--doc docs/performance.md]
                             [--threads N] [--timeout S] [--list]

Each benchmark runs in its own child process (so its peak RSS and thread settings are its own).
A module that defines ``run(quick: bool) -> list[dict]`` is imported in the child and called; any
other ``bench_*.py`` is run as a script (``--quick`` passed only if its source mentions it) and its
rows are read from the JSON file named by the ``LANDSLIDE_BENCH_JSON`` environment variable, or
from the last stdout line that is a JSON list of rows; failing both, its printed output is kept
verbatim. The protocol is in ``benchmarks/README.md``.

``--doc`` rewrites, in the Markdown file, only the blocks between ``<!-- bench:NAME:start -->``
and ``<!-- bench:NAME:end -->`` markers (the machine block and one block per benchmark run), so
hand-written analysis outside the markers is kept and ``--only`` updates one section.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import add_ratios, machine_info, peak_rss_mib, validate_rows  # noqa: E402

JSON_ENV = "LANDSLIDE_BENCH_JSON"
SECTIONS_END = "<!-- bench:sections:end -->"


@dataclass(frozen=True)
class BenchSpec:
    """One ``bench_<name>.py``: ``protocol`` is True when it defines ``run(quick)``."""

    name: str
    path: Path
    protocol: bool
    mentions_quick: bool


def has_run_function(source: str) -> bool:
    """True when the module source defines a top-level ``run`` whose first parameter is ``quick``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            params = node.args.posonlyargs + node.args.args
            return bool(params) and params[0].arg == "quick"
    return False


def discover(bench_dir: Path = BENCH_DIR, only: Sequence[str] | None = None) -> list[BenchSpec]:
    """The ``bench_*.py`` files of ``bench_dir`` (sorted), optionally only the named ones.

    A name is the file stem without ``bench_`` (``models`` for ``bench_models.py``).
    """
    specs = []
    for path in sorted(bench_dir.glob("bench_*.py")):
        source = path.read_text()
        name = path.stem.removeprefix("bench_")
        specs.append(BenchSpec(name, path, has_run_function(source), "--quick" in source))
    if only:
        known = {s.name for s in specs}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise SystemExit(
                f"--only {', '.join(unknown)}: no such benchmark in {bench_dir}; "
                f"choose from {', '.join(sorted(known)) or '(none)'}"
            )
        specs = [s for s in specs if s.name in only]
    return specs


def load_module(path: Path, name: str | None = None) -> Any:
    """Import a benchmark file by path (its folder goes on ``sys.path`` for ``_common``)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    mod_name = name or f"landslide_bench_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def run_in_process(path: Path, quick: bool) -> list[dict[str, Any]]:
    """Import ``path`` and call its ``run(quick)``; rows validated, with ratios."""
    module = load_module(path)
    rows = validate_rows(module.run(quick), source=str(path))
    return add_ratios(rows)


def parse_rows_from_stdout(text: str) -> list[dict[str, Any]] | None:
    """The last stdout line that is a JSON list of row dicts, else None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("["):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, list) and all(isinstance(r, dict) for r in data):
            return data
    return None


def _run_child(
    cmd: list[str], env: dict[str, str], timeout: float, echo: Callable[[str], None]
) -> tuple[int | None, str, float, float]:
    """Run ``cmd`` in a new session; returns (exit code or None on timeout, output, s, peak MiB).

    Output (stdout and stderr together) is echoed line by line as it comes. The peak RSS is the
    child's own, from ``os.wait4``.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            echo(line.rstrip("\n"))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and its children
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    thread.join(timeout=10)
    seconds = time.perf_counter() - t0
    peak = usage.ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)
    code = None if timed_out.is_set() else proc.returncode
    return code, "".join(lines), seconds, peak


def _display_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(BENCH_DIR.parent))
    except ValueError:
        return str(path.resolve())


def run_benchmark(
    spec: BenchSpec,
    quick: bool,
    timeout: float = 1800.0,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run one benchmark in a child process; returns its result record (see ``main``)."""
    env = dict(os.environ if env is None else env)
    src_dir = BENCH_DIR.parent / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src_dir), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        out = Path(tmp) / "rows.json"
        if spec.protocol:
            mode = "run(quick)"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec.path)]
            cmd += ["--_out", str(out)] + (["--quick"] if quick else [])
        else:
            mode = "script"
            cmd = [sys.executable, str(spec.path)] + (
                ["--quick"] if quick and spec.mentions_quick else []
            )
            env[JSON_ENV] = str(out)
        code, output, seconds, peak = _run_child(cmd, env, timeout, echo)
        record: dict[str, Any] = {
            "name": spec.name,
            "file": _display_path(spec.path),
            "mode": mode,
            "command": shlex.join([Path(c).name if c == sys.executable else c for c in cmd]),
            "seconds": seconds,
            "peak_rss_mib": peak,
            "rows": [],
            "output": None,
            "error": None,
        }
        if code is None:
            record["error"] = f"timed out after {timeout:.0f} s; raise --timeout or use --quick"
        elif code != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            record["error"] = f"exit code {code}:\n{tail}"
        rows = None
        if out.exists():
            rows = json.loads(out.read_text())
        elif mode == "script":
            rows = parse_rows_from_stdout(output)
        if rows is not None:
            try:
                record["rows"] = add_ratios(validate_rows(rows, source=str(spec.path)))
            except ValueError as exc:
                record["error"] = (record["error"] or "") + f"\nbad rows: {exc}"
        elif mode == "script" and code == 0:
            # not on the protocol yet: keep what it printed, verbatim
            record["output"] = "\n".join(output.rstrip().splitlines()[-80:])
    return record


def child_main(path: Path, out: Path, quick: bool) -> int:
    """In the child: import the benchmark, call run(quick), write the validated rows."""
    rows = validate_rows(load_module(path).run(quick), source=str(path))
    out.write_text(json.dumps(rows))
    print(f"[{path.stem}] peak RSS {peak_rss_mib():.0f} MiB", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- presentation


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_value(value: float | None, unit: str) -> tuple[str, str]:
    """(number, unit) for display: FLOP and FLOP/s get an SI prefix, others 4 significant digits."""
    if value is None:
        return "n/a", unit
    if unit.startswith("FLOP"):
        for scale, prefix in _SI:
            if abs(value) >= scale:
                return f"{value / scale:.3g}", prefix + unit
        return f"{value:.3g}", unit
    if abs(value) >= 1000:
        return f"{value:,.0f}", unit
    return f"{value:.4g}", unit


def format_ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.3g}"


def print_tables(results: Sequence[dict[str, Any]]) -> None:
    """One rich table per benchmark on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for res in results:
        title = f"{res['name']} ({res['mode']}, {res['seconds']:.0f} s, "
        title += f"peak RSS {res['peak_rss_mib']:.0f} MiB)"
        table = Table(title=title, title_justify="left")
        for col, justify in (
            ("name", "left"),
            ("value", "right"),
            ("unit", "left"),
            ("ratio", "right"),
            ("vs", "left"),
            ("note", "left"),
        ):
            table.add_column(col, justify=justify, overflow="fold")
        for r in res["rows"]:
            value, unit = format_value(r["value"], r["unit"])
            table.add_row(
                r["name"], value, unit, format_ratio(r["ratio"]), r["ratio_to"] or "", r["note"]
            )
        if res["rows"]:
            console.print(table)
        else:
            console.print(f"[bold]{title}[/]: no rows")
        if res["output"]:
            console.print(res["output"], markup=False, highlight=False)
        if res["error"]:
            console.print(f"[bold red]error[/] in {res['name']}: {res['error']}", markup=True)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_machine(report: dict[str, Any]) -> str:
    """The machine block: when, how, and on what the last run ran."""
    m = report["machine"]
    gib = f"{m['ram_gib']:.1f} GiB" if m.get("ram_gib") else "unknown"
    load = m.get("load_average_1_5_15")
    lines = [
        f"Last run: {report['date']}, `{report['command']}` "
        f"({'quick' if report['quick'] else 'full'} mode).",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({m['simd'] or 'unknown SIMD'}) |",
        f"| cores | {m['logical_cores']} logical, {m['usable_cores']} usable by this process |",
        f"| RAM | {gib} |",
        f"| threads | OMP_NUM_THREADS={m['omp_num_threads']}, torch {m['torch_threads']} |",
        f"| GPU | {m['gpu'] or 'none'} |",
        f"| software | Python {m['python']}, torch {m['torch']} (oneDNN "
        f"{'on' if m['mkldnn'] else 'off'}), numpy {m['numpy']} |",
        f"| OS | {m['platform']} |",
    ]
    if load:
        lines.append(
            f"| load average at start | {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            "(1 / 5 / 15 min) |"
        )
    return "\n".join(lines) + "\n"


def markdown_benchmark(res: dict[str, Any], report: dict[str, Any]) -> str:
    """One benchmark's block: heading, how it ran, its rows (or its verbatim output)."""
    mode = "quick" if report["quick"] else "full"
    load = report["machine"].get("load_average_1_5_15")
    lines = [
        f"### `{res['name']}` ({res['file']})",
        "",
        f"{report['date']}, {mode} mode, {res['mode']}, {res['seconds']:.0f} s, "
        f"peak RSS {res['peak_rss_mib']:.0f} MiB, torch threads "
        f"{report['machine']['torch_threads']}"
        + (f", load average {load[0]:.1f} at the start of the run." if load else "."),
        "",
    ]
    if res["rows"]:
        lines += [
            "| name | value | unit | ratio | vs | note |",
            "|---|---:|---|---:|---|---|",
        ]
        for r in res["rows"]:
            value, unit = format_value(r["value"], r["unit"])
            lines.append(
                f"| {_md_escape(r['name'])} | {value} | {unit} | {format_ratio(r['ratio'])} "
                f"| {_md_escape(r['ratio_to'] or '')} | {_md_escape(r['note'])} |"
            )
    if res["output"]:
        lines += [
            "Not on the row protocol yet; its output, verbatim:",
            "",
            "```text",
            res["output"],
            "```",
        ]
    if res["error"]:
        lines += ["", "**Error:**", "", "```text", res["error"], "```"]
    return "\n".join(lines) + "\n"


DOC_TEMPLATE = """# Performance

Generated by `python benchmarks/run.py --doc docs/performance.md` (add `--quick` for the
one-minute setting, `--only NAME` for one benchmark); see `benchmarks/README.md`. The harness
rewrites only the blocks between `<!-- bench:... -->` markers; text outside them is kept.

Machines here are shared and noisy: read the **ratio** column (a speed-up over, or a fraction of,
the row named in **vs**, both measured side by side in the same run) rather than absolute times.

## Machine

<!-- bench:machine:start -->
<!-- bench:machine:end -->

## Results

<!-- bench:sections:end -->
"""


def update_markdown(text: str, blocks: dict[str, str]) -> str:
    """Replace (or insert before the sections-end marker) the ``bench:NAME`` blocks of ``text``."""
    for name, body in blocks.items():
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        block = f"{start}\n{body}{end}"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _, b=block: b, text)
        elif SECTIONS_END in text:
            text = text.replace(SECTIONS_END, f"{block}\n\n{SECTIONS_END}")
        else:
            text = text.rstrip("\n") + f"\n\n{block}\n"
    return text


def write_doc(path: Path, report: dict[str, Any]) -> None:
    """Update ``path`` (created from a template if missing) with this run's blocks, atomically."""
    from landslide_hazard.io import atomic_write_text

    text = path.read_text() if path.exists() else DOC_TEMPLATE
    blocks = {"machine": markdown_machine(report)}
    for res in report["benchmarks"]:
        blocks[res["name"]] = markdown_benchmark(res, report)
    atomic_write_text(path, update_markdown(text, blocks))


# --------------------------------------------------------------------------- entry point


def _write_json(path: Path, report: dict[str, Any]) -> None:
    from landslide_hazard.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick setting")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only NAME (repeat)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the results here")
    parser.add_argument("--doc", type=Path, metavar="MD", help="update this Markdown file")
    parser.add_argument("--threads", type=int, help="OMP/MKL/torch threads for the benchmarks")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark (1800; quick 600)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--bench-dir", type=Path, default=BENCH_DIR, help="where the bench_*.py are (benchmarks/)"
    )
    parser.add_argument("--_child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child is not None:
        return child_main(args._child, args._out, args.quick)

    if args.threads is not None:  # before torch is imported anywhere
        if args.threads < 1:
            raise SystemExit(f"--threads {args.threads}: must be >= 1")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    specs = discover(args.bench_dir, args.only)
    if args.list:
        for s in specs:
            print(f"{s.name:<12} {s.path.name:<24} {'run(quick)' if s.protocol else 'script'}")
        return 0
    if not specs:
        raise SystemExit(f"no bench_*.py in {args.bench_dir}")
    timeout = args.timeout or (600.0 if args.quick else 1800.0)

    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True)
    machine = machine_info()  # load average before the benchmarks add to it
    started = dt.datetime.now(dt.timezone.utc)
    results: list[dict[str, Any]] = []
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine,
        "benchmarks": results,
    }
    for i, spec in enumerate(specs, 1):
        console.rule(f"[{i}/{len(specs)}] {spec.name} ({spec.path.name})")
        with console.status(f"running {spec.name}"):
            res = run_benchmark(
                spec,
                args.quick,
                timeout,
                echo=lambda line, n=spec.name: console.print(
                    Text.assemble((f"{n}| ", "dim"), line), highlight=False
                ),
            )
        results.append(res)
        # after every benchmark, so a later one that hangs or fails loses nothing
        if args.json is not None:
            _write_json(args.json, report)
        if args.doc is not None:
            write_doc(args.doc, {**report, "benchmarks": [res]})
    print_tables(results)
    if args.json is not None:
        console.print(f"wrote {args.json}")
    if args.doc is not None:
        console.print(f"updated {args.doc}")
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
