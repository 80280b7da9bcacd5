"""validate: the protocol x model table on the tiny synthetic scenario (reduced setting for CI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from landslide_hazard.config import load_config
from landslide_hazard.prepare import prepare
from landslide_hazard.sampling.splits import Split
from landslide_hazard.synthetic import generate_scenario
from landslide_hazard.validate import folds_for, summarise, validate
from landslide_hazard.validate_report import render_markdown

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    generate_scenario("tiny", 0, root / "scenario", progress=False)
    cfg = load_config(root / "scenario" / "config.yaml")
    t = cfg.training.model_copy(
        update={
            "max_epochs_susceptibility": 1,
            "max_epochs_density_log": 1,
            "max_epochs_density": 1,
            "max_epochs_finetune": 1,
        }
    )
    ev = cfg.evaluation.model_copy(update={"buffer_cells": 1, "block_km": 4.0})
    cfg = cfg.model_copy(
        update={
            "training": t,
            "evaluation": ev,
            "output": cfg.output.model_copy(update={"dir": root / "out"}),
        }
    )
    prepare(cfg, progress=False)
    result = validate(cfg, max_folds=1, progress=False)
    return cfg, result, root / "out" / "validation"


def test_every_protocol_scores_every_model_on_the_same_cells(validated):
    cfg, result, out = validated
    rows = result["rows"]
    protocols = {r["protocol"] for r in rows}
    assert protocols == {"paper", "spatial", "temporal", "spacetime"}
    for protocol in protocols:
        models = {r["model"]: r for r in rows if r["protocol"] == protocol}
        assert set(models) == {
            "enn",
            "enn_constant_density",
            "enn_period_density",
            "oracle",
            "observable_oracle",
            "logistic_regression",
            "gradient_boosting",
        }
        # the ablation shares the ENN's susceptibility, so its ranking
        assert models["enn_constant_density"]["auc"] == pytest.approx(models["enn"]["auc"])
        assert models["enn_period_density"]["auc"] == pytest.approx(models["enn"]["auc"])
        if protocol == "temporal":  # forecast periods have no level: the single constant
            for key in ("hazard_r", "hazard_ratio"):
                got = models["enn_period_density"][key]
                assert got == pytest.approx(models["enn_constant_density"][key], nan_ok=True)
        assert models["observable_oracle"]["skill_observable"] == pytest.approx(1.0)
        # identical splits: every model is scored on the same number of test cells
        assert len({r["n_test_cells"] for r in models.values()}) == 1
        # the oracle's skill is 1 by definition; every AUC is a probability
        assert models["oracle"]["skill"] == pytest.approx(1.0)
        for r in models.values():
            assert 0.0 <= r["auc"] <= 1.0
            assert "ece_calibrated" in r and "brier_calibrated" in r
        assert np.isfinite(models["oracle"]["ece_calibrated"])
    assert all(r["leaky"] == (r["protocol"] == "paper") for r in rows)
    saved = json.loads((out / "validation.json").read_text())
    assert len(saved["rows"]) == len(rows)


def test_temporal_protocols_never_train_on_test_periods(validated):
    cfg, _, out = validated
    for protocol in ("temporal", "spacetime"):
        split = Split.load(out / "runs" / f"{protocol}-fold0" / "splits.npz")
        test_periods = np.flatnonzero(split.test_cells.any(axis=(1, 2)))
        assert list(test_periods) == [len(cfg.periods) - 2, len(cfg.periods) - 1]
        assert not split.train_cells[test_periods].any()
        assert not split.val_cells[test_periods].any()
        assert not (split.train_cells & split.test_cells).any()


def test_markdown_and_summary(validated):
    _, result, out = validated
    png = (out / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for protocol, series in result["reliability"].items():
        # every model is scored on the same test cells: one label per probability
        assert all(p.shape == series["y"].shape for p in series.values()), protocol
    text = render_markdown(result, "validate config.yaml", figure="reliability.png")
    assert "![Reliability diagrams per protocol](reliability.png)" in text
    text = render_markdown(result, "landslide-hazard validate config.yaml --max-folds 1")
    assert "| protocol | model |" in text
    assert "paper (leaky)" in text
    assert "Reading:" in text and "best baseline" in text
    assert "observable oracle" in text and "| spatial | enn_constant_density |" in text


def test_summary_mean_and_std_over_folds():
    rows = [
        {"protocol": "spatial", "model": "enn", "leaky": False, "auc": a, "skill": s}
        | {c: 0.0 for c in ("pr_auc", "f1", "iou", "brier", "ece", "hazard_mae", "hazard_r")}
        | {"ece_calibrated": 0.01, "brier_calibrated": 0.1}
        for a, s in ((0.7, 0.5), (0.9, 0.9))
    ]
    (entry,) = summarise(rows)
    assert entry["auc"] == pytest.approx(0.8)
    assert entry["auc_std"] == pytest.approx(0.1)
    assert entry["n_folds"] == 2


def test_folds_for():
    assert folds_for("paper", 5, None) == [0]
    assert folds_for("temporal", 5, 3) == [0]
    assert folds_for("spatial", 5, None) == [0, 1, 2, 3, 4]
    assert folds_for("spacetime", 5, 2) == [0, 1]


def _fake_result(scenario: str, seed: int, enn_auc: float) -> dict:
    """A validate() result with one spatial fold of the ENN and the logistic regression."""
    cols = ("pr_auc", "f1", "iou", "brier", "ece", "hazard_mae", "density_r_pos", "hazard_ratio")
    rows = [
        {"scenario": scenario, "seed": seed, "protocol": "spatial", "fold": 0, "model": m}
        | {"leaky": False, "auc": auc, "hazard_r": r, "skill": 0.5, "skill_observable": 0.6}
        | {c: 0.1 for c in cols}
        | {"ece_calibrated": 0.01, "brier_calibrated": 0.1}
        for m, auc, r in (("enn", enn_auc, 0.3), ("logistic_regression", 0.7, 0.2))
    ]
    return {
        "package_version": "x",
        "created": "2026-12-06T00:00:00+00:00",
        "preset": "tiny",
        "protocols": ["spatial"],
        "max_folds": 1,
        "config_name": scenario,
        "seed": seed,
        "grid_cells": [8, 8],
        "rows": rows,
        "summary": summarise(rows),
        "reliability": {"spatial": {"y": np.array([0.0, 1.0]), "enn": np.array([0.2, 0.8])}},
    }


def test_several_configs_make_one_report_with_the_spread_over_seeds():
    from landslide_hazard.validate import combine

    result = combine(
        [_fake_result("demo", 0, 0.72), _fake_result("demo", 1, 0.76), _fake_result("big", 0, 0.8)]
    )
    demo_enn = next(e for e in result["summary"] if e["scenario"] == "demo" and e["model"] == "enn")
    assert demo_enn["n_folds"] == 2 and demo_enn["seeds"] == [0, 1]
    assert demo_enn["auc"] == pytest.approx(0.74) and demo_enn["auc_std"] == pytest.approx(0.02)
    assert result["scenarios"] == {
        "demo": {"grid_cells": [8, 8], "seeds": [0, 1]},
        "big": {"grid_cells": [8, 8], "seeds": [0]},
    }
    assert result["reliability"]["spatial"]["enn"].shape == (6,)  # pooled over the three
    text = render_markdown(result, "landslide-hazard validate a.yaml b.yaml c.yaml")
    assert "## demo (8 x 8 cells; seeds 0, 1)" in text and "## big (8 x 8 cells; seed 0)" in text
    assert "| spatial | 0 | 0.720 | 0.700 | 0.300 | 0.200 |" in text  # the per-seed table
    assert "the ENN (AUC 0.740) beats the best baseline, logistic_regression" in text


def test_period_ratio_deviation_by_hand():
    from landslide_hazard.validate import period_ratio_deviation

    result = {
        "periods": [
            {"hazard": {"mean_predicted": 0.6, "mean_observed": 0.5}},  # |1.2 - 1| = 0.2
            {"hazard": {"mean_predicted": 0.2, "mean_observed": 0.4}},  # |0.5 - 1| = 0.5
            {"hazard": {"mean_predicted": 0.3, "mean_observed": 0.0}},  # no ratio: skipped
        ]
    }
    assert period_ratio_deviation(result) == pytest.approx(0.35)
    assert np.isnan(period_ratio_deviation({"periods": []}))


def test_paired_difference_by_hand():
    from landslide_hazard.validate_report import paired_difference

    def run(seed, fold, model, auc, protocol="spatial"):
        return {
            "scenario": "s",
            "seed": seed,
            "fold": fold,
            "model": model,
            "auc": auc,
            "protocol": protocol,
        }

    rows = [
        run(0, 0, "enn", 0.72),
        run(0, 0, "logistic_regression", 0.70),  # +0.02
        run(0, 1, "enn", 0.70),
        run(0, 1, "logistic_regression", 0.74),  # -0.04
        run(1, 0, "enn", 0.75),
        run(1, 0, "logistic_regression", 0.74),  # +0.01
        run(1, 1, "enn", 0.60),  # no baseline in this run: not paired
        run(0, 0, "enn", 0.99, "temporal"),
        run(0, 0, "logistic_regression", 0.5, "temporal"),
    ]
    mean, se, ahead, n = paired_difference(rows, "spatial", "logistic_regression", "auc")
    diffs = np.array([0.02, -0.04, 0.01])
    assert n == 3 and ahead == 2
    assert mean == pytest.approx(diffs.mean())
    assert se == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert paired_difference(rows, "spacetime", "logistic_regression", "auc") is None


def test_pooled_calibration_table_pools_every_cell_period():
    from landslide_hazard.evaluation.metrics import expected_calibration_error
    from landslide_hazard.validate_report import pooled_calibration_table

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 4000)
    y = (rng.uniform(0, 1, 4000) < p).astype(float)
    table = pooled_calibration_table({"spatial": {"y": y, "enn": p, "biased": p * 0.5}})
    rows = {
        line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| spatial")
    }
    assert f"{expected_calibration_error(y, p):.3f} |" in rows["enn"]
    assert f"| 4000 | {y.mean():.3f} | {p.mean():.3f} |" in rows["enn"]
    # halving every probability leaves about half the observed frequency unexplained
    assert float(rows["biased"].split(" | ")[-1].strip(" |")) > 0.2
