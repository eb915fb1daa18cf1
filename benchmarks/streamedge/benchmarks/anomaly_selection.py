"""How the anomaly detector's defaults were chosen: a grid on synthetic labelled series only.

The labelled real series (``bench anomalies``) are for figures, never for choosing; the defaults
of :class:`streamedge.contracts.anomaly.DetectorConfig` that the paper does not give (``span``,
``floor``, ``gap``) were chosen here, on series nobody reports:

- 12 series (seeds 0-11), 3,000 readings each: a sine of season 24, 48 or 12 (by seed) and
  random amplitude 3-10, plus unit Gaussian noise; from reading 300 on, 6 anomalies 50 readings
  apart or more: 4 single-reading spikes of 5-12 (either sign) and 2 level shifts of 3-6 lasting
  10-40 readings. The forecast is seasonal naive, so every spike echoes one season later.
- Rule: the highest mean event F1 (:func:`training.detection_metrics.event_scores`, readings
  after the first season) wins; ties go to the earlier grid point.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GRID", "select", "synthetic_series"]

GRID: dict[str, tuple[float, ...]] = {"span": (1, 3, 5, 8), "floor": (2.0, 3.0, 4.0), "gap": (5, 10, 24)}


def synthetic_series(seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8], npt.NDArray[np.float64], int]:
    """One selection series: ``(values, labels, seasonal-naive forecast (NaN for the first season), season)``."""
    rng = np.random.default_rng(seed)
    season, length = (24, 48, 12)[seed % 3], 3000
    t = np.arange(length)
    values = rng.uniform(3, 10) * np.sin(2 * np.pi * t / season) + rng.normal(0, 1, length)
    labels = np.zeros(length, np.int8)
    starts = sorted(rng.choice(np.arange(300, length - 100, 50), size=6, replace=False).tolist())
    for index, start in enumerate(starts):
        if index < 4:
            values[start] += rng.choice([-1, 1]) * rng.uniform(5, 12)
            labels[start] = 1
        else:
            span = int(rng.integers(10, 40))
            values[start:start + span] += rng.uniform(3, 6)
            labels[start:start + span] = 1
    forecast = np.full(length, np.nan)
    forecast[season:] = values[:-season]
    return values, labels, forecast, season


def select(seeds: range = range(12)) -> dict[str, Any]:
    """Mean and worst event F1 of every grid point over the synthetic series, best first."""
    from streamedge.contracts.anomaly import AnomalyDetector, DetectorConfig
    from streamedge.training.detection_metrics import event_scores

    data = [synthetic_series(seed) for seed in seeds]
    rows = []
    for span, floor, gap in itertools.product(GRID["span"], GRID["floor"], GRID["gap"]):
        config = DetectorConfig(span=int(span), floor=floor, gap=int(gap))
        scores = []
        for values, labels, forecast, season in data:
            # Residual spread of seasonal naive on unit noise: sqrt(2).
            detector = AnomalyDetector(float(np.sqrt(2.0)), [1.0], season, config=config)
            verdicts = detector.run(detector.new_state(), (values - forecast)[:, None])
            alarms = np.array([v is not None and v.alarm for v in verdicts])
            scores.append(event_scores(labels[season:], alarms[season:])["f1"])
        rows.append({"span": int(span), "floor": floor, "gap": int(gap), "mean_event_f1": float(np.mean(scores)),
                     "worst_event_f1": float(np.min(scores))})
    rows.sort(key=lambda row: -row["mean_event_f1"])
    return {"series": len(data), "grid": rows, "chosen": rows[0]}
