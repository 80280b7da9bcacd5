"""One-off check: the demo's maps are bit for bit those of another commit (a refactor changes
no number). Not a permanent golden test: run it by hand around a change that must not move maps.

    python benchmarks/check_same_maps.py --base 04c688e [--size tiny|demo] [--keep DIR]

It checks out ``--base`` into a git worktree, runs ``landslide-hazard demo`` there (its own
``src`` on PYTHONPATH, with this environment's packages) and here, each in a fresh process with
one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)) and MC dropout off, then compares
every ``maps/*.tif`` byte for byte and, where bytes differ, pixel for pixel. Exit 0 when all
maps match. The demo of size ``demo`` takes a few minutes per side on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run the CLI's demo in-process with one torch thread (the CLI itself leaves threads alone).
_RUNNER = (
    "import sys, torch; torch.set_num_threads(1); "
    "from landslide_hazard.cli import app; "
    "sys.argv = ['landslide-hazard', 'demo', '--out', sys.argv[1], '--size', sys.argv[2], "
    "'--mc-samples', '0']; app()"
)


def run_demo(src: Path, out: Path, size: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    subprocess.run(
        [sys.executable, "-c", _RUNNER, str(out), size], check=True, env=env, cwd=src.parent
    )


def maps_of(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(out.glob("runs/*/maps/*.tif"))}


def compare(base: dict[str, Path], new: dict[str, Path]) -> list[str]:
    import numpy as np
    import rasterio

    problems = []
    if base.keys() != new.keys():
        problems.append(f"different map sets: {sorted(base)} vs {sorted(new)}")
    for name in sorted(base.keys() & new.keys()):
        a, b = base[name].read_bytes(), new[name].read_bytes()
        if a == b:
            print(f"  {name}: identical bytes ({hashlib.sha256(a).hexdigest()[:12]})")
            continue
        with rasterio.open(base[name]) as fa, rasterio.open(new[name]) as fb:
            xa, xb = fa.read(), fb.read()
        same = xa.shape == xb.shape and np.array_equal(xa, xb, equal_nan=True)
        msg = "same pixels, different bytes (metadata)" if same else "PIXELS DIFFER"
        print(f"  {name}: {msg}")
        problems.append(f"{name}: {msg}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="04c688e", help="commit to compare against")
    parser.add_argument("--size", default="demo", choices=["tiny", "demo"])
    parser.add_argument("--keep", type=Path, help="folder to keep both outputs in")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="same-maps-"))
    work.mkdir(parents=True, exist_ok=True)
    base_tree = work / "base-tree"
    if not base_tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), args.base],
            check=True,
            cwd=REPO,
        )
    try:
        for label, src in (("base", base_tree / "src"), ("here", REPO / "src")):
            print(f"demo ({args.size}) at {label} ...", flush=True)
            run_demo(src, work / label, args.size)
        problems = compare(maps_of(work / "base"), maps_of(work / "here"))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO)
    if problems:
        print("DIFFERENT:\n  " + "\n  ".join(problems))
        return 1
    print(f"all maps bit for bit identical to {args.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
