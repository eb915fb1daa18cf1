"""The reading record: one JSON object per sensor reading, or one block of consecutive samples.

Single reading (UTF-8 JSON object, at most :data:`MAX_READING_BYTES` bytes)::

    {"device_id": "pump-7", "stream": "vibration", "ts": 1732740000.25,
     "value": 0.42, "seq": 1051}

- ``device_id``, ``stream``: 1-128 chars of ``[A-Za-z0-9._:-]``.
- ``ts``: event time, seconds since the Unix epoch (UTC), finite, within
  [:data:`MIN_TS`, :data:`MAX_TS`].
- ``value``: a finite number, or a non-empty list of at most :data:`MAX_FEATURES` finite numbers.
- ``seq``: a non-negative integer, the device's sequence number for this stream.

Reading block (UTF-8 JSON object, at most :data:`MAX_BLOCK_BYTES` bytes): consecutive samples
of one device and stream, sample ``i`` having sequence number ``seq + i``::

    {"device_id": "pump-7", "stream": "vibration", "seq": 1051, "ts": 1732740000.25,
     "period": 0.001, "values": [0.42, 0.43, 0.41]}

- ``values``: 1 to :data:`MAX_BLOCK_SAMPLES` samples, each a finite number or a list of finite
  numbers; every sample has the same number of features (1 to :data:`MAX_FEATURES`).
- ``ts``: either the first sample's time with ``period`` (seconds between samples, finite,
  > 0; may be left out for one sample), or a list of per-sample times, strictly increasing.
- every sample obeys the single-reading rules (its ``ts`` within [:data:`MIN_TS`,
  :data:`MAX_TS`], its ``seq`` below 2**63). A block that breaks one is rejected whole; the
  :class:`Rejection` names the first offending ``sample`` index.

A single reading is a block of one (:meth:`ReadingBlock.from_reading`). Unknown fields are
rejected so a producer's typo never passes silently, and so is a field named twice (``bad_json``:
JSON parsers disagree on which copy wins, so two readers could see two readings). :func:`parse_reading` and
:func:`parse_message` never raise: any bytes in, a :class:`Reading` (or :class:`ReadingBlock`) or
a :class:`Rejection` (with a reason code from the fixed set :data:`REJECTION_REASONS`, safe as a
metric label) out.

JSON only: a binary encoding was measured and does not pay here (docs/stream.md, "Reading
blocks"): decoding and validating a 256-sample JSON block costs far less than the Kafka
delivery of the message that carries it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard, get_args

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_BLOCK_SAMPLES",
    "MAX_FEATURES",
    "MAX_READING_BYTES",
    "MAX_TS",
    "MIN_TS",
    "REJECTION_REASONS",
    "Reading",
    "ReadingBlock",
    "Rejection",
    "RejectionReason",
    "is_valid_id",
    "parse_message",
    "parse_reading",
]

MAX_READING_BYTES: Final = 64 * 1024
MAX_FEATURES: Final = 64
# A block must fit one Kafka message at the broker's default limit (1,048,588 bytes) with room
# for the record batch overhead; 4096 samples is 0.2-4 s of a 1-20 kHz sensor.
MAX_BLOCK_BYTES: Final = 1_000_000
MAX_BLOCK_SAMPLES: Final = 4096
MIN_TS: Final = 0.0
# Year 2200: far enough for any real clock, near enough to catch milliseconds sent as seconds.
MAX_TS: Final = 7_258_118_400.0
_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_FIELDS: Final = frozenset({"device_id", "stream", "ts", "value", "seq"})
_BLOCK_FIELDS: Final = frozenset({"device_id", "stream", "ts", "period", "values", "seq"})
_BLOCK_REQUIRED: Final = frozenset({"device_id", "stream", "ts", "values", "seq"})

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
    "duplicate",
    "out_of_order",
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
    """Why a payload is not a reading: a fixed ``reason`` code, a human ``detail`` and, for a
    block, the index of the first offending ``sample`` (None when no one sample is at fault)."""

    reason: RejectionReason
    detail: str
    sample: int | None = None


class _NonFiniteConstant(ValueError):
    """Raised while decoding when the JSON holds NaN or Infinity (not standard JSON)."""


class _DuplicateField(ValueError):
    """Raised while decoding when a JSON object names a field twice."""


def _reject_constant(name: str) -> float:
    raise _NonFiniteConstant(name)


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateField(f"field {name[:40]!r} appears more than once")
            seen.add(name)
    return obj


# Built once: ``json.loads`` with a keyword argument builds a new decoder per call.
_STRICT = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_fields)
_LENIENT = json.JSONDecoder(parse_constant=float, object_pairs_hook=_unique_fields)
# The end of an object's field name: its closing quote, then the colon. In JSON without a
# backslash a quote always delimits a string, so each field name (at any depth) gives one
# match, and a string value that starts with a colon gives one more.
_NAME_END = re.compile(rb'"[ \t\n\r]*:')


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_valid_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a valid ``device_id`` or ``stream``: 1-128 chars of ``[A-Za-z0-9._:-]``."""
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


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


def _check_fields(obj: dict[str, Any], required: frozenset[str], allowed: frozenset[str]) -> Rejection | None:
    """The field-name and id rules a reading and a block share: nothing missing, nothing unknown."""
    missing = sorted(required - obj.keys())
    if missing:
        return Rejection("missing_field", f"missing field(s): {', '.join(missing)}")
    unknown = sorted(obj.keys() - allowed)
    if unknown:
        return Rejection("unknown_field", f"unknown field(s): {', '.join(name[:40] for name in unknown[:5])}")
    for name in ("device_id", "stream"):
        rejection = _check_id(obj, name)
        if rejection is not None:
            return rejection
    return None


def _check_seq(seq: Any) -> Rejection | None:
    if not isinstance(seq, int) or isinstance(seq, bool):
        return Rejection("wrong_type", f"seq must be an integer, got {type(seq).__name__}")
    if not 0 <= seq < 2**63:
        return Rejection("out_of_range", f"seq {seq} is outside [0, 2**63)")
    return None


def _validate(obj: dict[str, Any]) -> Reading | Rejection:
    rejection = _check_fields(obj, _FIELDS, _FIELDS) or _check_ts(obj["ts"])
    if rejection is not None:
        return rejection
    ts, seq = obj["ts"], obj["seq"]
    ts_float = float(ts)
    if not math.isfinite(ts_float):
        return Rejection("non_finite", "ts is NaN or infinite")
    if not MIN_TS <= ts_float <= MAX_TS:
        return Rejection("out_of_range", f"ts {ts_float!r} is outside [{MIN_TS}, {MAX_TS}] seconds since epoch")
    rejection = _check_seq(seq)
    if rejection is not None:
        return rejection
    values = _parse_values(obj["value"])
    if isinstance(values, Rejection):
        return values
    return Reading(obj["device_id"], obj["stream"], ts_float, values, seq)


@dataclass(frozen=True, slots=True, eq=False)
class ReadingBlock:
    """Consecutive validated samples of one device and stream.

    Attributes:
        device_id, stream: as in :class:`Reading`.
        seq: sequence number of sample 0; sample ``i`` has ``seq + i``.
        ts: ``(n,)`` float64 event times, seconds since the epoch, strictly increasing.
        values: ``(n, n_features)`` float64, finite.
    """

    device_id: str
    stream: str
    seq: int
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def key(self) -> str:
        """The partitioning and window key, ``"<device_id>/<stream>"``."""
        return f"{self.device_id}/{self.stream}"

    @property
    def last_seq(self) -> int:
        """Sequence number of the last sample."""
        return self.seq + len(self.ts) - 1

    @classmethod
    def from_reading(cls, reading: Reading) -> ReadingBlock:
        """The block of one sample holding ``reading``."""
        return cls(reading.device_id, reading.stream, reading.seq, np.array([reading.ts], dtype=np.float64),
                   np.array([reading.values], dtype=np.float64))

    def part(self, start: int, stop: int) -> ReadingBlock:
        """Samples ``[start, stop)`` as a block of their own (views, no copy); ``0 <= start < stop <= n``."""
        return ReadingBlock(self.device_id, self.stream, self.seq + start, self.ts[start:stop],
                            self.values[start:stop])

    def reading(self, index: int) -> Reading:
        """Sample ``index`` as a single :class:`Reading`."""
        return Reading(self.device_id, self.stream, float(self.ts[index]), tuple(self.values[index].tolist()),
                       self.seq + index)

    def to_json(self, period: float | None = None) -> bytes:
        """Encode in the block wire format: ``ts`` + ``period`` when ``period`` is given (the
        caller vouches that ``ts`` is evenly spaced by it), else per-sample ``ts``; a scalar per
        sample when there is one feature."""
        values: list[Any] = self.values[:, 0].tolist() if self.values.shape[1] == 1 else self.values.tolist()
        body: dict[str, Any] = {"device_id": self.device_id, "stream": self.stream, "seq": self.seq}
        if period is None:
            body["ts"] = self.ts.tolist()
        else:
            body.update(ts=float(self.ts[0]), period=period)
        body["values"] = values
        return json.dumps(body, separators=(",", ":")).encode()


def _first_bad(ok: npt.NDArray[np.bool_]) -> int:
    return int(np.argmin(ok))


def _block_values(items: Any) -> npt.NDArray[np.float64] | Rejection:
    if not isinstance(items, list):
        return Rejection("wrong_type", "values must be a list of samples")
    if not items:
        return Rejection("out_of_range", "values holds no sample")
    if len(items) > MAX_BLOCK_SAMPLES:
        return Rejection("out_of_range", f"{len(items)} samples, at most {MAX_BLOCK_SAMPLES} allowed")
    if type(items[0]) is list:
        width = len(items[0])
        for index, sample in enumerate(items):
            if type(sample) is not list:
                return Rejection("wrong_type", "every sample must be a list when sample 0 is", index)
            if not 1 <= len(sample) <= MAX_FEATURES:
                return Rejection("out_of_range", f"sample has {len(sample)} features, 1 to {MAX_FEATURES} allowed",
                                 index)
            if len(sample) != width:
                return Rejection("out_of_range", f"sample has {len(sample)} features, sample 0 has {width}", index)
            if not all(type(item) is float or type(item) is int for item in sample):
                return Rejection("wrong_type", "a sample's values must be numbers", index)
    else:
        for index, item in enumerate(items):
            if type(item) is not float and type(item) is not int:
                return Rejection("wrong_type", "each sample must be a number or a list of numbers", index)
    try:
        array = np.array(items, dtype=np.float64)
    except OverflowError:
        for index, sample in enumerate(items):
            try:
                np.array(sample, dtype=np.float64)
            except OverflowError:
                return Rejection("non_finite", "value overflows a float", index)
        return Rejection("non_finite", "value overflows a float")
    array = array.reshape(len(items), -1)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        return Rejection("non_finite", "value contains NaN or infinity", _first_bad(finite))
    return array


def _block_times(obj: dict[str, Any], n: int) -> npt.NDArray[np.float64] | Rejection:
    ts = obj["ts"]
    if isinstance(ts, list):
        if "period" in obj:
            return Rejection("unknown_field", "period is only allowed with a scalar ts")
        if len(ts) != n:
            return Rejection("out_of_range", f"ts has {len(ts)} times for {n} samples")
        for index, item in enumerate(ts):
            if not _is_number(item):
                return Rejection("wrong_type", f"ts must be numbers of seconds, got {type(item).__name__}", index)
            if isinstance(item, int) and not MIN_TS <= item <= MAX_TS:
                return Rejection("out_of_range", f"ts {item} is outside [{MIN_TS}, {MAX_TS}]", index)
        times = np.array(ts, dtype=np.float64)
    else:
        rejection = _check_ts(ts)
        if rejection is not None:
            return rejection
        period = obj.get("period", 0.0 if n == 1 else None)
        if period is None:
            return Rejection("missing_field", "missing field(s): period (needed with a scalar ts and several samples)")
        if not _is_number(period):
            return Rejection("wrong_type", f"period must be a number of seconds, got {type(period).__name__}")
        # Bounded so the last sample's time stays a finite float: the range check below judges it.
        if not -MAX_TS <= period <= MAX_TS or not math.isfinite(float(period)) or (n > 1 and not float(period) > 0):
            return Rejection("out_of_range", f"period {period!r} must be finite and > 0 seconds")
        times = float(ts) + float(period) * np.arange(n, dtype=np.float64)
    finite = np.isfinite(times)
    if not finite.all():
        return Rejection("non_finite", "ts is NaN or infinite", _first_bad(finite))
    inside = (times >= MIN_TS) & (times <= MAX_TS)
    if not inside.all():
        index = _first_bad(inside)
        return Rejection("out_of_range", f"ts {times[index]!r} is outside [{MIN_TS}, {MAX_TS}] seconds", index)
    step = np.diff(times)
    if n > 1 and not (step > 0).all():
        index = _first_bad(step > 0) + 1
        reason: RejectionReason = "duplicate" if step[index - 1] == 0 else "out_of_order"
        return Rejection(reason, f"ts {times[index]!r} is not after the previous sample's", index)
    return times


def _check_ts(ts: Any) -> Rejection | None:
    if not _is_number(ts):
        return Rejection("wrong_type", f"ts must be a number of seconds, got {type(ts).__name__}")
    if isinstance(ts, int) and not MIN_TS <= ts <= MAX_TS:
        return Rejection("out_of_range", f"ts {ts} is outside [{MIN_TS}, {MAX_TS}] seconds since epoch")
    return None


def _validate_block(obj: dict[str, Any]) -> ReadingBlock | Rejection:
    rejection = _check_fields(obj, _BLOCK_REQUIRED, _BLOCK_FIELDS)
    if rejection is not None:
        return rejection
    values = _block_values(obj["values"])
    if isinstance(values, Rejection):
        return values
    n = len(values)
    seq = obj["seq"]
    rejection = _check_seq(seq)
    if rejection is not None:
        return rejection
    if seq + n - 1 >= 2**63:
        return Rejection("out_of_range", f"the sample's seq {2**63} is outside [0, 2**63)", 2**63 - seq)
    times = _block_times(obj, n)
    if isinstance(times, Rejection):
        return times
    return ReadingBlock(obj["device_id"], obj["stream"], seq, times, values)


def _decode(payload: bytes | bytearray | memoryview | None, limit: int,
            constants: bool = False) -> dict[str, Any] | Rejection:
    """The JSON object in ``payload`` (at most ``limit`` bytes), or why there is none; with
    ``constants`` NaN and Infinity decode as floats (for validation to find the sample)."""
    if payload is None:
        return Rejection("not_object", "empty message (null value)")
    raw = bytes(payload)
    if len(raw) > limit:
        return Rejection("too_large", f"{len(raw)} bytes, at most {limit} allowed")
    if not constants:
        # orjson reads a block in a fifth of the time. What it refuses (NaN, lone surrogates,
        # bad UTF-8, a BOM) goes to the standard decoder, which says why; so does a seq, ts or
        # period of 2**63 or more in size: orjson reads integers beyond 64 bits as floats, and
        # validation judges an integer of those fields by its own rules.
        try:
            fast = orjson.loads(raw)
        except orjson.JSONDecodeError:
            fast = None
        # orjson keeps the last copy of a field named twice: it answers alone only when the
        # object has as many names as the payload (no backslash: no escaped name can hide one).
        if (isinstance(fast, dict) and not any(_huge_float(fast.get(name)) for name in _INTEGER_CHECKED)
                and b"\\" not in raw and len(_NAME_END.findall(raw)) == len(fast)):
            return fast
    return _decode_standard(raw, constants)


# Fields whose integers validation checks apart from floats (see _decode).
_INTEGER_CHECKED: Final = ("seq", "ts", "period")


def _huge_float(value: Any) -> bool:
    return isinstance(value, float) and abs(value) >= 2.0**63


def _decode_standard(raw: bytes, constants: bool = False) -> dict[str, Any] | Rejection:
    """:func:`_decode` by the standard library's decoder: the reference, and the one that says
    why a payload is not JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8 at byte {exc.start}")
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        obj = (_LENIENT if constants else _STRICT).decode(text)
    except _NonFiniteConstant as exc:
        return Rejection("non_finite", f"JSON holds the non-standard constant {exc}")
    except _DuplicateField as exc:
        return Rejection("bad_json", str(exc))
    except ValueError as exc:
        return Rejection("bad_json", str(exc)[:200])
    except RecursionError:
        return Rejection("bad_json", "JSON nested too deeply")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_reading(payload: bytes | bytearray | memoryview | None) -> Reading | Rejection:
    """Decode and validate one wire-format reading. Never raises.

    Args:
        payload: the raw message value (``None`` for a Kafka tombstone).

    Returns:
        The :class:`Reading`, or a :class:`Rejection` saying why the payload is not one.
    """
    obj = _decode(payload, MAX_READING_BYTES)
    if isinstance(obj, Rejection):
        return obj
    return _validate(obj)


def parse_message(payload: bytes | bytearray | memoryview | None) -> Reading | ReadingBlock | Rejection:
    """Decode and validate a single reading or a reading block (it has ``values``). Never raises.

    Args:
        payload: the raw message value (``None`` for a Kafka tombstone).

    Returns:
        The :class:`Reading` or :class:`ReadingBlock`, or a :class:`Rejection` saying why the
        payload is neither (with the first offending ``sample`` of a block).
    """
    obj = _decode(payload, MAX_BLOCK_BYTES)
    if isinstance(obj, Rejection) and obj.reason == "non_finite":
        # NaN/Infinity in a block: decode again so the rejection names the offending sample.
        lenient = _decode(payload, MAX_BLOCK_BYTES, constants=True)
        if isinstance(lenient, dict) and "values" in lenient:
            obj = lenient
    if isinstance(obj, dict) and "values" in obj:
        return _validate_block(obj)
    if payload is not None and len(payload) > MAX_READING_BYTES:
        # Only a block may be this large: anything else is judged as an oversized reading.
        return Rejection("too_large", f"{len(payload)} bytes, at most {MAX_READING_BYTES} allowed unless a block")
    return obj if isinstance(obj, Rejection) else _validate(obj)
