"""A fleet of 10 edge agents (separate processes) on the real broker: a bad canary is rolled back by itself.

Ten ``python -m streamedge.edge run`` processes, each with its own model folder, buffer and
metrics port, serve the tiny forecaster v1 on simulated readings. v2 is the same network with a
corrupted normalisation offset (a worse forecaster that still passes the smoke test). It is
promoted to ``canary:20``; the device ids are chosen so exactly 2 of the 10 fall in the canary
share. The canary watcher (:mod:`streamedge.services.canary`) reads their heartbeats, sees the
canary's live error exceed the fleet's by the margin and publishes a signed rollback; the two
canary devices return to v1 and the eight others never fetch or serve v2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionLedger
from streamedge.contracts.rollout import canary_bucket
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.models import ModelStore
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.services.canary import CanaryPolicy, CanaryWatcher, FleetMetrics
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version

REPO = Path(__file__).resolve().parents[2]
NAME = "tiny-forecaster"
CANARY = [d for d in (f"pump-{i}" for i in range(100)) if canary_bucket(NAME, d) < 20][:2]
OTHERS = [d for d in (f"pump-{i}" for i in range(100)) if canary_bucket(NAME, d) >= 20][:8]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int, metric: str, labels: dict[str, str]) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class _Telemetry:
    """Every telemetry message from now on, collected in a thread."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self._consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
        self._topic = topic
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        partitions = self._consumer.partitions_for_topic(self._topic)
        while not partitions and not self.stop.wait(0.2):  # metadata of a topic created a moment ago
            partitions = self._consumer.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions or ())]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:
            self._consumer.position(tp)
        self.ready.set()
        while not self.stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                self.messages.extend(json.loads(r.value) for r in records)
        self._consumer.close()

    def of(self, device: str, kind: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if m["device_id"] == device and m["type"] == kind]


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_ten_agents_bad_canary_is_rolled_back_and_the_others_never_switch(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    assert len(CANARY) == 2 and len(OTHERS) == 8
    layout = make_topics(2)
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    norm = read_manifest(tiny_models.forecaster).normalisation
    bad = {"mean": [m + 2.0 * s for m, s in zip(norm["mean"], norm["std"], strict=True)], "std": norm["std"]}
    registry.add(make_version(tiny_models.forecaster, tmp_path / "bad", 2, tiny_models.signing_key,
                              normalisation=bad), key)

    def publish(update: ModelUpdate) -> None:
        publish_model_update(kafka_settings, layout, update)

    publish(registry.promote(NAME, 1))
    public = load_public_key(tiny_models.public_key)

    fleet_metrics = CollectorRegistry()
    watcher = CanaryWatcher(registry, NAME, key, publish,
                            # 60 s: far beyond a late heartbeat (0.5 s period) on a loaded machine, so the
                            # exact counts below (8 fleet devices, the gauges) never miss one.
                            CanaryPolicy(margin=0.5, min_samples=40, min_devices=2, stale_after_s=60.0),
                            FleetMetrics(fleet_metrics))
    watcher_stop, watcher_ready = threading.Event(), threading.Event()
    result: list[ModelUpdate | None] = []
    watcher_thread = threading.Thread(
        target=lambda: result.append(watcher.run(kafka_settings.kafka_python_config(), layout.edge_telemetry,
                                                 watcher_stop, ready=watcher_ready, check_every_s=0.25)),
        daemon=True)
    watcher_thread.start()
    telemetry = _Telemetry(kafka_settings, layout.edge_telemetry)
    assert watcher_ready.wait(30) and telemetry.ready.wait(30)

    devices = CANARY + OTHERS
    ports = {d: _free_port() for d in devices}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for device in devices:
        folder = tmp_path / device
        ModelStore(folder / "models", public).install(registry.path(NAME, 1))
        argv = [sys.executable, "-m", "streamedge.edge", "run", "--device-id", device,
                "--model-dir", str(folder / "models"), "--model-name", NAME,
                "--public-key", str(tiny_models.public_key), "--source", "simulator", "--simulator-keys", "1",
                "--rate", "40", "--buffer-path", str(folder / "buffer.sqlite"), "--buffer-fsync", "false",
                "--heartbeat-interval-s", "0.5", "--error-window", "64", "--kafka-timeout-s", "2",
                "--metrics-port", str(ports[device]), "--log-format", "text",
                "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix]
        procs[device] = subprocess.Popen(argv, env=env, stdout=(folder / "agent.log").open("wb"),
                                         stderr=subprocess.STDOUT)
    try:
        def fleet_ready() -> bool:
            reports = watcher.view.reports(time.monotonic())
            return (len({r.device_id for r in reports if r.version == 1 and r.count >= 40}) == 10
                    and all(PromotionLedger(tmp_path / d / "models", public).get(NAME) == registry.record(NAME)
                            for d in devices))

        try:
            started = _wait(fleet_ready, 90, "10 agents serving v1 with a live error and record #1 accepted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; exits: {[p.poll() for p in procs.values()]}; first agent's log: "
                                 f"{(tmp_path / devices[0] / 'agent.log').read_text()[-2000:]}") from None

        promoted_at = time.time()
        canary = registry.promote(NAME, 2, target="canary:20")
        publish(canary)
        assert canary.promotion is not None
        assert sorted(d for d in devices if canary.promotion.serving_version(d) == 2) == sorted(CANARY)

        watcher_thread.join(timeout=60)
        assert not watcher_thread.is_alive() and result and result[0] is not None
        rolled_back_at = time.time()
        rollback = result[0]
        assert rollback.promotion is not None
        assert (rollback.version, rollback.action, rollback.promotion.sequence, rollback.promotion.target) == (
            1, "rollback", 3, None)
        verdict = watcher.last_verdict
        assert (verdict.decision, verdict.canary_devices, verdict.fleet_devices) == ("rollback", 2, 8)
        assert verdict.canary_mae is not None and verdict.fleet_mae is not None
        assert verdict.canary_mae > 1.5 * verdict.fleet_mae
        assert fleet_metrics.get_sample_value("streamedge_fleet_devices", {"model": NAME, "version": "2"}) == 2
        assert fleet_metrics.get_sample_value("streamedge_fleet_devices", {"model": NAME, "version": "1"}) == 8
        assert fleet_metrics.get_sample_value("streamedge_fleet_canary_rollbacks_total", {"model": NAME}) == 1

        def back_on_v1() -> bool:
            return all(PromotionLedger(tmp_path / d / "models", public).get(NAME) == rollback.promotion for d in devices)

        _wait(back_on_v1, 30, "every device to accept the rollback record")
        _wait(lambda: all(len(telemetry.of(d, "model_update")) == 2 for d in CANARY), 30, "canary events")
        applied = {d: _scrape(ports[d], "streamedge_edge_model_updates_total", {"outcome": "applied"})
                   for d in devices}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for device, proc in procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{device} did not stop on SIGTERM") from None
        watcher_stop.set()
        telemetry.stop.set()
        telemetry.thread.join(timeout=10)

    assert applied == {**dict.fromkeys(CANARY, 2.0), **dict.fromkeys(OTHERS, 0.0)}
    for device in devices:
        store = ModelStore(tmp_path / device / "models", public)
        assert store.active_version(NAME) == 1, device
        assert store.versions(NAME) == ([1, 2] if device in CANARY else [1]), device  # the 8 never fetched v2
        served = {m["version"] for m in telemetry.of(device, "heartbeat")}
        assert served <= ({1, 2} if device in CANARY else {1}), (device, served)
        events = [(m["status"], m["version"], m.get("action")) for m in telemetry.of(device, "model_update")]
        assert events == ([("applied", 2, "promote"), ("applied", 1, "rollback")] if device in CANARY else []), device
    canary_serving = max(m["ts"] for d in CANARY for m in telemetry.of(d, "model_update") if m["version"] == 2)
    canary_back = max(m["ts"] for d in CANARY for m in telemetry.of(d, "model_update") if m["version"] == 1)
    print(f"\nfleet of 10 up in {started:.1f} s; promote -> 2 canaries serving v2 {canary_serving - promoted_at:.2f} s; "
          f"promote -> rollback published {rolled_back_at - promoted_at:.2f} s; "
          f"promote -> canaries back on v1 {canary_back - promoted_at:.2f} s; "
          f"canary MAE {verdict.canary_mae:.3f} vs fleet {verdict.fleet_mae:.3f}")
