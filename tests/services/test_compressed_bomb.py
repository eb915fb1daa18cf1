"""A gzip bomb written to the readings topic is refused by the broker and never reaches a worker.

Issue 22 item 2: a 0.4 MB gzip batch that expands to 400 MB took the worker to 1.31 GB, because
its Kafka client decompresses a batch whole. The readings topic is ``compression.type=uncompressed``
(streamedge.kafka.topics), so the broker re-encodes the batch and refuses it against
``max.message.bytes`` at produce time (docs/stream.md, "Compressed records").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TINY_WINDOW
from tests.services.helpers import WorkerProcess, consume_until, produce, reading

# Expands 100 MB from about 0.1 MB on the wire: 100 times the broker's max.message.bytes, and it
# would take the worker past half its shipped 512 MiB limit were it delivered.
_BOMB_BYTES = 100 * 1024 * 1024
_HALF_THE_SHIPPED_LIMIT = 256 * 1024 * 1024
_SEQS = 2 * TINY_WINDOW


def _send_gzip(kafka: KafkaSettings, topic: str, value: bytes) -> None:
    """One gzip-compressed record, as a hostile device's client would send it; raises the broker's refusal."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka.kafka_python_config(), compression_type="gzip", retries=0,
                             max_request_size=2 * len(value), batch_size=len(value) + 2**20,
                             request_timeout_ms=60_000, delivery_timeout_ms=120_000)
    try:
        producer.send(topic, key=b"bomb/s", value=value).get(timeout=120)
    finally:
        producer.close(timeout=30)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for process {pid}")


def test_item2_a_gzip_bomb_is_refused_at_produce_time_and_the_worker_keeps_scoring(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    """Before: the broker appended the bomb (offset 0) and the worker decompressed it whole."""
    from kafka.errors import MessageSizeTooLargeError

    layout = make_topics(1)
    worker = start_worker(layout, f"bomb-{uuid.uuid4().hex[:8]}")
    produce(kafka_settings, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(TINY_WINDOW)])
    with pytest.raises(MessageSizeTooLargeError):
        _send_gzip(kafka_settings, layout.readings, bytes(_BOMB_BYTES))
    produce(kafka_settings, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(TINY_WINDOW, _SEQS)])

    found = consume_until(kafka_settings, [layout.forecasts],
                          lambda ms: any(json.loads(m.value)["seq"] == _SEQS - 1 for m in ms))
    assert sorted(json.loads(m.value)["seq"] for m in found) == list(range(TINY_WINDOW - 1, _SEQS))
    readings = consume_until(kafka_settings, [layout.readings], lambda ms: len(ms) >= _SEQS, timeout=20)
    assert [m.key for m in readings] == [b"d0/s"] * _SEQS
    assert worker.proc is not None
    assert _peak_rss(worker.proc.pid) < _HALF_THE_SHIPPED_LIMIT
