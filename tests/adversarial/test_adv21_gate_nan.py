"""Issue 21: the forecaster gate must refuse a variant whose errors grow past the bound. A variant
whose outputs are NaN (a broken quantisation) scores a NaN MAE and MASE; every comparison with NaN is
false, so the gate returns "" and the variant passes and can ship."""

from __future__ import annotations

import numpy as np

from streamedge.training.export import error_gate
from streamedge.training.metrics import forecast_metrics


def test_a_variant_forecasting_nan_is_refused_by_the_error_gate() -> None:
    actual = np.array([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])
    keras = forecast_metrics(actual, actual + 0.5, 1.0)
    broken = forecast_metrics(actual, np.full_like(actual, np.nan), 1.0)
    assert np.isnan(float(broken["mae"])), broken  # what the export path scores for NaN outputs
    assert error_gate(keras)(broken) != "", "a variant forecasting NaN passes the MAE/MASE gate"


def test_the_error_gate_refuses_nan_errors_directly() -> None:
    assert error_gate({"mae": 1.0, "mase": 1.0})({"mae": float("nan"), "mase": float("nan")}) != ""
