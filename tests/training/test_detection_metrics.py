"""sMAPE, point-wise and event-wise precision/recall/F1, and the two anomaly detectors the benchmark compares."""

from __future__ import annotations

import numpy as np
import pytest

from streamedge.training.detection_metrics import (
    event_scores,
    events,
    point_scores,
    residual_flags,
    rolling_zscore_flags,
)
from streamedge.training.forecast import seasonal_naive_verdict
from streamedge.training.metrics import forecast_metrics, smape


def test_smape_is_symmetric_bounded_and_zero_safe() -> None:
    assert smape([100.0], [110.0]) == pytest.approx(200 * 10 / 210)
    assert smape([100.0], [110.0]) == smape([110.0], [100.0])
    assert smape([0.0, 0.0], [0.0, 5.0]) == pytest.approx(100.0)  # 0/0 counts as perfect, 5 vs 0 as 200 %
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)
    assert forecast_metrics([[1.0, 2.0]], [[2.0, 2.0]], 1.0)["smape"] == pytest.approx(smape([1, 2], [2, 2]))
    with pytest.raises(ValueError, match="differ in shape"):
        smape([1.0, 2.0], [1.0])


def test_events_are_runs_with_exclusive_ends() -> None:
    assert events([0, 1, 1, 0, 0, 1, 0, 1]) == [(1, 3), (5, 6), (7, 8)]
    assert events([0, 0]) == []


def test_point_and_event_scores_count_differently() -> None:
    labels = np.array([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0])
    flags = np.array([0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1])
    point = point_scores(labels, flags)
    assert (point["true_positives"], point["flagged"], point["labelled"]) == (1, 4, 5)
    assert point["precision"] == pytest.approx(0.25) and point["recall"] == pytest.approx(0.2)
    event = event_scores(labels, flags)
    # events (1,5) found, (8,9) missed; alarms (2,3) true, (6,8) and (11,12) false
    assert (event["events_found"], event["events"], event["true_alarms"], event["alarms"]) == (1, 2, 1, 3)
    assert event["recall"] == pytest.approx(0.5) and event["precision"] == pytest.approx(1 / 3)
    assert event["f1"] == pytest.approx(2 * 0.5 / 3 / (0.5 + 1 / 3))
    near = event_scores(labels, flags, tolerance=1)  # the alarm at 6-7 now touches the widened event at 8
    assert (near["events_found"], near["true_alarms"]) == (2, 2)
    assert point_scores([0, 0], [0, 0])["f1"] == 0.0 and event_scores([0, 0], [0, 0])["f1"] == 0.0


def test_detectors_flag_a_spike() -> None:
    rng = np.random.default_rng(0)
    series = np.sin(np.arange(200) / 5) + 0.05 * rng.standard_normal(200)
    series[150] += 5.0
    zscore = rolling_zscore_flags(series, window=20, k=4)
    assert zscore[150] and not zscore[:20].any()
    assert np.flatnonzero(residual_flags(series, np.sin(np.arange(200) / 5), residual_std=0.05, k=4)).tolist() == [150]
    with pytest.raises(ValueError, match="window >= 2"):
        rolling_zscore_flags(series, window=1, k=3)


def test_seasonal_naive_verdict_names_the_losers() -> None:
    verdict, warnings = seasonal_naive_verdict({"keras": {"mase": 0.8}, "int8": {"mase": 1.3}}, naive_mase=1.0)
    assert verdict == {"keras": True, "int8": False}
    assert warnings == ["int8 does not beat seasonal naive on the test set: MASE 1.300 >= 1.000; "
                        "seasonal naive is at least as good here"]
