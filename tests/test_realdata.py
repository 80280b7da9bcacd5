"""The real Gorkha loader, on the real files (skipped where the shared data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.io import RasterError
from landslide_hazard.realdata import ENV_VAR, default_gorkha_dir, load_gorkha
from landslide_hazard.synthetic.calibration import REAL_GORKHA_TABLE, period_statistics

needs_data = pytest.mark.skipif(
    not (default_gorkha_dir() / "observed_area_density.tif").is_file(),
    reason="../shared/data/gorkha2015 not present",
)


@needs_data
def test_load_gorkha_reads_the_real_files():
    g = load_gorkha()
    assert g.observed_density.shape == (8, 196, 220)
    assert g.predicted_susceptibility.shape == g.predicted_density.shape == (8, 196, 220)
    assert g.period_names == tuple(REAL_GORKHA_TABLE)
    assert g.crs.to_epsg() == 32645
    assert g.transform.a == 1000.0 and g.transform.e == -1000.0
    assert (g.transform.c, g.transform.f) == pytest.approx((248635.08, 3175441.11), abs=0.01)
    assert int(g.valid.sum()) == 21360
    s = g.predicted_susceptibility[:, g.valid]
    assert np.nanmin(s) >= 0 and np.nanmax(s) <= 1
    assert np.nanmin(g.observed_density) >= 0


@needs_data
def test_real_table_constants_match_the_file():
    g = load_gorkha()
    for t, name in enumerate(g.period_names):
        got = period_statistics(g.observed_density[t])
        want = REAL_GORKHA_TABLE[name]
        assert got.prevalence_pct == pytest.approx(want.prevalence_pct, abs=0.05)
        assert got.positive_median == pytest.approx(want.positive_median, abs=0.005)
        assert got.positive_p99 == pytest.approx(want.positive_p99, abs=0.05)
        assert got.max == pytest.approx(want.max, abs=0.05)
        assert got.mean == pytest.approx(want.mean, abs=0.0005)


@needs_data
def test_paper_figures_from_the_files():
    """README: density MAE 0.262 % on all cells, Pearson r 0.922 on positive cells (pooled)."""
    g = load_gorkha()
    obs = g.observed_density[:, g.valid].ravel()
    pred = g.predicted_density[:, g.valid].ravel()
    assert np.mean(np.abs(obs - pred)) == pytest.approx(0.262, abs=0.001)
    pos = obs > 0
    assert np.corrcoef(obs[pos], pred[pos])[0, 1] == pytest.approx(0.922, abs=0.001)


def test_env_var_and_clear_error_when_absent(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    assert default_gorkha_dir() == tmp_path / "nowhere" / "data" / "gorkha2015"
    with pytest.raises(RasterError, match=ENV_VAR):
        load_gorkha()
    with pytest.raises(RasterError, match="observed_area_density.tif"):
        load_gorkha(tmp_path)


def test_shared_dir_defaults_to_the_checkout_sibling_not_the_install(monkeypatch, tmp_path):
    from landslide_hazard.realdata import shared_dir

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert shared_dir().resolve() == (tmp_path.parent / "shared").resolve()
