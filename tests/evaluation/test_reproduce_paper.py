"""The paper's published scores, reproduced from its own predictions (real gorkha2015 files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from landslide_hazard.evaluation import reproduce_paper

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data" / "gorkha2015"

pytestmark = pytest.mark.skipif(
    not (DATA / reproduce_paper.OBSERVED_FILE).exists(),
    reason=f"real data not found at {DATA} (../shared/data/gorkha2015 from the repo root)",
)


@pytest.fixture(scope="module")
def rep():
    return reproduce_paper.reproduce(DATA)


def test_pooled_numbers_match_the_paper_files(rep):
    pooled = rep["paper_threshold"]["pooled"]
    d_all, d_pos = pooled["density"]["all"], pooled["density"]["positive"]
    assert round(d_all["mae"], 3) == 0.262
    assert round(d_all["pearson_r"], 3) == 0.884
    assert round(d_pos["mae"], 3) == 0.244
    assert round(d_pos["pearson_r"], 3) == 0.922
    occ = pooled["occurrence"]
    assert round(occ["auc"], 3) == 0.999
    assert round(occ["f1"], 3) == 0.946
    assert round(occ["iou"], 3) == 0.897
    assert occ["n"] == 8 * 21360 and occ["threshold"] == 0.5


def test_markdown_and_main(rep, tmp_path):
    text = reproduce_paper.render_markdown(rep)
    assert "| density MAE %, all cells | 0.26 | 0.262 | yes |" in text
    assert "| AUC-ROC (susceptibility) | 0.93 | 0.999 | no |" in text
    assert text.count("| Co-seismic 2015 |") == 1 and "soft F1" in text
    out = tmp_path / "repro.md"
    assert reproduce_paper.main(["--data-dir", str(DATA), "--out", str(out)]) == 0
    assert out.read_text() == text
    assert reproduce_paper.main(["--data-dir", str(tmp_path / "nowhere")]) == 2


def test_committed_doc_is_up_to_date(rep):
    doc = REPO_ROOT / "docs" / "paper_reproduction.md"
    assert doc.read_text() == reproduce_paper.render_markdown(rep), (
        "docs/paper_reproduction.md is stale: regenerate it with "
        "`python -m landslide_hazard.evaluation.reproduce_paper --out docs/paper_reproduction.md`"
    )
