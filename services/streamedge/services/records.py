"""Wire formats of what a worker produces: results and dead letters (UTF-8 JSON).

Every result names the model (``name``, ``version``) that produced it and the input it came from
(``key``, ``seq``, ``ts`` and the readings topic/partition/offset), and carries an
``idempotency_key`` = ``"<kind>:<model>:<key>:<seq>@<partition>:<offset>"`` (:func:`idempotency_key`),
the dedup contract: the same message scored by the same model always gets the same key, so a
consumer drops the duplicates that at-least-once delivery can produce after a crash, and two
different results never share one: the source offset tells apart the readings of a device that
restarted its ``seq`` counter. Results are keyed by the reading's key, so they keep its partitioning.

A dead letter keeps the original bytes (base64), the reason code, a human detail and the source
offset, so :mod:`services.dlq` can re-inject a fixed record. It always fits in one Kafka message:
the original is kept whole when the encoded record stays within ``max_bytes``
(:data:`DEAD_LETTER_MAX_BYTES` by default), else only its first bytes are kept
(``original_truncated: true``); ``original_size`` and ``original_sha256`` always describe the
whole original. A message key longer than :data:`KEY_KEEP_BYTES` is kept the same way
(``key_truncated``, ``key_size``, ``key_sha256``), and :func:`dead_letter_key` gives the Kafka
key a dead letter is produced under.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from streamedge.contracts.reading import Reading, ReadingBlock

__all__ = ["DEAD_LETTER_LIMIT_BYTES", "DEAD_LETTER_MAX_BYTES", "KEY_KEEP_BYTES", "PRODUCER_MAX_REQUEST_BYTES",
           "Output", "ResultKey", "Source", "block_result", "dead_letter", "dead_letter_key", "float32_json",
           "idempotency_key", "parse_dead_letter", "parse_idempotency_key", "reading_of", "result"]

# Below the producer's default request limit (1,000,000 bytes) and the broker's default
# message.max.bytes (1,048,588), with room for the record batch overhead.
DEAD_LETTER_MAX_BYTES = 900_000
# Longest message key kept whole in a dead letter and used as the dead letter's own Kafka key;
# real keys are "device/stream" (at most 257 characters).
KEY_KEEP_BYTES = 1024
# The worker's producer (Faust's default ``producer_max_request_size``) refuses, for good, a
# message whose size estimate (value, key, record and batch framing, headers) is over this.
PRODUCER_MAX_REQUEST_BYTES = 1_000_000
# Largest dead letter value, bytes: what the producer takes less the dead letter's Kafka key (at
# most KEY_KEEP_BYTES, see dead_letter_key) and 1024 bytes for the framing (aiokafka estimates at
# most 88 bytes of it for one record without headers) and any headers.
DEAD_LETTER_LIMIT_BYTES = PRODUCER_MAX_REQUEST_BYTES - KEY_KEEP_BYTES - 1024
_DETAIL_CHARS = 1000

# One compact encoder for every record: ``json.dumps(..., separators=...)`` builds a new encoder
# per call, which costs as much as encoding a small record.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class Source(NamedTuple):
    """Where a message came from: topic, partition, offset, Kafka timestamp (seconds), key and
    ``streamedge-auth`` header (a tuple: one is built per message, and a frozen dataclass costs
    several times as much)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None = None
    auth: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


class Output(NamedTuple):
    """One message to produce: ``topic`` is a layout attribute name (``forecasts``, ...)."""

    topic: str
    key: bytes | None
    value: bytes
    event_ts: float | None = None


def idempotency_key(kind: str, model: str, key: str, seq: int, source: Source) -> str:
    """The duplicate-detection key of one result: ``"<kind>:<model>:<key>:<seq>@<partition>:<offset>"``.

    Independent of the model version and of when it was produced; ``seq`` is the scored sample's
    (a block result's first sample's), ``partition`` and ``offset`` those of the readings message
    that carried it. The part before ``@`` names the reading and model, the same for every
    result a device sends under one ``seq`` (a counter restarted after a reboot sends seq 0 again);
    the source offset makes the whole key unique per message.
    """
    return f"{kind}:{model}:{key}:{seq}@{source.partition}:{source.offset}"


class ResultKey(NamedTuple):
    """An idempotency key taken apart: ``reading`` (``<kind>:<model>:<key>:<seq>``, what the result is
    about) and the ``partition`` and ``offset`` of the readings message it came from."""

    reading: str
    partition: int
    offset: int


def parse_idempotency_key(text: str) -> ResultKey:
    """Split an :func:`idempotency_key` at its last ``@`` (device ids and stream names hold none).

    Raises:
        ValueError: ``text`` does not end in ``@<partition>:<offset>`` (two non-negative integers)
            after a non-empty reading part.
    """
    reading, at, suffix = text.rpartition("@")
    partition, colon, offset = suffix.partition(":")
    if not (reading and at and colon and partition.isdigit() and offset.isdigit()
            and partition.isascii() and offset.isascii()):
        raise ValueError(f"not a result idempotency key (no '@<partition>:<offset>' suffix): {text[:200]!r}")
    return ResultKey(reading, int(partition), int(offset))


def reading_of(text: str) -> str:
    """What a result is about: its idempotency key without the ``@<partition>:<offset>`` suffix;
    the same for every copy and every source message of one reading and model (see
    :func:`parse_idempotency_key`, which raises ValueError on anything else)."""
    return parse_idempotency_key(text).reading


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

    Every number in ``body`` must be finite (the processor scores and emits only finite values;
    orjson, which writes a result in a tenth of the time ``json`` takes, would write NaN as null).
    """
    record = {
        "type": kind,
        "idempotency_key": idempotency_key(kind, model, reading.key, reading.seq, source),
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
    return orjson.dumps(record)


def float32_json(array: npt.NDArray[np.float32]) -> str:
    """JSON text of a finite float32 array (ndim >= 1) as nested lists, each number in its
    shortest float32 form: exactly the value the model computed, in a twentieth of the time
    ``json`` takes to write the same values as float64 (``10.921928`` for ``10.921927452087402``)."""
    contiguous = np.ascontiguousarray(array, dtype=np.float32)
    return orjson.dumps(contiguous, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def block_result(kind: str, block: ReadingBlock, source: Source, model: str, version: int, body: dict[str, Any],
                 produced_at: float, arrays: dict[str, str] | None = None) -> bytes:
    """Encode the one result of ``kind`` (``forecast_block``, ``anomaly_block``,
    ``classification_block``) that a model gives for a whole reading block, as JSON bytes.

    ``seq`` is the block's first sample's, ``samples`` its sample count and ``ts`` its last
    sample's time; the idempotency key is ``"<kind>:<model>:<key>:<seq>@<partition>:<offset>"``, one
    per block (and per part of a split block).
    ``arrays`` are fields already encoded (:func:`float32_json`), appended after ``body``.
    """
    record = {
        "type": kind,
        "idempotency_key": idempotency_key(kind, model, block.key, block.seq, source),
        "key": block.key,
        "device_id": block.device_id,
        "stream": block.stream,
        "seq": block.seq,
        "samples": len(block),
        "ts": float(block.ts[-1]),
        "source": source.to_dict(),
        "model": {"name": model, "version": version},
        "produced_at": produced_at,
        **body,
    }
    text = _encode(record)
    if arrays:
        text = text[:-1] + "".join(f",{_encode(name)}:{value}" for name, value in arrays.items()) + "}"
    return text.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a dead letter: the original key, or ``sha256:<hex>`` of one over :data:`KEY_KEEP_BYTES`."""
    if key is None or len(key) <= KEY_KEEP_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def dead_letter(payload: bytes | None, source: Source, reason: str, detail: str, failed_at: float,
                max_bytes: int = DEAD_LETTER_MAX_BYTES, sample: int | None = None) -> bytes:
    """Encode one dead letter of at most ``max_bytes`` bytes (``max_bytes`` >= 4096; above
    :data:`DEAD_LETTER_LIMIT_BYTES` the limit applies, so that with its key and framing the
    dead letter always fits one producer request).

    A reading block is dead-lettered whole; ``sample`` (recorded only when given) is the index
    of its first offending sample.

    The original (base64, ``null`` for a tombstone) is kept whole when it fits, else its longest
    prefix that fits, with ``original_truncated: true``; ``original_size`` (bytes) and
    ``original_sha256`` (hex) always describe the whole original (``null`` for a tombstone).
    """
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail[:_DETAIL_CHARS],
        "source": source.to_dict(),
        "source_timestamp": source.timestamp,
        "key": None,
        "key_truncated": False,
        "original": None,
        "original_truncated": False,
        "original_size": None if payload is None else len(payload),
        "original_sha256": None if payload is None else hashlib.sha256(payload).hexdigest(),
        "failed_at": failed_at,
    }
    if sample is not None:
        record["sample"] = sample
    key = source.key
    if key is not None:
        if len(key) > KEY_KEEP_BYTES:
            record.update(key=_b64(key[:KEY_KEEP_BYTES]), key_truncated=True, key_size=len(key),
                          key_sha256=hashlib.sha256(key).hexdigest())
        else:
            record["key"] = _b64(key)
    if payload is None:
        return _encode(record).encode()
    max_bytes = min(max_bytes, DEAD_LETTER_LIMIT_BYTES)
    # Room left for the base64 text of the original: two quotes replace "null".
    room = max_bytes - len(_encode(record)) - 2
    if 4 * -(-len(payload) // 3) > room:
        record["original_truncated"] = True
        room -= len("true") - len("false")
        payload = payload[:max(0, room // 4) * 3]
    record["original"] = _b64(payload)
    return _encode(record).encode()


def parse_dead_letter(value: bytes | None) -> tuple[dict[str, Any], bytes | None, bytes | None]:
    """Decode a dead letter into ``(record, original key, original payload)``.

    For a truncated original (``record["original_truncated"]``) the payload is only its first
    bytes; likewise the key when ``record["key_truncated"]``.

    Raises:
        ValueError: the bytes (any bytes, ``None`` included) are not a dead letter written by
            :func:`dead_letter`. No other exception comes out.
    """
    if value is None:
        raise ValueError("not a streamedge dead letter: empty message (null value)")
    try:
        record = json.loads(value)
    except RecursionError as exc:
        raise ValueError("not a streamedge dead letter: JSON nested too deeply") from exc
    if not isinstance(record, dict) or not isinstance(record.get("reason"), str) or "original" not in record:
        raise ValueError("not a streamedge dead letter")
    try:
        original = _unb64(record["original"])
        key = _unb64(record.get("key"))
    except (binascii.Error, TypeError) as exc:
        raise ValueError(f"not a streamedge dead letter: {exc}") from exc
    return record, key, original


def _unb64(text: Any) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"expected base64 text, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)
