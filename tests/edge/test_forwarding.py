"""Result blocks: the forwarder packs outbox rows, every consumer decodes them back into the same rows."""

from __future__ import annotations

import argparse
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError

from streamedge.contracts.results import (
    MAX_RESULT_BLOCK_BYTES,
    ResultFormatError,
    decode_results,
    encode_result,
    encode_result_block,
    result_rows,
)
from streamedge.demo.collect import Arrival
from streamedge.demo.ledger import edge_order, edge_rows
from streamedge.edge.buffer import Outbox, OutboxRow
from streamedge.edge.forwarder import Forwarder, pack_rows
from streamedge.edge.settings import EdgeSettings
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.edge.helpers import consume_results, count_results

RESULTS, TELEMETRY = "p.edge-results", "p.edge-telemetry"


def _result(seq: int, device: str = "dev-1", pad: int = 0) -> bytes:
    body = {"key": f"{device}/s", "source_seq": 100 + seq, "type": "forecast", "forecast": [[1.5 + seq]],
            "idempotency_key": f"forecast:m:{device}/s:{100 + seq}", "note": "x" * pad}
    return encode_result(device, seq, body)


def _rows(values: list[tuple[str, bytes]]) -> list[OutboxRow]:
    return [OutboxRow(i + 1, topic, b"dev-1", value, 0.0) for i, (topic, value) in enumerate(values)]


def _decoded(messages: list[Any]) -> list[dict[str, Any]]:
    return [row for m in messages for row in decode_results(m.value)]


# ---- the contract and the packing, pure ----------------------------------------------------------------


@pytest.mark.parametrize(("n", "block"), [(1, 1), (10, 1), (10, 3), (64, 64), (65, 64), (1000, 256)])
def test_n_rows_in_blocks_of_b_make_ceil_n_over_b_messages_with_the_same_rows(n: int, block: int) -> None:
    values = [_result(seq) for seq in range(n)]
    messages = pack_rows(_rows([(RESULTS, v) for v in values]), block, MAX_RESULT_BLOCK_BYTES, {RESULTS})
    assert len(messages) == math.ceil(n / block)
    assert _decoded(messages) == [json.loads(v) for v in values]
    assert [row.id for m in messages for row in m.rows] == list(range(1, n + 1))
    if block == 1:  # as before blocks: every message is the row's own bytes
        assert [m.value for m in messages] == values
    for message in messages:
        obj = json.loads(message.value)
        if len(message.rows) > 1:
            assert obj["device_id"] == "dev-1" and obj["first_seq"] == obj["results"][0]["seq"]


def test_telemetry_rows_stay_single_and_split_the_run() -> None:
    beat = json.dumps({"device_id": "dev-1", "seq": 0, "type": "heartbeat"}).encode()
    values = [(RESULTS, _result(0)), (RESULTS, _result(1)), (TELEMETRY, beat), (TELEMETRY, beat),
              (RESULTS, _result(2)), (RESULTS, _result(3)), (RESULTS, _result(4))]
    messages = pack_rows(_rows(values), 16, MAX_RESULT_BLOCK_BYTES, {RESULTS})
    assert [(m.topic, len(m.rows)) for m in messages] == [(RESULTS, 2), (TELEMETRY, 1), (TELEMETRY, 1), (RESULTS, 3)]
    assert messages[1].value == beat and messages[2].value == beat
    assert [r["seq"] for r in _decoded([messages[0], messages[3]])] == [0, 1, 2, 3, 4]


def test_a_row_bigger_than_the_byte_bound_goes_alone_and_blocks_stay_under_it() -> None:
    bound = 4096
    values = [_result(0), _result(1), _result(2, pad=5000), _result(3), *[_result(s, pad=200) for s in range(4, 40)]]
    messages = pack_rows(_rows([(RESULTS, v) for v in values]), 64, bound, {RESULTS})
    assert [len(m.rows) for m in messages][:2] == [2, 1]
    assert messages[1].value == values[2]  # the big row as its own single result
    assert all(len(m.value) <= bound for m in messages if len(m.rows) > 1)
    assert len(messages) > 3  # the padded rows fill several blocks under the bound
    assert _decoded(messages) == [json.loads(v) for v in values]


def test_the_shared_decoder_takes_both_forms_and_names_what_is_wrong() -> None:
    single = _result(7)
    block = encode_result_block([_result(7), _result(8)])
    assert decode_results(single) == [json.loads(single)]
    assert [r["seq"] for r in decode_results(block)] == [7, 8]
    assert result_rows(json.loads(block)) == decode_results(block)
    bad = [
        (b"\xff not json", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"device_id": "d"}', "seq must be"),
        (b'{"device_id": "d", "first_seq": 1, "results": []}', "1 to"),
        (b'{"device_id": "d", "first_seq": 2, "results": [{"device_id": "d", "seq": 1}]}', "first_seq"),
        (b'{"device_id": "d", "first_seq": 1, "results": [{"device_id": "e", "seq": 1}]}', "not the block's"),
        (b'{"device_id": "d", "first_seq": 1, "results": [{"device_id": "d", "seq": 1}, {"device_id": "d", "seq": 1}]}',
         "not after"),
    ]
    for payload, words in bad:
        with pytest.raises(ResultFormatError, match=words):
            decode_results(payload)
    with pytest.raises(ResultFormatError, match="not JSON"):
        encode_result_block([b"oops", _result(1)])


def test_rows_that_are_not_results_go_one_per_message() -> None:
    values = [b"oops", b"still not json"]
    messages = pack_rows(_rows([(RESULTS, v) for v in values]), 8, MAX_RESULT_BLOCK_BYTES, {RESULTS})
    assert [m.value for m in messages] == values


def test_demo_ledger_counts_rows_of_blocks() -> None:
    block = json.loads(encode_result_block([_result(s) for s in range(3)]))
    resent = json.loads(encode_result_block([_result(s) for s in range(2, 5)]))
    arrivals = [Arrival("r", 0, offset, None, None, body, 0.0, 0.0)
                for offset, body in enumerate([block, json.loads(_result(2)), resent])]
    rows = edge_rows(arrivals)
    assert [a.body["seq"] for a in rows] == [0, 1, 2, 2, 2, 3, 4]
    assert edge_order(rows) == (5, 2, True)


def test_block_size_setting_comes_from_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EdgeSettings().forward_block_rows == 256
    monkeypatch.setenv("STREAMEDGE_EDGE_FORWARD_BLOCK_ROWS", "1")
    monkeypatch.setenv("STREAMEDGE_EDGE_FORWARD_BLOCK_BYTES", "65536")
    settings = EdgeSettings()
    assert (settings.forward_block_rows, settings.forward_block_bytes) == (1, 65536)
    monkeypatch.setenv("STREAMEDGE_EDGE_FORWARD_BLOCK_BYTES", str(MAX_RESULT_BLOCK_BYTES + 1))
    with pytest.raises(ValueError, match="forward_block_bytes"):
        EdgeSettings()


# ---- against the real broker ------------------------------------------------------------------------------


def _fill(outbox: Outbox, topic: str, n: int, big: int | None = None) -> list[bytes]:
    values: list[bytes] = []

    def build(first: int) -> list[tuple[str, bytes | None, bytes]]:
        values.extend(_result(first + i, pad=6000 if i == big else 0) for i in range(n))
        return [(topic, b"dev-1", v) for v in values]

    outbox.append(build, n)
    return values


def _drain(forwarder: Forwarder, outbox: Outbox, timeout_s: float = 30.0) -> None:
    forwarder.start()
    assert forwarder.stop(drain_timeout_s=timeout_s), f"{outbox.stats().depth} rows left"


def test_forwarding_in_blocks_delivers_every_row_once_in_order(
        tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    layout = make_topics(2)
    outbox = Outbox(tmp_path / "outbox.sqlite", fsync=False)
    n, block = 1000, 64
    values = _fill(outbox, layout.edge_results, n, big=500)  # row 500 is over the byte bound
    sent: list[int] = []
    forwarder = Forwarder(outbox, kafka_settings.kafka_python_config(), timeout_s=5.0, block_rows=block,
                          block_bytes=4096, block_topics=(layout.edge_results,), on_sent=lambda c, _: sent.append(c))
    _drain(forwarder, outbox)
    outbox.close()
    rows = consume_results(kafka_settings, layout.edge_results, expect=n)
    assert [{k: v for k, v in r.items() if k not in ("partition", "offset")} for r in rows] == [
        json.loads(v) for v in values]
    messages = {(r["partition"], r["offset"]) for r in rows}
    by_message = [sum(1 for r in rows if (r["partition"], r["offset"]) == m) for m in sorted(messages)]
    assert 1 in by_message and max(by_message) <= block  # the big row alone; 4 KiB blocks of ~150-byte rows
    assert count_results(kafka_settings, layout.edge_results) == (len(messages), n)
    assert sum(sent) == n


def test_default_bound_packs_ceil_n_over_b_messages(
        tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    layout = make_topics(1)
    outbox = Outbox(tmp_path / "outbox.sqlite", fsync=False)
    n, block = 1000, 64
    values = _fill(outbox, layout.edge_results, n)
    forwarder = Forwarder(outbox, kafka_settings.kafka_python_config(), timeout_s=5.0, block_rows=block,
                          block_topics=(layout.edge_results,))
    _drain(forwarder, outbox)
    outbox.close()
    assert count_results(kafka_settings, layout.edge_results) == (math.ceil(n / block), n)
    rows = consume_results(kafka_settings, layout.edge_results, expect=n)
    assert [r["seq"] for r in rows] == [json.loads(v)["seq"] for v in values] == list(range(n))


class _LinkLost:
    """A real producer whose link breaks after ``after`` messages: message ``after`` reaches the
    broker but its acknowledgement is lost, and every later send fails."""

    def __init__(self, real: Any, after: int) -> None:
        self.real, self.after, self.sent = real, after, 0

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> Any:
        index, self.sent = self.sent, self.sent + 1
        if index < self.after:
            return self.real.send(topic, key=key, value=value)
        if index == self.after:
            self.real.flush(timeout=10)
            self.real.send(topic, key=key, value=value).get(timeout=10)  # on the broker...
            return _Failed(KafkaConnectionError("acknowledgement lost"))  # ...but not acknowledged
        raise KafkaConnectionError("broker unreachable")

    def flush(self, timeout: float | None = None) -> None:
        self.real.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self.real.close(timeout=timeout)


class _Failed:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get(self, timeout: float | None = None) -> None:
        raise self.exc


class _FlakyForwarder(Forwarder):
    """The first producer it makes loses its link after ``after`` messages; later ones are healthy."""

    def __init__(self, *args: Any, after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after: int | None = after

    def _ensure_producer(self) -> Any:
        producer = super()._ensure_producer()
        if self._after is None:
            return producer
        self._producer = _LinkLost(producer, self._after)
        self._after = None
        return self._producer


def test_a_failure_midway_keeps_the_rows_and_a_resend_duplicates_only_by_device_and_seq(
        tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    layout = make_topics(2)
    outbox = Outbox(tmp_path / "outbox.sqlite", fsync=False)
    n, block = 600, 50
    values = _fill(outbox, layout.edge_results, n)
    config = kafka_settings.kafka_python_config()

    # The broker is unreachable from the start: every row stays.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    offline = Forwarder(outbox, {**config, "bootstrap_servers": dead}, timeout_s=1.0, block_rows=block,
                        block_topics=(layout.edge_results,))
    offline.start()
    deadline = time.monotonic() + 20
    while offline.reachable is not False:
        assert time.monotonic() < deadline, "the dead broker was never noticed"
        time.sleep(0.05)
    assert offline.stop() is False and outbox.stats().depth == n

    # The link breaks mid-pass: 3 blocks acknowledged, the 4th delivered without its acknowledgement.
    states: list[bool] = []
    flaky = _FlakyForwarder(outbox, config, timeout_s=5.0, batch=n, block_rows=block,
                            block_topics=(layout.edge_results,), on_state=states.append, after=3)
    _drain(flaky, outbox)
    outbox.close()
    assert states[:2] == [False, True]  # the failed pass, then the resend

    rows = consume_results(kafka_settings, layout.edge_results, expect=n + block)
    bodies = [{k: v for k, v in r.items() if k not in ("partition", "offset")} for r in rows]
    first: dict[tuple[str, int], dict[str, Any]] = {}
    for body in bodies:
        identity = (body["device_id"], body["seq"])
        assert first.setdefault(identity, body) == body  # a duplicate is the same row, same (device_id, seq)
    assert list(first.values()) == [json.loads(v) for v in values]  # nothing lost, first copies in order
    copies = Counter(b["seq"] for b in bodies)
    assert sorted(seq for seq, count in copies.items() if count > 1) == list(range(3 * block, 4 * block))
    assert max(copies.values()) == 2  # only the block whose acknowledgement was lost, once more


def test_bench_forwarding_writes_its_figures(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from streamedge.benchmarks import forwarding

    out = tmp_path / "forwarding.json"
    args = argparse.Namespace(bootstrap_servers=kafka_settings.bootstrap_servers, topic_prefix="streamedge.",
                              out=out, rows=300, block_sizes="1,64", block_bytes=512 * 1024, repeats=1, fsync=False)
    assert forwarding.run(args) == 0
    report = json.loads(out.read_text())
    assert report["blocks"]["1"]["messages"] == 300 and report["blocks"]["64"]["messages"] == 5
    assert report["blocks"]["64"]["speedup_vs_1"] > 0 and "| 64 | 5 |" in report["table"]
