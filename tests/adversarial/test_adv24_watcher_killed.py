"""Attack 4, end to end on the real broker: one unsigned heartbeat ends the canary watcher.

``watch-canary --enrolment`` follows the telemetry topic. Anyone holding the shared device
credential publishes one heartbeat naming an enrolled device with an integer ``ts`` of 401 digits
(no key needed: it is never verified). ``FleetView.observe`` raises OverflowError, the watcher's
consumer loop does not catch it, and the watcher is gone: the canary that the real devices'
signed heartbeats show to be worse is never rolled back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer

from streamedge.contracts.identity import enrol, load_enrolment, sign_event
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.signing import load_private_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.services.canary import CanaryPolicy, CanaryWatcher
from streamedge.training.tiny import TinyModels
from tests.test_trust_boundaries import NAME, history  # noqa: F401 - the fixture

HOSTILE = (b'{"type":"heartbeat","device_id":"c1","model":"' + NAME.encode() + b'","seq":1,"ts":1' + b"0" * 400 +
           b',"version":2,"error":{"mae":0.1,"count":500}}')


def test_one_unsigned_heartbeat_does_not_stop_the_canary_watcher(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path) -> None:  # noqa: F811
    registry, _ = history
    registry.promote(NAME, 2, target="canary:50")  # v2 staged, v3 the fleet version
    keys = {device: enrol(tmp_path / "enrolment", device) for device in ("c1", "f1")}
    layout = make_topics(1)
    published: list[ModelUpdate] = []
    watcher = CanaryWatcher(registry, NAME, load_private_key(tiny_models.signing_key), published.append,
                            CanaryPolicy(min_samples=10), enrolment=load_enrolment(tmp_path / "enrolment"))
    ready, stop, done = threading.Event(), threading.Event(), threading.Event()
    outcome: list[object] = []

    def watch() -> None:
        try:
            outcome.append(watcher.run(kafka_settings.kafka_python_config(), layout.edge_telemetry, stop,
                                       check_every_s=0.2, ready=ready))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(60)
        now = time.time()

        def heartbeat(device: str, version: int, mae: float) -> bytes:
            body = {"type": "heartbeat", "device_id": device, "model": NAME, "seq": 1, "ts": now, "version": version,
                    "error": {"mae": mae, "count": 500}}
            return json.dumps(sign_event(body, keys[device])).encode()

        producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
        try:
            for value in (HOSTILE, heartbeat("c1", 2, 9.0), heartbeat("f1", 3, 1.0)):  # the canary is worse
                producer.send(layout.edge_telemetry, value=value).get(timeout=30)
        finally:
            producer.close()
        assert done.wait(60), "no rollback within 60 s"
        assert isinstance(outcome[0], ModelUpdate), f"the watcher ended with {outcome[0]!r}, not a rollback"
        assert published == outcome
    finally:
        stop.set()
        done.wait(30)
