"""The SQLite outbox: order, bounds with the oldest-first drop policy, durability across SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streamedge.edge.buffer import Outbox


def _rows(topic: str, n: int, size: int = 10) -> object:
    return lambda first: [(topic, b"k", str(first + i).encode().ljust(size, b".")) for i in range(n)]


def test_rows_come_back_in_order_and_sequence_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "b.sqlite")
    assert box.append(_rows("r", 3), 3) == 0  # type: ignore[arg-type]
    assert box.append(_rows("r", 2), 2) == 3  # type: ignore[arg-type]
    assert box.append(_rows("t", 1), 1, counter="telemetry_seq") == 0  # type: ignore[arg-type]
    rows = box.peek(10)
    assert [r.value[:1] for r in rows] == [b"0", b"1", b"2", b"3", b"4", b"0"]
    box.delete_through(rows[2].id)
    assert box.stats().depth == 3
    box.close()
    reopened = Outbox(tmp_path / "b.sqlite")
    stats = reopened.stats()
    assert (stats.depth, stats.next_seq, stats.bytes) == (3, 5, 30)
    assert reopened.append(_rows("r", 1), 1) == 5  # type: ignore[arg-type]
    reopened.close()


def test_size_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    drops: list[tuple[str, int]] = []
    box = Outbox(tmp_path / "b.sqlite", max_bytes=5000, on_drop=lambda reason, n: drops.append((reason, n)))
    for _ in range(10):
        box.append(_rows("r", 10, size=100), 10)  # type: ignore[arg-type]
    stats = box.stats()
    assert stats.bytes <= 5000 and stats.depth == stats.bytes // 100
    assert sum(n for _, n in drops) == 100 - stats.depth and {r for r, _ in drops} == {"size"}
    assert stats.dropped == 100 - stats.depth
    kept = [int(r.value.rstrip(b".")) for r in box.peek(1000)]
    assert kept == list(range(100 - stats.depth, 100))  # the newest survive, in order
    box.close()


def test_age_bound_drops_stale_rows(tmp_path: Path) -> None:
    now = [1000.0]
    drops: list[tuple[str, int]] = []
    box = Outbox(tmp_path / "b.sqlite", max_age_s=60, clock=lambda: now[0],
                 on_drop=lambda reason, n: drops.append((reason, n)))
    box.append(_rows("r", 4), 4)  # type: ignore[arg-type]
    now[0] += 30
    box.append(_rows("r", 1), 1)  # type: ignore[arg-type]
    assert box.stats().oldest_age_s == 30
    now[0] += 45
    box.expire()
    assert drops == [("age", 4)] and box.stats().depth == 1
    box.close()


def test_a_restart_with_the_clock_at_1970_ages_the_backlog_from_where_it_left_off(
        tmp_path: Path, monkeypatch: Any) -> None:
    box = Outbox(tmp_path / "b.sqlite", max_age_s=3600)
    box.append(_rows("r", 2), 2)  # type: ignore[arg-type]
    box.expire()
    box.close()
    monkeypatch.setattr(time, "time", lambda: 0.0)  # booted without an RTC, before NTP
    reopened = Outbox(tmp_path / "b.sqlite", max_age_s=3600)
    assert 0.0 <= reopened.stats().oldest_age_s < 60
    reopened.append(_rows("r", 1), 1)  # type: ignore[arg-type]
    created = [row.created for row in reopened.peek(10)]
    assert created == sorted(created) and created[0] > 1.6e9
    reopened.expire()
    assert reopened.stats().depth == 3  # nothing expired as if 56 years old, nothing "from the future"
    reopened.close()


_WRITER = """
import sys
from pathlib import Path
from streamedge.edge.buffer import Outbox
box = Outbox(Path(sys.argv[1]))
while True:
    first = box.append(lambda s: [("r", None, str(s).encode())], 1)
    print(first, flush=True)  # printed only after the commit: acknowledged
"""


def test_sigkill_keeps_every_acknowledged_row(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[2])
    assert writer.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 30
    while acknowledged < 200 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    box = Outbox(path)
    values = [int(r.value) for r in box.peek(1_000_000)]
    assert values[: acknowledged + 1] == list(range(acknowledged + 1))
    assert box.stats().next_seq == len(values)
    box.close()


def test_agent_buffer_stays_bounded_while_offline(make_agent: Any, tmp_path: Path) -> None:
    from streamedge.edge.sources import IteratorSource
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.kafka.topics import TopicLayout
    from tests.edge.helpers import sine_readings

    offline = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens there
    agent = make_agent(IteratorSource(sine_readings(400)), offline, TopicLayout(), buffer_max_bytes=8192, batch_max_bytes=4096,
                       drain_timeout_s=0.0, kafka_timeout_s=0.5)
    assert agent.run() is False  # the source ended, the broker never came
    registry = agent.metrics.registry
    dropped = registry.get_sample_value("streamedge_edge_buffer_dropped_total", {"reason": "size"})
    box = Outbox(tmp_path / "buffer.sqlite")
    stats = box.stats()
    assert stats.bytes <= 8192 and dropped == stats.dropped > 0
    results = [json.loads(r.value) for r in box.peek(10_000) if r.topic.endswith("edge-results")]
    assert [r["seq"] for r in results] == list(range(400 - 8 + 1 - len(results), 400 - 8 + 1))  # newest kept
    box.close()


# Issue 23 item 4 / docs *A lost buffer*: a buffer deleted while running is carried into a fresh one.
# The forwarder remembers acknowledged rows by id (`delete_through(last id)`); the fresh database
# used to renumber the carried rows, so the remembered id deleted rows that were never sent.
def test_recover_keeps_row_ids_so_a_remembered_delivery_deletes_only_sent_rows(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    box = Outbox(path, fsync=False)
    box.append(lambda first: [("edge-results", b"dev", b"old-%d" % i) for i in range(100)], 100)
    box.delete_through(box.peek(100)[-1].id)  # forwarded earlier: ids 1..100 gone
    box.append(lambda first: [("edge-results", b"dev", b"new-%d" % i) for i in range(20)], 20)
    sent = box.peek(5)                          # the forwarder's pass: 5 rows acknowledged
    delivered = sent[-1].id
    for suffix in ("", "-wal", "-shm"):         # the buffer deleted before the delete ran
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert box.recover()
    box.delete_through(delivered)               # the forwarder forgets what the broker took
    left = [row.value for row in box.peek(100)]
    box.close()
    assert left == [b"new-%d" % i for i in range(5, 20)], f"{15 - len(left)} unsent rows deleted: left {left[:3]}..."
