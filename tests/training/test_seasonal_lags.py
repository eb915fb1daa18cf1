"""Seasonal-lag input for long seasons: index rules, defaults, and the Keras model cropping the same slices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from streamedge.training.config import ForecasterConfig
from streamedge.training.forecast import default_config, default_window
from streamedge.training.seasonal_lags import SeasonalLagLayout, default_recent, seasonal_lag_base, seasonal_lag_inputs
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
    long, short = default_config(48, 336), default_config(12, 12)
    assert (long.recent, long.window, long.base_diffs, long.correction_scales) == (96, 672, 4, (0.0,))
    # classic input: the trained correction is kept only where it beats seasonal naive (its base) on validation
    assert (short.recent, short.base_diffs, short.correction_scales) == (0, 0, (0.0, 1.0))
    assert default_config(13, 52).base_diffs == 4 and default_config(2, 60).base_diffs == 4  # recent 8


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


def test_base_adds_the_mean_of_the_last_seasonal_differences() -> None:
    season, horizon, recent = 10, 4, 6
    layout = SeasonalLagLayout(window=2 * season, season=season, horizon=horizon, recent=recent)
    t = np.arange(40, dtype=np.float32)
    series = 0.5 * t + np.sin(2 * np.pi * t / season).astype(np.float32)  # trend 0.5: each season adds 5
    x, y = make_windows(series, layout.window, horizon)
    np.testing.assert_array_equal(seasonal_lag_base(x, layout, 0), seasonal_lag_inputs(x, layout)["lags"][:, 0])
    np.testing.assert_allclose(seasonal_lag_base(x, layout, 4), y, atol=1e-5)  # naive + 5: the true next values
    with pytest.raises(ValueError, match="diffs must be from 0 to recent"):
        seasonal_lag_base(x, layout, recent + 1)
    with pytest.raises(ValueError, match="base_diffs must be an integer from 0 to recent"):
        ForecasterConfig(window=24, horizon=3, season=10, recent=4, base_diffs=5)


@pytest.mark.parametrize("diffs", [1, 3, 4])
def test_untrained_model_is_the_base_bit_for_bit(diffs: int) -> None:
    from streamedge.training.models import build_forecaster, seed_everything

    config = ForecasterConfig(window=24, horizon=3, season=10, recent=5, units=4, base_diffs=diffs)
    seed_everything(0)
    model = build_forecaster(1, config)
    windows = np.random.default_rng(diffs).standard_normal((64, 24, 1)).astype(np.float32) * 37
    base = seasonal_lag_base(windows, SeasonalLagLayout(24, 10, 3, 5), diffs)[..., 0]
    # Called eagerly, op by op. model.predict runs a graph that TensorFlow's optimiser may rearrange
    # (an add chain summed in another order, one float32 rounding apart).
    np.testing.assert_array_equal(np.asarray(model(windows)), base)
    np.testing.assert_allclose(model.predict(windows, verbose=0), base, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("bias", "chosen"), [(1.0, 1.0), (3.0, 0.25), (-1.0, 0.0)])
def test_correction_scale_is_chosen_on_validation(bias: float, chosen: float) -> None:
    from streamedge.training.forecast import choose_correction_scale
    from streamedge.training.models import build_forecaster, seed_everything

    config = ForecasterConfig(window=24, horizon=3, season=10, recent=4, units=4)
    seed_everything(0)
    model = build_forecaster(1, config)
    x = np.random.default_rng(0).standard_normal((20, 24, 1)).astype(np.float32)
    naive = seasonal_lag_inputs(x, SeasonalLagLayout(24, 10, 3, 4))["lags"][:, 0, :, 0]
    y = naive + 1.0  # the truth is one above seasonal naive
    dense = model.get_layer("correction")
    kernel, _ = dense.get_weights()
    dense.set_weights([kernel, np.full(3, bias, np.float32)])
    result = choose_correction_scale(model, (0.0, 0.25, 0.5, 1.0), x, y)
    assert result["scale"] == chosen  # -1: the base is better than any share of the correction
    np.testing.assert_allclose(model.predict(x, verbose=0), naive + chosen * bias, atol=1e-5)
    assert choose_correction_scale(model, (), x, y)["scale"] == 1.0  # no candidates: kept as it is
    only_base = choose_correction_scale(model, (0.0,), x, y)  # the default: the base, the trained one still scored
    assert only_base["scale"] == 0.0 and set(only_base["validation_mae"]) == {"0.0", "1.0"}


def test_training_falls_back_to_the_base_when_it_wins_on_validation(tmp_path: Path) -> None:
    from streamedge.contracts.manifest import read_manifest
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.training.data import DataReport, SeriesData
    from streamedge.training.forecast import train_forecaster

    # A trending seasonal series with little noise: the base (naive + the mean seasonal change) is
    # nearly exact, so a correction trained briefly at a high learning rate only adds error on validation.
    season, horizon, recent = 10, 3, 4
    t = np.arange(160)
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(t))
    series = (0.3 * t + 5 * np.sin(2 * np.pi * t / season) + noise).astype(np.float32)[:, None]
    data = SeriesData(series=[series], ids=["s"], features=["value"], report=DataReport())
    config = ForecasterConfig(window=2 * season, horizon=horizon, season=season, recent=recent, units=4, epochs=3,
                              patience=3, learning_rate=0.05, base_diffs=4, correction_scales=(0.0, 1.0))
    metrics = train_forecaster(data, tmp_path / "out", config, progress=False)
    assert metrics["correction"]["scale"] == 0.0
    assert metrics["correction"]["validation_mae"]["0.0"] < metrics["correction"]["validation_mae"]["1.0"]
    manifest = read_manifest(tmp_path / "out")
    assert manifest.hyperparameters["correction_scales"] == [0.0, 1.0]  # JSON: a retrain rebuilds the config
    assert ForecasterConfig(**{k: v for k, v in manifest.hyperparameters.items()
                               if k != "model"}) == dataclasses.replace(config, per_series_scaling=False)
    # The shipped file is the base, through the manifest's normalisation (the base commutes with it).
    mean, std = manifest.normalisation["mean"][0], manifest.normalisation["std"][0]
    window = series[None, -horizon - config.window:-horizon]
    base = seasonal_lag_base(window, SeasonalLagLayout(config.window, season, horizon, recent), 4)[0, :, 0]
    runner = TFLiteRunner(tmp_path / "out" / "variants" / "float32.tflite", manifest)
    forecast = runner.run(((window - mean) / std).astype(np.float32))[0] * std + mean
    np.testing.assert_allclose(forecast, base, atol=1e-4)
    assert metrics["keras"]["mase"] < 0.05 < metrics["baselines"]["seasonal_naive"]["mase"]
