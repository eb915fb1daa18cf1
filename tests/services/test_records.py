"""Dead letters always fit, and any bytes read back from the dead-letter topic are refused cleanly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamedge.services.dlq import records_from_file
from streamedge.services.records import (
    DEAD_LETTER_MAX_BYTES,
    KEY_KEEP_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    ResultKey,
    Source,
    dead_letter,
    dead_letter_key,
    float32_json,
    idempotency_key,
    parse_dead_letter,
    parse_idempotency_key,
    reading_of,
)
from streamedge.services.settings import StreamSettings
from tests.services.hostile import MAX_SIZE_BYTES, hostile_payloads


def _source(key: bytes | None = b"d/s") -> Source:
    return Source("streamedge.readings", 2, 99, 1.7e9, key)


def test_a_max_size_reading_is_dead_lettered_as_prefix_size_and_sha256() -> None:
    payload = bytes(range(256)) * (MAX_SIZE_BYTES // 256)
    value = dead_letter(payload, _source(), "too_large", "990 KB", 1.7e9)
    # The measured bug: the whole payload base64'd made a 1.3 MB dead letter, refused by the producer.
    assert len(value) <= DEAD_LETTER_MAX_BYTES
    record, key, original = parse_dead_letter(value)
    assert record["original_truncated"] is True and key == b"d/s"
    assert original is not None and payload.startswith(original) and len(original) > DEAD_LETTER_MAX_BYTES // 2
    assert record["original_size"] == len(payload)
    assert record["original_sha256"] == hashlib.sha256(payload).hexdigest()


def _largest_dead_letter_setting() -> int:
    """The largest ``dead_letter_max_bytes`` the settings accept."""
    (largest,) = [item.le for item in StreamSettings.model_fields["dead_letter_max_bytes"].metadata
                  if hasattr(item, "le")]
    assert isinstance(largest, int)
    StreamSettings(dead_letter_max_bytes=largest)
    with pytest.raises(ValueError, match="less than or equal"):
        StreamSettings(dead_letter_max_bytes=largest + 1)
    return largest


@pytest.mark.parametrize("key_size", [None, 0, 257, KEY_KEEP_BYTES, KEY_KEEP_BYTES + 1, 100_000])
@pytest.mark.parametrize("payload_size", [1_040_000, 997_000, 747_000])
def test_a_dead_letter_at_the_largest_setting_fits_one_producer_request(key_size: int | None,
                                                                         payload_size: int) -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    key = None if key_size is None else b"k" * key_size
    for max_bytes in (_largest_dead_letter_setting(), 1_000_000):  # the setting's bound, and above it
        value = dead_letter(b"x" * payload_size, _source(key), "too_large", "big", 1.7e9, max_bytes)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(dead_letter_key(key), value, [])
        # Over Faust's producer_max_request_size (1,000,000) aiokafka refuses it on every retry.
        assert size <= 1_000_000 == PRODUCER_MAX_REQUEST_BYTES
        assert len(value) <= max_bytes
        record, _, original = parse_dead_letter(value)
        assert original is not None and record["original_size"] == payload_size


def test_the_producer_limit_is_fausts() -> None:
    import faust

    assert faust.App("streamedge-limit-check").conf.producer_max_request_size == PRODUCER_MAX_REQUEST_BYTES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(st.none(), st.binary(max_size=20_000)), key=st.one_of(st.none(), st.binary(max_size=3000)),
       limit=st.integers(min_value=4096, max_value=30_000))
def test_every_dead_letter_fits_and_keeps_what_fits(payload: bytes | None, key: bytes | None, limit: int) -> None:
    value = dead_letter(payload, _source(key), "bad_json", "x" * 5000, 1.7e9, max_bytes=limit)
    assert len(value) <= limit
    record, got_key, original = parse_dead_letter(value)
    if payload is None:
        assert original is None and record["original_size"] is None
    else:
        assert original is not None and payload.startswith(original)
        assert record["original_truncated"] is (original != payload)
        assert record["original_sha256"] == hashlib.sha256(payload).hexdigest()
    if key is not None and len(key) > KEY_KEEP_BYTES:
        assert record["key_truncated"] is True and record["key_size"] == len(key)
        assert dead_letter_key(key) == b"sha256:" + hashlib.sha256(key).hexdigest().encode()
    else:
        assert got_key == key and dead_letter_key(key) == key


def test_an_original_that_fits_is_kept_whole() -> None:
    payload = b"\xff" * 600_000
    record, _, original = parse_dead_letter(dead_letter(payload, _source(), "not_utf8", "", 1.7e9))
    assert original == payload and record["original_truncated"] is False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=hostile_payloads)
def test_any_bytes_on_the_dead_letter_topic_raise_only_value_error(value: bytes | None) -> None:
    try:
        record, _, _ = parse_dead_letter(value)
    except ValueError:
        return
    assert isinstance(record["reason"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(line=hostile_payloads)
def test_any_line_of_an_export_file_raises_only_value_error(line: bytes | None, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes((line or b"null").replace(b"\n", b" ") + b"\n")
    try:
        letters = list(records_from_file(path))
    except ValueError as exc:
        assert "bad.jsonl:1" in str(exc)
        return
    assert len(letters) <= 1


def test_lines_end_at_newline_only_so_errors_name_the_editor_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"reason": "bad_json", "original": None, "fixed": None})
    path.write_bytes(good.encode() + b"\r\n" + b"\r\x00\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: "):
        list(records_from_file(path))


def test_a_fix_holding_a_lone_surrogate_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"reason": "bad_json", "original": None, "fixed": "\ud800"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        list(records_from_file(path))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_float32_json_is_the_exact_float32_array(array: npt.NDArray[np.float32]) -> None:
    text = float32_json(array)
    back = np.array(json.loads(text), dtype=np.float32)
    assert back.size == array.size
    assert np.array_equal(back.reshape(array.shape), array)


@given(kind=st.sampled_from(["forecast", "classification_block"]),
       device=st.from_regex(r"[A-Za-z0-9._:\-]{1,20}", fullmatch=True),
       seq=st.integers(0, 2**63 - 1), partition=st.integers(0, 10_000), offset=st.integers(0, 2**63 - 1))
def test_an_idempotency_key_parses_back_to_its_reading_and_source(kind: str, device: str, seq: int, partition: int,
                                                                  offset: int) -> None:
    source = Source("r", partition, offset, 1.7e9)
    key = idempotency_key(kind, "m:1", f"{device}/s", seq, source)
    assert parse_idempotency_key(key) == ResultKey(f"{kind}:m:1:{device}/s:{seq}", partition, offset)
    assert reading_of(key) == f"{kind}:m:1:{device}/s:{seq}"


@pytest.mark.parametrize("text", ["forecast:m:d/s:3", "forecast:m:d/s:3@", "@0:1", "forecast:m:d/s:3@1",
                                  "forecast:m:d/s:3@1:", "forecast:m:d/s:3@-1:2", "forecast:m:d/s:3@1:2x",
                                  "forecast:m:d/s:3@\u0661:2", ""])
def test_a_key_without_a_source_suffix_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="not a result idempotency key"):
        parse_idempotency_key(text)
