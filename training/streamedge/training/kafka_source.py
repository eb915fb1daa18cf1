"""Training history replayed from a Kafka readings topic.

Reads every partition from the beginning up to the end offsets seen at start (a snapshot,
so a busy topic still ends), parses each record with the shared reading contract (single
readings and reading blocks, a block giving one reading per sample), and groups readings by key
(``device/stream``) into series ordered by event time then sequence number. Rejected records,
readings whose values are not finite as float32 (1e300 is valid JSON, infinite for a model),
duplicate sequence numbers, readings whose width differs from their series' first reading and
series of another width than most readings are counted in the report, never dropped silently:
one device sending another feature count cannot fail every retrain. Given the model's feature
count (``features``), readings of any other width are skipped and counted instead.

Memory is bounded by what is kept, not by the topic: records are parsed as they are fetched
(one poll at a time, never a list of the topic), readings of devices outside the allow-list
(``devices``) or of unwanted keys and streams are dropped at once, and with ``history`` each key
keeps only its ``history`` newest readings by event time (a heap per key): at most
``keys * history`` readings are held, whatever the topic's length, beside one fetch (at most
256 KiB per partition, 1 MiB in all, or one larger record batch).

With an enrolment (:mod:`streamedge.contracts.identity`), a record counts only when its
``streamedge-auth`` header is the MAC of its value by the enrolled key of the ``device_id``
inside it: readings of devices that are not enrolled, unsigned readings and readings one device
wrote under another's id are skipped and counted as ``unauthenticated``.
"""

from __future__ import annotations

import fnmatch
import heapq
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from streamedge.contracts.identity import Enrolment, message_auth
from streamedge.contracts.reading import Reading, Rejection, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.training.data import DataReport, SeriesData
from streamedge.training.errors import DataError

__all__ = ["replay_topic"]

# What one fetch may bring, per partition and in all (the client's defaults, 1 MiB and 50 MiB,
# set the replay's peak memory): a record batch larger than this still comes, alone.
_FETCH_PARTITION_BYTES = 256 * 1024
_FETCH_BYTES = 1024 * 1024


def _consume(settings: KafkaSettings, topic: str, timeout_s: float) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Each record's value and its ``streamedge-auth`` header (None when absent) of ``topic`` up to
    the end offsets seen at start, one poll at a time."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    ms = int(timeout_s * 1000)
    try:
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                 max_partition_fetch_bytes=_FETCH_PARTITION_BYTES, fetch_max_bytes=_FETCH_BYTES,
                                 bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 5000) * 2,
                                 **settings.kafka_python_config())
    except (KafkaError, OSError) as exc:
        raise DataError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DataError(f"topic {topic!r} does not exist or has no partitions")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = {tp: off for tp, off in consumer.end_offsets(assigned).items() if off > 0}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < off for tp, off in end.items()):
            if time.monotonic() > deadline:
                raise DataError(f"replaying {topic!r} took longer than {timeout_s} s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.offset < end.get(TopicPartition(r.topic, r.partition), 0):
                        yield r.value, message_auth(r.headers)
    except KafkaError as exc:
        raise DataError(f"replaying {topic!r} failed: {exc}") from exc
    finally:
        consumer.close()


def replay_topic(
    settings: KafkaSettings, topic: str, keys: list[str] | None = None, timeout_s: float = 30.0,
    streams: set[str] | None = None, enrolment: Enrolment | None = None, *, features: int | None = None,
    devices: Sequence[str] = (), history: int | None = None,
) -> SeriesData:
    """Read a readings topic into series, one per key.

    Args:
        settings: Kafka connection.
        topic: the readings topic (JSON readings, see :mod:`streamedge.contracts.reading`).
        keys: only these ``device/stream`` keys (default all).
        timeout_s: give up (DataError) after this long.
        streams: only readings of these stream names (default all; ``"*"`` in the set means all),
            so a topic that mixes streams of different widths can still feed one model.
        enrolment: when given, only records signed by the enrolled device they name count.
        features: the model's feature count: readings of another width are skipped and counted
            (default: the width most readings have).
        devices: allowed device ids as ``fnmatch`` patterns, as the stream worker takes them;
            empty allows every device. Readings of other devices are skipped and counted.
        history: newest readings (by event time, then seq) kept per key; None keeps all.

    Returns:
        :class:`SeriesData` with ids = keys (sorted), features ``value_0..`` (``value`` if
        univariate), each series ``(n_readings, n_features)`` float32 in event-time order.

    Raises:
        DataError: the broker or topic is unreachable, or no valid reading was found.
    """
    if history is not None and history < 1:
        raise ValueError(f"history must be at least 1 reading, got {history}")
    report = DataReport()
    rejected: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    # Per key, a min-heap of (ts, seq, arrival, reading): the root is the oldest kept reading.
    heaps: dict[str, list[tuple[float, int, int, Reading]]] = {}
    arrival = 0
    for payload, auth in _consume(settings, topic, timeout_s):
        parsed = parse_message(payload)
        if isinstance(parsed, Rejection):
            rejected[parsed.reason] += 1
            continue
        if not ((keys is None or parsed.key in keys) and (streams is None or "*" in streams or parsed.stream in streams)):
            continue
        count = 1 if isinstance(parsed, Reading) else len(parsed)
        if enrolment is not None and not enrolment.verify_message(payload or b"", parsed.device_id, auth):
            rejected["unauthenticated"] += count
            continue
        if devices and not any(fnmatch.fnmatchcase(parsed.device_id, pattern) for pattern in devices):
            skipped["device_not_allowed"] += count
            continue
        width = len(parsed.values) if isinstance(parsed, Reading) else parsed.values.shape[1]
        if features is not None and width != features:
            skipped["wrong_feature_count"] += count
            continue
        with np.errstate(over="ignore"):
            narrow = np.asarray(parsed.values, dtype=np.float32)
        if not np.isfinite(narrow).all():
            rejected["not_finite_as_float32"] += 1
            continue
        found = [parsed] if isinstance(parsed, Reading) else [parsed.reading(i) for i in range(len(parsed))]
        heap = heaps.setdefault(parsed.key, [])
        for reading in found:
            arrival += 1
            item = (reading.ts, reading.seq, arrival, reading)
            if history is None or len(heap) < history:
                heapq.heappush(heap, item)
            elif item[:3] > heap[0][:3]:
                heapq.heapreplace(heap, item)
    grouped = {key: [item[3] for item in heap] for key, heap in heaps.items()}
    if rejected:
        report.notes.append(f"{topic}: skipped {sum(rejected.values())} invalid record(s): {dict(rejected)}")
    if skipped:
        report.notes.append(f"{topic}: skipped {sum(skipped.values())} reading(s) that do not fit: {dict(skipped)}")
    report.skipped.update(skipped)
    if not grouped:
        wanted = (f" for keys {keys}" if keys else "") + (f" of streams {sorted(streams)}" if streams else "")
        raise DataError(f"topic {topic!r} holds no valid readings{wanted}")
    counts: Counter[int] = Counter()
    for readings in grouped.values():
        counts[len(readings[0].values)] += len(readings)
    width = max(sorted(counts), key=counts.__getitem__)
    other = sorted(key for key, readings in grouped.items() if len(readings[0].values) != width)
    if other:
        report.notes.append(f"{topic}: skipped {len(other)} series with another number of values per reading "
                            f"than most ({width}): {other[:5]}")
        for key in other:
            del grouped[key]
    series: list[Any] = []
    for key in sorted(grouped):
        readings = sorted(grouped[key], key=lambda r: (r.ts, r.seq))
        unique = list({r.seq: r for r in readings}.values())
        if len(unique) < len(readings):
            report.notes.append(f"{key}: dropped {len(readings) - len(unique)} duplicate sequence number(s)")
        kept = [r for r in sorted(unique, key=lambda r: (r.ts, r.seq)) if len(r.values) == width]
        if len(kept) < len(unique):
            report.notes.append(f"{key}: skipped {len(unique) - len(kept)} reading(s) with a different width")
        steps = np.diff([r.ts for r in kept])
        if len(steps) > 1:
            median = float(np.median(steps))
            irregular = int(np.sum(np.abs(steps - median) > 1e-6 * max(1.0, median)))
            if irregular:
                report.irregular_steps += irregular
                report.notes.append(f"{key}: {irregular} irregular time step(s) (median {median:g} s); used in order")
        series.append(np.array([r.values for r in kept], dtype=np.float32))
    names = ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
    return SeriesData(series=series, ids=sorted(grouped), features=names, report=report)
