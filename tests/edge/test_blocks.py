"""The agent takes reading blocks from any source: the same results as the same readings one by one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.edge.helpers import sine_readings


def _results(agent: Any) -> list[dict[str, Any]]:
    records = [json.loads(row.value) for row in agent.outbox.peek(10_000)]
    for record in records:
        record.pop("produced_at", None)
        record.pop("created", None)
        record.pop("epoch", None)  # each buffer draws its own
    return records


def test_blocks_give_the_agent_the_same_results_as_single_readings(
        make_agent: Callable[..., Any], kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    layout = TopicLayout(prefix="edgeblocks.")
    singles = sine_readings(40)
    readings = [json.loads(p) for p in singles]
    blocks = []
    for first in range(0, 40, 16):
        part = readings[first:first + 16]
        blocks.append(json.dumps({"device_id": "dev", "stream": "s", "seq": first, "ts": [r["ts"] for r in part],
                                  "values": [r["value"] for r in part]}).encode())
    bad = json.dumps({"device_id": "dev", "stream": "s", "seq": 40, "ts": [1.0, 0.5],
                      "values": [1.0, 2.0]}).encode()
    one = make_agent(IteratorSource([]), kafka_settings, layout, buffer_path=tmp_path / "one.sqlite")
    many = make_agent(IteratorSource([]), kafka_settings, layout, buffer_path=tmp_path / "many.sqlite")
    assert one.process(singles) > 0
    assert many.process([*blocks, bad]) == one.outbox.stats().depth
    assert _results(many) == _results(one)
    rejected = many.metrics.registry.get_sample_value
    assert rejected("streamedge_edge_readings_total", {"outcome": "out_of_order"}) == 1
