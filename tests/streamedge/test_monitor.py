"""streamedge.monitor: fleet state from heartbeats, the recipe files, and `monitor config`'s targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamedge.cli.main import main
from streamedge.cli.monitor_cmd import EDGE_DEFAULTS
from streamedge.monitor.fleet import FleetCollector, FleetState
from streamedge.monitor.recipe import recipe_files

REPO = Path(__file__).resolve().parents[2]


def _beat(device: str, ts: float, version: int | None = 1, **extra: object) -> bytes:
    return json.dumps({"type": "heartbeat", "device_id": device, "model": "m", "version": version, "ts": ts,
                       "seq": 0, **extra}).encode()


def _registry(state: FleetState, now: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(FleetCollector(state, lambda: now))
    return registry


def test_fleet_metrics_give_each_devices_age_and_version() -> None:
    state = FleetState()
    state.observe(_beat("a", 100.0, version=3))
    state.observe(_beat("b", 90.0, version=None))
    registry = _registry(state, 130.0)
    assert registry.get_sample_value("streamedge_fleet_devices") == 2
    assert registry.get_sample_value("streamedge_fleet_heartbeat_age_seconds", {"device": "a"}) == 30.0
    assert registry.get_sample_value("streamedge_fleet_heartbeat_age_seconds", {"device": "b"}) == 40.0
    assert registry.get_sample_value("streamedge_fleet_model_version", {"device": "a", "model": "m"}) == 3
    assert registry.get_sample_value("streamedge_fleet_model_version", {"device": "b", "model": "m"}) is None
    assert registry.get_sample_value("streamedge_fleet_heartbeats_total") == 2


def test_a_late_buffered_heartbeat_never_makes_a_device_look_fresher_or_older() -> None:
    state = FleetState()
    state.observe(_beat("a", 100.0, version=2))
    state.observe(_beat("a", 50.0, version=1))  # forwarded late from the device's buffer
    registry = _registry(state, 110.0)
    assert registry.get_sample_value("streamedge_fleet_heartbeat_age_seconds", {"device": "a"}) == 10.0
    assert registry.get_sample_value("streamedge_fleet_model_version", {"device": "a", "model": "m"}) == 2
    # Stamped ahead of the exporter's clock: age 0, never negative.
    state.observe(_beat("a", 500.0))
    assert _registry(state, 110.0).get_sample_value("streamedge_fleet_heartbeat_age_seconds", {"device": "a"}) == 0.0


def test_a_future_stamped_heartbeat_does_not_keep_a_silent_device_fresh() -> None:
    now = [1_800_000_000.0]
    state = FleetState(clock=lambda: now[0])
    state.observe(_beat("a", now[0] + 30 * 86400))  # a month ahead (clock not yet synced, or forged)
    state.observe(_beat("a", now[0]))  # then a truthful one; then the device falls silent
    now[0] += 3600.0
    age = _registry(state, now[0]).get_sample_value("streamedge_fleet_heartbeat_age_seconds", {"device": "a"})
    assert age == 3600.0


@pytest.mark.parametrize("value", [b"{oops", b"[]", b"", b'{"type":"heartbeat","device_id":"a b","ts":1}',
                                   b'{"type":"heartbeat","device_id":"a","ts":"soon"}',
                                   b'{"device_id":"a","ts":1}', b'{"type":"heartbeat","device_id":"a","ts":1e999}'])
def test_telemetry_that_is_no_readable_heartbeat_is_counted_not_kept(value: bytes) -> None:
    state = FleetState()
    assert state.observe(value) is None
    assert (state.rejected, state.devices()) == (1, [])


def test_other_telemetry_events_are_neither_heartbeats_nor_rejected() -> None:
    state = FleetState()
    assert state.observe(b'{"type":"model_update","device_id":"a","ts":1,"status":"applied"}') is None
    assert (state.rejected, state.heartbeats, state.devices()) == (0, 0, [])


def test_the_device_label_is_bounded_dropping_the_device_heard_from_longest_ago() -> None:
    state = FleetState(max_devices=2)
    for device, ts in (("a", 10.0), ("b", 30.0), ("c", 20.0)):
        state.observe(_beat(device, ts))
    assert [b.device for b in state.devices()] == ["b", "c"]


def test_the_shipped_recipe_is_deploys_alerts_and_dashboards() -> None:
    shipped = recipe_files()
    expected = {"alerts.yml": (REPO / "deploy" / "prometheus" / "alerts.yml").read_bytes()}
    for path in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json"):
        expected[f"dashboards/{path.name}"] = path.read_bytes()
    assert shipped == expected


def test_the_edge_defaults_monitor_assumes_are_the_agents_own() -> None:
    from streamedge.edge.settings import EdgeSettings

    fields = EdgeSettings.model_fields
    assert (fields["device_id"].default, fields["metrics_host"].default, fields["metrics_port"].default) == EDGE_DEFAULTS


def test_monitor_config_targets_follow_the_workers_and_agents_own_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMEDGE_STREAM_WEB_PORT", "7001")
    monkeypatch.setenv("STREAMEDGE_EDGE_METRICS_PORT", "7002")
    monkeypatch.setenv("STREAMEDGE_EDGE_DEVICE_ID", "pump-9")
    assert main(["monitor", "config", "--out", str(tmp_path), "--exporter", "7003", "--prometheus", "7004"]) == 0
    text = (tmp_path / "prometheus.yml").read_text()
    for line in ('- targets: ["127.0.0.1:7001"]', '- targets: ["127.0.0.1:7002"]', 'device: "pump-9"',
                 '- targets: ["127.0.0.1:7003"]', '- targets: ["127.0.0.1:7004"]'):
        assert line in text
    datasource = (tmp_path / "grafana" / "provisioning" / "datasources" / "streamedge.yml").read_text()
    assert 'url: "http://127.0.0.1:7004"' in datasource
    provider = (tmp_path / "grafana" / "provisioning" / "dashboards" / "streamedge.yml").read_text()
    assert json.dumps(str((tmp_path / "grafana" / "dashboards").resolve())) in provider
    assert sorted(p.name for p in (tmp_path / "grafana" / "dashboards").iterdir()) == \
        sorted(p.name for p in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))


@pytest.mark.parametrize("flags", [["--agent", "9108"], ["--agent", "a=host:notaport"], ["--worker", "h:99999"]])
def test_a_malformed_target_is_one_clear_error(tmp_path: Path, flags: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "config", "--out", str(tmp_path), *flags]) == 1
    assert "is no" in capsys.readouterr().err
    assert not (tmp_path / "prometheus.yml").exists()


@pytest.mark.parametrize("interval", ["banana", "15s\nrule_files: []", "", "15"])
def test_a_scrape_interval_that_is_no_prometheus_duration_is_refused_and_nothing_written(
        tmp_path: Path, interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "monitor"
    assert main(["monitor", "config", "--out", str(out), "--exporter", "none", "--scrape-interval", interval]) == 1
    assert "is not a Prometheus duration" in capsys.readouterr().err
    assert not out.exists()


def test_prometheus_durations_are_accepted() -> None:
    from streamedge.monitor.recipe import check_duration

    assert [check_duration(d) for d in ("15s", "1m30s", "500ms", "0", "1h")] == ["15s", "1m30s", "500ms", "0", "1h"]
