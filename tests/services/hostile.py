"""Hypothesis strategies for hostile message bytes, and a fixed list of the known-bad shapes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# The broker's default message.max.bytes is 1,048,588; this stays under the producer's 1,000,000.
MAX_SIZE_BYTES = 990_000


def _deep(depth: int, opener: str = "[") -> bytes:
    return (opener * depth).encode()


def _big_number(digits: int) -> bytes:
    return ('{"device_id":"d","stream":"s","ts":1.7e9,"value":' + "9" * digits + ',"seq":1}').encode()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_field_names = st.sampled_from(["device_id", "stream", "ts", "value", "values", "period", "seq", "model", "version",
                                "trigger", "reason", "original", "key", "fixed"])


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# Any bytes a producer can send, biased towards almost-valid JSON objects of the known fields.
hostile_payloads: st.SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.dictionaries(_field_names, _json_values, max_size=6).map(_dumps),
    _json_values.map(_dumps),
    st.integers(min_value=1, max_value=60_000).map(_deep),
    st.integers(min_value=1, max_value=60_000).map(lambda n: _deep(n, '{"a":')),
    st.integers(min_value=300, max_value=6000).map(_big_number),
)


def known_bad() -> list[tuple[str, bytes | None]]:
    """``(name, payload)`` of each hostile shape the issue measured, for the integration tests."""
    return [
        ("deep_list", _deep(60_000)),
        ("deep_object", _deep(12_000, '{"a":')),
        ("deep_list_100kb", _deep(100_000)),
        ("400_digits", _big_number(400)),
        ("5000_digits", _big_number(5000)),
        ("invalid_utf8", b'{"device_id":"\xff\xfe","stream":"s","ts":1.7e9,"value":1,"seq":1}'),
        ("tombstone", None),
        ("wrong_types", b'{"device_id":1,"stream":["s"],"ts":"now","value":{"a":1},"seq":1.5}'),
        ("max_size", b'{"device_id":"d","stream":"s","pad":"' + b"x" * (MAX_SIZE_BYTES - 60) + b'"}'),
    ]
