"""Cycle classification in the stream worker: a device sending cycles gets one classification per cycle."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamedge.contracts.reading import ReadingBlock
from streamedge.services.processor import Processor
from streamedge.services.records import Output, Source
from tests.services.helpers import sine

ROUTES = {"s": ["tiny-classifier"]}
# Three labelled cycles of unequal lengths: a smooth one, a shaky one (strong noise), a smooth one.
CYCLES = (("calm", 8), ("shaky", 12), ("calm", 10))


def _cycles(marker: bool, gap: float = 0.0, first_ts: float = 1.7e9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    ts, values, now = [], [], first_ts
    for label, length in CYCLES:
        for i in range(length):
            value = sine(i) + (rng.normal(0, 3.0) if label == "shaky" else 0.0)
            ts.append(now)
            values.append([value, 1.0 if i == length - 1 else 0.0] if marker else [value])
            now += 1.0
        now += gap
    return np.array(ts), np.array(values)


def _messages(ts: np.ndarray, values: np.ndarray, sizes: tuple[int, ...]) -> list[tuple[bytes | None, Source]]:
    out, start, turn = [], 0, 0
    while start < len(ts):
        n = min(sizes[turn % len(sizes)], len(ts) - start)
        block = ReadingBlock("pump-1", "s", start, ts[start:start + n], values[start:start + n])
        out.append((block.to_json(), Source("r", 0, len(out), float(ts[start + n - 1]), b"pump-1/s")))
        start, turn = start + n, turn + 1
    return out


def _classifications(outputs: list[Output]) -> list[tuple[int, str]]:
    found = []
    for output in outputs:
        assert output.topic != "dead_letters", output.value
        if output.topic == "classifications":
            record: dict[str, Any] = json.loads(output.value)
            found += [(record["seq"] + i, label) for i, label in zip(record["sample_indexes"], record["labels"],
                                                                        strict=True)]
    return found


@pytest.mark.parametrize("sizes", [(30,), (1,), (5, 3, 7)])
def test_three_marked_cycles_give_three_classifications_at_their_ends(
        make_processor: Callable[..., Processor], sizes: tuple[int, ...]) -> None:
    processor = make_processor(routes=ROUTES, cycle="marker")
    found = []
    for message in _messages(*_cycles(marker=True), sizes):
        found += _classifications(processor.process([message]))
    assert found == [(7, "calm"), (19, "shaky"), (29, "calm")]


def test_without_cycles_the_same_stream_is_classified_at_every_full_window(
        make_processor: Callable[..., Processor]) -> None:
    ts, values = _cycles(marker=False)
    found = _classifications(make_processor(routes=ROUTES).process(_messages(ts, values, (30,))))
    assert len(found) == len(ts) - 8 + 1


def test_gapped_cycles_each_end_when_the_next_reading_shows_the_gap(make_processor: Callable[..., Processor]) -> None:
    ts, values = _cycles(marker=False, gap=60.0)
    ts, values = np.append(ts, ts[-1] + 61.0), np.vstack([values, [[sine(0)]]])  # the next cycle's first reading
    processor = make_processor(routes=ROUTES, cycle="gap", cycle_gap_s=30.0)
    found = _classifications(processor.process(_messages(ts, values, (4,))))
    assert [label for _, label in found] == ["calm", "shaky", "calm"]
    # A cycle's result is at its last reading, or at the reading after the gap when that came in a later
    # message (blocks of 4: 0-3, 4-7, 8-11, ..., 28-31).
    assert [seq for seq, _ in found] == [8, 20, 29]


def test_fixed_period_cycles_end_on_seq_multiples(make_processor: Callable[..., Processor]) -> None:
    ts, values = _cycles(marker=False)
    found = _classifications(make_processor(routes=ROUTES, cycle="period", cycle_period=10).process(
        _messages(ts, values, (6,))))
    assert [seq for seq, _ in found] == [9, 19, 29]


def test_a_marker_stream_without_the_marker_column_is_dead_lettered_with_the_reason(
        make_processor: Callable[..., Processor]) -> None:
    ts, values = _cycles(marker=False)
    (output,) = make_processor(routes=ROUTES, cycle="marker").process(_messages(ts, values, (30,)))
    body = json.loads(output.value)
    assert output.topic == "dead_letters" and body["reason"] == "wrong_feature_count"
    assert "the cycle marker" in body["detail"]
