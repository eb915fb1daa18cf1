"""Crash safety of the agent: a full buffer disk stops intake, crashed threads restart, keys survive replays."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from streamedge.edge.agent import EdgeAgent
from streamedge.edge.buffer import Outbox
from streamedge.edge.sources import IteratorSource
from streamedge.edge.supervisor import Supervised
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.edge.helpers import sine_readings

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")


class _CountingSource(IteratorSource):
    """An iterator source that records how often its position was acknowledged."""

    commits = 0

    def commit(self) -> None:
        type(self).commits += 1


def _rows(path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(path) as db:
        return [json.loads(v) for (v,) in db.execute("SELECT value FROM outbox ORDER BY id")]


def test_full_disk_stops_intake_then_resumes_without_loss(make_agent: Callable[..., EdgeAgent],
                                                          tmp_path: Path) -> None:
    source = IteratorSource(iter(sine_readings(40)), queue_size=64)
    agent = make_agent(source, _OFFLINE, TopicLayout(prefix="t."), batch_size=64, heartbeat_interval_s=3600)
    db: sqlite3.Connection = agent.outbox._db
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count={pages + 8}")  # SQLite's own 'database or disk is full'
    db.execute("CREATE TABLE filler (b BLOB)")
    try:
        while True:  # use up every free page
            db.execute("INSERT INTO filler VALUES (zeroblob(1024))")
    except sqlite3.OperationalError as exc:
        assert "full" in str(exc)
    payloads = source.read(64, timeout=1.0) or []
    assert agent.process(payloads) == 0  # results held, readings not acknowledged
    registry = agent.metrics.registry
    assert registry.get_sample_value("streamedge_edge_intake_paused") == 1
    assert (registry.get_sample_value("streamedge_edge_buffer_write_errors_total") or 0) >= 1
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    thread.join(timeout=2.0)
    assert thread.is_alive()  # no crash loop: the agent waits for the disk
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "accepted"}) == 40
    db.execute("PRAGMA max_page_count=1073741823")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert registry.get_sample_value("streamedge_edge_intake_paused") == 0
    results = [r for r in _rows(tmp_path / "buffer.sqlite") if r.get("type") == "forecast"]
    assert [r["source_seq"] for r in results] == list(range(7, 40))  # every forecast, none lost
    assert [r["seq"] for r in results] == list(range(len(results)))
    assert all(r["idempotency_key"] == f"forecast:tiny-forecaster:dev/s:{r['source_seq']}" for r in results)


def test_supervised_thread_restarts_after_a_crash() -> None:
    stop = threading.Event()
    calls: list[int] = []
    restarts: list[str] = []
    crashes: list[str] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("disk I/O error")
        stop.wait()

    supervised = Supervised("edge-forwarder", flaky, stop, restarts.append, lambda e: crashes.append(str(e)),
                            initial_backoff_s=0.01, max_backoff_s=0.05)
    supervised.start()
    while len(calls) < 3:
        stop.wait(0.01)
    stop.set()
    supervised.join(timeout=5)
    assert not supervised.is_alive()
    assert restarts == ["edge-forwarder", "edge-forwarder"] and crashes == ["disk I/O error"] * 2


def test_forwarder_crash_is_counted_and_marks_the_broker_unreachable(
        make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    agent = make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="t."))
    agent.metrics.reachable.set(1)
    broken = Outbox(tmp_path / "other.sqlite")
    broken.close()  # every call now raises sqlite3.ProgrammingError, an error the loop does not expect
    agent.forwarder._outbox = broken
    agent.forwarder.start()
    registry = agent.metrics.registry
    stop = threading.Event()
    while (registry.get_sample_value("streamedge_edge_thread_restarts_total", {"thread": "edge-forwarder"})
           or 0) < 1:
        stop.wait(0.05)
    assert registry.get_sample_value("streamedge_edge_broker_reachable") == 0
    agent.forwarder._outbox = agent.outbox
    agent.forwarder.stop()
    agent.outbox.close()


def test_windows_survive_a_restart_and_replays_make_no_duplicates(make_agent: Callable[..., EdgeAgent],
                                                                   tmp_path: Path) -> None:
    readings = sine_readings(30)
    first = make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="t."))
    assert first.process(readings[:20]) == 20 - 7  # forecasts from the 8th reading on (window 8)
    first.outbox.close()  # the process dies here; its source never acknowledged readings 15-19, say

    restarted = make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="t."))
    state = restarted.windows.state("dev/s")
    assert state is not None and state.last_seq == 19 and len(state.values) == 8
    assert restarted.process(readings[15:20]) == 0  # the replay: already scored, nothing twice
    counted = restarted.metrics.registry.get_sample_value
    assert counted("streamedge_edge_readings_total", {"outcome": "out_of_order"}) == 4  # seq 15..18: older ts
    assert counted("streamedge_edge_readings_total", {"outcome": "duplicate"}) == 1  # seq 19 again
    assert restarted.process(readings[20:21]) == 1  # no warm-up: the window came back
    restarted.outbox.close()
    results = [r for r in _rows(tmp_path / "buffer.sqlite") if r.get("type") == "forecast"]
    assert [r["source_seq"] for r in results] == list(range(7, 21))
    keys = [r["idempotency_key"] for r in results]
    assert len(set(keys)) == len(keys)
