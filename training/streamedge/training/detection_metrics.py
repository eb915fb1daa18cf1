"""Anomaly detection scored the way the field scores it: point-wise and event-wise precision, recall, F1.

Labels and flags are 0/1 sequences over the same readings. An **event** is a maximal run of
consecutive 1s. Point-wise scores count readings. Event-wise scores count runs: a true event is
found when at least one flag lies inside it (widened by ``tolerance`` readings on both sides),
and a flagged run is a true alarm when it touches a widened true event. Event-wise recall is the
share of events found, precision the share of flagged runs that are true alarms.

Two of the detectors the benchmark compares (the third is the shipped one,
:mod:`streamedge.contracts.anomaly`):
- :func:`residual_flags`: the fixed band the stream worker and the edge agent applied before it,
  ``|actual - one-step forecast| > k * residual_std``;
- :func:`rolling_zscore_flags`: the usual baseline, ``|x[t] - mean| > k * std`` over the
  ``window`` readings before ``t``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["event_scores", "events", "point_scores", "residual_flags", "rolling_zscore_flags"]


def events(flags: npt.ArrayLike) -> list[tuple[int, int]]:
    """Runs of consecutive non-zero values as ``(start, end)`` index pairs, ``end`` exclusive, in order."""
    arr = np.asarray(flags).astype(bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], arr, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _prf(true_pos: float, predicted: float, actual: float, found: float | None = None) -> dict[str, float]:
    precision = true_pos / predicted if predicted else 0.0
    recall = (true_pos if found is None else found) / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def point_scores(labels: npt.ArrayLike, flags: npt.ArrayLike) -> dict[str, float]:
    """Point-wise precision, recall and F1 (0 where undefined), plus the counts behind them."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(flags).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and flags {p.shape} differ in shape")
    true_pos = int(np.sum(y & p))
    scores = _prf(true_pos, int(p.sum()), int(y.sum()))
    return {**scores, "true_positives": true_pos, "flagged": int(p.sum()), "labelled": int(y.sum())}


def event_scores(labels: npt.ArrayLike, flags: npt.ArrayLike, tolerance: int = 0) -> dict[str, float]:
    """Event-wise precision, recall and F1 (see the module docstring), plus the counts.

    Args:
        labels: 0/1 truth per reading.
        flags: 0/1 detector output per reading.
        tolerance: readings by which each true event is widened on both sides when matching.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(flags).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and flags {p.shape} differ in shape")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    truth = [(max(0, s - tolerance), min(len(y), e + tolerance)) for s, e in events(y)]
    alarms = events(p)
    found = sum(1 for s, e in truth if p[s:e].any())
    widened = np.zeros(len(y), dtype=bool)
    for s, e in truth:
        widened[s:e] = True
    true_alarms = sum(1 for s, e in alarms if widened[s:e].any())
    scores = _prf(true_alarms, len(alarms), len(truth), found=found)
    return {**scores, "events": len(truth), "events_found": found, "alarms": len(alarms), "true_alarms": true_alarms}


def residual_flags(actual: npt.ArrayLike, forecast: npt.ArrayLike, residual_std: float, k: float) -> npt.NDArray[np.bool_]:
    """The forecast-residual rule: ``|actual - forecast| > k * residual_std``, element-wise."""
    return np.asarray(np.abs(np.asarray(actual, np.float64) - np.asarray(forecast, np.float64)) > k * residual_std)


def rolling_zscore_flags(series: npt.ArrayLike, window: int, k: float) -> npt.NDArray[np.bool_]:
    """Flag ``t`` when ``|x[t] - mean(x[t-window:t])| > k * std(x[t-window:t])``; the first ``window`` are never flagged.

    A window with zero spread flags any change. ``series`` is ``(T,)``.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or window < 2:
        raise ValueError(f"need a (T,) series and window >= 2, got shape {x.shape} and window {window}")
    flags = np.zeros(len(x), dtype=bool)
    if len(x) <= window:
        return flags
    past = np.lib.stride_tricks.sliding_window_view(x[:-1], window)
    mean, std = past.mean(axis=1), past.std(axis=1)
    flags[window:] = np.abs(x[window:] - mean) > k * std
    return flags
