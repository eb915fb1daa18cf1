"""The canary watcher's judgement, fleet view and metrics (list in / verdict out), its rollback and consumer."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionRecord
from streamedge.contracts.signing import load_private_key
from streamedge.registry import ModelRegistry
from streamedge.services import canary as canary_module
from streamedge.services.canary import (
    CanaryError,
    CanaryPolicy,
    CanaryWatcher,
    DeviceReport,
    FleetMetrics,
    FleetView,
    judge,
)
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version

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
    # The median: one wild device (or one spoofed heartbeat) decides nothing on either side.
    three = [_r("c0", 2, 1.0), _r("c1", 2, 1.1), _r("c2", 2, 1e300)]
    assert judge([*fleet, *three], CANARY, POLICY).decision == "healthy"
    assert judge([*fleet, _r("f9", 1, 1e300), _r("c0", 2, 1.3)], CANARY, POLICY).decision == "rollback"
    whole = PromotionRecord("m", 2, "promote", 2, 1.0, SHA2)
    assert judge([*fleet, _r("c0", 2, 9.0)], whole, POLICY).decision == "none"
    assert judge(fleet, None, POLICY).decision == "none"
    with pytest.raises(ValueError):
        CanaryPolicy(margin=-0.1)


def test_fleet_view_keeps_the_latest_heartbeat_and_ignores_the_rest() -> None:
    view = FleetView("m", 10.0)
    beat = {"type": "heartbeat", "device_id": "d1", "model": "m", "version": 1, "error": {"mae": 0.5, "count": 60}}
    assert view.observe(json.dumps(beat).encode(), 1.0) is not None
    assert view.observe(json.dumps({**beat, "version": 2, "error": {"mae": None, "count": 0}}).encode(), 2.0)
    for junk in (None, b"", b"[" * 10_000, b"{}", b'{"type": "model_update"}', b"\xff",
                 json.dumps({**beat, "device_id": None, "model": None, "version": True}).encode()):
        view.observe(junk, 3.0)
    assert view.observe(json.dumps({**beat, "device_id": None}).encode(), 3.0) is None
    assert view.observe(json.dumps({**beat, "model": "other"}).encode(), 3.0) is None  # not the watched model
    reports = view.reports(3.0)
    assert [(r.device_id, r.version, r.mae, r.count) for r in reports] == [("d1", 2, None, 0)]
    assert view.reports(20.0) == [] and view._latest == {}  # stale, and forgotten


def test_fleet_view_memory_is_bounded_whatever_the_heartbeats_claim() -> None:
    view = FleetView("m", 10.0, max_devices=3)
    beat = {"type": "heartbeat", "model": "m", "version": 1, "error": {"mae": 0.5, "count": 60}}
    for device_id in ("x" * 1_000_000, "", "dev 1", "d\u00e9v"):  # a reading would refuse these ids too
        assert view.observe(json.dumps({**beat, "device_id": device_id}).encode(), 1.0) is None
    for i, device_id in enumerate(["a", "b", "c", "a", "d"]):  # "a" heard again: "b" is now the oldest
        assert view.observe(json.dumps({**beat, "device_id": device_id}).encode(), 1.0 + i) is not None
    assert sorted(r.device_id for r in view.reports(5.0)) == ["a", "c", "d"]
    # A new device when some are stale drops the stale ones first.
    assert view.observe(json.dumps({**beat, "device_id": "e"}).encode(), 14.5) is not None
    assert sorted(r.device_id for r in view.reports(14.5)) == ["d", "e"]


def test_fleet_view_ignores_errors_that_are_no_finite_mae() -> None:
    view = FleetView("m", 10.0)
    beat = {"type": "heartbeat", "model": "m", "version": 1}
    huge = b'{"type": "heartbeat", "device_id": "big", "model": "m", "version": 1, "error": {"mae": 1' \
        + b"0" * 400 + b', "count": 60}}'
    assert json.loads(huge)["error"]["mae"] > 10**399  # float() of it overflows
    assert view.observe(huge, 1.0) is None  # an integer beyond 64 bits: the parse rule refuses the whole heartbeat
    for device, mae in (("inf", "1e999"), ("ninf", "-1e999"), ("nan", "NaN"), ("neg", "-0.5"), ("str", '"0.5"'),
                        ("bool", "true")):
        raw = json.dumps({**beat, "device_id": device, "error": {"count": 60}}).encode()
        raw = raw.replace(b'"count": 60', b'"mae": ' + mae.encode() + b', "count": 60')
        report = view.observe(raw, 1.0)
        if device in ("nan", "inf", "ninf"):  # not JSON / no float: the parse rule refuses the whole heartbeat
            assert report is None
            continue
        assert report is not None and report.mae is None, device
    assert view.invalid_errors == 3
    ok = view.observe(json.dumps({**beat, "device_id": "ok", "error": {"mae": 0, "count": 60}}).encode(), 1.0)
    assert ok is not None and ok.mae == 0.0 and view.invalid_errors == 3


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


def test_fleet_metrics_fold_versions_the_registry_does_not_hold_into_other() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    reports = [_r("a", 1, 1.0), _r("b", 2, 1.0), _r("c", 7, 1.0), _r("d", 2**52, 1.0), _r("e", None, None)]
    metrics.update("m", reports, judge(reports, CANARY, POLICY), known=[1, 2])
    value = registry.get_sample_value
    assert [value("streamedge_fleet_devices", {"model": "m", "version": v}) for v in ("1", "2", "other", "none")] \
        == [1, 1, 2, 1]
    assert value("streamedge_fleet_devices", {"model": "m", "version": "7"}) is None


def _beat(device: str, version: int, mae: float) -> bytes:
    return json.dumps({"type": "heartbeat", "device_id": device, "model": "tiny-forecaster", "version": version,
                       "error": {"mae": mae, "count": 100}}).encode()


@pytest.fixture
def staged(tiny_models: TinyModels, tmp_path: Path) -> Iterator[tuple[ModelRegistry, str]]:
    """A registry with v1 on the fleet, v2 staged to a canary share (record #2), and a v3."""
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    for version in (2, 3):
        registry.add(make_version(tiny_models.forecaster, tmp_path / f"v{version}", version,
                                  tiny_models.signing_key), key)
    name = registry.names()[0]
    registry.promote(name, 1)
    registry.promote(name, 2, target="canary:20")
    yield registry, name


def _watcher(registry: ModelRegistry, name: str, publish: Any, **kwargs: Any) -> CanaryWatcher:
    assert registry.signing_key is not None
    watcher = CanaryWatcher(registry, name, registry.signing_key, publish, POLICY, clock=lambda: 0.0, **kwargs)
    watcher.observe(_beat("fleet-0", 1, 1.0))
    watcher.observe(_beat("canary-0", 2, 5.0))
    return watcher


def test_watcher_does_not_roll_back_a_canary_that_replaced_the_judged_one(
        staged: tuple[ModelRegistry, str]) -> None:
    registry, name = staged
    published: list[ModelUpdate] = []

    class Racing(ModelRegistry):
        """Another promoter stages v3 right after the watcher judged record #2 (v2) worse."""

        raced = False

        def rollback_canary(self, *args: Any, **kwargs: Any) -> ModelUpdate:
            if not self.raced:
                self.raced = True
                registry.promote(name, 3, target="canary:20")
            return super().rollback_canary(*args, **kwargs)

    watcher = _watcher(Racing(registry.root, registry.signing_key), name, published.append)
    assert watcher.check() is None
    # v3's canary (#3) is judged afresh: no device reports v3 yet, so it waits; it is not rolled back.
    assert registry.canary(name) == (3, "canary:20") and published == []
    assert watcher.last_verdict.decision == "wait" and watcher.last_verdict.canary_devices == 0
    record = registry.record(name)
    assert record is not None and record.sequence == 3

    class Promoting(ModelRegistry):
        """Another promoter sends v3 to the whole fleet meanwhile."""

        def rollback_canary(self, *args: Any, **kwargs: Any) -> ModelUpdate:
            registry.promote(name, 3)
            return super().rollback_canary(*args, **kwargs)

    watcher = _watcher(Promoting(registry.root, registry.signing_key), name, published.append)
    watcher.observe(_beat("canary-1", 3, 9.0))
    assert watcher.check() is None and watcher.last_verdict.decision == "none"
    assert registry.active_version(name) == 3 and registry.canary(name) is None and published == []


def test_watcher_retries_the_publish_then_says_how_to_reannounce(staged: tuple[ModelRegistry, str]) -> None:
    registry, name = staged
    tries: list[ModelUpdate] = []
    pauses: list[float] = []

    def flaky(update: ModelUpdate) -> None:
        tries.append(update)
        if len(tries) < 3:
            raise OSError("broker unreachable")

    watcher = _watcher(registry, name, flaky, publish_backoff_s=(1.0, 2.0, 4.0), sleep=pauses.append)
    update = watcher.check()
    assert update is not None and len(tries) == 3 and pauses == [1.0, 2.0]

    registry.promote(name, 2, target="canary:20")

    def down(update: ModelUpdate) -> None:
        raise OSError("broker unreachable")

    watcher = _watcher(registry, name, down, publish_backoff_s=(0.0, 0.0), sleep=pauses.append)
    with pytest.raises(CanaryError) as info:
        watcher.check()
    message = str(info.value)
    assert "\n" not in message and "not published after 3 tries" in message
    assert f"streamedge models announce {name}" in message
    assert registry.canary(name) is None  # the registry ended the canary: re-announcing is all that is left


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class _FakeConsumer:
    """A kafka-python consumer stand-in: each instance plays the next script (a list of poll results)."""

    scripts: ClassVar[list[list[Any]]] = []
    made: ClassVar[list[_FakeConsumer]] = []

    def __init__(self, **config: Any) -> None:
        self.script = self.scripts.pop(0)
        self.sought: dict[Any, int] = {}
        self.closed = False
        self.made.append(self)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: list[Any]) -> None:
        self.tps = tps

    def seek_to_end(self, *tps: Any) -> None:
        self.sought.update(dict.fromkeys(tps, -1))

    def seek_to_beginning(self, *tps: Any) -> None:
        self.sought.update(dict.fromkeys(tps, 0))

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp] = offset

    def position(self, tp: Any) -> int:
        return self.sought[tp]

    def poll(self, timeout_ms: int) -> dict[Any, list[_Message]]:
        step = self.script.pop(0) if self.script else []
        if isinstance(step, BaseException):
            raise step
        return {self.tps[0]: step} if step else {}

    def close(self) -> None:
        self.closed = True


def test_watcher_reconnects_after_a_kafka_error_and_resumes_where_it_was(
        staged: tuple[ModelRegistry, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka
    from kafka.errors import KafkaConnectionError

    registry, name = staged
    monkeypatch.setattr(kafka, "KafkaConsumer", _FakeConsumer)
    monkeypatch.setattr(canary_module, "_RECONNECT_FIRST_S", 0.0)
    _FakeConsumer.made = []
    _FakeConsumer.scripts = [
        [[_Message(7, _beat("fleet-0", 1, 1.0))], KafkaConnectionError("connection reset")],
        [[_Message(8, _beat("canary-0", 2, 5.0))]],
    ]
    published: list[ModelUpdate] = []
    assert registry.signing_key is not None
    watcher = CanaryWatcher(registry, name, registry.signing_key, published.append, POLICY)
    update = watcher.run({}, "telemetry", threading.Event(), check_every_s=0.0)
    assert update is not None and published == [update] and update.version == 1
    first, second = _FakeConsumer.made
    assert first.closed and second.closed
    assert list(second.sought.values()) == [8]  # resumed after the last message read, not at the end


def test_watcher_gives_up_in_one_line_when_kafka_refuses_it(
        staged: tuple[ModelRegistry, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tiny_models: TinyModels) -> None:
    import kafka
    from kafka.errors import SaslAuthenticationFailedError

    from streamedge.cli.main import main

    registry, name = staged
    monkeypatch.setattr(kafka, "KafkaConsumer", _FakeConsumer)
    _FakeConsumer.made = []
    _FakeConsumer.scripts = [[SaslAuthenticationFailedError("bad password")]]
    code = main(["models", "watch-canary", name, "--registry", str(registry.root),
                 "--signing-key", str(tiny_models.signing_key), "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Kafka refuses the watcher" in err and "bad password" in err
    assert _FakeConsumer.made[0].closed
