"""The canary watcher's judgement, fleet view and metrics, list in / verdict out."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.promotion import PromotionRecord
from streamedge.services.canary import CanaryPolicy, DeviceReport, FleetMetrics, FleetView, judge

SHA1, SHA2 = "1" * 64, "2" * 64
CANARY = PromotionRecord("m", 2, "promote", 2, 1.0, SHA2, target="canary:20", fleet_version=1, fleet_sha256=SHA1)
POLICY = CanaryPolicy(margin=0.25, min_samples=50, min_devices=1)


def _r(device: str, version: int | None, mae: float | None, count: int = 100, model: str = "m") -> DeviceReport:
    return DeviceReport(device, model, version, mae, count, 0.0)


def test_judge_compares_cohorts_after_enough_samples() -> None:
    fleet = [_r(f"f{i}", 1, 1.0) for i in range(8)]
    assert judge([*fleet, _r("c0", 2, 1.3)], CANARY, POLICY).decision == "rollback"  # 1.3 > 1.0 * 1.25
    assert judge([*fleet, _r("c0", 2, 1.2)], CANARY, POLICY).decision == "healthy"
    assert judge([*fleet, _r("c0", 2, 9.0, count=49)], CANARY, POLICY).decision == "wait"  # too few samples
    assert judge([*fleet, _r("c0", 2, None)], CANARY, POLICY).decision == "wait"
    assert judge([_r("c0", 2, 9.0)], CANARY, POLICY).decision == "wait"  # no fleet to compare with
    two = CanaryPolicy(min_devices=2)
    assert judge([*fleet, _r("c0", 2, 9.0)], CANARY, two).decision == "wait"
    verdict = judge([*fleet, _r("c0", 2, 9.0), _r("c1", 2, 3.0), _r("x", 3, 50.0), _r("o", 2, 50.0, model="n")],
                    CANARY, two)
    assert (verdict.decision, verdict.canary_devices, verdict.fleet_devices) == ("rollback", 2, 8)
    assert verdict.canary_mae == 6.0 and verdict.fleet_mae == 1.0 and "rollback" in str(verdict)
    whole = PromotionRecord("m", 2, "promote", 2, 1.0, SHA2)
    assert judge([*fleet, _r("c0", 2, 9.0)], whole, POLICY).decision == "none"
    assert judge(fleet, None, POLICY).decision == "none"
    with pytest.raises(ValueError):
        CanaryPolicy(margin=-0.1)


def test_fleet_view_keeps_the_latest_heartbeat_and_ignores_the_rest() -> None:
    view = FleetView()
    beat = {"type": "heartbeat", "device_id": "d1", "model": "m", "version": 1, "error": {"mae": 0.5, "count": 60}}
    assert view.observe(json.dumps(beat).encode(), 1.0) is not None
    assert view.observe(json.dumps({**beat, "version": 2, "error": {"mae": None, "count": 0}}).encode(), 2.0)
    for junk in (None, b"", b"[" * 10_000, b"{}", b'{"type": "model_update"}', b"\xff",
                 json.dumps({**beat, "device_id": None, "model": None, "version": True}).encode()):
        view.observe(junk, 3.0)
    assert view.observe(json.dumps({**beat, "device_id": None}).encode(), 3.0) is None
    reports = view.reports("m", 3.0, 10.0)
    assert [(r.device_id, r.version, r.mae, r.count) for r in reports] == [("d1", 2, None, 0)]
    assert view.reports("m", 20.0, 10.0) == []  # stale


def test_fleet_metrics_count_devices_by_version_and_drop_gone_versions() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    reports = [_r("a", 1, 1.0), _r("b", 1, 1.0), _r("c", 2, 3.0)]
    metrics.update("m", reports, judge(reports, CANARY, POLICY))
    value = registry.get_sample_value
    assert value("streamedge_fleet_devices", {"model": "m", "version": "1"}) == 2
    assert value("streamedge_fleet_devices", {"model": "m", "version": "2"}) == 1
    assert value("streamedge_fleet_forecast_mae", {"model": "m", "cohort": "canary"}) == 3.0
    reports = [_r("a", 1, 1.0), _r("b", 1, 1.0), _r("c", 1, 1.0)]
    metrics.update("m", reports, judge(reports, None, POLICY))
    assert value("streamedge_fleet_devices", {"model": "m", "version": "1"}) == 3
    assert value("streamedge_fleet_devices", {"model": "m", "version": "2"}) is None
    mae = value("streamedge_fleet_forecast_mae", {"model": "m", "cohort": "canary"})
    assert mae is not None and math.isnan(mae)
