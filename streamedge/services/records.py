"""Wire formats of what a worker produces: results and dead letters (UTF-8 JSON).

Every result names the model (``name``, ``version``) that produced it and the input it came from
(``key``, ``seq``, ``ts`` and the readings topic/partition/offset), and carries an
``idempotency_key`` = ``"<kind>:<model>:<key>:<seq>"``: the same reading scored by the same model
always gets the same key, so a consumer drops the duplicates that at-least-once delivery can
produce after a crash. Results are keyed by the reading's key, so they keep its partitioning.

A dead letter keeps the original bytes (base64), the reason code, a human detail and the source
offset, so :mod:`services.dlq` can re-inject a fixed record.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from streamedge.contracts.reading import Reading

__all__ = ["Output", "Source", "dead_letter", "idempotency_key", "parse_dead_letter", "result"]

# One compact encoder for every record: ``json.dumps(..., separators=...)`` builds a new encoder
# per call, which costs as much as encoding a small record.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from: topic, partition, offset, Kafka timestamp (seconds), key."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce: ``topic`` is a layout attribute name (``forecasts``, ...)."""

    topic: str
    key: bytes | None
    value: bytes
    event_ts: float | None = None


def idempotency_key(kind: str, model: str, key: str, seq: int) -> str:
    """The duplicate-detection key of one result (independent of the model version)."""
    return f"{kind}:{model}:{key}:{seq}"


def result(kind: str, reading: Reading, source: Source, model: str, version: int, body: dict[str, Any],
           produced_at: float) -> bytes:
    """Encode one result (forecast, anomaly or classification) as JSON bytes.

    Args:
        kind: ``"forecast"``, ``"anomaly"`` or ``"classification"``.
        reading: the reading whose arrival produced the result (last of the window).
        source: where that reading was read from.
        model, version: the model that produced the result.
        body: the kind's own fields.
        produced_at: wall-clock seconds since the epoch.
    """
    record = {
        "type": kind,
        "idempotency_key": idempotency_key(kind, model, reading.key, reading.seq),
        "key": reading.key,
        "device_id": reading.device_id,
        "stream": reading.stream,
        "seq": reading.seq,
        "ts": reading.ts,
        "source": source.to_dict(),
        "model": {"name": model, "version": version},
        "produced_at": produced_at,
        **body,
    }
    return _encode(record).encode()


def dead_letter(payload: bytes | None, source: Source, reason: str, detail: str, failed_at: float) -> bytes:
    """Encode one dead letter: original bytes (base64, ``null`` for a tombstone), reason, source."""
    record = {
        "reason": reason,
        "detail": detail,
        "source": source.to_dict(),
        "source_timestamp": source.timestamp,
        "key": base64.b64encode(source.key).decode() if source.key is not None else None,
        "original": base64.b64encode(payload).decode() if payload is not None else None,
        "failed_at": failed_at,
    }
    return _encode(record).encode()


def parse_dead_letter(value: bytes) -> tuple[dict[str, Any], bytes | None, bytes | None]:
    """Decode a dead letter into ``(record, original key, original payload)``.

    Raises:
        ValueError: the bytes are not a dead letter written by :func:`dead_letter`.
    """
    record = json.loads(value)
    if not isinstance(record, dict) or "reason" not in record or "original" not in record:
        raise ValueError("not a streamedge dead letter")
    original = base64.b64decode(record["original"]) if record["original"] is not None else None
    key = base64.b64decode(record["key"]) if record.get("key") is not None else None
    return record, key, original
