"""Malformed messages, one per reason of the reading contract that a producer can cause.

Each kind is built so that :func:`streamedge.contracts.reading.parse_message` rejects it with
the reason of the same name: a consumer can check that every injected record reached the
dead-letter topic with the right reason.
"""

from __future__ import annotations

import json
from typing import Final

__all__ = ["GARBAGE_KINDS", "garbage_payload"]

GARBAGE_KINDS: Final[tuple[str, ...]] = (
    "bad_json", "not_utf8", "not_object", "missing_field", "unknown_field", "wrong_type", "non_finite",
    "out_of_range",
)


def garbage_payload(kind: str, device_id: str, stream: str, ts: float, seq: int) -> bytes:
    """A payload the reading contract rejects with reason ``kind`` (one of :data:`GARBAGE_KINDS`).

    Raises:
        ValueError: ``kind`` is not a known kind.
    """
    good = {"device_id": device_id, "stream": stream, "ts": ts, "value": 1.0, "seq": seq}
    if kind == "bad_json":
        return json.dumps(good).encode()[:-3]
    if kind == "not_utf8":
        return b'{"device_id": "\xff\xfe"}'
    if kind == "not_object":
        return b"[1, 2, 3]"
    if kind == "missing_field":
        del good["seq"]
    elif kind == "unknown_field":
        good["colour"] = "red"
    elif kind == "wrong_type":
        good["value"] = "high"
    elif kind == "non_finite":
        return json.dumps(good).replace('"value": 1.0', '"value": NaN').encode()
    elif kind == "out_of_range":
        good["ts"] = 1e13
    else:
        raise ValueError(f"unknown garbage kind {kind!r}; choose one of {GARBAGE_KINDS}")
    return json.dumps(good).encode()
