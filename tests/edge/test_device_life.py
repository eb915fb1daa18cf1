"""What a device meets (issue 23): each numbered fault has a test named for it.

Nothing here may stop the agent, lose a result without counting it, or reuse a result key.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streamedge.cli.main import main
from streamedge.contracts.reading import Reading
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.buffer import Outbox
from streamedge.edge.errors import OutboxError
from streamedge.edge.forwarder import Forwarder
from streamedge.edge.predictor import WindowStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import IteratorSource, file_payloads, stdin_payloads
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.edge.helpers import consume_all, sine_readings

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
_LAYOUT = TopicLayout(prefix="life.")
T0 = 1.7e9
_REPO = Path(__file__).resolve().parents[2]


def _value(agent: EdgeAgent, name: str, labels: dict[str, str] | None = None) -> float:
    return agent.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _results(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM outbox WHERE topic LIKE '%edge-results' ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(value) for (value,) in rows]


def _reading(seq: int, ts: float, value: float = 10.0, stream: str = "s") -> bytes:
    return json.dumps({"device_id": "dev", "stream": stream, "ts": ts, "value": value, "seq": seq}).encode()


def test_item01_model_of_another_width_starts_fresh_windows(make_agent: Callable[..., EdgeAgent],
                                                            tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.sqlite"
    # Windows a two-feature model left behind, then the one-feature forecaster is installed.
    box = Outbox(buffer)
    box.append(lambda first: [], 0, windows=[("dev/s", 7, json.dumps([[1.0, 2.0]] * TINY_WINDOW))])
    box.close()
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    assert agent.process(sine_readings(20)[8:]) == 12 - TINY_WINDOW + 1  # seq 8..19: a fresh window
    assert _value(agent, "streamedge_edge_window_resets_total", {"reason": "shape"}) == 1
    # A source that switches width mid-stream (no n_features set, no model yet) never mixes widths either.
    store = WindowStore(history=TINY_WINDOW, max_keys=4)
    store.add(Reading("d", "s", 1.0, (1.0, 2.0), 0))
    state = store.add(Reading("d", "s", 2.0, (3.0,), 1))
    assert state is not None and list(state.values) == [(3.0,)]
    agent.outbox.close()


def test_item02_a_batch_of_blocks_commits_in_bounded_transactions(make_agent: Callable[..., EdgeAgent]) -> None:
    blocks = [json.dumps({"device_id": "dev", "stream": "s", "seq": i * 4096, "ts": 1.7e9 + i * 4.096,
                          "period": 0.001, "values": [10.0 + (j % 16) / 8 for j in range(4096)]}).encode()
              for i in range(4)]
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)  # default bound: 4096 results per transaction
    commits: list[int] = []
    append = agent.outbox.append

    def counting(build: Any, count: int, *args: Any, **kwargs: Any) -> int:
        commits.append(count)
        return append(build, count, *args, **kwargs)

    agent.outbox.append = counting  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        assert agent.process(blocks) == 4 * 4096 - TINY_WINDOW + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded by results (4096) and by bytes (1 MiB, about 3,850 of these results).
    assert len(commits) >= 4 and max(commits) <= 4096 and sum(commits) == 4 * 4096 - TINY_WINDOW + 1
    # Measured: 24.5 MiB when the 16,377 results went in one transaction, 3.6 MiB in parts.
    assert peak < 12 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    agent.outbox.close()


def test_item03_seq_reset_or_stray_huge_seq_keeps_the_stream_scoring(make_agent: Callable[..., EdgeAgent],
                                                                      tmp_path: Path) -> None:
    first = [_reading(i, 1.7e9 + i, 10.0 + (i % 16) / 8) for i in range(20)]
    stray = [_reading(10**9, 1.7e9 + 20)]
    after = [_reading(i, 1.7e9 + 21 + i, 10.0 + (i % 16) / 8) for i in range(10)]  # counter restarted
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(first + stray)
    assert agent.process(after) == 10
    assert agent.process(after[:3]) == 0  # a replay is still a duplicate
    agent.outbox.close()
    again = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)  # the epoch survives a restart
    assert again.process([_reading(i, 1.7e9 + 40 + i) for i in range(10, 12)]) == 2
    results = _results(tmp_path / "buffer.sqlite")
    keys = [r["idempotency_key"] for r in results]
    assert len(keys) == len(set(keys))
    assert {r["stream_epoch"] for r in results} == {0, 1}
    assert _value(again, "streamedge_edge_window_resets_total", {"reason": "seq_reset"}) == 0
    assert _value(agent, "streamedge_edge_window_resets_total", {"reason": "seq_reset"}) == 1
    again.outbox.close()


def test_item03_csv_without_seq_second_file_scores(make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    days = []
    for day in range(2):
        path = tmp_path / f"day{day}.csv"
        rows = [f"{1.7e9 + day * 86400 + i},{10.0 + (i % 16) / 8}" for i in range(20)]
        path.write_text("ts,value\n" + "\n".join(rows) + "\n")
        days.append(path)
    for day in days:
        agent = make_agent(IteratorSource(file_payloads(day)), _OFFLINE, _LAYOUT, drain_timeout_s=0.0,
                           kafka_timeout_s=0.5)
        agent.run()
        assert _value(agent, "streamedge_edge_readings_total", {"outcome": "accepted"}) == 20
    assert len(_results(tmp_path / "buffer.sqlite")) == 2 * 20 - TINY_WINDOW + 1


def test_item04_a_lost_buffer_never_reuses_a_result_key(make_agent: Callable[..., EdgeAgent],
                                                        tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.sqlite"
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(sine_readings(20))
    before = {(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)}
    agent.outbox.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{buffer}{suffix}").unlink(missing_ok=True)
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(sine_readings(20, stream="t"))
    after = {(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)}
    assert len(before) == len(after) == 13 and not before & after
    # Deleted while running: noticed, counted, the open rows carried into a fresh buffer.
    buffer.unlink()
    agent._last_check = 0.0
    agent._housekeeping()
    assert _value(agent, "streamedge_edge_buffer_lost_total", {"reason": "deleted"}) == 1
    carried = _results(buffer)
    assert {(r["device_id"], r["epoch"], r["seq"]) for r in carried} == after
    agent.process(sine_readings(10, stream="u", start_ts=1.75e9))
    fresh = {(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)} - after
    assert len(fresh) == 3 and not fresh & (before | after)
    agent.outbox.close()


def test_item04_a_wal_deleted_while_running_is_noticed_and_no_key_is_reused(
        make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    """Before: only the main file was watched; results committed to a deleted WAL vanished at the next
    start and their (device, epoch, seq) were issued again for other results."""
    buffer = tmp_path / "buffer.sqlite"
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process(sine_readings(20))
    agent._last_check = 0.0
    agent._housekeeping()  # the WAL as it is now is the one watched
    before = {(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)}
    Path(f"{buffer}-wal").unlink()
    agent.process(sine_readings(10, stream="t", start_ts=1.75e9))
    agent._last_check = 0.0
    agent._housekeeping()
    assert _value(agent, "streamedge_edge_buffer_lost_total", {"reason": "deleted"}) == 1
    agent.outbox.close()
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)  # a restart reads what was carried over
    carried = {(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)}
    assert len(carried) == 13 + 3 and before <= carried
    agent.process(sine_readings(10, stream="u", start_ts=1.76e9))
    keys = [(r["device_id"], r["epoch"], r["seq"]) for r in _results(buffer)]
    assert len(keys) == len(set(keys)) == 13 + 3 + 3
    agent.outbox.close()


def test_item06_two_quarantines_in_one_second_keep_both_files(tmp_path: Path) -> None:
    """Before: the aside name was the unix second, so a second quarantine replaced the first file."""
    from streamedge.edge.buffer import Outbox

    path = tmp_path / "buffer.sqlite"
    for _ in range(2):
        path.write_bytes(b"not a database" * 100)
        Outbox(path).close()
    assert len(list(tmp_path.glob("buffer.sqlite.corrupt-*"))) == 2


def test_item05_kafka_source_saves_windows_with_every_committed_offset(
        make_topics: Callable[..., TopicLayout], kafka_settings: KafkaSettings,
        make_agent: Callable[..., EdgeAgent]) -> None:
    import threading

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from streamedge.edge.sources import KafkaSource

    layout = make_topics(partitions=1)
    producer = KafkaProducer(**kafka_settings.kafka_python_config())
    group = f"edge-life-{time.monotonic_ns()}"

    def send(payloads: list[bytes]) -> None:
        for payload in payloads:
            producer.send(layout.readings, key=b"dev", value=payload)
        producer.flush(timeout=10)

    def run_until(agent: EdgeAgent, accepted: int, produce: list[list[bytes]]) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        thread.start()
        for part in produce:
            target = _value(agent, "streamedge_edge_readings_total", {"outcome": "accepted"}) + len(part)
            send(part)
            deadline = time.monotonic() + 30
            while _value(agent, "streamedge_edge_readings_total", {"outcome": "accepted"}) < target:
                assert time.monotonic() < deadline, "the agent did not read the readings"
                time.sleep(0.05)
        # The offsets of everything read are committed before the agent stops.
        probe = KafkaConsumer(**kafka_settings.kafka_python_config(), group_id=group, enable_auto_commit=False)
        try:
            tps = [TopicPartition(layout.readings, p) for p in probe.partitions_for_topic(layout.readings) or ()]
            ends = probe.end_offsets(tps)
            deadline = time.monotonic() + 30
            while sum(probe.committed(tp) or 0 for tp in tps) < sum(ends.values()):
                assert time.monotonic() < deadline, "offsets not committed"
                time.sleep(0.1)
        finally:
            probe.close()
        stop.set()
        thread.join(timeout=30)
        assert _value(agent, "streamedge_edge_readings_total", {"outcome": "accepted"}) == accepted

    a = [_reading(i, 1.7e9 + i, 10.0 + (i % 16) / 8, stream="a") for i in range(12)]
    b = [_reading(i, 1.7e9 + i, 10.0 + (i % 16) / 8, stream="b") for i in range(10)]
    first = make_agent(KafkaSource(kafka_settings.kafka_python_config(), layout.readings, group), kafka_settings,
                       layout)
    run_until(first, 14, [a[:4], b])  # a's 4 readings give no result; b's batch commits the offsets
    second = make_agent(KafkaSource(kafka_settings.kafka_python_config(), layout.readings, group), kafka_settings,
                        layout)
    run_until(second, 8, [a[4:]])
    # a's window held its first 4 readings across the restart: results for seq 7..11, none lost.
    assert _value(second, "streamedge_edge_results_total", {"task": "forecast"}) == 12 - TINY_WINDOW + 1
    producer.close()


def test_item06_corrupt_buffer_is_quarantined_and_a_fresh_one_opened(make_agent: Callable[..., EdgeAgent],
                                                                      tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.sqlite"
    buffer.write_bytes(b"this is not an SQLite database" * 100)  # a bad header
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    assert _value(agent, "streamedge_edge_buffer_lost_total", {"reason": "corrupt"}) == 1
    assert agent.process(sine_readings(10)) == 3
    aside = list(tmp_path.glob("buffer.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    telemetry = [json.loads(row.value) for row in agent.outbox.peek(100) if row.topic.endswith("telemetry")]
    assert telemetry[0]["type"] == "buffer_lost" and telemetry[0]["reason"] == "corrupt"
    agent.outbox.close()
    # Damaged pages behind a sound header.
    for path in tmp_path.glob("buffer.sqlite*"):
        path.unlink()
    box = Outbox(buffer)
    for _ in range(50):
        box.append(lambda first: [("r", None, b"x" * 3000)], 1)
    box.close()
    data = bytearray(buffer.read_bytes())
    page = 4096
    data[3 * page: 6 * page] = b"\xa5" * (3 * page)
    buffer.write_bytes(bytes(data))
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    assert _value(agent, "streamedge_edge_buffer_lost_total", {"reason": "corrupt"}) == 1
    assert agent.process(sine_readings(10)) == 3
    agent.outbox.close()


class _FullDiskOutbox(Outbox):
    """An outbox whose deletes fail as on a full disk until ``room`` is set."""

    room = False
    failures = 0

    def delete_through(self, last_id: int) -> None:
        if not self.room:
            self.failures += 1
            raise OutboxError("cannot write buffer: database or disk is full")
        super().delete_through(last_id)


def test_item07_full_disk_delete_never_resends_acknowledged_rows(make_topics: Callable[..., TopicLayout],
                                                                 kafka_settings: KafkaSettings,
                                                                 tmp_path: Path) -> None:
    layout = make_topics()
    box = _FullDiskOutbox(tmp_path / "full.sqlite", fsync=False)
    box.append(lambda first: [(layout.edge_telemetry, b"d", json.dumps({"seq": first + i}).encode())
                              for i in range(40)], 40)
    sent: list[int] = []
    forwarder = Forwarder(box, kafka_settings.kafka_python_config(), timeout_s=5.0, batch=16,
                          on_sent=lambda n, _: sent.append(n))
    forwarder.start()
    deadline = time.monotonic() + 30
    while box.failures < 3:  # the forwarder retries the delete (with backoff) and sends nothing new
        assert time.monotonic() < deadline, "no delete tried"
        time.sleep(0.05)
    box.room = True
    forwarder.wake()
    while box.stats().depth:
        assert time.monotonic() < deadline, "the buffer was not emptied once the disk had room"
        time.sleep(0.05)
    forwarder.stop()
    delivered = consume_all(kafka_settings, layout.edge_telemetry, expect=40, timeout_s=30)
    assert [row["seq"] for row in delivered] == list(range(40)) and sum(sent) == 40
    box.close()


class _OneFullDelete(Outbox):
    """SQLite's answer to the first delete is the one it gives on a full disk."""

    tries = 0

    def _delete_through(self, last_id: int) -> None:
        self.tries += 1
        if self.tries == 1:
            raise sqlite3.OperationalError("database or disk is full")
        super()._delete_through(last_id)


def test_item07_reserve_file_is_freed_for_a_delete_on_a_full_disk(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    box = _OneFullDelete(tmp_path / "b.sqlite")
    reserve = tmp_path / "b.sqlite.reserve"
    assert reserve.stat().st_size == 1024 * 1024  # held back from the start
    box.append(lambda first: [("r", None, b"x" * 100) for _ in range(10)], 10)
    box.delete_through(box.peek(10)[-1].id)
    assert box.stats().depth == 0 and box.tries == 2
    assert "reserve and WAL freed" in caplog.text
    # The delete made room: the reserve is written back at once (a real full disk: test_full_disk.py).
    assert reserve.stat().st_size == 1024 * 1024
    box.close()


def test_item08_clock_jump_does_not_expire_the_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 60.0)  # booted at 1970, no RTC
        box = Outbox(tmp_path / "b.sqlite", max_age_s=3600)
        box.append(lambda first: [("r", None, b"x") for _ in range(5)], 5)
        box.close()
    reopened = Outbox(tmp_path / "b.sqlite", max_age_s=3600)  # NTP has set the clock to today
    reopened.expire()
    stats = reopened.stats()
    assert stats.depth == 5 and stats.oldest_age_s < 60 and stats.dropped == 0
    reopened.close()


def test_item09_bad_csv_bytes_and_oversized_fields_are_rejected_and_counted(
        make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    rows = [f"{1.7e9 + i},{10.0 + (i % 16) / 8}".encode() for i in range(20)]
    rows.insert(5, b"1700000004.5,\xff\xfe")
    rows.insert(9, b"1700000008.5," + b"9" * 200_000)
    path = tmp_path / "bad.csv"
    path.write_bytes(b"ts,value\n" + b"\n".join(rows) + b"\n")
    agent = make_agent(IteratorSource(file_payloads(path)), _OFFLINE, _LAYOUT, drain_timeout_s=0.0,
                       kafka_timeout_s=0.5)
    agent.run()
    assert _value(agent, "streamedge_edge_readings_total", {"outcome": "not_utf8"}) == 1
    assert _value(agent, "streamedge_edge_readings_total", {"outcome": "too_large"}) == 1
    assert _value(agent, "streamedge_edge_readings_total", {"outcome": "accepted"}) == 20


class _LongLine(io.RawIOBase):
    """A stream of one line of ``size`` bytes, then one reading; produced as it is read."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pos = 0
        self._tail = b"\n" + _reading(0, 1.7e9) + b"\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos < self._size:
            n = min(len(view), self._size - self._pos)
            view[:n] = b"x" * n
        else:
            start = self._pos - self._size
            n = min(len(view), len(self._tail) - start)
            view[:n] = self._tail[start:start + n]
        self._pos += n
        return n


def test_item10_memory_per_input_line_is_bounded() -> None:
    size = 64 * 1024 * 1024
    tracemalloc.start()
    try:
        payloads = list(stdin_payloads(io.BufferedReader(_LongLine(size))))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {size >> 20} MiB line"
    assert len(payloads) == 2 and getattr(payloads[0], "reason", None) == "too_large"
    assert payloads[1] == _reading(0, 1.7e9)
    # The queue ahead of the agent is bounded in bytes as well as in payloads.
    big = [b"y" * (1024 * 1024)] * 64
    source = IteratorSource(big, queue_size=1024, queue_bytes=4 * 1024 * 1024, read_bytes=2 * 1024 * 1024)
    first = source.read(64, timeout=5.0) or []
    assert 1 <= len(first) <= 2
    assert source._held <= 4 * 1024 * 1024
    source.close()


def test_item11_id_flood_does_not_starve_real_streams(make_agent: Callable[..., EdgeAgent]) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, max_keys=200)
    real = [_reading(seq, 1.7e9 + seq, 10.0 + (seq % 16) / 8, stream="real") for seq in range(40)]
    results = agent.process(real[:2])
    for round_, reading in enumerate(real[2:]):
        flood = [json.dumps({"device_id": f"x{round_}-{i}", "stream": "s", "ts": 1.7e9, "value": 1.0,
                             "seq": 0}).encode() for i in range(500)]
        results += agent.process([*flood, reading])
    assert results == 40 - TINY_WINDOW + 1  # every real reading past the first window scored
    assert _value(agent, "streamedge_edge_window_evictions_total") >= 38 * 500 - 200
    agent.outbox.close()


def test_item12_sigterm_drains_the_queued_stdin_readings(tmp_path: Path, tiny_models: TinyModels,
                                                         model_dir: Path) -> None:
    n = 1000
    buffer = tmp_path / "stdin.sqlite"
    agent = subprocess.Popen(
        [sys.executable, "-m", "streamedge.edge", "run", "--source", "stdin", "--model-dir", str(model_dir),
         "--public-key", str(tiny_models.public_key), "--buffer-path", str(buffer), "--metrics-port", "0",
         "--model-updates", "false", "--batch-size", "1", "--kafka-timeout-s", "0.5", "--drain-timeout-s", "60",
         "--device-id", "dev-1", "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"],
        stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=_REPO)
    assert agent.stdin is not None
    agent.stdin.write(b"".join(p + b"\n" for p in sine_readings(n)))
    agent.stdin.flush()
    deadline = time.monotonic() + 60
    while not buffer.exists() or not _count_results(buffer):
        assert time.monotonic() < deadline and agent.poll() is None, "the agent did not start scoring"
        time.sleep(0.05)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 0
    assert len(_results(buffer)) == n - TINY_WINDOW + 1


def _count_results(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_item13_metrics_port_taken_scoring_continues(tmp_path: Path, tiny_models: TinyModels, model_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    readings = tmp_path / "r.jsonl"
    readings.write_bytes(b"".join(p + b"\n" for p in sine_readings(20)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["edge", "run", "--source", "file", "--source-path", str(readings), "--model-dir", str(model_dir),
                     "--public-key", str(tiny_models.public_key), "--buffer-path", str(tmp_path / "b.sqlite"),
                     "--metrics-port", str(port), "--model-updates", "false", "--kafka-timeout-s", "0.5",
                     "--drain-timeout-s", "0", "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"])
    assert code == 3  # the source ended, the broker never came: results left in the buffer
    assert len(_results(tmp_path / "b.sqlite")) == 20 - TINY_WINDOW + 1
    assert "metrics endpoint" in caplog.text


def test_buffer_max_bytes_below_two_transactions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="below two transactions"):
        EdgeSettings(buffer_max_bytes=64 * 1024, buffer_path=tmp_path / "b.sqlite")
    assert EdgeSettings(buffer_max_bytes=64 * 1024, batch_max_bytes=32 * 1024).buffer_max_bytes == 64 * 1024


# Issue 23 item 9 / docs *Sources*: "one row per line, a bad line is one rejection"; bad input lines
# are "rejected and counted, never fatal". One garbled time cell among a CSV's first rows used to stop
# the agent at start, as a configuration error, on every run.
def _run_csv(csv: Path, tmp_path: Path, tiny_models: TinyModels, model_dir: Path) -> int:
    return main(["edge", "run", "--source", "file", "--source-path", str(csv), "--model-dir", str(model_dir),
                 "--public-key", str(tiny_models.public_key), "--buffer-path", str(tmp_path / "b.sqlite"),
                 "--metrics-port", "0", "--model-updates", "false", "--kafka-timeout-s", "0.5",
                 "--drain-timeout-s", "0", "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"])


@pytest.mark.parametrize("bad_cell", ["17000000x9.0", "1e300", "\x001700000009.0"],
                         ids=["garbled_digit", "out_of_range_epoch", "nul_byte"])
def test_bad_time_cell_among_sniffed_rows_is_one_rejection(bad_cell: str, tmp_path: Path,
                                                           tiny_models: TinyModels, model_dir: Path) -> None:
    rows = [f"{1.7e9 + i},{10.0 + (i % 16) / 8}" for i in range(50)]
    rows[9] = f"{bad_cell},11.0"
    csv = tmp_path / "day.csv"
    csv.write_text("ts,value\n" + "\n".join(rows) + "\n")
    code = _run_csv(csv, tmp_path, tiny_models, model_dir)
    assert code == 3, f"exit {code}: one bad row of 50 stopped the agent before it scored anything"
    db = sqlite3.connect(tmp_path / "b.sqlite")
    try:
        results = db.execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%edge-results'").fetchone()[0]
    finally:
        db.close()
    assert results > 0


# Issue 23 item 3: one stray line must not block a stream for good. A stray seq of 10**9 that
# also carries a stray (far future) ts used to leave every later genuine reading 'out of order', across restarts.
def test_stray_future_reading_is_refused_alone_and_the_stream_goes_on(make_agent: Callable[..., EdgeAgent],
                                                            tmp_path: Path) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + i) for i in range(20)])
    agent.process([_reading(10**9, 4.1e9)])  # one corrupted line: huge seq, ts in 2099
    agent.outbox.close()
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)  # even after a restart
    scored = agent.process([_reading(i, T0 + 21 + i) for i in range(20, 60)])  # the genuine stream goes on
    agent.outbox.close()
    assert scored > 0, "40 genuine readings after one stray line: all refused as out_of_order, for good"


# Issue 23 item 3 / docs/edge.md *Sequence restarts*: a reading replayed after a counter restart
# must not be scored again under a new key. `(device, stream, stream_epoch, seq)` names one reading for good.


def test_replay_of_pre_reset_readings_is_refused_as_out_of_order(make_agent: Callable[..., EdgeAgent],
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


def test_file_with_a_counter_reset_read_again_after_restart_scores_nothing(
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


def test_same_seq_with_a_later_ts_is_a_duplicate_not_a_reset(make_agent: Callable[..., EdgeAgent],
                                                        tmp_path: Path) -> None:
    # A gateway that stamps ts on receipt resends seq 19: same reading, later ts.
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT)
    agent.process([_reading(i, T0 + i) for i in range(20)])
    scored = agent.process([_reading(19, T0 + 19.5)])
    agent.outbox.close()
    assert scored == 0, "a duplicate seq with a later ts is scored again as a counter restart"


# Issue 23 item 11 / docs *Sources*: fair admission; "a flood of one-shot ids churns probation while
# established streams keep their windows". A flood whose every message arrives twice (an at-least-once
# gateway) promotes every one-shot id: the duplicate is refused as out_of_order, but only after it moved
# its key out of probation, so the real stream loses its window.


def _device_reading(device: str, seq: int, ts: float) -> bytes:
    return json.dumps({"device_id": device, "stream": "s", "ts": ts, "value": 10.0 + (seq % 16) / 8,
                       "seq": seq}).encode()


def test_refused_duplicate_does_not_move_a_one_shot_key_out_of_probation(
        make_agent: Callable[..., EdgeAgent]) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, max_keys=64)
    agent.process([_device_reading("real", i, T0 + i) for i in range(20)])  # established, window full
    flood = []
    for n in range(200):                       # 200 one-shot ids, each message delivered twice
        once = _device_reading(f"bogus-{n}", 0, T0 + 20)
        flood += [once, once]
    agent.process(flood)
    scored = agent.process([_device_reading("real", 20 + i, T0 + 21 + i) for i in range(3)])
    evicted = agent.metrics.registry.get_sample_value("streamedge_edge_window_evictions_total") or 0
    agent.outbox.close()
    assert scored == 3, (f"the real stream scored {scored} of 3 after a flood of duplicated one-shot ids "
                         f"({evicted:.0f} evictions): its window was evicted")


# Issue 23 item 13 / docs *Observability*: "A metrics port that cannot be bound (taken, an unknown host)
# is logged as an ERROR and the agent scores without the endpoint: monitoring never stops scoring".
# A metrics host whose name cannot even be looked up (a DNS label over 63 characters) stops the agent.
def test_metrics_host_that_is_no_valid_name_does_not_stop_scoring(tmp_path: Path, tiny_models: TinyModels,
                                                            model_dir: Path) -> None:
    readings = tmp_path / "r.jsonl"
    readings.write_bytes(b"".join(p + b"\n" for p in sine_readings(20)))
    try:
        code = main(["edge", "run", "--source", "file", "--source-path", str(readings), "--model-dir",
                     str(model_dir), "--public-key", str(tiny_models.public_key), "--buffer-path",
                     str(tmp_path / "b.sqlite"), "--metrics-port", "39631", "--metrics-host", "m" * 64 + ".local",
                     "--model-updates", "false", "--kafka-timeout-s", "0.5", "--drain-timeout-s", "0",
                     "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"])
    except Exception as exc:
        raise AssertionError(f"the agent stopped: {type(exc).__name__}: {exc}") from exc
    assert code == 3, f"exit {code}"
    db = sqlite3.connect(tmp_path / "b.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%edge-results'").fetchone()[0] > 0
    finally:
        db.close()


# Issue 23 ("Also") / docs *Working offline*: a transaction is cut only after it passed
# `--batch-max-bytes`, so equal bounds used to be accepted and drop each commit's own rows: they are
# refused now, and at the smallest accepted bound no commit loses its own rows.
def test_smallest_accepted_buffer_bound_keeps_each_commits_own_rows(make_agent: Callable[..., EdgeAgent]) -> None:
    with pytest.raises(ValidationError, match="below two transactions"):
        make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, buffer_max_bytes=4096, batch_max_bytes=4096)
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, buffer_max_bytes=4096, batch_max_bytes=2048,
                       heartbeat_interval_s=3600.0)
    append = agent.outbox.append
    lost: list[tuple[int, int]] = []

    def checking(build: Any, count: int, *args: Any, **kwargs: Any) -> int:
        first = append(build, count, *args, **kwargs)
        depth = agent.outbox.stats().depth
        if count and depth < count:
            lost.append((count, depth))
        return first

    agent.outbox.append = checking  # type: ignore[method-assign]
    agent.process(sine_readings(200))
    dropped = agent.metrics.registry.get_sample_value("streamedge_edge_buffer_dropped_total", {"reason": "size"})
    agent.outbox.close()
    assert not lost, (f"{len(lost)} commits dropped their own rows (rows committed, rows left): {lost[:4]}; "
                      f"dropped by size: {dropped}")


# Issue 23 item 12 and the fault test's rule: "every reading is either delivered as a result or counted
# under a named reason". A stop whose drain runs out of `--drain-timeout-s` (here 0 s, an accepted value)
# used to leave the queued stdin lines unscored with no counter naming them: they count as drain_timeout.
def test_queued_lines_left_by_a_short_drain_count_as_drain_timeout(make_agent: Callable[..., EdgeAgent]) -> None:
    payloads = sine_readings(300)
    all_taken = threading.Event()

    def pipe() -> Iterator[bytes]:
        yield from payloads
        all_taken.set()

    source = IteratorSource(pipe(), queue_size=1024)
    assert all_taken.wait(30), "the source did not take the lines in"
    agent = make_agent(source, _OFFLINE, _LAYOUT, drain_timeout_s=0.0, kafka_timeout_s=0.5)
    stop = threading.Event()
    stop.set()                                  # SIGTERM arrives with 300 lines queued
    agent.run(stop)
    registry = agent.metrics.registry
    counted = sum(s.value for m in registry.collect() if m.name == "streamedge_edge_readings"
                  for s in m.samples if s.name.endswith("_total"))
    assert counted == len(payloads), f"{len(payloads) - counted:.0f} of {len(payloads)} queued readings dropped, uncounted"
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "drain_timeout"}) > 0


# Issue 23 title and item 4: nothing a device meets "reuses a key"; the fault test must show "no key
# carries two different results". After a stream's counter restarted, a lost buffer (deleted while
# the agent was stopped) resets the stream epoch, and one idempotency key then names two different
# readings with two different results. Documented limit (docs/edge.md, failure modes): the buffer
# epoch every result carries tells them apart, so ``(epoch, idempotency_key)`` never names two readings.
def test_lost_buffer_after_a_counter_restart_keys_repeat_only_under_a_new_buffer_epoch(
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
    reused = [(seen[k], r) for r in after if (k := r["idempotency_key"]) in seen]
    assert reused, "the documented limit is gone: update docs/edge.md and this test"
    assert all(old["epoch"] != new["epoch"] for old, new in reused), "one (epoch, key) names two readings"
    named = {(r["epoch"], r["idempotency_key"]) for r in before + after}
    assert len(named) == len(before) + len(after)
