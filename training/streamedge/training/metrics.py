"""Forecast and classification metrics, and the seasonal-naive baseline.

All forecast metrics take arrays of the same shape in original units and average over every
element. MAPE is undefined where the truth is zero; there :func:`forecast_metrics` reports
sMAPE in its place and says so (``mape_kind``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "accuracy_interval",
    "classification_metrics",
    "confusion_matrix",
    "forecast_metrics",
    "seasonal_naive_forecast",
    "seasonal_naive_scale",
    "smape",
]


def seasonal_naive_scale(history: npt.ArrayLike, season: int) -> float:
    """In-sample MAE of the seasonal-naive forecast ``y[t] = y[t - season]`` (MASE's denominator).

    Args:
        history: ``(T,)`` or ``(T, F)`` training values in time order; ``T > season``.
        season: season length in readings (1 = naive).
    """
    arr = np.asarray(history, dtype=np.float64)
    if season < 1 or arr.shape[0] <= season:
        raise ValueError(f"need season >= 1 and more than {season} history points, got {arr.shape[0]}")
    return float(np.mean(np.abs(arr[season:] - arr[:-season])))


def seasonal_naive_forecast(context: npt.ArrayLike, horizon: int, season: int) -> npt.NDArray[np.float64]:
    """Forecast ``horizon`` steps by repeating the last full season of ``context``.

    Args:
        context: ``(..., T, F)`` values before the forecast origin, ``T >= season``.

    Returns:
        ``(..., horizon, F)``: step ``h`` (0-based) is ``context[T - season + (h % season)]``.
    """
    arr = np.asarray(context, dtype=np.float64)
    length = arr.shape[-2]
    if length < season:
        raise ValueError(f"context of {length} points is shorter than season {season}")
    index = length - season + (np.arange(horizon) % season)
    return arr[..., index, :]


def smape(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Symmetric MAPE in percent: mean of ``2 |p - y| / (|y| + |p|)`` times 100, in [0, 200].

    A point where both are zero counts as 0 (a perfect forecast), not as undefined.
    """
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"actual {y.shape} and predicted {p.shape} differ in shape")
    denom = np.abs(y) + np.abs(p)
    ratio = np.where(denom == 0, 0.0, 2.0 * np.abs(p - y) / np.where(denom == 0, 1.0, denom))
    return float(np.mean(ratio) * 100)


def forecast_metrics(actual: npt.ArrayLike, predicted: npt.ArrayLike, scale: npt.ArrayLike) -> dict[str, Any]:
    """MAE, RMSE, MAPE (or sMAPE where zeros occur) and MASE.

    Args:
        actual: true values, any shape, original units.
        predicted: same shape.
        scale: MASE denominator from :func:`seasonal_naive_scale`: a float, or an array that
            broadcasts against ``actual`` (e.g. ``(n_series, 1, n_features)``, one scale per series
            and feature); MASE is the mean of ``|error| / scale``.

    Returns:
        ``{"mae", "rmse", "mape", "smape", "mase", "mape_kind"}``; ``mape`` and ``smape`` in percent.
    """
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"actual {y.shape} and predicted {p.shape} differ in shape")
    err = p - y
    mae = float(np.mean(np.abs(err)))
    symmetric = smape(y, p)
    has_zero = bool(np.any(y == 0))
    mape = symmetric if has_zero else float(np.mean(np.abs(err) / np.abs(y)) * 100)
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": mape,
        "smape": symmetric,
        "mase": float(np.mean(np.abs(err) / np.maximum(np.asarray(scale, dtype=np.float64), 1e-12))),
        "mape_kind": "smape" if has_zero else "mape",
    }


def confusion_matrix(actual: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    """``(n_classes, n_classes)`` counts; row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def accuracy_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``correct / total``, in percent (95 % for z = 1.96).

    Unlike the normal approximation it stays inside [0, 100] and is not empty at 0 or 100 %:
    30 of 30 correct gives about (88.6, 100).
    """
    if total <= 0:
        return 0.0, 100.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return float(max(0.0, centre - half) * 100), float(min(1.0, centre + half) * 100)


def classification_metrics(actual: npt.ArrayLike, predicted: npt.ArrayLike, n_classes: int) -> dict[str, Any]:
    """Accuracy (percent) with its 95 % Wilson interval, macro precision / recall / F1 (0-1), confusion matrix.

    A class never predicted has precision 0; a class absent from ``actual`` is left out of the
    macro averages (its recall is undefined).
    """
    matrix = confusion_matrix(actual, predicted, n_classes)
    true_pos = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted_count = matrix.sum(axis=0).astype(np.float64)
    present = support > 0
    precision = np.divide(true_pos, predicted_count, out=np.zeros_like(true_pos), where=predicted_count > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(true_pos), where=both > 0)
    total = matrix.sum()
    return {
        "accuracy": float(true_pos.sum() / total * 100) if total else 0.0,
        "accuracy_ci95": list(accuracy_interval(int(true_pos.sum()), int(total))),
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "confusion_matrix": matrix.tolist(),
    }
