"""Helpers for the edge tests: model versions, readings files, a Kafka reader."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streamedge.contracts.manifest import read_manifest, write_manifest
from streamedge.contracts.results import decode_results
from streamedge.contracts.signing import generate_keypair, load_private_key, sign_manifest
from streamedge.kafka.settings import KafkaSettings

__all__ = ["consume_all", "consume_results", "count_results", "make_version", "sine_readings", "write_jsonl"]


def make_version(source: Path, dest: Path, version: int, signing_key: Path, **changes: Any) -> Path:
    """Copy a signed model folder as ``version`` (manifest ``changes`` applied), re-signed with ``signing_key``."""
    shutil.copytree(source, dest)
    manifest = read_manifest(dest).replace(version=version, signature=None, **changes)
    write_manifest(sign_manifest(manifest, load_private_key(signing_key)), dest)
    return dest


def other_key(folder: Path) -> Path:
    """A fresh signing key nobody trusts."""
    private = folder / f"rogue-{uuid.uuid4().hex[:6]}.pem"
    generate_keypair(private, private.with_suffix(".pub"))
    return private


def sine_readings(n: int, device: str = "dev", stream: str = "s", start_ts: float = 1.7e9) -> list[bytes]:
    """``n`` wire-format readings of a smooth sine (the tiny models' training signal)."""
    import math

    return [
        json.dumps({"device_id": device, "stream": stream, "ts": start_ts + i,
                    "value": 10.0 + 3.0 * math.sin(2 * math.pi * i / 16), "seq": i}).encode()
        for i in range(n)
    ]


def write_jsonl(path: Path, payloads: list[bytes]) -> Path:
    """Write payloads as JSON lines."""
    path.write_bytes(b"".join(p + b"\n" for p in payloads))
    return path


def _read(settings: KafkaSettings, topic: str, expect: int, timeout_s: float,
          decode: Callable[[bytes], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What ``decode`` makes of every message of ``topic`` (all partitions, from the start), each item
    with its message's partition and offset, in offset order per partition; until ``expect``
    items arrived and the topic is read to the end offsets it had then, or ``timeout_s`` passed.
    Duplicates count towards ``expect``, so the rows already after them are read as well."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        assert partitions, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        items: list[dict[str, Any]] = []

        def poll() -> None:
            for tp, records in sorted(consumer.poll(timeout_ms=500).items()):
                items.extend({"partition": tp.partition, "offset": r.offset, **item}
                             for r in records for item in decode(r.value))

        while len(items) < expect and time.monotonic() < deadline:
            poll()
        ends = consumer.end_offsets(tps)
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            poll()
        return items
    finally:
        consumer.close()


def consume_all(settings: KafkaSettings, topic: str, expect: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` (all partitions, from the start), decoded, in offset order per partition.

    Reads until ``expect`` messages arrived or ``timeout_s`` passed.
    """
    return _read(settings, topic, expect, timeout_s, lambda value: [json.loads(value)])


def consume_results(settings: KafkaSettings, topic: str, expect: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every result row on the results ``topic``, single results and result blocks alike, decoded
    with the shared :func:`~streamedge.contracts.results.decode_results`; each row carries the
    partition and offset of the message that brought it. Reads until ``expect`` rows arrived or
    ``timeout_s`` passed."""
    return _read(settings, topic, expect, timeout_s, decode_results)


def count_results(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> tuple[int, int]:
    """``(messages, rows)`` on the results ``topic`` so far: every message up to the end offsets
    read now, decoded with :func:`~streamedge.contracts.results.decode_results`."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return 0, 0
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        messages = rows = 0
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets in {timeout_s} s"
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < ends[tp]:
                        messages += 1
                        rows += len(decode_results(record.value))
        return messages, rows
    finally:
        consumer.close()
