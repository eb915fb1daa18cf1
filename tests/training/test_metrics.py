"""Metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamedge.training.metrics import (
    classification_metrics,
    confusion_matrix,
    forecast_metrics,
    seasonal_naive_forecast,
    seasonal_naive_scale,
)


def test_forecast_metrics_by_hand() -> None:
    actual = np.array([1.0, 2.0, 4.0])
    predicted = np.array([2.0, 2.0, 1.0])
    # errors 1, 0, -3: MAE 4/3, RMSE sqrt(10/3), MAPE (1/1 + 0 + 3/4)/3 = 58.33 %
    m = forecast_metrics(actual, predicted, scale=2.0)
    assert m["mae"] == pytest.approx(4 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(10 / 3))
    assert m["mape"] == pytest.approx(175 / 3)
    assert m["mape_kind"] == "mape"
    assert m["mase"] == pytest.approx(2 / 3)
    # sMAPE: 2*1/3, 0, 2*3/5 -> (0.6667 + 0 + 1.2)/3 = 62.22 %
    assert m["smape"] == pytest.approx((2 / 3 + 6 / 5) / 3 * 100)


def test_zero_truth_reports_smape_in_place_of_mape() -> None:
    m = forecast_metrics(np.array([0.0, 2.0]), np.array([1.0, 2.0]), scale=1.0)
    assert m["mape_kind"] == "smape"
    assert m["mape"] == pytest.approx(100.0)  # (2*1/1 + 0)/2


def test_mase_with_per_series_scale() -> None:
    actual = np.zeros((2, 3, 1))
    predicted = np.ones((2, 3, 1))
    scale = np.array([[[1.0]], [[4.0]]])
    assert forecast_metrics(actual, predicted, scale)["mase"] == pytest.approx((1.0 + 0.25) / 2)


def test_seasonal_naive_scale_and_forecast() -> None:
    history = np.array([1.0, 2.0, 3.0, 2.0, 4.0, 3.0])  # season 2 diffs: 2, 0, 1, 1 -> 1.0
    assert seasonal_naive_scale(history, 2) == pytest.approx(1.0)
    context = np.array([10.0, 11.0, 12.0])[:, None]
    np.testing.assert_array_equal(seasonal_naive_forecast(context, 5, 2)[:, 0], [11.0, 12.0, 11.0, 12.0, 11.0])
    with pytest.raises(ValueError, match="more than 6 history points"):
        seasonal_naive_scale(history, 6)


def test_classification_metrics_by_hand() -> None:
    actual = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    assert confusion_matrix(actual, predicted, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = classification_metrics(actual, predicted, 3)
    assert m["accuracy"] == pytest.approx(400 / 6)
    # precision: 1/2, 2/3, 1; recall: 1/2, 1, 1/2
    assert m["precision_macro"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [0.5, 2 * (2 / 3) / (5 / 3), 2 * 0.5 / 1.5]
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)


def test_accuracy_interval_is_wilson() -> None:
    from streamedge.training.metrics import accuracy_interval

    low, high = accuracy_interval(30, 30)
    assert low == pytest.approx(88.65, abs=0.01) and high == 100.0
    low, high = accuracy_interval(15, 30)  # p = 0.5: symmetric, half-width z * sqrt(.25/30 + z^2/3600) / (1 + z^2/30)
    assert low == pytest.approx(33.15, abs=0.01) and high == pytest.approx(66.85, abs=0.01)
    assert accuracy_interval(0, 0) == (0.0, 100.0)
    metrics = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], 2)
    assert metrics["accuracy_ci95"] == list(accuracy_interval(3, 4))
