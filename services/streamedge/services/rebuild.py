"""Rebuild a partition's windows from the readings topic itself.

When a partition is (re)assigned, the worker re-reads the readings just before the first offset
it is about to process: from the first message newer than ``first timestamp - idle_ttl_s`` (older
keys would have expired anyway), but never more than ``max_messages`` back. Feeding them through
the processor without emitting restores windows and pending forecasts exactly as they were at the
committed offset.

A rebuild that cannot reach that offset is **loudly partial**: the ``progress`` object says why
(``message_cap``: history within the TTL reaches further back than ``max_messages``;
``empty_fetches``: the broker returned nothing several times in a row before ``upto``) and how
many messages were not replayed; the worker counts and logs it per partition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from streamedge.contracts.identity import message_auth
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.records import Source

__all__ = ["ReplayProgress", "replay_before"]

_CHUNK = 2000
# Gaps (aborted transactions, retention) can leave no record before ``upto``: stop after these.
_MAX_EMPTY_FETCHES = 5


@dataclass
class ReplayProgress:
    """How far a replay got: ``truncated`` is None when it reached ``upto`` with all history.

    Attributes:
        truncated: ``"message_cap"`` or ``"empty_fetches"`` when history was left out.
        missing: messages of the history not replayed (before the start, or the unread tail).
    """

    truncated: str | None = None
    missing: int = 0


async def replay_before(kafka: KafkaSettings, topic: str, partition: int, upto: int, since_ts: float,
                        max_messages: int,
                        progress: ReplayProgress | None = None) -> AsyncIterator[list[tuple[bytes | None, Source]]]:
    """Yield chunks of ``(payload, source)`` from ``topic[partition]`` before offset ``upto``.

    Args:
        kafka: client settings.
        topic, partition: the readings partition.
        upto: first offset NOT replayed (the next one the worker processes).
        since_ts: replay messages with a Kafka timestamp at or after this, seconds.
        max_messages: replay at most this many messages.
        progress: filled in with what was left out, if anything.
    """
    progress = progress if progress is not None else ReplayProgress()
    if upto <= 0:
        return
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**kafka.aiokafka_config(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        found = await consumer.offsets_for_times({tp: max(0, int(since_ts * 1000))})
        begin = (await consumer.beginning_offsets([tp]))[tp]
        wanted = max(found[tp].offset if found.get(tp) is not None else upto, begin)
        start = max(wanted, upto - max_messages)
        if start > wanted:
            progress.truncated, progress.missing = "message_cap", start - wanted
        if start >= upto:
            return
        consumer.seek(tp, start)
        position, empty = start, 0
        while position < upto and empty < _MAX_EMPTY_FETCHES:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=_CHUNK)
            chunk = [
                (msg.value, Source(topic, partition, msg.offset, msg.timestamp / 1000.0, msg.key,
                                   message_auth(msg.headers)))
                for msg in fetched.get(tp, [])
                if msg.offset < upto
            ]
            if fetched.get(tp):
                position, empty = fetched[tp][-1].offset + 1, 0
            else:
                position, empty = await consumer.position(tp), empty + 1
            if chunk:
                yield chunk
        if position < upto:
            progress.truncated, progress.missing = "empty_fetches", progress.missing + upto - position
    finally:
        await consumer.stop()
