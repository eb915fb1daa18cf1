"""Reading blocks through the processor: same results as single readings, bad blocks whole, rebuilds."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from streamedge.contracts.reading import ReadingBlock
from streamedge.services.processor import Processor
from streamedge.services.records import Output, Source, parse_dead_letter
from streamedge.training.tiny import TINY_WINDOW
from tests.services.helpers import reading, sine

KEYS = ("d0", "d1", "d2")
SPIKES = {("d1", 40), ("d2", 77), ("d0", 95)}


def _value(device: str, seq: int) -> float:
    return sine(seq) + (60.0 if (device, seq) in SPIKES else 0.0)


def _block(device: str, first: int, count: int) -> bytes:
    seqs = range(first, first + count)
    block = ReadingBlock(device, "s", first, np.array([1.7e9 + s for s in seqs], dtype=np.float64),
                         np.array([[_value(device, s)] for s in seqs], dtype=np.float64))
    return block.to_json(period=1.0)


def _sources(payloads: Sequence[tuple[str, bytes | None]], start: int = 0) -> list[tuple[bytes | None, Source]]:
    return [(p, Source("r", 0, start + i, 1.7e9 + start + i, key.encode())) for i, (key, p) in enumerate(payloads)]


def _records(outputs: list[Output], topic: str) -> list[dict[str, Any]]:
    return [json.loads(o.value) for o in outputs if o.topic == topic]


def _per_sample(outputs: list[Output]) -> dict[str, dict[tuple[str, int], Any]]:
    """Per-sample results of either wire format: forecasts, anomalies and classifications by (key, seq)."""
    found: dict[str, dict[tuple[str, int], Any]] = {"forecast": {}, "anomaly": {}, "classification": {}}
    for record in _records(outputs, "forecasts"):
        if record["type"] == "forecast":
            found["forecast"][(record["key"], record["seq"])] = record["forecast"]
        else:
            for i, rows in enumerate(record["forecast"]):
                found["forecast"][(record["key"], record["forecast_seq"] + i)] = rows
    for record in _records(outputs, "anomalies"):
        if record["type"] == "anomaly":
            found["anomaly"][(record["key"], record["seq"])] = (record["actual"], record["forecast"], record["score"])
        else:
            for j, index in enumerate(record["sample_indexes"]):
                found["anomaly"][(record["key"], record["seq"] + index)] = (
                    record["actual"][j], record["forecast"][j], record["score"][j])
    for record in _records(outputs, "classifications"):
        if record["type"] == "classification":
            found["classification"][(record["key"], record["seq"])] = (record["label"], record["probability"])
        else:
            for j, index in enumerate(record["sample_indexes"]):
                found["classification"][(record["key"], record["seq"] + index)] = (
                    record["labels"][j], record["probability"][j])
    return found


def _assert_same(single: dict[str, dict[tuple[str, int], Any]], blocks: dict[str, dict[tuple[str, int], Any]]) -> None:
    for kind in ("forecast", "anomaly", "classification"):
        assert single[kind].keys() == blocks[kind].keys(), kind
    for where, rows in single["forecast"].items():
        np.testing.assert_allclose(blocks["forecast"][where], rows, rtol=1e-5, atol=1e-5)
    for where, (actual, forecast, score) in single["anomaly"].items():
        assert blocks["anomaly"][where][0] == actual
        np.testing.assert_allclose(blocks["anomaly"][where][1], forecast, rtol=1e-5, atol=1e-5)
        assert blocks["anomaly"][where][2] == pytest.approx(score, rel=1e-4)
    for where, (label, probability) in single["classification"].items():
        assert blocks["classification"][where][0] == label
        assert blocks["classification"][where][1] == pytest.approx(probability, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("sizes", [(16,), (1, 7, 64, 3, 25)])
def test_blocks_give_the_same_results_as_single_readings_sample_by_sample(
        make_processor: Callable[..., Processor], sizes: tuple[int, ...]) -> None:
    samples = 120
    single, blocked = make_processor(classify_stride=4), make_processor(classify_stride=4)
    outputs: list[Output] = []
    for first in range(0, samples, 10):  # micro-batches of 10 readings per key, keys interleaved
        batch = [(f"{d}/s", reading(d, s, value=_value(d, s))) for s in range(first, first + 10) for d in KEYS]
        outputs += single.process(_sources(batch, start=len(outputs) + first * 3))
    expected = _per_sample(outputs)
    assert len(expected["forecast"]) == len(KEYS) * (samples - TINY_WINDOW + 1)
    assert {(f"{d}/s", s) for d, s in SPIKES} <= expected["anomaly"].keys()
    assert all(seq % 4 == 0 for _, seq in expected["classification"])

    messages: list[tuple[str, bytes | None]] = []
    for d in KEYS:
        first, turn = 0, 0
        while first < samples:
            count = min(sizes[turn % len(sizes)], samples - first)
            messages.append((f"{d}/s", _block(d, first, count)))
            first, turn = first + count, turn + 1
    got: list[Output] = []
    for at in range(0, len(messages), 4):
        got += blocked.process(_sources(messages[at:at + 4], start=at))
    _assert_same(expected, _per_sample(got))
    assert not _records(got, "dead_letters")
    # One message per block and model: a forecast and at most one anomaly / classification each.
    forecasts = _records(got, "forecasts")
    assert len({r["idempotency_key"] for r in forecasts}) == len(forecasts)
    assert all(r["idempotency_key"] == f"{r['type']}:tiny-forecaster:{r['key']}:{r['seq']}@0:{r['source']['offset']}"
               for r in forecasts)
    assert len(forecasts) <= len(messages)
    value = blocked.metrics.registry.get_sample_value
    assert value("streamedge_stream_readings_consumed_total") == len(KEYS) * samples
    assert value("streamedge_stream_anomalies_total", {"model": "tiny-forecaster"}) == len(expected["anomaly"])


def test_a_bad_block_goes_to_the_dead_letter_topic_whole_with_its_sample_index(
        make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    good = _block("d0", 0, 20)
    processor.process(_sources([("d0/s", good)]))
    body = json.loads(_block("d0", 20, 10))
    body["values"][6] = "x"
    bad = json.dumps(body).encode()
    overlap = _block("d0", 15, 10)
    outputs = processor.process(_sources([("d0/s", bad), ("d0/s", overlap)], start=1))
    assert [o.topic for o in outputs] == ["dead_letters", "dead_letters"]
    letters = [parse_dead_letter(o.value) for o in outputs]
    assert [(r["reason"], r["sample"]) for r, _, _ in letters] == [("wrong_type", 6), ("out_of_order", 0)]
    assert [original for _, _, original in letters] == [bad, overlap]
    state = processor.store.get("d0/s")
    assert state is not None and state.last_seq == 19
    # The next good block is scored against the forecast made at seq 19: nothing was half-applied.
    nxt = processor.process(_sources([("d0/s", _block("d0", 20, 5))], start=3))
    assert [r["forecast_seq"] for r in _records(nxt, "forecasts")] == [20]
    assert processor.metrics.dead_letters.labels("wrong_type")._value.get() == 1


def test_non_finite_output_dead_letters_the_block_and_keeps_the_other_samples(
        make_processor: Callable[..., Processor]) -> None:
    processor = make_processor()
    body = json.loads(_block("d0", 0, 12))
    body["values"][9] = 1e308
    payload = json.dumps(body).encode()
    outputs = processor.process(_sources([("d0/s", payload)]))
    letters = [parse_dead_letter(o.value)[0] for o in outputs if o.topic == "dead_letters"]
    assert [(r["reason"], r["sample"]) for r in letters] == [("non_finite_output", 9)]
    (forecast,) = _records(outputs, "forecasts")
    assert forecast["forecast_seq"] == TINY_WINDOW - 1
    rows = forecast["forecast"]
    assert [row is None for row in rows] == [seq >= 9 for seq in range(TINY_WINDOW - 1, 12)]


def test_a_rebuild_from_blocks_restores_the_state_without_output(make_processor: Callable[..., Processor]) -> None:
    live, rebuilt = make_processor(), make_processor()
    history = _sources([("d0/s", _block("d0", 0, 30)), ("d0/s", _block("d0", 30, 9))])
    live.process(history)
    assert rebuilt.process(history, emit=False) == []
    nxt = _sources([("d0/s", _block("d0", 39, 4))], start=2)

    def _strip(outputs: list[Output]) -> list[dict[str, Any]]:
        return [{k: v for k, v in json.loads(o.value).items() if k != "produced_at"} for o in outputs]

    expected = _strip(live.process(nxt))
    assert [r["type"] for r in expected] == ["forecast_block", "classification_block"]
    assert expected[0]["forecast_seq"] == 39
    assert _strip(rebuilt.process(nxt)) == expected


def test_a_block_result_too_large_for_one_message_is_split_into_parts_that_tile_the_block(
        make_processor: Callable[..., Processor]) -> None:
    whole, split = make_processor(classify_stride=4), make_processor(classify_stride=4)
    split.result_max_bytes = 2000
    body = json.loads(_block("d1", 0, 256))
    body["values"][100] = 500.0  # an anomaly in the middle of the block
    payload = json.dumps(body).encode()
    expected = whole.process(_sources([("d1/s", payload)]))
    parts = split.process(_sources([("d1/s", payload)]))
    assert len(_records(expected, "forecasts")) == 1 and all(len(o.value) <= 2000 for o in parts)
    assert _records(expected, "anomalies")
    forecasts = _records(parts, "forecasts")
    assert len(forecasts) >= 2
    # The parts tile the block: consecutive sample ranges, distinct idempotency keys.
    assert forecasts[0]["seq"] == 0 and sum(f["samples"] for f in forecasts) == 256
    assert all(a["seq"] + a["samples"] == b["seq"] for a, b in itertools.pairwise(forecasts))
    assert len({f["idempotency_key"] for f in forecasts}) == len(forecasts)
    _assert_same(_per_sample(expected), _per_sample(parts))


def test_windows_beyond_the_invoke_budget_run_in_chunks_with_the_same_results(
        make_processor: Callable[..., Processor], monkeypatch: pytest.MonkeyPatch) -> None:
    import streamedge.services.inference as inference_module

    whole, chunked = make_processor(), make_processor()
    messages = _sources([(f"{d}/s", _block(d, 0, 100)) for d in KEYS])
    expected = whole.process(messages)
    monkeypatch.setattr(inference_module, "_INVOKE_BYTES", TINY_WINDOW * 4 * 50)  # 50 windows per invoke
    got = chunked.process(messages)
    _assert_same(_per_sample(expected), _per_sample(got))
    value = chunked.metrics.registry.get_sample_value
    windows = len(KEYS) * (100 - TINY_WINDOW + 1)
    assert value("streamedge_stream_batch_size_windows_count", {"model": "tiny-forecaster"}) == -(-windows // 50)
    assert value("streamedge_stream_batch_size_windows_sum", {"model": "tiny-forecaster"}) == windows
    assert whole.metrics.registry.get_sample_value("streamedge_stream_batch_size_windows_count",
                                                   {"model": "tiny-forecaster"}) == 1
