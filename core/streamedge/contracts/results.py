"""Edge results on the wire: one result per message, or a result block of one device's consecutive results.

Both travel on the ``edge-results`` topic with key = the device id (UTF-8). The one decoder every
consumer uses is :func:`decode_results` (raw message value) or :func:`result_rows` (a value
already parsed as JSON): either form in, the result rows out, in order.

Single result (UTF-8 JSON object, as :func:`encode_result` writes it; fields in docs/edge.md,
"Results")::

    {"device_id": "pump-7", "seq": 1041, "key": "pump-7/vibration", "source_seq": 88210, ...,
     "idempotency_key": "forecast:airline-lstm:pump-7/vibration:88210", "type": "forecast", ...}

- ``device_id``: the device; ``seq``: its result sequence number, a non-negative integer,
  strictly increasing per device and durable across restarts.

Result block (UTF-8 JSON object, at most :data:`MAX_RESULT_BLOCK_BYTES` bytes)::

    {"device_id": "pump-7", "first_seq": 1041,
     "results": [{"device_id": "pump-7", "seq": 1041, ...}, {"device_id": "pump-7", "seq": 1042, ...}]}

- ``results``: 1 to :data:`MAX_BLOCK_RESULTS` single results, each exactly the message it would
  have been on its own (its own ``device_id``, ``seq`` and ``idempotency_key``), so a consumer
  drops duplicates per row after a resend exactly as it did for single messages;
- every row's ``device_id`` is the block's; ``first_seq`` is ``results[0]["seq"]``; the rows'
  ``seq`` strictly increase (they are consecutive outbox rows: without gaps unless the device's
  buffer dropped rows in between, see docs/edge.md "Drop policy");
- a block is told from a single result by its ``results`` field (a single result has none).

The edge forwarder builds blocks with :func:`encode_result_block` from the rows' encoded bytes
(spliced, not re-encoded), bounded by a row count and by :data:`MAX_RESULT_BLOCK_BYTES`, below
the broker's default ``message.max.bytes`` (1,048,588) and kafka-python's ``max_request_size``
(1 MiB) with room for the record batch overhead. A run of one row, and a row too large to share
a block, go as single results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from streamedge.errors import StreamedgeError

__all__ = [
    "BLOCK_OVERHEAD_BYTES",
    "MAX_BLOCK_RESULTS",
    "MAX_RESULT_BLOCK_BYTES",
    "ResultFormatError",
    "block_bytes",
    "decode_results",
    "encode_result",
    "encode_result_block",
    "result_rows",
]

# The reading block's bound, for the same reason: one message under the broker's default limit.
MAX_RESULT_BLOCK_BYTES: Final = 1_000_000
MAX_BLOCK_RESULTS: Final = 4096
# Envelope bytes around the rows: '{"device_id":"<id>","first_seq":<seq>,"results":[' + ']}' is
# 42 bytes besides the id (at most 128 chars, none escaped) and the seq (at most 19 digits).
BLOCK_OVERHEAD_BYTES: Final = 42 + 128 + 19
_SEPARATORS: Final = (",", ":")


class ResultFormatError(StreamedgeError, ValueError):
    """A message on the results topic is neither a single result nor a result block."""


def encode_result(device_id: str, seq: int, body: Mapping[str, Any]) -> bytes:
    """One single-result message: ``device_id`` and ``seq`` first, then ``body``'s fields.

    Raises:
        ValueError: ``body`` holds NaN or infinity (not JSON).
    """
    return json.dumps({"device_id": device_id, "seq": seq, **body}, separators=_SEPARATORS,
                      allow_nan=False).encode()


def block_bytes(row_bytes: int, rows: int) -> int:
    """Upper bound on the size of a block of ``rows`` rows holding ``row_bytes`` bytes in all."""
    return BLOCK_OVERHEAD_BYTES + row_bytes + max(0, rows - 1)


def encode_result_block(rows: Sequence[bytes]) -> bytes:
    """The result block carrying ``rows`` (encoded single results of one device, in ``seq`` order).

    The rows' bytes are spliced in unchanged; only the first is parsed (for ``device_id`` and
    ``first_seq``), so the caller vouches that every row is a single result of that device.

    Raises:
        ResultFormatError: no rows, too many, too large, or the first is not a single result.
    """
    if not 1 <= len(rows) <= MAX_BLOCK_RESULTS:
        raise ResultFormatError(f"a result block holds 1 to {MAX_BLOCK_RESULTS} rows, got {len(rows)}")
    try:
        first = json.loads(rows[0])
    except (ValueError, RecursionError) as exc:
        raise ResultFormatError(f"row 0 is not JSON: {str(exc)[:200]}") from exc
    device_id, seq = _identity(first, 0)
    head = (f'{{"device_id":{json.dumps(device_id)},"first_seq":{seq},"results":[').encode()
    payload = b"".join((head, b",".join(rows), b"]}"))
    if len(payload) > MAX_RESULT_BLOCK_BYTES:
        raise ResultFormatError(f"result block of {len(payload)} bytes, at most {MAX_RESULT_BLOCK_BYTES} allowed")
    return payload


def _identity(row: Any, index: int) -> tuple[str, int]:
    if not isinstance(row, dict):
        raise ResultFormatError(f"result {index} is not a JSON object but {type(row).__name__}")
    device_id, seq = row.get("device_id"), row.get("seq")
    if not isinstance(device_id, str):
        raise ResultFormatError(f"result {index}: device_id must be a string, got {device_id!r:.60}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ResultFormatError(f"result {index}: seq must be a non-negative integer, got {seq!r:.60}")
    return device_id, seq


def result_rows(obj: Any) -> list[dict[str, Any]]:
    """The result rows of one message already parsed as JSON: ``[obj]`` for a single result, the
    block's ``results`` for a block (checked against the envelope).

    Raises:
        ResultFormatError: ``obj`` is neither (names the offending row).
    """
    if not isinstance(obj, dict) or "results" not in obj:
        _identity(obj, 0)
        return [obj]
    rows = obj["results"]
    device_id, first_seq = obj.get("device_id"), obj.get("first_seq")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BLOCK_RESULTS:
        raise ResultFormatError(f"results must be a list of 1 to {MAX_BLOCK_RESULTS} results")
    last = -1
    for index, row in enumerate(rows):
        row_device, seq = _identity(row, index)
        if row_device != device_id:
            raise ResultFormatError(f"result {index}: device_id {row_device!r:.60} is not the block's {device_id!r:.60}")
        if index == 0 and seq != first_seq:
            raise ResultFormatError(f"result 0: seq {seq} is not the block's first_seq {first_seq!r:.30}")
        if seq <= last:
            raise ResultFormatError(f"result {index}: seq {seq} is not after the previous row's {last}")
        last = seq
    return rows


def decode_results(payload: bytes | bytearray | memoryview | None) -> list[dict[str, Any]]:
    """The result rows of one raw message value, a single result or a block, in order.

    Raises:
        ResultFormatError: not UTF-8 JSON, too large, or neither form.
    """
    if payload is None:
        raise ResultFormatError("empty message (null value)")
    raw = bytes(payload)
    if len(raw) > MAX_RESULT_BLOCK_BYTES:
        raise ResultFormatError(f"{len(raw)} bytes, at most {MAX_RESULT_BLOCK_BYTES} allowed")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ResultFormatError(f"not UTF-8 JSON: {str(exc)[:200]}") from exc
    return result_rows(obj)
