"""The shared anomaly detector (contracts/anomaly.py) on synthetic series with known anomalies."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from streamedge.contracts.anomaly import AnomalyDetector, DetectorConfig
from streamedge.training.detection_metrics import residual_flags

SEASON = 24


def _seasonal(length: int, seed: int, noise: float = 0.3) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return 10 * np.sin(2 * np.pi * np.arange(length) / SEASON) + rng.normal(0, noise, length)


def _alarms(detector: AnomalyDetector, residuals: npt.ArrayLike) -> list[int]:
    verdicts = detector.run(detector.new_state(), residuals)
    return [i for i, v in enumerate(verdicts) if v is not None and v.alarm]


def _naive_residuals(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Residuals of seasonal naive (NaN for the first season, which has no forecast)."""
    forecast = np.full(len(values), np.nan)
    forecast[SEASON:] = values[:-SEASON]
    return (values - forecast)[:, None]


def test_one_alarm_per_spike_and_no_echo_one_season_later() -> None:
    values = _seasonal(2000, seed=1)
    spikes = [400, 800, 1300, 1700]
    for at in spikes:
        values[at] += 6.0
    residuals = _naive_residuals(values)
    spread = 0.3 * np.sqrt(2)
    assert _alarms(AnomalyDetector(spread, [7.0], SEASON), residuals) == spikes
    # The echo is in the data: the fixed band the services ran before flags every spike twice.
    scored = residuals[SEASON:, 0]
    before = np.flatnonzero(residual_flags(scored, np.zeros_like(scored), spread, 4.0)) + SEASON
    assert sorted(set(spikes) | {at + SEASON for at in spikes}) == before.tolist()


def test_a_level_shift_is_one_event_with_one_alarm() -> None:
    values = _seasonal(1500, seed=2)
    values[900:930] += 3.0
    alarms = _alarms(AnomalyDetector(0.3 * np.sqrt(2), [7.0], SEASON), _naive_residuals(values))
    assert len([a for a in alarms if 900 <= a < 930]) == 1
    assert [a for a in alarms if not 900 <= a < 930 + SEASON] == []


def test_each_feature_is_judged_on_its_own_scale() -> None:
    # Feature 0 is in units 1,000 times larger than feature 1; a 10-sigma departure of feature 1
    # is invisible on one pooled scale and found on its own.
    rng = np.random.default_rng(3)
    residuals = np.stack([rng.normal(0, 1000, 1200), rng.normal(0, 1, 1200)], axis=1)
    residuals[700, 1] += 10.0
    pooled = float(np.sqrt(np.mean(residuals**2)))
    detector = AnomalyDetector(pooled, [1000.0, 1.0], 1)
    assert _alarms(detector, residuals) == [700]
    assert not residual_flags(residuals[700], np.zeros(2), pooled, 4.0).any()


def test_readings_without_a_forecast_are_skipped_and_a_new_version_starts_afresh() -> None:
    detector = AnomalyDetector(1.0, [1.0], SEASON, version=1)
    state = detector.new_state()
    verdicts = detector.run(state, [[np.nan], [0.5], [np.inf]])
    assert verdicts[0] is None and verdicts[2] is None and verdicts[1] is not None
    assert state.scored == 1
    assert detector.state_for(state) is state
    assert AnomalyDetector(1.0, [1.0], SEASON, version=2).state_for(state).scored == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="prune"):
        DetectorConfig(prune=1.0)
    with pytest.raises(ValueError, match="residual_std"):
        AnomalyDetector(0.0, [1.0], SEASON)
