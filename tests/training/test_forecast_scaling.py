"""The untrained forecaster is seasonal naive; per-series scaling makes the forecast scale with the series,
in Keras, in the exported file and through the manifest's normalisation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from streamedge.training.config import ForecasterConfig
from streamedge.training.metrics import seasonal_naive_forecast


def _windows(n: int, window: int, seed: int = 0) -> np.ndarray:
    """Random-walk windows with a season-4 wave, ``(n, window, 1)`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(window)
    walk = np.cumsum(rng.standard_normal((n, window)), axis=1) + 3 * np.sin(2 * np.pi * t / 4)
    return walk[..., None].astype(np.float32)


@pytest.mark.parametrize(("config", "scaling"), [
    (ForecasterConfig(window=12, horizon=6, season=4, units=4), False),
    (ForecasterConfig(window=12, horizon=6, season=4, units=4), True),
    (ForecasterConfig(window=24, horizon=3, season=10, recent=4, units=4), False),
    (ForecasterConfig(window=24, horizon=3, season=10, recent=4, units=4), True),
])
def test_untrained_forecaster_is_seasonal_naive(config: ForecasterConfig, scaling: bool) -> None:
    from streamedge.training.models import build_forecaster, seed_everything

    seed_everything(0)
    model = build_forecaster(1, dataclasses.replace(config, per_series_scaling=scaling))
    windows = _windows(7, config.window)
    naive = seasonal_naive_forecast(windows, config.horizon, config.season)[..., 0].astype(np.float32)
    out = model.predict(windows, verbose=0)
    if scaling:  # naive * scale / scale: equal up to float rounding
        np.testing.assert_allclose(out, naive, rtol=1e-6, atol=1e-5)
    else:
        np.testing.assert_array_equal(out, naive)


def test_per_series_scaling_is_scale_and_shift_equivariant_in_keras_and_tflite(tmp_path: Path) -> None:
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.training.export import convert
    from streamedge.training.models import build_forecaster, seed_everything

    config = ForecasterConfig(window=12, horizon=6, season=4, units=4, per_series_scaling=True)
    seed_everything(0)
    model = build_forecaster(1, config)
    dense = model.get_layer("correction")  # a non-zero correction, so the LSTM path counts
    rng = np.random.default_rng(1)
    dense.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in dense.get_weights()])
    windows = _windows(5, 12)
    base = model.predict(windows, verbose=0)
    naive = seasonal_naive_forecast(windows, 6, 4)[..., 0]
    assert np.abs(base - naive).min() > 1e-3
    for factor in (1e-6, 1e6):
        np.testing.assert_allclose(model.predict(windows * factor, verbose=0), base * factor, rtol=1e-4)
    np.testing.assert_allclose(model.predict(windows + 1000.0, verbose=0), base + 1000.0, rtol=1e-5, atol=1e-2)
    path = tmp_path / "float32.tflite"
    path.write_bytes(convert(model, "float32", windows))
    runner = TFLiteRunner(path)
    np.testing.assert_allclose(runner.run(windows), base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runner.run(windows * 1e6), base * 1e6, rtol=1e-4)


def test_global_model_over_very_different_scales_trains_scaled_and_serves_raw_values(tmp_path: Path) -> None:
    from streamedge.contracts.manifest import read_manifest
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.training.data import DataReport, SeriesData
    from streamedge.training.forecast import train_forecaster

    rng = np.random.default_rng(0)
    t = np.arange(40)
    series = [((10.0 ** e) * (5 + np.sin(2 * np.pi * t / 4) + 0.1 * rng.standard_normal(40)))[:, None].astype(np.float32)
              for e in (-3, 0, 4)]  # scales 10^7 apart
    data = SeriesData(series=series, ids=["milli", "unit", "myria"], features=["value"], report=DataReport())
    config = ForecasterConfig(window=8, horizon=2, season=4, units=4, epochs=2, patience=1)
    metrics = train_forecaster(data, tmp_path / "out", config, progress=False)
    assert metrics["scaling"]["per_series"] and metrics["scaling"]["scale_spread"] > 1e6
    assert not any("one normalisation" in w for w in metrics["warnings"])
    manifest = read_manifest(tmp_path / "out")
    assert manifest.normalisation["mean"] == [0.0]
    # The runtime contract, as the stream worker applies it: (raw - mean) / std in, forecast * std + mean out.
    std = np.float32(manifest.normalisation["std"][0])
    runner = TFLiteRunner(tmp_path / "out" / "variants" / "float32.tflite", manifest)
    raw = np.stack([s[-10:-2] for s in series])
    forecast = runner.run(raw / std) * std
    np.testing.assert_allclose(runner.run(raw * 1e6 / std) * std, forecast * 1e6, rtol=1e-4)
    # the smallest series is forecast at its own resolution: closer to the truth than its wave's amplitude
    truth = np.stack([s[-2:, 0] for s in series])
    assert np.all(np.abs(forecast[0] - truth[0]) < 1e-3)
