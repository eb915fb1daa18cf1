"""Bad input fails early (before any training) with a message that names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamedge.training.classify import train_classifier
from streamedge.training.config import ClassifierConfig, ForecasterConfig
from streamedge.training.errors import DataError
from streamedge.training.export import VariantResult, select_variant
from streamedge.training.forecast import train_forecaster
from tests.training.helpers import write_seasonal_csv, write_ts


def test_two_series_per_class_is_refused(tmp_path: Path) -> None:
    train = write_ts(tmp_path / "a_TRAIN.ts", per_class=2)
    test = write_ts(tmp_path / "a_TEST.ts", per_class=2)
    with pytest.raises(DataError, match=r"too few training series per class: \{'up': 2, 'down': 2\}; "
                                        r"each class needs at least 3"):
        train_classifier(train, test, tmp_path / "out", ClassifierConfig(epochs=1), progress=False)
    assert not (tmp_path / "out").exists()


def test_series_shorter_than_window_plus_horizon_is_refused(tmp_path: Path) -> None:
    data = write_seasonal_csv(tmp_path / "short.csv", length=30)
    config = ForecasterConfig(window=24, horizon=6, season=8, epochs=1)
    with pytest.raises(DataError, match=r"series 'short' has 30 points; window 24 \+ horizon 6 needs at least 36"):
        train_forecaster(data, tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()


def test_window_must_exceed_season() -> None:
    with pytest.raises(ValueError, match=r"window \(12\) must be longer than season \(12\)"):
        ForecasterConfig(window=12, season=12)


def test_selection_follows_measurements(tmp_path: Path) -> None:
    def result(variant: str, size: int, latency: float, passed: bool = True, loads: bool = True) -> VariantResult:
        status = "ok" if loads else "ValueError: op version"
        return VariantResult(variant, tmp_path / variant, size, latency_ms_p50=latency, passed=passed,
                             runtimes={"tflite_runtime": status, "ai_edge_litert": "ok"})

    results = [result("float32", 1000, 0.10), result("float16", 500, 0.11), result("dynamic", 250, 0.09, loads=False),
               result("int8", 260, 0.50)]
    assert select_variant(results)[0] == "float16"  # int8 is 5x slower, dynamic fails one runtime
    results[3] = result("int8", 260, 0.12)
    assert select_variant(results)[0] == "int8"
    results[3] = result("int8", 260, 0.12, passed=False)
    assert select_variant(results)[0] == "float16"
    assert select_variant([result("float32", 1, 1.0, passed=False)])[0] == "float32"
