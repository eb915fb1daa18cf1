"""The agent against the real broker: results arrive, in order, with device id and sequence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TINY_WINDOW
from tests.edge.helpers import consume_all, consume_results, sine_readings


def test_results_and_heartbeats_arrive(make_topics: Callable[..., TopicLayout], kafka_settings: KafkaSettings,
                                       make_agent: Callable[..., object], tmp_path: Path) -> None:
    layout = make_topics()
    n = 200
    payloads = sine_readings(n)
    payloads.insert(50, b'{"device_id": "dev", "stream": "s"}')  # bad input: counted, never fatal
    payloads.insert(60, b"\xff\xfe not json")
    agent = make_agent(IteratorSource(payloads, queue_size=8), kafka_settings, layout)
    assert agent.run() is True  # type: ignore[attr-defined]

    results = consume_results(kafka_settings, layout.edge_results, expect=n - TINY_WINDOW + 1)
    assert len(results) == n - TINY_WINDOW + 1
    assert [r["seq"] for r in results] == list(range(len(results)))  # one key -> one partition, in order
    assert {r["device_id"] for r in results} == {"dev-1"}
    assert [r["source_seq"] for r in results] == list(range(TINY_WINDOW - 1, n))
    first = results[0]
    assert first["type"] == "forecast" and first["version"] == 1 and len(first["forecast"]) == 2
    assert not any(r["anomaly"] for r in results[1:])  # the smooth training signal is normal
    assert abs(results[-1]["forecast"][0][0] - (10.0)) < 5.0

    registry = agent.metrics.registry  # type: ignore[attr-defined]
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "accepted"}) == n
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "missing_field"}) == 1
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "not_utf8"}) == 1
    assert registry.get_sample_value("streamedge_edge_inference_latency_seconds_count") == len(results)
    assert registry.get_sample_value("streamedge_edge_forwarded_total") >= len(results)
    assert registry.get_sample_value("streamedge_edge_last_sync_timestamp_seconds") > 0

    beats = consume_all(kafka_settings, layout.edge_telemetry, expect=2, timeout_s=10)
    heartbeat = [b for b in beats if b["type"] == "heartbeat"][-1]
    assert heartbeat["device_id"] == "dev-1" and heartbeat["version"] == 1
    assert heartbeat["latency"]["count"] >= 0 and "buffer_depth" in heartbeat


def test_kafka_source_reads_the_readings_topic(make_topics: Callable[..., TopicLayout], kafka_settings: KafkaSettings,
                                               make_agent: Callable[..., object]) -> None:
    import threading
    import time

    from kafka import KafkaProducer

    from streamedge.edge.sources import KafkaSource

    layout = make_topics()
    producer = KafkaProducer(**kafka_settings.kafka_python_config())
    for payload in sine_readings(60, device="k", stream="x"):
        producer.send(layout.readings, key=b"k/x", value=payload)
    producer.send(layout.readings, key=b"k/x", value=b'{"oops": 1}')
    producer.flush(timeout=10)
    producer.close()
    source = KafkaSource(kafka_settings.kafka_python_config(), layout.readings, group_id="edge-test-k")
    agent = make_agent(source, kafka_settings, layout)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)  # type: ignore[attr-defined]
    thread.start()
    registry = agent.metrics.registry  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (registry.get_sample_value("streamedge_edge_results_total", {"task": "forecast"}) or 0) < 60 - 7:
        assert time.monotonic() < deadline, "the agent did not consume the readings topic"
        time.sleep(0.1)
    # Stopping drains nothing (drain_timeout applies only when a source ends): wait for the forwarder.
    while (registry.get_sample_value("streamedge_edge_forwarded_total") or 0) < 60 - 7:
        assert time.monotonic() < deadline, "the forwarder did not deliver the results"
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=30)
    assert registry.get_sample_value("streamedge_edge_readings_total", {"outcome": "missing_field"}) == 1
    results = consume_results(kafka_settings, layout.edge_results, expect=60 - TINY_WINDOW + 1)
    assert sorted(r["source_seq"] for r in results) == list(range(TINY_WINDOW - 1, 60))
