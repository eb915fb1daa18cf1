"""Seasonal-lag input for long seasons: index rules, defaults, and the Keras model cropping the same slices."""

from __future__ import annotations

import numpy as np
import pytest

from streamedge.training.config import ForecasterConfig
from streamedge.training.forecast import default_window
from streamedge.training.seasonal_lags import SeasonalLagLayout, default_recent, seasonal_lag_inputs
from streamedge.training.windowing import make_windows


def test_lag_blocks_hold_the_forecast_hours_whole_seasons_back() -> None:
    season, horizon, recent = 10, 4, 3
    layout = SeasonalLagLayout(window=2 * season, season=season, horizon=horizon, recent=recent)
    series = np.arange(60, dtype=np.float32)  # value == time index
    x, y = make_windows(series, layout.window, horizon)
    blocks = seasonal_lag_inputs(x, layout)
    assert layout.lags == 2
    assert blocks["lags"].shape == (len(x), 2, horizon, 1)
    # lag block m holds the targets' times minus m seasons; lag 1 is the seasonal-naive forecast
    for m in (1, 2):
        np.testing.assert_array_equal(blocks["lags"][:, m - 1], y - m * season)
    np.testing.assert_array_equal(blocks["recent"][:, :, 0], x[:, -recent:, 0])
    np.testing.assert_array_equal(blocks["seasonal_diff"], np.full((len(x), recent, 1), season, np.float32))


def test_layout_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"recent \(8\) \+ season \(10\) must fit in window \(15\)"):
        SeasonalLagLayout(window=15, season=10, horizon=2, recent=8)
    with pytest.raises(ValueError, match=r"horizon \(12\) <= season \(10\)"):
        SeasonalLagLayout(window=20, season=10, horizon=12, recent=2)
    with pytest.raises(ValueError, match="seasonal-lag input needs"):
        ForecasterConfig(window=20, season=10, horizon=12, recent=2)


def test_defaults_use_lags_only_for_long_seasons() -> None:
    assert default_recent(12, 12) == 0 and default_recent(48, 24) == 0
    assert default_recent(336, 48) == 96  # half-hourly readings, weekly season: 96 LSTM steps, not 672
    assert default_recent(52, 13) == 26 and default_recent(60, 2) == 8 and default_recent(60, 90) == 0
    assert default_window(336, 48, 96) == 672  # two seasons: the forecast hours one and two weeks back
    assert default_window(12, 12) == 36


def test_keras_model_crops_the_same_slices() -> None:
    from streamedge.training.models import build_forecaster, seed_everything

    config = ForecasterConfig(window=24, horizon=3, season=10, recent=4, units=4)
    seed_everything(0)
    model = build_forecaster(1, config)
    windows = np.random.default_rng(0).standard_normal((5, 24, 1)).astype(np.float32)
    layout = SeasonalLagLayout(24, 10, 3, 4)
    naive = seasonal_lag_inputs(windows, layout)["lags"][:, 0, :, 0]
    dense = model.get_layer("correction")
    assert dense.kernel.shape == (4, 3)  # the LSTM state only
    # the correction starts at zero: the untrained model returns lag block 1, seasonal naive
    np.testing.assert_array_equal(model.predict(windows, verbose=0), naive)
    dense.set_weights([np.ones(w.shape, np.float32) for w in dense.get_weights()])
    assert np.abs(model.predict(windows, verbose=0) - naive).min() > 1e-3
    assert model.input_shape == (None, 24, 1) and model.output_shape == (None, 3)
