"""The rolling error and drift of one model: exact means, finite retrain requests."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from streamedge.contracts.manifest import ModelManifest
from streamedge.services.monitor import ModelMonitor


def _monitor(mae_window: int = 50, drift_window: int = 10) -> ModelMonitor:
    manifest = ModelManifest(name="f", version=1, task="forecast", input_shape=[-1, 4, 1], input_dtype="float32",
                             output_shape=[-1, 1], window=4, horizon=1, features=["v"],
                             normalisation={"mean": [0.0], "std": [1.0]}, quantization="float32",
                             model_file="model.tflite", sha256="0" * 64,
                             validation_error={"mae": 1.0, "residual_std": 1.0})
    return ModelMonitor(manifest, mae_window=mae_window, drift_window=drift_window, mae_factor=2.0, drift_z=3.0,
                        min_interval_s=0)


def _strict_json(value: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(value, parse_constant=refuse)


def test_rolling_mae_forgets_errors_near_the_float_limit() -> None:
    monitor = _monitor()
    monitor.add_errors([1.0] * 50)
    monitor.add_error(1e308)
    monitor.add_errors([1e308])  # the two overflow a plain sum
    mae = monitor.mae
    assert mae is not None and math.isfinite(mae) and mae == math.fsum([1.0] * 48 + [1e308 / 50] * 2)
    request = monitor.check(now=1.0)
    assert request is not None and request["trigger"] == "error"
    body = _strict_json(ModelMonitor.encode(request))
    assert body["rolling_mae"] == mae
    for _ in range(50):
        monitor.add_error(1.0)
    assert monitor.mae == 1.0  # both gone with the window: nothing left of them
    assert monitor.check(now=2.0) is None


def test_rolling_mae_of_a_window_of_limit_sized_errors_is_finite() -> None:
    monitor = _monitor(mae_window=3)
    monitor.add_errors([sys.float_info.max] * 3)
    assert monitor.mae is not None and math.isfinite(monitor.mae)
    assert monitor.mae == sys.float_info.max


def test_rolling_mae_is_exact_after_a_huge_error_leaves() -> None:
    monitor = _monitor()
    monitor.add_errors([1.0] * 49 + [1e17])
    assert monitor.mae == (49 + 1e17) / 50
    monitor.add_errors([1.0] * 30)
    for _ in range(20):
        monitor.add_error(1.0)
    assert monitor.mae == 1.0  # a running sum kept a rounding offset of the 1e17 error (0.98)


def test_rolling_mae_is_the_mean_of_the_last_window_of_errors() -> None:
    monitor = _monitor(mae_window=7)
    fed: list[float] = []
    rng = np.random.default_rng(3)
    for size in (3, 1, 9, 1, 2, 13, 1, 6):
        errors = (rng.random(size) * 10.0 ** rng.integers(-3, 20, size)).tolist()
        if size == 1:
            monitor.add_error(errors[0])
        else:
            monitor.add_errors(errors)
        fed += errors
        assert monitor.mae == math.fsum(fed[-7:]) / len(fed[-7:])


def test_drift_request_of_inputs_near_the_float_limit_is_json() -> None:
    monitor = _monitor()
    with np.errstate(over="ignore"):
        monitor.add_inputs(np.full((10, 1), 1e308))
        request = monitor.check(now=1.0)
    assert request is not None and request["trigger"] == "drift"
    body = _strict_json(ModelMonitor.encode(request))
    assert body["drift_z"] == sys.float_info.max
