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
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamedge.contracts.reading import Rejection, parse_reading
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import parse_dead_letter

__all__ = ["DeadLetter", "ReplayReport", "export_dead_letters", "read_dead_letters", "records_from_file",
           "replay"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: its record, the original key and payload, and an optional fix."""

    record: dict[str, Any]
    key: bytes | None
    original: bytes | None
    fixed: bytes | None = None


@dataclass
class ReplayReport:
    """What a replay did."""

    produced: int = 0
    invalid: int = 0
    skipped: int = 0


def read_dead_letters(kafka: KafkaSettings, layout: TopicLayout, reasons: Iterable[str] = (),
                      timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every dead letter on the topic now (optionally only the given reasons), oldest first per partition."""
    from kafka import KafkaConsumer, TopicPartition

    wanted = set(reasons)
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    found: list[DeadLetter] = []
    try:
        partitions = consumer.partitions_for_topic(layout.dead_letters) or set()
        tps = [TopicPartition(layout.dead_letters, p) for p in sorted(partitions)]
        if not tps:
            return found
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
                    except (ValueError, KeyError):
                        continue
                    if not wanted or record["reason"] in wanted:
                        found.append(DeadLetter(record, key, original))
        return found
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

    Raises:
        ValueError: a line is not JSON (the message names the line).
    """
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = base64.b64decode(record["key"]) if record.get("key") else None
                original = base64.b64decode(record["original"]) if record.get("original") else None
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not an exported dead letter: {exc}") from exc
            fixed = record.get("fixed")
            fixed_bytes = None
            if isinstance(fixed, str):
                fixed_bytes = fixed.encode()
            elif fixed is not None:
                fixed_bytes = json.dumps(fixed).encode()
            yield DeadLetter(record, key, original, fixed_bytes)


def replay(kafka: KafkaSettings, layout: TopicLayout, letters: Iterable[DeadLetter], include_unfixed: bool,
           dry_run: bool = False) -> ReplayReport:
    """Validate and re-inject dead letters into the readings topic under their original key."""
    from kafka import KafkaProducer

    report = ReplayReport()
    producer = None if dry_run else KafkaProducer(**kafka.kafka_python_config(), acks="all")
    try:
        futures = []
        for letter in letters:
            payload = letter.fixed if letter.fixed is not None else (letter.original if include_unfixed else None)
            if payload is None:
                report.skipped += 1
                continue
            parsed = parse_reading(payload)
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
