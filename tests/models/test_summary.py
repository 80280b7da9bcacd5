"""The presets table: numbers from the models, FLOPs against a hand count, docs update."""

from __future__ import annotations

import pytest

from landslide_hazard.models.summary import (
    END_MARKER,
    START_MARKER,
    markdown_table,
    summarize_preset,
    update_markdown,
)


def test_tiny_summary_flops_match_a_hand_count():
    row = summarize_preset("tiny", cell_pixels=4, patch_cells=4)
    assert row.output_shape == (4, 4)
    assert row.input_shape == (13, 16, 16)
    assert row.susceptibility_params == 10_913
    # conv FLOPs = 2 * H_out * W_out * C_out * C_in * kh * kw (bias and BN not counted)
    conv = [
        (8, 8, 16, 13, 2),  # 2x2 stride-2 stem
        (8, 8, 16, 16, 1),  # 1x1 per-pixel conv
        (4, 4, 24, 16, 3),  # down 1
        (4, 4, 16, 24, 2),  # up-conv 4x4 -> 8x8: each input pixel does C_in*C_out*2*2 MACs
        (8, 8, 16, 32, 3),  # fuse
        (4, 4, 1, 16, 2),  # head
    ]
    expected = 0
    for h, w, cout, cin, kk in conv:
        expected += 2 * h * w * cout * cin * kk * kk
    assert row.susceptibility_gflops * 1e9 == pytest.approx(expected)


def test_update_markdown_replaces_only_the_block(tmp_path):
    doc = tmp_path / "models.md"
    doc.write_text(f"# Models\nintro\n{START_MARKER}\nold table\n{END_MARKER}\nafter\n")
    table = markdown_table([summarize_preset("tiny", cell_pixels=4)])
    update_markdown(doc, table)
    text = doc.read_text()
    assert "old table" not in text
    assert text.startswith("# Models\nintro\n")
    assert text.endswith(f"{END_MARKER}\nafter\n")
    assert "| `tiny` | 4 |" in text
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_markdown(doc, table)
