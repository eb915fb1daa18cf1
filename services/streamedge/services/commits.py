"""Offsets are committed only up to what was delivered: the worker owns a watermark per partition.

Faust 0.15.3 finds the offset to commit by scanning the offsets its streams acked
(``Consumer._new_offset``). The scan skips its gap check when the partition has no committed
offset yet (or 0) and is off by one otherwise: with 20 committed, offset 20 held (its dead letter
refused and retried) and 21-30 acked by a later batch, it commits 31, and a restart never
delivers the dead letter (faust-streaming issue 606; 0.15.3 has no fix). So the worker decides:

- :class:`Watermarks` records, per partition and in consumption order, the last offset each
  batch consumed (:meth:`Watermarks.consumed`) and which batches were delivered
  (:meth:`Watermarks.delivered`: every output acknowledged by the broker). A partition's
  watermark is one past the last offset of the longest delivered prefix of its batches: every
  message consumed before it had all its outputs acknowledged. A batch that is never delivered
  holds the watermark below its first offset for as long as the process lives.
- :func:`watermark_app` builds the Faust app whose consumer commits exactly the watermark,
  whenever it is above the committed offset, on every commit path Faust has (the periodic
  commit, every ``broker_commit_every`` messages, on a rebalance, on stop). Faust's own lists of
  acked offsets are emptied at each commit and never consulted.
- Before a rebalance and on stop, Faust waits for every message being processed to be acked,
  with no time limit (``Consumer.wait_empty``): a batch whose write the broker refuses for good
  (a missing topic, a denied ACL, a message over the topic's size) kept SIGTERM from stopping the
  worker and every rebalance from completing. The app's consumer waits at most ``grace_s``
  seconds, then commits the watermark, which cannot pass the batch, and goes on: a restart or
  the partition's new owner processes that batch again. Faust's flush of the producer, after
  that commit, is bounded the same way (a write to a missing topic never leaves its buffer).

Messages of one partition reach the worker in offset order (one agent, one stream); after a
rebalance Faust re-reads from the committed offset, so a watermark never passes a message that
was not consumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ticket", "Watermarks", "watermark_app"]

# A topic partition: ``(topic, partition)``; Faust's ``TP`` (a named tuple) compares equal.
Partition = tuple[str, int]


@dataclass(eq=False)
class _Span:
    """The messages of one batch from one partition: the last offset, and whether delivered."""

    last: int
    done: bool = False


@dataclass(eq=False)
class Ticket:
    """What one batch consumed, per partition; handed back to :meth:`Watermarks.delivered`."""

    spans: dict[Partition, _Span] = field(default_factory=dict)


class Watermarks:
    """The contiguous-delivered offset of every partition this worker consumed from."""

    def __init__(self) -> None:
        self._open: dict[Partition, deque[_Span]] = {}
        self._marks: dict[Partition, int] = {}

    def consumed(self, messages: Iterable[tuple[str, int, int]]) -> Ticket:
        """Record one batch, ``(topic, partition, offset)`` per message in consumption order;
        call before anything can fail."""
        ticket = Ticket()
        for topic, partition, offset in messages:
            tp = (topic, partition)
            span = ticket.spans.get(tp)
            if span is None:
                span = ticket.spans[tp] = _Span(offset)
                self._open.setdefault(tp, deque()).append(span)
            span.last = offset
        return ticket

    def delivered(self, ticket: Ticket) -> None:
        """Every output of the batch ``ticket`` was acknowledged: move the watermarks it frees."""
        for tp, span in ticket.spans.items():
            span.done = True
            spans = self._open.get(tp)
            while spans and spans[0].done:
                self._marks[tp] = spans.popleft().last + 1
            if spans is not None and not spans:
                del self._open[tp]

    def committable(self, tp: Partition) -> int | None:
        """The offset that may be committed for ``tp`` (None: nothing delivered yet)."""
        return self._marks.get(tp)

    def forget(self, tp: Partition) -> None:
        """``tp`` was newly assigned: consumption restarts at the group's committed offset and
        every message after it is processed (and delivered) again, so earlier batches no longer
        bound what may be committed."""
        self._open.pop(tp, None)
        self._marks.pop(tp, None)

    def partitions(self) -> Iterator[Partition]:
        """Partitions with a watermark."""
        return iter(list(self._marks))


def watermark_app(watermarks: Watermarks, *args: Any, grace_s: float = 5.0, **kwargs: Any) -> Any:
    """A ``faust.App(*args, **kwargs)`` whose consumer commits ``watermarks`` and nothing else, and
    waits at most ``grace_s`` seconds for held messages before a rebalance or a stop."""
    import faust
    from faust.transport.drivers import aiokafka as driver

    class WatermarkConsumer(driver.Consumer):
        """Commits each partition's delivered watermark (see the module doc)."""

        def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
            from faust.types import TP

            for topic, partition in watermarks.partitions():
                tp = TP(topic, partition)
                if topics is None or tp in topics or topic in topics:
                    yield tp

        def _filter_committable_offsets(self, tps: Iterable[Any]) -> dict[Any, int]:
            found: dict[Any, int] = {}
            for tp in tps:
                # Faust's own bookkeeping of acked offsets: emptied, never used.
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._gap.pop(tp, None)
                offset = watermarks.committable(tp)
                if offset is not None and self._should_commit(tp, offset):
                    found[tp] = offset
            return found

        async def wait_empty(self) -> None:
            """Faust's wait for every held message to be acked, for ``grace_s`` seconds at most."""
            deadline = time.monotonic() + grace_s
            while not self.should_stop and self._unacked_messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.log.warning("%d message(s) still await the broker's acknowledgement after %.1f s; "
                                     "not waiting longer (the committed offset stays before them)",
                                     len(self._unacked_messages), grace_s)
                    break
                await self.commit()
                await self._wait_for_ack(timeout=1.0)  # woken by the next ack, else after 1 s
                self._clean_unacked_messages()
            await self.commit_and_end_transactions()

    class WatermarkTransport(driver.Transport):
        Consumer = WatermarkConsumer

    class WatermarkApp(faust.App):
        def _new_transport(self) -> Any:
            return WatermarkTransport(self.conf.broker_consumer, self)

        async def _producer_flush(self, logger: Any) -> None:
            try:
                await asyncio.wait_for(super()._producer_flush(logger), timeout=grace_s)
            except TimeoutError:
                logger.warning("the producer still holds unacknowledged messages after %.1f s; not waiting "
                               "longer (nothing they answer was committed)", grace_s)

    return WatermarkApp(*args, **kwargs)
