"""Everything the demo's stack publishes, read back in a background thread with arrival times.

One consumer (no group, from the beginning) reads the run's result, dead-letter, edge-result,
retrain-request and model-update topics. Every record is kept (duplicates included, so they can be
counted) as an :class:`Arrival`; the live view and the summary read snapshots under a lock.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from streamedge.kafka.settings import KafkaSettings

__all__ = ["Arrival", "Collector"]


@dataclass(frozen=True)
class Arrival:
    """One record as read: its topic, partition, offset, body (JSON, else None) and arrival time.

    ``at`` is ``time.monotonic()`` when the record was read; ``wall`` is ``time.time()``.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    body: Any
    at: float
    wall: float


class Collector:
    """Background reader of ``topics``; :meth:`records` returns what arrived so far."""

    def __init__(self, settings: KafkaSettings, topics: list[str]) -> None:
        self._settings = settings
        self._topics = topics
        self._lock = threading.Lock()
        self._records: list[Arrival] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="demo-collector", daemon=True)

    def start(self, timeout: float = 30.0) -> Collector:
        """Start reading; returns once the consumer has its partitions."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the demo's reader got no partitions in {timeout:.0f} s: {self._error}")
        return self

    def stop(self) -> None:
        """Stop reading (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def records(self, topic: str | None = None) -> list[Arrival]:
        """A snapshot of every arrival so far (of ``topic`` only, when given), in arrival order."""
        with self._lock:
            return [r for r in self._records if topic is None or r.topic == topic]

    def _run(self) -> None:
        from kafka import KafkaConsumer

        try:
            consumer = KafkaConsumer(*self._topics, **self._settings.kafka_python_config(),
                                     auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        except Exception as exc:
            self._error = exc
            return
        try:
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=200)
                if consumer.assignment():
                    self._ready.set()
                now, wall = time.monotonic(), time.time()
                arrivals = [Arrival(r.topic, r.partition, r.offset, r.key, r.value, _json(r.value), now, wall)
                            for records in batch.values() for r in records]
                if arrivals:
                    with self._lock:
                        self._records += arrivals
        finally:
            consumer.close()


def _json(value: bytes | None) -> Any:
    """The record's JSON body, or None for a value that is not JSON (it is still counted)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None
