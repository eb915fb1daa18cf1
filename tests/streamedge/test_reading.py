"""The reading contract: valid records parse, everything else is rejected with a reason, nothing raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamedge.contracts.reading import MAX_READING_BYTES, REJECTION_REASONS, Reading, Rejection, parse_reading

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
