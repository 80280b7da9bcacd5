"""The thread policy on a loaded and an idle machine: a short `train` (tiny scenario) with the
default threads against explicit settings, timed alternately in fresh processes; the same seed
with 1 and 2 threads (do results depend on the thread count?); DataLoader workers.

Rows: `train <load> <setting>` wall seconds, ratio to the best explicit setting under the same
load (goal: default <= 1.3x). `<load>` is `idle` (nothing of ours beside it) or `busy4` (four
spinning processes beside it). Machines here are shared: read the ratios.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import row  # noqa: E402

CLI = "from landslide_hazard.cli import app; app()"
SETTINGS = {
    "default": [],
    "t1": ["--threads", "1"],
    "t2": ["--threads", "2"],
    "t2 spin": ["--threads", "2"],
}
#: "t2 spin": OpenMP's own waiting (libgomp spins before it sleeps), as before the policy; an
#: empty OMP_WAIT_POLICY is not overwritten by the CLI and libgomp reads it as unset.
SPIN_ENV = {"OMP_WAIT_POLICY": "", "KMP_BLOCKTIME": ""}


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> float:
    tic = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CLI, *args], cwd=cwd, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - tic


def _scenario(root: Path, env: dict[str, str]) -> Path:
    _cli(["synth", "tiny", "--size", "tiny", "--no-progress"], env, root)
    _cli(["prepare", "tiny/config.yaml", "--no-progress"], env, root)
    return root / "tiny" / "config.yaml"


def _train(config: Path, setting: str, env: dict[str, str], name: str) -> tuple[float, Path]:
    import shutil

    run = config.parent / "out" / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    import yaml

    data = yaml.safe_load(config.read_text())
    data["output"]["run_name"] = name  # a fresh run each time, never a resume
    own = config.with_name(f"config-{name}.yaml")
    own.write_text(yaml.safe_dump(data, sort_keys=False))
    if setting.endswith("spin"):
        env = {**env, **SPIN_ENV}
    wall = _cli([*SETTINGS[setting], "train", own.name, "--no-progress"], env, config.parent)
    return wall, run


def _weights_max_diff(a: Path, b: Path) -> float:
    import torch

    wa = torch.load(a / "model.pt", weights_only=False)["state_dict"]
    wb = torch.load(b / "model.pt", weights_only=False)["state_dict"]
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].numel())


_LOADER_CHILD = """
import json, sys, time, torch
from landslide_hazard.config import load_config
from landslide_hazard.run import load_checkpoint
from landslide_hazard.sampling.dataset import StaticPatchCache
from landslide_hazard.training import epochs, loop
cfg = load_config(sys.argv[1])
data = cfg.model_dump()
data["training"]["num_workers"] = int(sys.argv[2])
data["output"]["run_name"] = sys.argv[4]
cfg = type(cfg).model_validate(data)
if sys.argv[3] == "old":  # before: a new, non-persistent DataLoader every epoch
    epochs._loader = lambda ds, batches, n: torch.utils.data.DataLoader(
        ds, batch_sampler=batches, num_workers=n)
caches = []
init = StaticPatchCache.__init__
def spy(self, *a, **k):
    init(self, *a, **k)
    caches.append(self)
StaticPatchCache.__init__ = spy
tic = time.perf_counter()
run = loop.train(cfg, progress=False)
wall = time.perf_counter() - tic
hist = load_checkpoint(run / "checkpoints" / "last.pt")["history"]
c = max(caches, key=lambda c: c.hits + c.misses)  # the training cache
print(json.dumps({"wall": wall, "epoch_s": [h["seconds"] for h in hist],
                  "windows": len(c.windows), "hits": c.hits, "misses": c.misses}))
"""


def _loader_variant(config: Path, workers: int, how: str, env: dict[str, str]) -> dict:
    import shutil

    shutil.rmtree(config.parent / "out" / "runs" / f"dl-{how}{workers}", ignore_errors=True)
    out = subprocess.run(
        [sys.executable, "-c", _LOADER_CHILD, str(config), str(workers), how, f"dl-{how}{workers}"],
        cwd=config.parent,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[dict]:
    rounds = 1 if quick else 2
    skip = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = _scenario(Path(tmp), env)
        runs: dict[str, Path] = {}
        for load in ("busy4", "idle"):
            best: dict[str, float] = {}
            stop = mp.Event()
            spinners = [
                mp.Process(target=_spin, args=(stop,)) for _ in range(4 if load == "busy4" else 0)
            ]
            for p in spinners:
                p.start()
            try:
                for _ in range(rounds):
                    for setting in SETTINGS:
                        wall, runs[f"{load}-{setting}"] = _train(
                            config, setting, env, f"{load}-{setting.replace(' ', '-')}"
                        )
                        best[setting] = min(best.get(setting, float("inf")), wall)
            finally:
                stop.set()
                for p in spinners:
                    p.join()
            fastest = min(("t1", "t2"), key=best.get)
            for setting, wall in best.items():
                rows.append(
                    row(
                        f"train {load} {setting}",
                        wall,
                        "s",
                        ratio_to=None if setting == fastest else f"train {load} {fastest}",
                        note=f"`landslide-hazard {' '.join(SETTINGS[setting]) or '(no option)'} train`"
                        + (
                            ", OpenMP spin-waiting (OMP_WAIT_POLICY unset)"
                            if "spin" in setting
                            else ""
                        )
                        + f", tiny scenario, best of {rounds}, alternating",
                    )
                )
        for load in ("busy4", "idle"):
            a, b = runs[f"{load}-t1"], runs[f"{load}-t2"]
            ma = json.loads((a / "metrics.json").read_text())
            mb = json.loads((b / "metrics.json").read_text())
            rows.append(
                row(
                    f"weights 1 vs 2 threads ({load})",
                    _weights_max_diff(a, b),
                    "max |diff|",
                    note=f"same seed; held-out AUC {ma.get('held_out_auc'):.4f} (1 thread) vs "
                    f"{mb.get('held_out_auc'):.4f} (2 threads); recorded threads {ma.get('threads')} / {mb.get('threads')}",
                )
            )
        # DataLoader workers: before (a new loader per epoch) and after (persistent, cache
        # filled before the fork), against no workers; one thread each (the default)
        variants = {"workers0": (0, "new"), "workers2 before": (2, "old"), "workers2": (2, "new")}
        got: dict[str, dict] = {}
        for _ in range(rounds):
            for name, (workers, how) in variants.items():
                r = _loader_variant(config, workers, how, env)
                if name not in got or r["wall"] < got[name]["wall"]:
                    got[name] = r
        for name, r in got.items():
            epoch = sum(r["epoch_s"]) / len(r["epoch_s"])
            rows.append(
                row(
                    f"train epoch {name}",
                    epoch,
                    "s",
                    ratio_to=None if name == "workers2 before" else "train epoch workers2 before",
                    note=f"mean over {len(r['epoch_s'])} epochs; parent's static-patch cache: "
                    f"{r['windows']} windows, {r['hits']} hits, {r['misses']} misses; whole train "
                    f"{r['wall']:.1f} s",
                )
            )
    return rows


if __name__ == "__main__":
    from _common import emit

    emit(run("--quick" in sys.argv))
