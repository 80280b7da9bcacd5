"""Rain anomalies within the period (``predictors.trigger_anomalies``; bands.ANOMALY_BANDS)."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_hazard.bands import (
    ANOMALY_NAMES,
    ANOMALY_SOURCES,
    CUBE_DYNAMIC_NAMES,
    DYNAMIC_NAMES,
    MODEL_LEGACY_NAMES,
    dynamic_names_of,
    input_names,
    model_dynamic_names,
)
from landslide_hazard.sampling.dataset import CubeReader, period_anomaly

WITH_ANOMALIES = DYNAMIC_NAMES + ANOMALY_NAMES


def test_period_anomaly_by_hand():
    values = np.array(
        [
            [[1.0, 2.0], [3.0, np.nan]],
            [[np.nan, np.nan], [np.nan, np.nan]],
            [[4.0, 4.0], [10.0, 6.0]],
        ]
    )
    valid = np.array([[True, True], [False, True]])
    got = period_anomaly(values, valid)
    # period 0: the valid finite cells are 1 and 2 (3 is outside the mask, the 4th is NaN)
    np.testing.assert_allclose(got[0], [[-0.5, 0.5], [1.5, np.nan]], atol=1e-6)
    assert np.isnan(got[1]).all()  # no finite valid cell: no mean
    np.testing.assert_allclose(got[2], [[-2 / 3, -2 / 3], [16 / 3, 4 / 3]], atol=1e-6)
    assert got.dtype == np.float32


def test_layouts_with_anomalies():
    assert len(input_names(False, True)) == 15 and len(input_names(True, True)) == 18
    assert model_dynamic_names(True, True) == DYNAMIC_NAMES + ANOMALY_NAMES + MODEL_LEGACY_NAMES
    for legacy in (False, True):
        for anomalies in (False, True):
            names = input_names(legacy, anomalies)
            assert dynamic_names_of(names) == model_dynamic_names(legacy, anomalies)
    assert set(ANOMALY_SOURCES.values()) <= set(DYNAMIC_NAMES)


def _expected_anomaly(cube, band):
    """The anomaly computed here with numpy's masked mean, independently of the reader."""
    values = np.asarray(cube.dynamic[:, CUBE_DYNAMIC_NAMES.index(ANOMALY_SOURCES[band])])
    valid = np.asarray(cube.valid_cells)
    means = np.ma.masked_array(values, ~np.broadcast_to(valid, values.shape)).mean(axis=(1, 2))
    return values - np.asarray(means)[:, None, None]


def test_a_reader_derives_the_anomalies_from_the_stored_rain(tiny_cube):
    reader = CubeReader(tiny_cube, dynamic_bands=WITH_ANOMALIES)
    assert reader.input_names == input_names(False, True) and reader.n_channels == 15
    for i, band in enumerate(ANOMALY_NAMES):
        np.testing.assert_allclose(
            reader.dynamic[:, 4 + i], _expected_anomaly(tiny_cube, band), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_array_equal(
        reader.dynamic[:, :4], CubeReader(tiny_cube).dynamic
    )  # the stored bands untouched
    # another choice from a reader that holds only the triggers: the same values
    other = CubeReader(tiny_cube).with_dynamic_bands(WITH_ANOMALIES)
    np.testing.assert_array_equal(other.dynamic, reader.dynamic)
    back = reader.with_dynamic_bands(DYNAMIC_NAMES)
    np.testing.assert_array_equal(back.dynamic, CubeReader(tiny_cube).dynamic)


def test_a_what_if_rain_gets_its_own_anomaly(tiny_cube):
    dynamic = np.asarray(tiny_cube.dynamic[:], dtype=np.float32).copy()
    rain = CUBE_DYNAMIC_NAMES.index("rain_max")
    dynamic[1, rain] = 7.0  # a uniform storm: no cell wetter than another
    dynamic[2, rain] += 100.0  # the same field, wetter everywhere: the same anomaly
    reader = CubeReader(tiny_cube, dynamic=dynamic, dynamic_bands=WITH_ANOMALIES)
    mapped = CubeReader(tiny_cube, dynamic_bands=WITH_ANOMALIES)
    valid = tiny_cube.valid_cells
    np.testing.assert_allclose(reader.dynamic[1, 4][valid], 0.0, atol=1e-6)
    np.testing.assert_allclose(reader.dynamic[2, 4], mapped.dynamic[2, 4], atol=1e-4)
    np.testing.assert_array_equal(reader.dynamic[0], mapped.dynamic[0])


def test_an_override_as_wide_as_the_cube_must_say_its_layout(tiny_cube):
    bands = DYNAMIC_NAMES + ANOMALY_NAMES + MODEL_LEGACY_NAMES  # 9 bands, as many as the cube
    assert len(bands) == len(CUBE_DYNAMIC_NAMES)
    stored = np.asarray(tiny_cube.dynamic[:], dtype=np.float32)
    with pytest.raises(ValueError, match="dynamic_picked"):
        CubeReader(tiny_cube, dynamic=stored, dynamic_bands=bands)
    full = CubeReader(tiny_cube, dynamic=stored, dynamic_bands=bands, dynamic_picked=False)
    np.testing.assert_array_equal(full.dynamic, CubeReader(tiny_cube, dynamic_bands=bands).dynamic)
    again = CubeReader(tiny_cube, dynamic=full.dynamic, dynamic_bands=bands, dynamic_picked=True)
    np.testing.assert_array_equal(again.dynamic, full.dynamic)


def test_auto_means_on_but_for_the_paper_preset(minimal_config):
    from landslide_hazard.config import RunConfig

    def resolved(preset, **predictors):
        return RunConfig.model_validate(minimal_config("temporal", preset, **predictors))

    assert resolved("tiny").trigger_anomalies is True
    assert resolved("paper").trigger_anomalies is False  # the published recipe: Table 1's inputs
    assert resolved("tiny", trigger_anomalies=False).trigger_anomalies is False
    assert resolved("paper", trigger_anomalies=True).trigger_anomalies is True
    assert resolved("tiny").model_dynamic_bands == model_dynamic_names(True, True)


def test_the_baselines_read_the_anomalies_only_with_the_run():
    from landslide_hazard.validate import _Observed

    names = ["slope_mean", *DYNAMIC_NAMES, *ANOMALY_NAMES, "legacy_prev_density", "monsoons"]
    features = np.arange(len(names), dtype=float).reshape(1, 1, 1, -1)
    data = _Observed(None, features, names, np.zeros(1), np.zeros(1), None, None, None)  # type: ignore[arg-type]
    kept = data.features_for(WITH_ANOMALIES)[0, 0, 0]
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
    assert data.features_for(DYNAMIC_NAMES)[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 8]
