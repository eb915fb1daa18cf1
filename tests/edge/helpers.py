"""Helpers for the edge tests: model versions, readings files, a Kafka reader."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streamedge.contracts.manifest import read_manifest, write_manifest
from streamedge.contracts.signing import generate_keypair, load_private_key, sign_manifest
from streamedge.kafka.settings import KafkaSettings

__all__ = ["consume_all", "make_version", "sine_readings", "write_jsonl"]


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


def consume_all(settings: KafkaSettings, topic: str, expect: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` (all partitions, from the start), decoded, in offset order per partition.

    Reads until ``expect`` messages arrived or ``timeout_s`` passed.
    """
    import time

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
        messages: list[dict[str, Any]] = []
        while len(messages) < expect and time.monotonic() < deadline:
            for tp, records in sorted(consumer.poll(timeout_ms=500).items()):
                messages.extend({"partition": tp.partition, "offset": r.offset, **json.loads(r.value)}
                                for r in records)
        return messages
    finally:
        consumer.close()
