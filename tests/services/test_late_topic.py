"""A worker that joined while its readings topic was missing from the metadata takes it up soon.

Seen in the chaos run: a worker joining while a restarted broker was still catching up got an
empty assignment ("Ignoring missing topic") and idled until the consumer's next metadata refresh,
five minutes by Kafka's default. Deleting the readings topic before the worker starts reproduces
the same join: the test waits for that empty assignment in the worker's log, then makes sure the
topic exists (the worker's own metadata request may already have auto-created it, the broker
allowing that; either way it joined without it) and checks the worker reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka.admin import KafkaAdminClient, NewTopic

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.services.helpers import WorkerProcess, consume_until, produce


def test_a_worker_takes_up_a_readings_topic_created_after_it_joined(
        make_topics: Callable[..., TopicLayout], start_worker: Callable[..., WorkerProcess],
        kafka_settings: KafkaSettings) -> None:
    layout = make_topics()
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        admin.delete_topics([layout.readings])
        deadline = time.monotonic() + 30
        while layout.readings in admin.list_topics():
            assert time.monotonic() < deadline, "readings topic not deleted"
            time.sleep(0.2)
        worker = start_worker(layout, f"{layout.prefix}late", metadata_max_age_s=3)
        deadline = time.monotonic() + 30
        while "Ignoring missing topic" not in worker.log.read_text():
            assert time.monotonic() < deadline, "the worker never joined without its topic"
            time.sleep(0.3)
        if layout.readings not in admin.list_topics():  # else auto-created by the worker's metadata request
            admin.create_topics([NewTopic(layout.readings, 3, 1)])
    finally:
        admin.close()
    # Not JSON: each is dead-lettered, so every one of them shows the worker reads the topic.
    produce(kafka_settings, layout.readings, [(f"d{i}".encode(), b"\xff not a reading") for i in range(12)])
    letters = consume_until(kafka_settings, [layout.dead_letters], lambda found: len(found) >= 12, timeout=60)
    assert len(letters) == 12
