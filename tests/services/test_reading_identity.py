"""Per-device identity on readings in the stream worker: one device cannot speak for another.

A worker given an enrolment file (``STREAMEDGE_STREAM_ENROLMENT``) takes a reading only when its
``streamedge-auth`` header is the MAC of its value by the enrolled key of the device it names;
the rest are dead-lettered as ``unauthenticated``. Real worker process, real broker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from streamedge.contracts.identity import enrol, sign_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import parse_dead_letter
from tests.services.helpers import consume_until, reading


def test_a_worker_dead_letters_readings_one_device_wrote_under_another_ones_id(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], start_worker: Callable[..., Any],
        tmp_path: Path) -> None:
    layout = make_topics(1)
    enrolment = tmp_path / "enrolment"
    keys = {device: enrol(enrolment, device) for device in ("d0", "d1")}
    genuine = [(reading("d0", seq), keys["d0"]) for seq in range(20)]
    # d1 holds the shared Kafka credential and its own key: it writes readings as d0, signed with
    # its own key, unsigned, and under an invented id.
    forged = [(reading("d0", seq), keys["d1"]) for seq in range(20, 25)] + \
             [(reading("d0", seq), None) for seq in range(25, 28)] + [(reading("ghost", 0), keys["d1"])]
    producer = KafkaProducer(**kafka_settings.kafka_python_config())
    try:
        for value, key in genuine + forged:
            device = value.split(b'"device_id": "', 1)[1].split(b'"', 1)[0]
            producer.send(layout.readings, key=device + b"/s", value=value,
                          headers=sign_message(value, key) if key is not None else None)
        producer.flush(timeout=30)
    finally:
        producer.close()
    start_worker(layout, "identity-app", enrolment=str(enrolment))
    messages = consume_until(kafka_settings, [layout.dead_letters, layout.forecasts],
                             lambda ms: sum(m.topic == layout.dead_letters for m in ms) >= len(forged), timeout=60)
    letters = [parse_dead_letter(m.value)[0] for m in messages if m.topic == layout.dead_letters]
    assert len(letters) == len(forged) and {letter["reason"] for letter in letters} == {"unauthenticated"}
    forecasts = [m for m in messages if m.topic == layout.forecasts]
    assert forecasts and all(m.key.startswith(b"d0/") for m in forecasts)  # d0's genuine readings were served
