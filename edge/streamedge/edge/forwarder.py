"""Forwards the outbox to Kafka in order, in a background thread; a dead broker never blocks inference.

Each pass takes the oldest rows and packs runs of consecutive rows of the same topic and key
into result blocks (:mod:`streamedge.contracts.results`) when their topic is one of
``block_topics``: at most ``block_rows`` rows and ``block_bytes`` bytes per message; a run of one
row, a row too large to share a block, and every row of any other topic (telemetry) go as
their own message, unchanged. The messages are sent with kafka-python (idempotent producer,
acks=all, every call bounded by ``timeout_s``) in row order, and rows are deleted from the
outbox only once the broker acknowledged the message carrying them and every message before
it. On any failure the producer is dropped, the unacknowledged rows stay, and the pass is
retried after a back-off; rows already delivered in a failed pass are sent again with the same
``(device_id, epoch, seq)`` inside whatever block they land in next, so the consumer can drop the
duplicates per row. Rows the broker acknowledged but the outbox could not delete (a full disk)
are remembered and never sent again: the next passes take only rows after them, and the
delete is retried first. The loop runs under a :class:`~streamedge.edge.supervisor.Supervised`
thread: any other error (SQLite, disk) is logged, counted through ``on_restart``, marks the
broker unreachable, and the loop restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from streamedge.contracts.results import (
    MAX_BLOCK_RESULTS,
    MAX_RESULT_BLOCK_BYTES,
    ResultFormatError,
    block_bytes,
    encode_result_block,
)
from streamedge.edge.buffer import Outbox, OutboxRow
from streamedge.edge.errors import OutboxError
from streamedge.edge.supervisor import Supervised

__all__ = ["DEFAULT_BLOCK_BYTES", "Forwarder", "OutboxMessage", "pack_rows"]

_LOG = logging.getLogger(__name__)
# Half the broker's default message.max.bytes: far above a full block of typical results
# (256 x ~300 bytes), far below every limit on the way (producer request, broker, consumer fetch).
DEFAULT_BLOCK_BYTES: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One Kafka message of a pass: the outbox rows it carries, in ``id`` order, and its value."""

    rows: tuple[OutboxRow, ...]
    value: bytes

    @property
    def topic(self) -> str:
        """The rows' topic."""
        return self.rows[0].topic

    @property
    def key(self) -> bytes | None:
        """The rows' key."""
        return self.rows[0].key


def pack_rows(rows: Sequence[OutboxRow], block_rows: int = 1, max_bytes: int = DEFAULT_BLOCK_BYTES,
              block_topics: Collection[str] = ()) -> list[OutboxMessage]:
    """The messages that carry ``rows`` (oldest first), in the same order.

    Consecutive rows of one topic in ``block_topics`` with the same key share a result block of
    at most ``block_rows`` rows and ``max_bytes`` bytes (:func:`~streamedge.contracts.results.block_bytes`
    bounds the envelope); a run of one row goes as itself, so ``block_rows=1`` sends every row
    alone, as before blocks existed. A row that does not fit a block with any other goes alone.
    """
    messages: list[OutboxMessage] = []
    run: list[OutboxRow] = []
    size = 0

    def close() -> None:
        if len(run) > 1:
            try:
                messages.append(OutboxMessage(tuple(run), encode_result_block([row.value for row in run])))
                run.clear()
                return
            except ResultFormatError as exc:  # not a result after all: never stall the outbox on it
                _LOG.warning("rows %d-%d go one per message: %s", run[0].id, run[-1].id, exc)
        messages.extend(OutboxMessage((row,), row.value) for row in run)
        run.clear()

    for row in rows:
        packable = block_rows > 1 and row.topic in block_topics
        if (run and packable and row.topic == run[0].topic and row.key == run[0].key and len(run) < block_rows
                and block_bytes(size + len(row.value), len(run) + 1) <= max_bytes):
            run.append(row)
            size += len(row.value)
            continue
        close()
        run.append(row)
        size = len(row.value)
        if not packable:
            close()
    close()
    return messages


class Forwarder:
    """Background sender of outbox rows.

    Args:
        outbox: the buffer to drain.
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        timeout_s: bound on connecting, metadata and one flush.
        batch: rows per pass, rounded up to a multiple of ``block_rows``.
        block_rows: rows per result block (1: one message per row).
        block_bytes: bound on one result block's size, at most
            :data:`~streamedge.contracts.results.MAX_RESULT_BLOCK_BYTES`.
        block_topics: topics whose rows are single results (:func:`~streamedge.contracts.results.encode_result`)
            and may be packed; rows of any other topic always go one per message.
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
        block_rows: int = 1,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        block_topics: Collection[str] = (),
        on_sent: Callable[[int, float], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._config = kafka_config
        self._timeout_s = timeout_s
        if not 1 <= block_rows <= MAX_BLOCK_RESULTS:
            raise ValueError(f"block_rows must be within [1, {MAX_BLOCK_RESULTS}], got {block_rows}")
        if not 0 < block_bytes <= MAX_RESULT_BLOCK_BYTES:
            raise ValueError(f"block_bytes must be within (0, {MAX_RESULT_BLOCK_BYTES}], got {block_bytes}")
        # Whole blocks per pass, so a backlog goes out in full blocks.
        self._batch = -(-max(batch, 1) // block_rows) * block_rows
        self._block_rows = block_rows
        self._block_bytes = block_bytes
        self._block_topics = frozenset(block_topics)
        self._on_sent = on_sent
        self._on_state = on_state
        self._producer: Any = None
        self._delivery_timeout_ms = 2 * int(timeout_s * 1000) + 5
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = Supervised("edge-forwarder", self._loop, self._stop, on_restart, self._crashed)
        self.reachable: bool | None = None  # unknown until the first forward attempt
        self._delivered = 0  # the last row id acknowledged but not yet deleted (0: none)

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
            if self._delivered and not self._forget_delivered():
                self._wake.wait(timeout=backoff)
                self._wake.clear()
                backoff = min(backoff * 2, 10.0)
                continue
            rows = self._outbox.peek(self._batch, after=self._delivered)
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

    def _forget_delivered(self) -> bool:
        """Delete the rows acknowledged through ``_delivered``; False (logged) while the outbox refuses."""
        try:
            self._outbox.delete_through(self._delivered)
        except OutboxError as exc:
            _LOG.warning("delivered rows through id %d not deleted yet (disk full?): %s", self._delivered, exc,
                         extra={"reason": "buffer_write"})
            return False
        self._delivered = 0
        return True

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
                delivery_timeout_ms=self._delivery_timeout_ms, retry_backoff_ms=200, reconnect_backoff_max_ms=5000,
                **self._config,
            )
        return self._producer

    def _close_producer(self) -> None:
        """Close the producer, waiting out its delivery timeout so that its sender thread ends.

        kafka-python flushes before it closes; a flush that cannot finish leaves the producer
        open with its sender thread retrying forever, one more per outage. Its sends all
        succeed or expire within ``delivery_timeout_ms``, so a close given that long ends it.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=self._delivery_timeout_ms / 1000 + 1.0)
            except Exception as exc:  # kafka-python raises assorted errors while closing a broken client
                _LOG.warning("closing the producer failed: %s", exc)

    def _send(self, rows: list[OutboxRow]) -> bool:
        """Send one pass; delete the rows of the acknowledged prefix of its messages. True when all were."""
        from kafka.errors import KafkaError

        messages = pack_rows(rows, self._block_rows, self._block_bytes, self._block_topics)
        futures: list[Any] = []
        failure: BaseException | None = None
        try:
            producer = self._ensure_producer()
            for message in messages:
                futures.append(producer.send(message.topic, key=message.key, value=message.value))
            producer.flush(timeout=self._timeout_s)
        except (KafkaError, OSError, ValueError, AssertionError) as exc:
            failure = exc
        acked = 0
        for future in futures:  # in send order: a row counts as delivered only after all before it
            try:
                future.get(timeout=0)
            except (KafkaError, OSError, ValueError, AssertionError) as exc:
                failure = failure or exc
                break
            acked += 1
        delivered = sum(len(message.rows) for message in messages[:acked])
        if acked:
            self._delivered = messages[acked - 1].rows[-1].id
            if self._on_sent is not None:
                self._on_sent(delivered, time.time())
            if not self._forget_delivered():
                return False
        if failure is not None or acked < len(messages):
            _LOG.debug("forwarding %d rows in %d messages failed after %d rows: %s", len(rows), len(messages),
                       delivered, failure)
            self._set_reachable(False)
            self._close_producer()
            return False
        self._set_reachable(True)
        return True
