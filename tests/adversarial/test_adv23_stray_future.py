"""Issue 23 item 3: one stray line must not block a stream for good. A stray seq of 10**9 that
also carries a stray (far future) ts leaves every later genuine reading 'out of order', across restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from streamedge.edge.agent import EdgeAgent
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
_LAYOUT = TopicLayout(prefix="adv23.")
T0 = 1.7e9


def _reading(seq: int, ts: float) -> bytes:
    return json.dumps({"device_id": "dev", "stream": "s", "ts": ts, "value": 10.0 + (seq % 16) / 8,
                       "seq": seq}).encode()


def test_stray_seq_with_future_ts_does_not_block_the_stream(make_agent: Callable[..., EdgeAgent],
                                                            tmp_path: Path) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + i) for i in range(20)])
    agent.process([_reading(10**9, 4.1e9)])  # one corrupted line: huge seq, ts in 2099
    agent.outbox.close()
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)  # even after a restart
    scored = agent.process([_reading(i, T0 + 21 + i) for i in range(20, 60)])  # the genuine stream goes on
    agent.outbox.close()
    assert scored > 0, "40 genuine readings after one stray line: all refused as out_of_order, for good"
