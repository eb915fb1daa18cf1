"""The forecaster family: candidates chosen on validation, never worse than seasonal naive there, scored on
rolling origins; a short history gets a window that fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.runner import TFLiteRunner
from streamedge.training.errors import DataError
from streamedge.training.forecast import default_config, train_forecaster
from streamedge.training.forecast_origins import fit_to_history, origin_split, shortest_fit
from tests.training.helpers import write_seasonal_csv


def _one_feature(path: Path, length: int, season: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    values = 50 + 0.05 * t + 10 * np.sin(2 * np.pi * t / season) + rng.standard_normal(length)
    path.write_text("\n".join(["step,load", *(f"{i},{v:.4f}" for i, v in zip(t, values, strict=True))]) + "\n")
    return path


def _seasonal_naive_mase(series: np.ndarray, horizon: int, season: int, origins: int) -> list[float]:
    """Seasonal naive's MASE at each rolling origin, computed here from the raw series."""
    history = series[: len(series) - origins * horizon]
    scale = np.mean(np.abs(history[season:] - history[:-season]))
    figures = []
    for k in range(origins):
        end = len(series) - (origins - k) * horizon
        forecast = series[end - season:end][np.arange(horizon) % season]
        figures.append(float(np.mean(np.abs(series[end:end + horizon] - forecast)) / scale))
    return figures


def test_auto_keeps_the_candidate_best_on_validation_and_scores_rolling_origins(tmp_path: Path) -> None:
    data = _one_feature(tmp_path / "load.csv", 220, season=8)
    config = default_config(horizon=4, season=8, epochs=3, patience=2)
    assert (config.model, config.origins, config.correction_scales) == ("auto", 3, (0.0, 1.0))
    metrics = train_forecaster(data, tmp_path / "out", config, columns=["load"], progress=False)
    family = metrics["family"]
    assert set(family["candidates"]) == {"lstm", "linear"}
    best = min(family["candidates"], key=lambda k: (family["candidates"][k]["validation_mae"], k != "linear"))
    assert family["chosen"] == best
    assert family["validation_mae"] <= family["seasonal_naive_validation_mae"]
    manifest = read_manifest(tmp_path / "out")
    assert manifest.hyperparameters["model"] == best and manifest.metrics["family"]["ships"] == family["ships"]
    assert manifest.name == f"load-{best}"
    origins = metrics["origins"]
    assert origins["count"] == 3 and len(origins["keras"]["mase"]) == 3
    assert origins["keras"]["mase_mean"] == pytest.approx(np.mean(origins["keras"]["mase"]))
    assert origins["keras"]["mase_std"] == pytest.approx(np.std(origins["keras"]["mase"]))
    raw = np.loadtxt(data, delimiter=",", skiprows=1)[:, 1]
    assert origins["seasonal_naive"]["mase"] == pytest.approx(_seasonal_naive_mase(raw, 4, 8, 3), rel=1e-4)
    assert metrics["data"]["test_points"] == 3 * 4
    assert metrics["tflite"]["float32"]["parity"] == "passed"
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert f"tflite {metrics['selected_variant']}" in on_disk["origins"]


def test_a_linear_model_that_loses_to_seasonal_naive_ships_the_seasonal_base(tmp_path: Path) -> None:
    data = write_seasonal_csv(tmp_path / "two.csv", length=160)
    # a learning rate of 5 wrecks the fit; no correction scale may rescue it: the guard must
    config = default_config(horizon=4, season=8, model="linear", origins=2, epochs=2, patience=1, learning_rate=5.0,
                            correction_scales=())
    metrics = train_forecaster(data, tmp_path / "out", config, columns=["load", "temp"], progress=False)
    family = metrics["family"]
    assert family["candidates"]["linear"]["validation_mae"] > family["seasonal_naive_validation_mae"]
    assert (family["ships"], family["validation_mae"]) == ("seasonal base", family["seasonal_naive_validation_mae"])
    assert read_manifest(tmp_path / "out").metrics["family"]["ships"] == "seasonal base"
    # the exported file is seasonal naive: raw window in, the last season out
    manifest = read_manifest(tmp_path / "out")
    runner = TFLiteRunner(tmp_path / "out" / "model.tflite", manifest)
    mean, std = np.asarray(manifest.normalisation["mean"]), np.asarray(manifest.normalisation["std"])
    window = np.random.default_rng(1).normal(size=(1, manifest.window, 2)) * std + mean
    out = runner.run(((window - mean) / std).astype(np.float32)).reshape(4, 2) * std + mean
    np.testing.assert_allclose(out, window[0, -8:-4], rtol=1e-5, atol=1e-4)
    assert metrics["origins"]["keras"]["mase"] == pytest.approx(metrics["origins"]["seasonal_naive"]["mase"], rel=1e-4)


def test_a_short_history_gets_a_window_that_fits_instead_of_an_error(tmp_path: Path) -> None:
    # six days of half-hourly readings, horizon and season 48 (issue 26)
    data = _one_feature(tmp_path / "six_days.csv", 6 * 48, season=48)
    config = default_config(horizon=48, season=48, model="linear", epochs=2, patience=1)
    with pytest.raises(DataError):
        train_forecaster(data, tmp_path / "refused", config, columns=["load"], progress=False)
    fitted, notes = fit_to_history([6 * 48], config)
    assert fitted.window < config.window and fitted.origins < config.origins and len(notes) == 2
    metrics = train_forecaster(data, tmp_path / "out", config, columns=["load"], progress=False, fit_window=True)
    assert metrics["data"]["window"] == fitted.window and metrics["origins"]["count"] == fitted.origins
    assert any("window shortened" in w for w in metrics["warnings"])
    assert read_manifest(tmp_path / "out").window == fitted.window


def test_origin_split_is_origin_major_and_leaves_the_test_out_of_the_history() -> None:
    series = [np.arange(30, dtype=np.float32).reshape(-1, 1), np.arange(100, 125, dtype=np.float32).reshape(-1, 1)]
    histories, contexts, actual = origin_split(series, window=5, horizon=3, origins=2)
    assert [len(h) for h in histories] == [24, 19]
    assert contexts.shape == (4, 5, 1) and actual.shape == (4, 3, 1)
    assert actual[:, :, 0].tolist() == [[24, 25, 26], [119, 120, 121], [27, 28, 29], [122, 123, 124]]
    assert contexts[2, :, 0].tolist() == [22, 23, 24, 25, 26]


def test_a_constant_series_trains_and_forecasts_itself(tmp_path: Path) -> None:
    """Before: the run trained, exported and then failed writing the manifest ("validation_error values
    must be positive finite numbers, got {'mae': 0.0, 'residual_std': 0.0}")."""
    data = tmp_path / "flat.csv"
    data.write_text("value\n" + "5.0\n" * 200)
    config = default_config(horizon=6, season=12, model="linear", epochs=2, patience=1)
    metrics = train_forecaster(data, tmp_path / "out", config, progress=False)
    manifest = read_manifest(tmp_path / "out")
    assert 0 < manifest.validation_error["residual_std"] <= 1e-5
    assert np.isfinite(metrics["keras"]["mase"]) and metrics["keras"]["mae"] == pytest.approx(0.0, abs=1e-4)
    runner = TFLiteRunner(tmp_path / "out" / "model.tflite", manifest)
    mean, std = np.asarray(manifest.normalisation["mean"]), np.asarray(manifest.normalisation["std"])
    window = np.full((1, manifest.window, 1), 5.0)
    out = runner.run(((window - mean) / std).astype(np.float32)) * std + mean
    np.testing.assert_allclose(out, 5.0, atol=1e-3)


@pytest.mark.parametrize(("length", "horizon"), [(20, 12), (30, 12), (40, 6), (47, 12)])
def test_a_history_too_short_for_any_window_is_refused_with_the_length_it_needs(
        tmp_path: Path, length: int, horizon: int) -> None:
    """Before: "series 's': -12 history points cannot give a seasonal-naive scale for season 12" (20
    points), or a length net of the test origins ("has 28 points" for a file of 40)."""
    data = _one_feature(tmp_path / "short.csv", length, season=12)
    config = default_config(horizon=horizon, season=12, model="linear", epochs=1)
    need = shortest_fit(config)
    assert length < need and fit_to_history([need], config)[0].origins == 1 and fit_to_history([need - 1], config)[1] == []
    with pytest.raises(DataError, match=rf"^series 'short' has {length} points; .* no shorter window fits either: "
                                        rf"horizon {horizon} and season 12 need at least {need} points"):
        train_forecaster(data, tmp_path / "out", config, columns=["load"], progress=False, fit_window=True)
    assert not (tmp_path / "out").exists()
