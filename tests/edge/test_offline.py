"""Store-and-forward against real brokers: an outage, then a SIGKILL mid-stream."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamedge.edge.sources import IteratorSource, file_payloads
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.edge.helpers import consume_results, sine_readings, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _producer_senders() -> set[int]:
    """Idents of the live kafka-python producer sender threads."""
    from kafka.producer.sender import Sender

    return {t.ident for t in threading.enumerate() if isinstance(t, Sender) and t.ident is not None}


def _check_delivery(results: list[dict[str, Any]], expected: int) -> None:
    """All ``expected`` sequence numbers present, first deliveries in order, duplicates identical."""
    first: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    for result in sorted(results, key=lambda r: (r["partition"], r["offset"])):
        body = {k: v for k, v in result.items() if k not in ("partition", "offset")}
        if result["seq"] in first:
            assert first[result["seq"]] == body  # a duplicate is the same message, same (device_id, seq)
            continue
        first[result["seq"]] = body
        order.append(result["seq"])
    assert sorted(first) == list(range(expected))
    assert order == sorted(order)  # one device key -> one partition -> delivered in sequence order


def test_outage_buffers_then_forwards_everything_in_order(
    tmp_path: Path, kafka_broker: LocalBroker, make_agent: Callable[..., Any]
) -> None:
    # A second broker of our own (the shared test broker is never stopped), same jars.
    state = tmp_path / "kafka2"
    state.mkdir()
    (state / "libs").symlink_to(kafka_broker.state_dir / "libs", target_is_directory=True)
    broker = LocalBroker(state, port=_free_port(), controller_port=_free_port(), heap_mb=384)
    broker.up(timeout=120)
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        layout = TopicLayout(prefix="outage.", partitions=2)
        create_topics(settings, layout)
        n = 700
        source_file = write_jsonl(tmp_path / "readings.jsonl", sine_readings(n))
        agent = make_agent(IteratorSource(file_payloads(source_file, rate=100.0), 32), settings, layout,
                           drain_timeout_s=90.0, kafka_timeout_s=1.0)
        outcome: dict[str, bool] = {}
        senders_before = _producer_senders()
        thread = threading.Thread(target=lambda: outcome.setdefault("drained", agent.run()), daemon=True)
        thread.start()
        registry = agent.metrics.registry
        _wait(lambda: (registry.get_sample_value("streamedge_edge_forwarded_total") or 0) >= 20, 30, "first sends")
        broker.down()
        _wait(lambda: agent.outbox.stats().depth >= 100, 30, "results to pile up in the buffer")
        # The forwarder notices the outage on its next failed send, which may come after 100 results.
        _wait(lambda: registry.get_sample_value("streamedge_edge_broker_reachable") == 0, 30, "the outage to show")
        # The producer that lost its broker is closed for good, not left retrying (one per outage).
        _wait(lambda: not _producer_senders() - senders_before, 30, "the lost producer's sender thread to end")
        buffered = agent.outbox.stats().depth
        broker.up(timeout=120)
        thread.join(timeout=180)
        assert not thread.is_alive() and outcome["drained"] is True

        results = consume_results(settings, layout.edge_results, expect=n - TINY_WINDOW + 1, timeout_s=60)
        _check_delivery(results, n - TINY_WINDOW + 1)
        assert buffered >= 100
        assert registry.get_sample_value("streamedge_edge_buffer_dropped_total", {"reason": "size"}) == 0
    finally:
        broker.down()


def _buffered_seqs(path: Path) -> dict[int, bytes]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM outbox WHERE topic LIKE '%edge-results'").fetchall()
    finally:
        db.close()
    return {json.loads(value)["seq"]: bytes(value) for (value,) in rows}


def test_sigkill_loses_nothing_acknowledged(
    tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
    model_dir: Path, tiny_models: TinyModels,
) -> None:
    layout = make_topics()
    buffer = tmp_path / "agent.sqlite"
    readings = write_jsonl(tmp_path / "readings.jsonl", sine_readings(5000))
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    dead = _free_port()  # nothing listens: the broker is unreachable, results stay in the buffer

    def command(bootstrap: str, source: Path) -> list[str]:
        return [sys.executable, "-m", "streamedge.edge", "run", "--device-id", "dev-k", "--model-dir", str(model_dir),
                "--public-key", str(tiny_models.public_key), "--source", "file", "--source-path", str(source),
                "--rate", "500", "--buffer-path", str(buffer), "--metrics-port", "0", "--model-updates", "false",
                "--kafka-timeout-s", "1", "--drain-timeout-s", "60", "--heartbeat-interval-s", "60",
                "--bootstrap-servers", bootstrap, "--topic-prefix", layout.prefix]

    agent = subprocess.Popen(command(f"127.0.0.1:{dead}", readings), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen: dict[int, bytes] = {}

        def acknowledged() -> bool:
            if buffer.exists():
                seen.update(_buffered_seqs(buffer))
            return len(seen) >= 300

        _wait(acknowledged, 60, "the agent to acknowledge 300 results")
        agent.send_signal(signal.SIGKILL)  # a power cut, mid-stream
        agent.wait(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
    survived = _buffered_seqs(buffer)
    assert set(seen) <= set(survived)  # everything seen committed before the kill is still there
    assert sorted(survived) == list(range(len(survived)))

    restarted = subprocess.run(command(kafka_settings.bootstrap_servers, empty), cwd=REPO,
                               capture_output=True, timeout=120)
    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
    results = consume_results(kafka_settings, layout.edge_results, expect=len(survived))
    _check_delivery(results, len(survived))
    delivered = {r["seq"]: r for r in results}
    for seq, payload in survived.items():
        body = {k: v for k, v in delivered[seq].items() if k not in ("partition", "offset")}
        assert body == json.loads(payload)
