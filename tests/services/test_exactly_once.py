"""Exactly-once (Kafka transactions): no duplicate result after a worker SIGKILL, against the real broker."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import reading_of
from streamedge.training.tiny import TINY_WINDOW
from tests.services.helpers import WorkerProcess, produce, reading


def _committed(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 120) -> list[dict[str, Any]]:
    """Results visible to a ``read_committed`` reader, until ``expected`` distinct keys or the timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, **kafka.kafka_python_config(), group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, isolation_level="read_committed")
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len({f["idempotency_key"] for f in found}) < expected:
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(json.loads(m.value) for m in records)
        # Whatever a late duplicate would add arrives within a few more polls.
        for _ in range(4):
            for records in consumer.poll(timeout_ms=500).values():
                found.extend(json.loads(m.value) for m in records)
        return found
    finally:
        consumer.close()


def test_exactly_once_has_no_duplicates_after_a_worker_sigkill(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    layout = make_topics(3)
    keys, seqs = 20, 80
    app_id = f"app-{layout.prefix}"
    first = start_worker(layout, app_id, processing_guarantee="exactly_once")
    half = seqs // 2
    produce(kafka_settings, layout.readings, ((f"k{k}/s".encode(), reading(f"k{k}", seq))
                                               for seq in range(half) for k in range(keys)))

    def rest() -> None:
        for seq in range(half, seqs):
            produce(kafka_settings, layout.readings, ((f"k{k}/s".encode(), reading(f"k{k}", seq)) for k in range(keys)))
            time.sleep(0.1)

    producer = threading.Thread(target=rest, daemon=True)
    deadline = time.monotonic() + 60
    while first.metric("streamedge_stream_results_total", 'kind="forecasts"') < 200:
        assert time.monotonic() < deadline, first.log.read_text()[-3000:]
        time.sleep(0.1)
    producer.start()
    time.sleep(0.5)
    first.kill()  # mid-stream: open transactions are left behind
    assert producer.is_alive(), "the stream ended before the kill; the test proves nothing"
    start_worker(layout, app_id, processing_guarantee="exactly_once")
    producer.join(timeout=60)

    expected = keys * (seqs - TINY_WINDOW + 1)
    forecasts = _committed(kafka_settings, layout.forecasts, expected)
    counts = Counter(str(f["idempotency_key"]) for f in forecasts)
    wanted = {f"forecast:tiny-forecaster:k{k}/s:{s}" for k in range(keys) for s in range(TINY_WINDOW - 1, seqs)}
    named = {reading_of(key) for key in counts}  # the reading and model, without the source offset
    assert named == wanted and len(named) == len(counts), f"lost: {sorted(wanted - named)[:10]}"
    assert [key for key, n in counts.items() if n > 1] == []
