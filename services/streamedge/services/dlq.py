"""Dead-letter export and replay.

Workflow: ``streamedge stream export-dlq --out bad.jsonl`` writes one JSON object per dead letter
(``reason``, ``detail``, ``source``, ``key``, ``original`` base64 and ``text``, the original as
UTF-8 where it decodes). Fix a record by adding a ``fixed`` field holding the corrected reading
(a JSON object or string); ``streamedge stream replay-dlq --from-file bad.jsonl`` re-injects the
fixed records (and, with ``--include-unfixed``, the untouched originals) into the readings topic
under their original key. Without a file, ``replay-dlq`` re-injects originals straight from the
topic, filtered by ``--reason`` (for records whose cause was fixed elsewhere, e.g. an allow-list
or a model route). Every record is validated with the reading contract first; one that still
fails is reported and skipped, never produced. A re-injected reading passes the same per-key
ordering check as any other, so a record older than its key's newest reading is dead-lettered again.

Every message on the dead-letter topic and every line of a file is untrusted: one that is not a
dead letter (any bytes, a tombstone, nested JSON, wrong types) is counted as unreadable and
skipped, never fatal. A dead letter whose original was truncated (it did not fit, see
:func:`services.records.dead_letter`) is never re-injected as it is: it needs a ``fixed`` reading.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamedge.contracts.reading import Rejection, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import parse_dead_letter

__all__ = ["DeadLetter", "DeadLetterScan", "ReplayReport", "export_dead_letters", "read_dead_letters",
           "records_from_file", "replay"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: its record, the original key and payload, and an optional fix."""

    record: dict[str, Any]
    key: bytes | None
    original: bytes | None
    fixed: bytes | None = None

    @property
    def truncated(self) -> bool:
        """True when ``original`` is only the first bytes of the rejected message."""
        return self.record.get("original_truncated") is True


@dataclass
class DeadLetterScan:
    """The dead letters read from the topic, and how many messages there were not dead letters."""

    letters: list[DeadLetter]
    unreadable: int = 0


@dataclass
class ReplayReport:
    """What a replay did: produced, still invalid, without a fix, truncated without a fix."""

    produced: int = 0
    invalid: int = 0
    skipped: int = 0
    truncated: int = 0


def read_dead_letters(kafka: KafkaSettings, layout: TopicLayout, reasons: Iterable[str] = (),
                      timeout_s: float = 30.0) -> DeadLetterScan:
    """Every dead letter on the topic now (optionally only the given reasons), oldest first per partition.

    A message that is not a dead letter is counted in ``unreadable`` and skipped.

    Raises:
        TimeoutError: the topic could not be read to its end within ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition

    wanted = set(reasons)
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    scan = DeadLetterScan([])
    try:
        partitions = consumer.partitions_for_topic(layout.dead_letters) or set()
        tps = [TopicPartition(layout.dead_letters, p) for p in sorted(partitions)]
        if not tps:
            return scan
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {layout.dead_letters} to its end within {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=1000).values():
                for message in records:
                    try:
                        record, key, original = parse_dead_letter(message.value)
                    except ValueError:
                        scan.unreadable += 1
                        continue
                    if record.get("key_truncated") is True:
                        key = None  # only a prefix: re-inject under the reading's own key
                    if not wanted or record["reason"] in wanted:
                        scan.letters.append(DeadLetter(record, key, original))
        return scan
    finally:
        consumer.close()


def export_dead_letters(letters: Iterable[DeadLetter], out: Path) -> int:
    """Write dead letters as JSON lines for editing; returns how many."""
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for letter in letters:
            line = dict(letter.record)
            if letter.original is not None:
                try:
                    line["text"] = letter.original.decode("utf-8")
                except UnicodeDecodeError:
                    line["text"] = None
            handle.write(json.dumps(line) + "\n")
            count += 1
    return count


def records_from_file(path: Path) -> Iterator[DeadLetter]:
    """Read an exported file back, with each record's ``fixed`` field as bytes.

    Lines end at ``\n`` alone (a JSON line holds no raw ``\r``; a ``\r\n`` end is JSON
    whitespace), so the line numbers in errors are the ones an editor shows.

    Raises:
        ValueError: a line is not an exported dead letter (the message names the line); no
            other exception comes from the file's content.
    """
    with path.open(encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield _from_line(line)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise ValueError(f"{path}:{number}: not an exported dead letter: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from exc


def _from_line(line: str) -> DeadLetter:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise TypeError(f"expected a JSON object, got {type(record).__name__}")
    key = base64.b64decode(record["key"], validate=True) if record.get("key") else None
    original = base64.b64decode(record["original"], validate=True) if record.get("original") else None
    if record.get("key_truncated") is True:
        key = None
    fixed = record.get("fixed")
    fixed_bytes = None
    if isinstance(fixed, str):
        fixed_bytes = fixed.encode()
    elif fixed is not None:
        fixed_bytes = json.dumps(fixed).encode()
    return DeadLetter(record, key, original, fixed_bytes)


def replay(kafka: KafkaSettings, layout: TopicLayout, letters: Iterable[DeadLetter], include_unfixed: bool,
           dry_run: bool = False) -> ReplayReport:
    """Validate and re-inject dead letters into the readings topic under their original key.

    A letter without a fix is skipped unless ``include_unfixed``; one whose original was
    truncated is never re-injected without a fix (counted in ``truncated``).
    """
    from kafka import KafkaProducer

    report = ReplayReport()
    producer = None if dry_run else KafkaProducer(**kafka.kafka_python_config(), acks="all")
    try:
        futures = []
        for letter in letters:
            if letter.fixed is None and letter.truncated:
                report.truncated += 1
                continue
            payload = letter.fixed if letter.fixed is not None else (letter.original if include_unfixed else None)
            if payload is None:
                report.skipped += 1
                continue
            parsed = parse_message(payload)
            if isinstance(parsed, Rejection):
                report.invalid += 1
                continue
            key = letter.key if letter.key is not None else parsed.key.encode()
            if producer is not None:
                futures.append(producer.send(layout.readings, key=key, value=payload))
            report.produced += 1
        for future in futures:
            future.get(timeout=30)
    finally:
        if producer is not None:
            producer.close(timeout=30)
    return report
