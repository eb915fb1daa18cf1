"""Exactly-once micro-batches: results and source offsets commit in one Kafka transaction.

Used when ``processing_guarantee="exactly_once"`` (Faust then runs one transactional producer per
assigned readings partition, transactional id ``<app_id>-<group>-<partition>``). Contract, per
micro-batch:

1. Every event is held (an extra reference) before anything can fail, so the ack that
   ``take_events`` gives when the loop body ends never makes an offset committable by itself.
2. The batch is split by source partition; each part is processed on its own and its results and
   dead letters are sent through that partition's transactional producer.
3. Once the broker acknowledged every message (written, not yet visible to ``read_committed``
   readers), the events are acked and the consumer commits at once: per partition, the offsets
   go into the same transaction, which is committed and a new one begun.

Nothing is sent between (3) and the next batch, and Faust's periodic commit is off in this mode
(the worker commits after every batch), so a transaction never holds results of a reading whose
offset it does not commit. A worker killed at any point leaves an open transaction that the next
owner of the partition aborts (fencing by transactional id): the readings are processed again
and a ``read_committed`` consumer sees their results exactly once. Consumers reading with
``read_uncommitted`` (the default of most clients) also see the aborted copies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streamedge.services.records import Output, Source

__all__ = ["Processed", "TransactionalBatches"]

_log = logging.getLogger(__name__)

# A processed part of a batch: (payload, source) per reading kept, and the messages to produce.
Processed = tuple[list[tuple[bytes | None, Source]], list[Output]]


class TransactionalBatches:
    """Process, send and commit one micro-batch at a time, transactionally per source partition.

    Args:
        app: the Faust app, created with ``processing_guarantee="exactly_once"``.
        readings_topic: the source topic whose offsets are committed.
        topics: output kind (``Output.topic``) -> topic name.
        process: processes the events of one partition (window rebuild included) and returns
            what to produce; the same function the at-least-once path uses.
        on_delivered: called with each processed part once its transaction is committed.
    """

    def __init__(self, app: Any, readings_topic: str, topics: dict[str, str],
                 process: Callable[[list[Any]], Awaitable[Processed]],
                 on_delivered: Callable[[Processed], None]) -> None:
        self.app = app
        self.readings_topic = readings_topic
        self.topics = topics
        self._process = process
        self._on_delivered = on_delivered

    def transactional_id(self, partition: int) -> str:
        """Faust's transactional id for a readings partition (its producer exists while assigned)."""
        group = self.app.assignor.group_for_topic(self.readings_topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    async def handle(self, events: Sequence[Any]) -> None:
        """Process, deliver and commit ``events`` (one ``take_events`` batch); see the module doc.

        Any failure (a send refused, this producer fenced by a newer owner of the partition, a
        processing error) leaves the batch held and its transaction open, and stops the worker
        with a non-zero exit: held events would otherwise block every later rebalance of the
        group. The next owner aborts the transaction and processes the readings again.
        """
        for event in events:
            event.message.incref()
        try:
            await self._deliver(events)
        except Exception as exc:  # any failure: nothing was committed; restart from the committed offsets
            _log.critical("exactly-once batch of %d readings failed, stopping the worker: %r", len(events), exc)
            await self.app.crash(exc)

    async def _deliver(self, events: Sequence[Any]) -> None:
        import asyncio

        from faust.types import TP

        parts: dict[int, list[Any]] = {}
        for event in events:
            parts.setdefault(event.message.partition, []).append(event)
        pending: list[Any] = []
        done: list[Processed] = []
        for partition, part in sorted(parts.items()):
            processed = await self._process(part)
            tid = self.transactional_id(partition)
            for output in processed[1]:
                pending.append(await self.app.producer.send(
                    self.topics[output.topic], output.key, output.value, None, None, None, transactional_id=tid))
            done.append(processed)
        if pending:
            await asyncio.gather(*pending)
        for event in events:
            event.ack()  # the reference taken above
            event.ack()  # the stream's own: the offset is now committable
        await self.app.consumer.commit({TP(self.readings_topic, partition) for partition in parts})
        for processed in done:
            self._on_delivered(processed)
