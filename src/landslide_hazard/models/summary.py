"""A table of the model presets: parameters, output shape and FLOPs per patch.

Run ``python -m landslide_hazard.models.summary`` to print the Markdown table, or add
``--update PATH`` to rewrite the table between the ``presets-table`` markers of a Markdown file
(``docs/models.md``). FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one
patch in eval mode (a multiply-add counts as 2 FLOPs; batch norm, activations and pooling are not
counted by torch and are negligible here).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .enn import build_enn
from .layers import count_parameters

START_MARKER = "<!-- presets-table:start -->"
END_MARKER = "<!-- presets-table:end -->"

DEFAULT_CONFIGS: tuple[tuple[str, int], ...] = (
    ("paper", 32),
    ("resnet18", 32),
    ("resnet34", 32),
    ("tiny", 32),
    ("resnet18", 16),
    ("tiny", 16),
    ("tiny", 8),
)


@dataclass(frozen=True)
class PresetSummary:
    preset: str
    cell_pixels: int
    patch_cells: int
    in_channels: int
    susceptibility_params: int
    density_params: int
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int]
    susceptibility_gflops: float
    density_gflops: float

    @property
    def total_params(self) -> int:
        return self.susceptibility_params + self.density_params


def _flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


def summarize_preset(
    preset: str, cell_pixels: int = 32, patch_cells: int = 4, in_channels: int = 13
) -> PresetSummary:
    """Build the ENN of one preset and measure it on one (1, C, n*k, n*k) patch."""
    torch.manual_seed(0)
    enn = build_enn(preset, in_channels, patch_cells, cell_pixels).eval()
    side = patch_cells * cell_pixels
    x = torch.randn(1, in_channels, side, side)
    with torch.no_grad():
        out = enn(x)
    return PresetSummary(
        preset=preset,
        cell_pixels=cell_pixels,
        patch_cells=patch_cells,
        in_channels=in_channels,
        susceptibility_params=count_parameters(enn.susceptibility),
        density_params=count_parameters(enn.density),
        input_shape=(in_channels, side, side),
        output_shape=tuple(out.hazard.shape[1:]),
        susceptibility_gflops=_flops(enn.susceptibility, x) / 1e9,
        density_gflops=_flops(enn.density, x) / 1e9,
    )


def markdown_table(rows: list[PresetSummary]) -> str:
    """The presets as a Markdown table (one row per preset and cell size)."""
    lines = [
        "| preset | k (px/cell) | input (C, H, W) | output (n, n) | susceptibility params "
        "| density params | ENN params | susceptibility GFLOPs/patch | density GFLOPs/patch |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.preset}` | {r.cell_pixels} | {r.input_shape} | {r.output_shape} "
            f"| {r.susceptibility_params:,} | {r.density_params:,} | {r.total_params:,} "
            f"| {r.susceptibility_gflops:.3f} | {r.density_gflops:.3f} |"
        )
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, table: str) -> None:
    """Replace the text between the presets-table markers of ``path`` (atomically)."""
    from ..io import atomic_write_text

    text = path.read_text()
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(
            f"{path}: no '{START_MARKER}' ... '{END_MARKER}' block; add the two markers "
            "where the table should go"
        )
    new = pattern.sub(lambda _: f"{START_MARKER}\n{table}{END_MARKER}", text)
    atomic_write_text(path, new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--update", type=Path, help="Markdown file whose table to rewrite")
    parser.add_argument("--patch-cells", type=int, default=4, help="n, cells per patch side")
    args = parser.parse_args(argv)
    rows = [
        summarize_preset(preset, k, args.patch_cells)
        for preset, k in DEFAULT_CONFIGS
        if not (preset == "paper" and k != 32)
    ]
    table = markdown_table(rows)
    sys.stdout.write(table)
    if args.update is not None:
        update_markdown(args.update, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
