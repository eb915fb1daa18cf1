"""Issue 23 title and item 4: nothing a device meets "reuses a key"; the fault test must show "no key
carries two different results". After a stream's counter restarted, a lost buffer (deleted while
the agent was stopped) resets the stream epoch, and one idempotency key then names two different
readings with two different results (docs admit it; consumers de-duplicate on that key)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _results(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM outbox WHERE topic LIKE '%edge-results' ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(value) for (value,) in rows]


def test_a_lost_buffer_after_a_counter_restart_never_reuses_an_idempotency_key(
        make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.sqlite"
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + i) for i in range(20)])              # epoch 0, seq 0..19
    agent.process([_reading(i, T0 + 20 + i) for i in range(20)])         # sensor rebooted: epoch 1
    agent.process([_reading(i, T0 + 40 + i) for i in range(20)])         # rebooted again: epoch 2
    agent.outbox.close()
    before = _results(buffer)                                             # (forwarded to the broker)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{buffer}{suffix}").unlink(missing_ok=True)                 # the buffer lost
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + 60 + i) for i in range(20)])          # the stream goes on / reboots
    agent.process([_reading(i, T0 + 80 + i) for i in range(20)])
    agent.outbox.close()
    after = _results(buffer)
    seen = {r["idempotency_key"]: r for r in before}
    reused = [(k, seen[k]["ts"], r["ts"]) for r in after if (k := r["idempotency_key"]) in seen]
    assert not reused, f"{len(reused)} idempotency keys name two readings, e.g. (key, ts, ts) {reused[:2]}"
