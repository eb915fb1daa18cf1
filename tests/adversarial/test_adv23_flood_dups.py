"""Issue 23 item 11 / docs *Sources*: fair admission; "a flood of one-shot ids churns probation while
established streams keep their windows". A flood whose every message arrives twice (an at-least-once
gateway) promotes every one-shot id: the duplicate is refused as out_of_order, but only after it moved
its key out of probation, so the real stream loses its window."""

from __future__ import annotations

import json
from collections.abc import Callable

from streamedge.edge.agent import EdgeAgent
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
_LAYOUT = TopicLayout(prefix="adv23.")
T0 = 1.7e9


def _reading(device: str, seq: int, ts: float) -> bytes:
    return json.dumps({"device_id": device, "stream": "s", "ts": ts, "value": 10.0 + (seq % 16) / 8,
                       "seq": seq}).encode()


def test_duplicated_one_shot_ids_do_not_evict_an_established_stream(
        make_agent: Callable[..., EdgeAgent]) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, max_keys=64)
    agent.process([_reading("real", i, T0 + i) for i in range(20)])  # established, window full
    flood = []
    for n in range(200):                       # 200 one-shot ids, each message delivered twice
        once = _reading(f"bogus-{n}", 0, T0 + 20)
        flood += [once, once]
    agent.process(flood)
    scored = agent.process([_reading("real", 20 + i, T0 + 21 + i) for i in range(3)])
    evicted = agent.metrics.registry.get_sample_value("streamedge_edge_window_evictions_total") or 0
    agent.outbox.close()
    assert scored == 3, (f"the real stream scored {scored} of 3 after a flood of duplicated one-shot ids "
                         f"({evicted:.0f} evictions): its window was evicted")
