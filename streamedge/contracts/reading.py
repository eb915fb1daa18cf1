"""The reading record: one JSON object per sensor reading.

Wire format (UTF-8 JSON object, at most :data:`MAX_READING_BYTES` bytes)::

    {"device_id": "pump-7", "stream": "vibration", "ts": 1732740000.25,
     "value": 0.42, "seq": 1051}

- ``device_id``, ``stream``: 1-128 chars of ``[A-Za-z0-9._:-]``.
- ``ts``: event time, seconds since the Unix epoch (UTC), finite, within
  [:data:`MIN_TS`, :data:`MAX_TS`].
- ``value``: a finite number, or a non-empty list of at most :data:`MAX_FEATURES` finite numbers.
- ``seq``: a non-negative integer, the device's sequence number for this stream.

Unknown fields are rejected so a producer's typo never passes silently. :func:`parse_reading`
never raises: any bytes in, a :class:`Reading` or a :class:`Rejection` (with a reason code from
the fixed set :data:`REJECTION_REASONS`, safe as a metric label) out.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

__all__ = [
    "MAX_FEATURES",
    "MAX_READING_BYTES",
    "MAX_TS",
    "MIN_TS",
    "REJECTION_REASONS",
    "Reading",
    "Rejection",
    "RejectionReason",
    "parse_reading",
]

MAX_READING_BYTES: Final = 64 * 1024
MAX_FEATURES: Final = 64
MIN_TS: Final = 0.0
# Year 2200: far enough for any real clock, near enough to catch milliseconds sent as seconds.
MAX_TS: Final = 7_258_118_400.0
_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_FIELDS: Final = frozenset({"device_id", "stream", "ts", "value", "seq"})

RejectionReason = Literal[
    "too_large",
    "not_utf8",
    "bad_json",
    "not_object",
    "missing_field",
    "unknown_field",
    "wrong_type",
    "non_finite",
    "out_of_range",
]
REJECTION_REASONS: Final[tuple[str, ...]] = get_args(RejectionReason)


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated reading. ``values`` always holds at least one float."""

    device_id: str
    stream: str
    ts: float
    values: tuple[float, ...]
    seq: int

    @property
    def key(self) -> str:
        """The partitioning and window key, ``"<device_id>/<stream>"``."""
        return f"{self.device_id}/{self.stream}"

    def to_json(self) -> bytes:
        """Encode in the wire format (a scalar ``value`` when there is one feature)."""
        value: float | list[float] = self.values[0] if len(self.values) == 1 else list(self.values)
        return json.dumps(
            {"device_id": self.device_id, "stream": self.stream, "ts": self.ts, "value": value, "seq": self.seq},
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload is not a reading: a fixed ``reason`` code and a human ``detail``."""

    reason: RejectionReason
    detail: str


class _NonFiniteConstant(ValueError):
    """Raised while decoding when the JSON holds NaN or Infinity (not standard JSON)."""


def _reject_constant(name: str) -> float:
    raise _NonFiniteConstant(name)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_id(obj: dict[str, Any], name: str) -> Rejection | None:
    value = obj[name]
    if not isinstance(value, str):
        return Rejection("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not _ID_PATTERN.fullmatch(value):
        return Rejection("out_of_range", f"{name} must be 1-128 chars of [A-Za-z0-9._:-], got {value[:40]!r}")
    return None


def _parse_values(value: Any) -> tuple[float, ...] | Rejection:
    items = value if isinstance(value, list) else [value]
    if not items:
        return Rejection("out_of_range", "value list is empty")
    if len(items) > MAX_FEATURES:
        return Rejection("out_of_range", f"value has {len(items)} features, at most {MAX_FEATURES} allowed")
    if not all(_is_number(item) for item in items):
        return Rejection("wrong_type", "value must be a number or a list of numbers")
    try:
        floats = tuple(float(item) for item in items)
    except OverflowError:
        return Rejection("non_finite", "value overflows a float")
    if not all(math.isfinite(item) for item in floats):
        return Rejection("non_finite", "value contains NaN or infinity")
    return floats


def _validate(obj: dict[str, Any]) -> Reading | Rejection:
    missing = sorted(_FIELDS - obj.keys())
    if missing:
        return Rejection("missing_field", f"missing field(s): {', '.join(missing)}")
    unknown = sorted(obj.keys() - _FIELDS)
    if unknown:
        return Rejection("unknown_field", f"unknown field(s): {', '.join(name[:40] for name in unknown[:5])}")
    for name in ("device_id", "stream"):
        rejection = _check_id(obj, name)
        if rejection is not None:
            return rejection
    ts, seq = obj["ts"], obj["seq"]
    if not _is_number(ts):
        return Rejection("wrong_type", f"ts must be a number of seconds, got {type(ts).__name__}")
    if isinstance(ts, int) and not MIN_TS <= ts <= MAX_TS:
        return Rejection("out_of_range", f"ts {ts} is outside [{MIN_TS}, {MAX_TS}] seconds since epoch")
    ts_float = float(ts)
    if not math.isfinite(ts_float):
        return Rejection("non_finite", "ts is NaN or infinite")
    if not MIN_TS <= ts_float <= MAX_TS:
        return Rejection("out_of_range", f"ts {ts_float!r} is outside [{MIN_TS}, {MAX_TS}] seconds since epoch")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return Rejection("wrong_type", f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq < 2**63:
        return Rejection("out_of_range", f"seq {seq} is outside [0, 2**63)")
    values = _parse_values(obj["value"])
    if isinstance(values, Rejection):
        return values
    return Reading(obj["device_id"], obj["stream"], ts_float, values, seq)


def parse_reading(payload: bytes | bytearray | memoryview | None) -> Reading | Rejection:
    """Decode and validate one wire-format reading. Never raises.

    Args:
        payload: the raw message value (``None`` for a Kafka tombstone).

    Returns:
        The :class:`Reading`, or a :class:`Rejection` saying why the payload is not one.
    """
    if payload is None:
        return Rejection("not_object", "empty message (null value)")
    raw = bytes(payload)
    if len(raw) > MAX_READING_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes, at most {MAX_READING_BYTES} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteConstant as exc:
        return Rejection("non_finite", f"JSON holds the non-standard constant {exc}")
    except ValueError as exc:
        return Rejection("bad_json", str(exc)[:200])
    except RecursionError:
        return Rejection("bad_json", "JSON nested too deeply")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return _validate(obj)
