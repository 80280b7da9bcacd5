"""The landslide legacy bands (issue 15): hand-computed cases, causality through ``prepare``,
the config switch and a model that reads them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from landslide_hazard.bands import (
    CUBE_DYNAMIC_NAMES,
    DYNAMIC_NAMES,
    LEGACY_NAMES,
    MODEL_LEGACY_NAMES,
    dynamic_names_of,
    input_names,
)
from landslide_hazard.config import load_config
from landslide_hazard.cube import PeriodInfo, open_cube
from landslide_hazard.prepare import prepare
from landslide_hazard.prepare.legacy import legacy_bands, visible_periods
from landslide_hazard.sampling.dataset import CubeReader


def _periods(bounds):
    return [PeriodInfo(f"P{i}", s, e) for i, (s, e) in enumerate(bounds)]


CONSECUTIVE = _periods(
    [
        ("2015-01-01", "2015-06-01"),
        ("2015-06-01", "2015-11-01"),
        ("2015-11-01", "2016-04-01"),
        ("2016-04-01", "2016-11-01"),
    ]
)


def test_legacy_of_one_cell_by_hand():
    # one cell: densities 2, 0, 0.5, 7 (%); a second cell never fails; a third is unmapped
    # (NaN) in period 1 and fails in period 0 only
    t = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, np.nan], [0.5, 0.0, 0.0], [7.0, 0.0, 0.0]])
    t = t.reshape(4, 1, 3)
    out = legacy_bands(t, CONSECUTIVE)
    assert out.shape == (4, len(LEGACY_NAMES), 1, 3) and out.dtype == np.float32
    prev, cum, since = out[:, 0, 0], out[:, 1, 0], out[:, 2, 0]
    # period 0 sees nothing; period p sees periods 0..p-1
    np.testing.assert_array_equal(prev[:, 0], [0.0, 2.0, 0.0, 0.5])
    np.testing.assert_array_equal(cum[:, 0], [0.0, 2.0, 2.0, 2.5])
    np.testing.assert_array_equal(since[:, 0], [1, 1, 2, 1])  # never: n_seen + 1 = 1 in P0
    np.testing.assert_array_equal(since[:, 1], [1, 2, 3, 4])  # never failed: n_seen + 1
    np.testing.assert_array_equal(prev[:, 2], [0.0, 1.0, 0.0, 0.0])  # NaN counts as 0
    np.testing.assert_array_equal(since[:, 2], [1, 1, 2, 3])
    mean, frac = out[:, 3, 0], out[:, 4, 0]
    np.testing.assert_allclose(mean[:, 0], [0.0, 2.0, 1.0, 2.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(frac[:, 0], [0.0, 1.0, 0.5, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(frac[:, 1], [0, 0, 0, 0])
    np.testing.assert_allclose(frac[:, 2], [0.0, 1.0, 0.5, 1 / 3], rtol=1e-6)  # NaN: not failed


def test_a_threshold_and_cells_outside_the_mask():
    t = np.full((4, 1, 2), 0.05)
    out = legacy_bands(t, CONSECUTIVE, valid_cells=np.array([[True, False]]), min_density=0.1)
    assert np.isnan(out[:, :, 0, 1]).all()
    np.testing.assert_array_equal(out[:, 2, 0, 0], [1, 2, 3, 4])  # 0.05 % is not a failure
    np.testing.assert_allclose(out[:, 1, 0, 0], [0, 0.05, 0.10, 0.15], rtol=1e-6)


def test_a_period_sees_only_periods_mapped_by_its_start():
    # P1 overlaps P0 (starts before P0's inventory): P1 cannot see P0; P2 starts after both
    periods = _periods(
        [("2015-01-01", "2015-06-01"), ("2015-03-01", "2015-09-01"), ("2015-09-01", "2016-01-01")]
    )
    assert visible_periods(periods) == [[], [], [0, 1]]
    t = np.array([3.0, 5.0, 1.0]).reshape(3, 1, 1)
    out = legacy_bands(t, periods)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 0, 5])  # the latest mapped: P1
    np.testing.assert_array_equal(out[:, 1, 0, 0], [0, 0, 8])


def test_band_layouts():
    assert len(input_names(False)) == 13 and len(input_names(True)) == 16
    assert dynamic_names_of(input_names(True)) == DYNAMIC_NAMES + MODEL_LEGACY_NAMES
    assert set(MODEL_LEGACY_NAMES) <= set(LEGACY_NAMES)
    assert dynamic_names_of(list(input_names(False))) == DYNAMIC_NAMES
    with pytest.raises(ValueError, match="none of the layouts"):
        dynamic_names_of(input_names(False)[:-1])


@pytest.mark.parametrize(
    ("protocol", "preset", "expected"),
    [
        ("temporal", "tiny", True),
        ("spacetime", "tiny", True),
        ("spatial", "tiny", False),
        ("paper", "tiny", False),
        ("temporal", "paper", False),
    ],
)
def test_auto_means_on_for_forecasts_only(protocol, preset, expected, minimal_config):
    from landslide_hazard.config import RunConfig

    assert RunConfig.model_validate(minimal_config(protocol, preset)).legacy is expected
    off = minimal_config(protocol, preset, legacy=False)
    assert RunConfig.model_validate(off).legacy is False


@pytest.mark.parametrize("protocol", ["spatial", "paper"])
def test_legacy_true_is_refused_where_it_leaks(protocol, minimal_config):
    from pydantic import ValidationError

    from landslide_hazard.config import RunConfig

    with pytest.raises(ValidationError, match="leak"):
        RunConfig.model_validate(minimal_config(protocol, legacy=True))
    paper = minimal_config("temporal", "paper", legacy=True)
    assert RunConfig.model_validate(paper).legacy is True


@pytest.mark.slow
def test_a_later_inventory_never_changes_earlier_inputs(tiny_scenario, tmp_path):
    """Replace the last inventory (no new failures in the last period): every period's inputs,
    legacy included, stay bit-identical; only the last period's target changes."""
    changed = tmp_path / "changed"
    shutil.copytree(tiny_scenario, changed, ignore=shutil.ignore_patterns("out"))
    cfg = load_config(changed / "config.yaml")
    shutil.copy(changed / cfg.periods[-2].inventory, changed / cfg.periods[-1].inventory)
    cubes = []
    for root in (tiny_scenario, changed):
        c = load_config(root / "config.yaml")
        c.output.dir = tmp_path / f"out-{root.name}"
        cubes.append(open_cube(prepare(c, progress=False)))
    a, b = cubes
    assert a.meta.dynamic_bands == CUBE_DYNAMIC_NAMES
    np.testing.assert_array_equal(a.dynamic[:], b.dynamic[:])
    np.testing.assert_array_equal(a.monsoons_since_eq, b.monsoons_since_eq)
    ta, tb = a.target_density[:], b.target_density[:]
    np.testing.assert_array_equal(ta[:-1], tb[:-1])
    assert np.nansum(tb[-1]) == 0 < np.nansum(ta[-1])
    # and the cube's legacy is the hand-checked function of the cube's own targets
    legacy = a.dynamic[:, len(DYNAMIC_NAMES) :]
    valid = a.valid_cells.astype(bool)
    np.testing.assert_array_equal(legacy, legacy_bands(ta, a.meta.periods, valid))
    assert legacy[0, 1][valid].max() == 0 and legacy[1, 0][valid].max() > 0


def test_a_reader_gives_the_model_its_bands(tiny_cube):
    plain = CubeReader(tiny_cube)
    legacy = CubeReader(tiny_cube, dynamic_bands=DYNAMIC_NAMES + MODEL_LEGACY_NAMES)
    assert plain.n_channels == 13 and legacy.n_channels == 16
    assert plain.input_names == input_names(False) and legacy.input_names == input_names(True)
    np.testing.assert_array_equal(legacy.dynamic[:, :4], plain.dynamic)
    stored = [CUBE_DYNAMIC_NAMES.index(b) for b in MODEL_LEGACY_NAMES]
    np.testing.assert_array_equal(legacy.dynamic[:, 4:], tiny_cube.dynamic[:, stored])


def test_a_cube_without_legacy_bands_is_refused_by_a_legacy_model(tiny_cube):
    from landslide_hazard.errors import InputError

    tiny_cube.meta.dynamic_bands = DYNAMIC_NAMES  # as a cube written before the legacy bands
    with pytest.raises(InputError, match=r"no band\(s\).*legacy_prev_density.*--overwrite"):
        CubeReader(
            tiny_cube,
            dynamic=tiny_cube.dynamic[:, :4],
            dynamic_bands=DYNAMIC_NAMES + MODEL_LEGACY_NAMES,
        )


def test_legacy_bands_are_constant_over_each_cell(tiny_cube):
    """Triggers are smooth fields (bilinear); a cell's record is its own (nearest)."""
    from landslide_hazard.sampling.dataset import upsample_cells_bilinear
    from landslide_hazard.sampling.lattice import read_window

    reader = CubeReader(tiny_cube, dynamic_bands=DYNAMIC_NAMES + LEGACY_NAMES)
    plain = CubeReader(tiny_cube)
    k = tiny_cube.grid.cell_pixels
    win = reader.dynamic_window(2, 3, 4, 4, 4)
    np.testing.assert_array_equal(win[:4], plain.dynamic_window(2, 3, 4, 4, 4))
    cells = tiny_cube.dynamic[2, 4:, 3:7, 4:8]
    np.testing.assert_array_equal(win[4:], np.repeat(np.repeat(cells, k, 1), k, 2))
    halo = read_window(reader.dynamic, 2, 3, 6, 6, prefix=(2,))
    np.testing.assert_array_equal(win[:4], upsample_cells_bilinear(halo[:4], k))


def test_validate_refuses_legacy_true_with_a_leaking_protocol_before_training(
    monkeypatch, minimal_config
):
    from landslide_hazard import validate as validate_mod
    from landslide_hazard.config import RunConfig
    from landslide_hazard.errors import InputError

    cfg = RunConfig.model_validate(minimal_config("temporal", legacy=True))

    def boom(*args, **kwargs):
        raise AssertionError("no training may start")

    monkeypatch.setattr("landslide_hazard.training.train", boom)
    with pytest.raises(InputError, match="legacy = true with protocol.*spatial"):
        validate_mod.validate(cfg, ["temporal", "spatial"], progress=False)


def test_a_reader_with_other_bands_equals_a_fresh_one(tiny_cube):
    """``with_dynamic_bands`` shares the static pixels and gives the patches a fresh reader of
    those bands gives."""
    from landslide_hazard.errors import InputError
    from landslide_hazard.sampling.normalisation import compute_normalisation

    full = CubeReader(tiny_cube, dynamic_bands=DYNAMIC_NAMES + LEGACY_NAMES)
    derived = full.with_dynamic_bands(DYNAMIC_NAMES)
    fresh = CubeReader(tiny_cube)
    assert derived.static is full.static and derived.input_names == fresh.input_names
    np.testing.assert_array_equal(derived.dynamic, fresh.dynamic)
    cells = np.ones_like(fresh.label_mask)
    norm = compute_normalisation(fresh.static, fresh.dynamic, fresh.monsoons, cells, 4)
    np.testing.assert_array_equal(
        derived.patch_input(norm, 1, 2, 3), fresh.patch_input(norm, 1, 2, 3)
    )
    assert full.n_channels == 13 + len(LEGACY_NAMES)  # the original is untouched
    with pytest.raises(InputError, match="no band"):
        derived.with_dynamic_bands(DYNAMIC_NAMES + LEGACY_NAMES)
