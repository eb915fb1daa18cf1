"""Issue 23 item 3 / docs/edge.md *Sequence restarts*: a reading replayed after a counter restart
must not be scored again under a new key. `(device, stream, stream_epoch, seq)` names one reading for good."""

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


def test_replay_of_pre_reset_readings_is_not_scored_again(make_agent: Callable[..., EdgeAgent],
                                                          tmp_path: Path) -> None:
    before = [_reading(i, T0 + i) for i in range(20)]          # seq 0..19
    after = [_reading(i, T0 + 20 + i) for i in range(10)]      # sensor rebooted: seq 0..9, later ts
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(before)
    agent.process(after)
    first = _results(tmp_path / "buffer.sqlite")
    # A source replays readings it already delivered (Kafka redelivery, a file read again):
    # seq 15..19 with their original, older ts. They were scored already.
    scored = agent.process(before[15:])
    again = _results(tmp_path / "buffer.sqlite")[len(first):]
    agent.outbox.close()
    assert scored == 0, (f"{scored} replayed readings scored again under new keys: "
                         f"{[r['idempotency_key'] for r in again]}")


def test_same_file_read_twice_across_a_counter_restart_scores_nothing_new(
        make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    # One file holding a counter restart, replayed after a restart of the agent (windows reloaded):
    # docs: replayed readings "are recognised by their seq ... instead of being scored twice".
    lines = [_reading(i, T0 + i) for i in range(30)] + [_reading(i, T0 + 30 + i) for i in range(20)]
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(lines)
    agent.outbox.close()
    first = _results(tmp_path / "buffer.sqlite")
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(lines)
    agent.outbox.close()
    results = _results(tmp_path / "buffer.sqlite")
    by_reading: dict[tuple[int, float], set[str]] = {}
    for r in results:
        by_reading.setdefault((r["source_seq"], r["ts"]), set()).add(r["idempotency_key"])
    named_twice = {k: v for k, v in by_reading.items() if len(v) > 1}
    assert len(results) == len(first) and not named_twice, (
        f"{len(results) - len(first)} results added by the replay; readings under two keys: "
        f"{sorted(named_twice.items())[:3]}")


def test_same_seq_resent_with_a_later_ts_is_a_duplicate(make_agent: Callable[..., EdgeAgent],
                                                        tmp_path: Path) -> None:
    # A gateway that stamps ts on receipt resends seq 19: same reading, later ts.
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + i) for i in range(20)])
    scored = agent.process([_reading(19, T0 + 19.5)])
    agent.outbox.close()
    assert scored == 0, "a duplicate seq with a later ts is scored again as a counter restart"
