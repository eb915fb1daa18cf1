"""Forwards the outbox to Kafka in order, in a background thread; a dead broker never blocks inference.

Each pass takes the oldest rows, sends them with kafka-python (idempotent producer, acks=all,
every call bounded by ``timeout_s``), and deletes them from the outbox only after the broker
acknowledged all of them. On any failure the producer is dropped, the rows stay, and the
pass is retried after a back-off; rows already delivered in a failed pass are sent again with
the same ``(device_id, seq)``, so the consumer can drop the duplicates. The loop runs under a
:class:`~streamedge.edge.supervisor.Supervised` thread: any other error (SQLite, disk) is
logged, counted through ``on_restart``, marks the broker unreachable, and the loop restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from streamedge.edge.buffer import Outbox
from streamedge.edge.supervisor import Supervised

__all__ = ["Forwarder"]

_LOG = logging.getLogger(__name__)


class Forwarder:
    """Background sender of outbox rows.

    Args:
        outbox: the buffer to drain.
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        timeout_s: bound on connecting, metadata and one flush.
        batch: rows per pass.
        on_sent: called with the number of rows delivered and the time (s since epoch) of the sync.
        on_state: called with ``True``/``False`` when the broker becomes reachable/unreachable.
        on_restart: called with the thread name each time the crashed loop is restarted.
    """

    def __init__(
        self,
        outbox: Outbox,
        kafka_config: dict[str, Any],
        timeout_s: float = 5.0,
        batch: int = 500,
        on_sent: Callable[[int, float], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._config = kafka_config
        self._timeout_s = timeout_s
        self._batch = batch
        self._on_sent = on_sent
        self._on_state = on_state
        self._producer: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = Supervised("edge-forwarder", self._loop, self._stop, on_restart, self._crashed)
        self.reachable: bool | None = None  # unknown until the first forward attempt

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def wake(self) -> None:
        """New rows were committed: send them without waiting for the poll period."""
        self._wake.set()

    def stop(self, drain_timeout_s: float = 0.0) -> bool:
        """Stop the thread, after trying to empty the outbox for up to ``drain_timeout_s``.

        Returns:
            True when the outbox was empty at the end.
        """
        deadline = time.monotonic() + drain_timeout_s
        while drain_timeout_s > 0 and time.monotonic() < deadline and self._outbox.stats().depth > 0:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self._timeout_s * 3)
        self._close_producer()
        return self._outbox.stats().depth == 0

    def _crashed(self, exc: BaseException) -> None:
        self._close_producer()
        self._set_reachable(False)

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            rows = self._outbox.peek(self._batch)
            if not rows:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            if self._send(rows):
                backoff = 0.2
                continue
            self._wake.wait(timeout=backoff)
            self._wake.clear()
            backoff = min(backoff * 2, 10.0)

    def _set_reachable(self, value: bool) -> None:
        if value != self.reachable:
            self.reachable = value
            _LOG.info("kafka %s", "reachable: forwarding the buffer" if value else "unreachable: buffering")
            if self._on_state is not None:
                self._on_state(value)

    def _ensure_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            ms = int(self._timeout_s * 1000)
            self._producer = KafkaProducer(
                acks="all", enable_idempotence=True, linger_ms=5,
                # Short bounds: a dead broker costs this thread a few seconds, never the agent.
                bootstrap_timeout_ms=ms, max_block_ms=ms, request_timeout_ms=ms,
                delivery_timeout_ms=2 * ms + 5, retry_backoff_ms=200, reconnect_backoff_max_ms=5000,
                **self._config,
            )
        return self._producer

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as exc:  # kafka-python raises assorted errors while closing a broken client
                _LOG.debug("closing the producer failed: %s", exc)

    def _send(self, rows: list[Any]) -> bool:
        from kafka.errors import KafkaError

        try:
            producer = self._ensure_producer()
            futures = [producer.send(row.topic, key=row.key, value=row.value) for row in rows]
            producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=0)
        except (KafkaError, OSError, ValueError, AssertionError) as exc:
            _LOG.debug("forwarding %d rows failed: %s", len(rows), exc)
            self._set_reachable(False)
            self._close_producer()
            return False
        self._outbox.delete_through(rows[-1].id)
        self._set_reachable(True)
        if self._on_sent is not None:
            self._on_sent(len(rows), time.time())
        return True
