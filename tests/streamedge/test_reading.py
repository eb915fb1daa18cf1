"""The reading contract: valid records parse, everything else is rejected with a reason, nothing raises."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamedge.contracts import reading as reading_module
from streamedge.contracts.reading import (
    MAX_BLOCK_BYTES,
    MAX_READING_BYTES,
    REJECTION_REASONS,
    Reading,
    ReadingBlock,
    Rejection,
    parse_message,
    parse_reading,
)

GOOD = {"device_id": "pump-7", "stream": "vibration", "ts": 1732740000.25, "value": 0.42, "seq": 1051}


def _encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_valid_scalar_and_vector() -> None:
    reading = parse_reading(_encode(GOOD))
    assert reading == Reading("pump-7", "vibration", 1732740000.25, (0.42,), 1051)
    assert reading.key == "pump-7/vibration"
    vector = parse_reading(_encode({**GOOD, "value": [1, 2.5, -3]}))
    assert isinstance(vector, Reading) and vector.values == (1.0, 2.5, -3.0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"[1, 2]", "not_object"),
        (None, "not_object"),
        (_encode({k: v for k, v in GOOD.items() if k != "seq"}), "missing_field"),
        (_encode({**GOOD, "extra": 1}), "unknown_field"),
        (_encode({**GOOD, "value": "1.0"}), "wrong_type"),
        (_encode({**GOOD, "value": True}), "wrong_type"),
        (_encode({**GOOD, "seq": 1.5}), "wrong_type"),
        (_encode({**GOOD, "ts": "2024-01-01"}), "wrong_type"),
        (_encode({**GOOD, "device_id": 7}), "wrong_type"),
        (b'{"device_id": "a", "stream": "b", "ts": 1, "value": NaN, "seq": 1}', "non_finite"),
        (b'{"device_id": "a", "stream": "b", "ts": 1, "value": [1, Infinity], "seq": 1}', "non_finite"),
        (_encode({**GOOD, "value": 10**400}), "non_finite"),
        (_encode({**GOOD, "ts": 1732740000250}), "out_of_range"),
        (_encode({**GOOD, "seq": -1}), "out_of_range"),
        (_encode({**GOOD, "value": []}), "out_of_range"),
        (_encode({**GOOD, "value": list(range(65))}), "out_of_range"),
        (_encode({**GOOD, "device_id": "has space"}), "out_of_range"),
        (b" " * (MAX_READING_BYTES + 1), "too_large"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (b"[" * 30_000 + b"]" * 30_000, "bad_json"),
    ],
)
def test_rejections_carry_reason(payload: bytes | None, reason: str) -> None:
    result = parse_reading(payload)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert result.detail


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_never_raise(payload: bytes) -> None:
    result = parse_reading(payload)
    assert isinstance(result, Reading | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(GOOD), "other"]), _json_values, max_size=6))
def test_any_json_object_never_raises(obj: dict[str, object]) -> None:
    result = parse_reading(json.dumps(obj).encode())
    assert isinstance(result, Reading | Rejection)


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[A-Za-z0-9._:\-]{1,20}", fullmatch=True),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=2**62),
)
def test_round_trip(device: str, ts: float, values: list[float], seq: int) -> None:
    reading = Reading(device, "s", ts, tuple(values), seq)
    assert parse_reading(reading.to_json()) == reading


BLOCK = {"device_id": "pump-7", "stream": "vibration", "seq": 100, "ts": 1732740000.0, "period": 0.5,
         "values": [0.5, 1.5, 2.5, 3.5]}


def test_block_with_period_or_per_sample_times() -> None:
    block = parse_message(_encode(BLOCK))
    assert isinstance(block, ReadingBlock)
    assert block.key == "pump-7/vibration" and len(block) == 4 and block.last_seq == 103
    assert block.ts.tolist() == [1732740000.0, 1732740000.5, 1732740001.0, 1732740001.5]
    assert block.values.shape == (4, 1) and block.values.dtype == np.float64
    assert block.reading(2) == Reading("pump-7", "vibration", 1732740001.0, (2.5,), 102)
    vectors = parse_message(_encode({**{k: v for k, v in BLOCK.items() if k != "period"}, "ts": [1.0, 2.0, 4.0],
                                     "values": [[1, 2], [3, 4], [5, 6.5]]}))
    assert isinstance(vectors, ReadingBlock) and vectors.values.tolist() == [[1, 2], [3, 4], [5, 6.5]]
    one = parse_message(_encode({**{k: v for k, v in BLOCK.items() if k != "period"}, "values": [7]}))
    assert isinstance(one, ReadingBlock) and len(one) == 1
    # A single reading stays a reading, and is a block of one.
    single = parse_message(_encode(GOOD))
    assert isinstance(single, Reading)
    assert ReadingBlock.from_reading(single).reading(0) == single


@pytest.mark.parametrize(
    ("change", "reason", "sample"),
    [
        ({"values": [1.0, 2.0, "x", 4.0]}, "wrong_type", 2),
        ({"values": [1.0, True]}, "wrong_type", 1),
        ({"values": [[1.0], [2.0, 3.0]]}, "out_of_range", 1),
        ({"values": [[1.0], 2.0]}, "wrong_type", 1),
        ({"values": [1.0, 2.0, 10**400]}, "non_finite", 2),
        ({"values": [[1.0], [2.0], list(range(65))]}, "out_of_range", 2),
        ({"values": []}, "out_of_range", None),
        ({"values": [0.0] * 4097}, "out_of_range", None),
        ({"values": 1.0}, "wrong_type", None),
        ({"ts": [1.0, 2.0, 2.0, 3.0], "period": None}, "duplicate", 2),
        ({"ts": [1.0, 3.0, 2.0, 4.0], "period": None}, "out_of_order", 2),
        ({"ts": [1.0, 2.0], "period": None}, "out_of_range", None),
        ({"ts": [1.0, 2.0, 3.0, 7_258_118_401], "period": None}, "out_of_range", 3),
        ({"ts": [1.0, 2.0, 3.0, 4.0]}, "unknown_field", None),
        ({"ts": 7_258_118_399.0, "period": 1.0}, "out_of_range", 2),
        ({"period": 0}, "out_of_range", None),
        ({"period": -1.0}, "out_of_range", None),
        ({"period": 10**400}, "out_of_range", None),
        ({"period": "fast"}, "wrong_type", None),
        ({"period": None}, "missing_field", None),
        ({"seq": 2**63 - 2}, "out_of_range", 2),
        ({"seq": -1}, "out_of_range", None),
        ({"extra": 1}, "unknown_field", None),
        ({"device_id": "has space"}, "out_of_range", None),
    ],
)
def test_a_bad_block_is_rejected_whole_with_the_sample_index(change: dict[str, object], reason: str,
                                                              sample: int | None) -> None:
    body = {**BLOCK, **change}
    body = {k: v for k, v in body.items() if v is not None}
    result = parse_message(_encode(body))
    assert isinstance(result, Rejection), result
    assert (result.reason, result.sample) == (reason, sample)
    assert result.reason in REJECTION_REASONS and result.detail


def test_only_a_block_may_exceed_the_reading_size_limit() -> None:
    big_block = {**BLOCK, "values": [123456.789012345] * 4000}
    assert len(_encode(big_block)) > MAX_READING_BYTES
    assert isinstance(parse_message(_encode(big_block)), ReadingBlock)
    padded = _encode({**GOOD, "device_id": "d" * 10}) + b" " * MAX_READING_BYTES
    refused = parse_message(padded)
    assert isinstance(refused, Rejection) and refused.reason == "too_large"
    assert isinstance(parse_message(b" " * (MAX_BLOCK_BYTES + 1)), Rejection)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_never_raise_as_a_message(payload: bytes) -> None:
    result = parse_message(payload)
    assert isinstance(result, Reading | ReadingBlock | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(BLOCK), "other"]),
                       _json_values | st.lists(_json_values, max_size=6)
                       | st.lists(st.lists(st.floats(allow_nan=True), max_size=3), max_size=5), max_size=7))
def test_any_block_shaped_object_never_raises(obj: dict[str, object]) -> None:
    result = parse_message(json.dumps({**obj, "values": obj.get("values", [])}).encode())
    assert isinstance(result, ReadingBlock | Rejection)
    if isinstance(result, Rejection) and result.sample is not None:
        assert result.sample >= 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**62),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.integers(min_value=1, max_value=4),
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=64),
)
def test_block_round_trip(seq: int, ts: float, width: int, flat: list[float]) -> None:
    rows = max(1, len(flat) // width)
    values = np.resize(np.asarray(flat, dtype=np.float64), (rows, width))
    times = ts + np.arange(rows, dtype=np.float64) * 0.25
    block = ReadingBlock("dev", "s", seq, times, values)
    parsed = parse_message(block.to_json())
    assert isinstance(parsed, ReadingBlock)
    assert parsed.seq == seq and parsed.ts.tolist() == times.tolist() and parsed.values.tolist() == values.tolist()


def test_nan_in_a_block_names_its_sample() -> None:
    body = b'{"device_id":"d","stream":"s","seq":1,"ts":[1,2,3],"values":[1.0,2.0,NaN]}'
    assert parse_message(body) == Rejection("non_finite", "value contains NaN or infinity", 2)
    times = b'{"device_id":"d","stream":"s","seq":1,"ts":[1,Infinity,3],"values":[1.0,2.0,3.0]}'
    refused = parse_message(times)
    assert isinstance(refused, Rejection) and (refused.reason, refused.sample) == ("non_finite", 1)
    single = parse_message(b'{"device_id":"d","stream":"s","ts":1,"value":NaN,"seq":1}')
    assert isinstance(single, Rejection) and (single.reason, single.sample) == ("non_finite", None)


def _outcome(result: Reading | ReadingBlock | Rejection) -> object:
    """What a caller can act on: the reading or block (exact values), or the reason and sample."""
    if isinstance(result, Rejection):
        return result.reason, result.sample
    if isinstance(result, ReadingBlock):
        return result.key, result.seq, result.ts.tolist(), result.values.tolist()
    return result


_wide_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) - 1) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.booleans(), st.dictionaries(st.sampled_from(["device_id", "stream", "seq", "ts", "period", "values", "value"]),
                                      _wide_values | st.lists(_wide_values, max_size=4), max_size=2), st.booleans())
def test_the_fast_decoder_changes_no_outcome(block: bool, changes: dict[str, object], ascii_only: bool) -> None:
    """orjson's reading (the fast path) and the standard library's give the same reading, block or
    rejection reason, whatever a valid message's fields are changed to (integers beyond 64 bits,
    NaN, lone surrogates)."""
    raw = json.dumps({**(BLOCK if block else GOOD), **changes}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    fast = parse_message(raw)
    with mock.patch.object(reading_module.orjson, "loads", side_effect=orjson.JSONDecodeError("off", "", 0)):
        standard = parse_message(raw)
    assert _outcome(fast) == _outcome(standard)


@pytest.mark.parametrize("changes", [{"seq": 2**65}, {"seq": -(2**65)}, {"ts": 2**65}, {"ts": -(2**65)},
                                     {"period": 2**66}, {"ts": [1732740000.0, 2**65]}, {"values": [1.0, 2**70]}])
def test_integers_beyond_64_bits_get_the_standard_outcome(changes: dict[str, object]) -> None:
    raw = json.dumps({**BLOCK, **changes}).encode()
    with mock.patch.object(reading_module.orjson, "loads", side_effect=orjson.JSONDecodeError("off", "", 0)):
        standard = parse_message(raw)
    assert _outcome(parse_message(raw)) == _outcome(standard)


@pytest.mark.parametrize("payload", [
    b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "value": 1.0, "seq": 1, "seq": 2}',
    b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "value": 1.0, "seq": 1, "\\u0073eq": 2}',
    b'{"device_id": "d", "device_id": "e", "stream": "s", "ts": 1.7e9, "values": [1.0], "seq": 1}',
    b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "value": 1.0, "seq": 1, "value" : 9.0}',
])
def test_a_field_named_twice_is_refused_not_last_one_wins(payload: bytes) -> None:
    rejection = parse_message(payload)
    assert isinstance(rejection, Rejection) and rejection.reason == "bad_json", rejection
    assert "appears more than once" in rejection.detail


def test_unusual_but_unique_fields_still_parse() -> None:
    spaced = b'{"device_id" : "d", "stream"\n:\t":s", "ts": 1.7e9, "value": 1.0, "seq": 1}'
    parsed = parse_message(spaced)
    assert isinstance(parsed, Reading) and parsed.stream == ":s"
    escaped = b'{"device_id": "d", "stream": "s", "ts": 1.7e9, "valu\\u0065": 1.0, "seq": 1}'
    assert isinstance(parse_message(escaped), Reading)
