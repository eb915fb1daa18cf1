"""At-least-once under SIGKILL, and hot model reload mid-stream, against the real broker."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.signing import load_private_key
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.services.records import reading_of
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.helpers import WorkerProcess, committed_offsets, consume_until, produce, reading


def _paced(kafka: KafkaSettings, topic: str, keys: int, seqs: int, seconds: float) -> threading.Thread:
    """Produce ``keys * seqs`` readings in a background thread, spread over ``seconds``."""
    chunks = 20

    def _run() -> None:
        per_chunk = -(-seqs // chunks)
        for chunk in range(chunks):
            produce(kafka, topic, ((f"k{k}/s".encode(), reading(f"k{k}", seq))
                                   for seq in range(chunk * per_chunk, min(seqs, (chunk + 1) * per_chunk))
                                   for k in range(keys)))
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    return thread


def _forecast_keys(kafka: KafkaSettings, layout: TopicLayout, expected: int, timeout: float = 120) -> list[dict[str, Any]]:
    found = consume_until(kafka, [layout.forecasts],
                          lambda ms: len({json.loads(m.value)["idempotency_key"] for m in ms}) >= expected, timeout)
    return [json.loads(m.value) for m in found]


def test_sigkill_mid_stream_loses_no_reading(kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
                                            start_worker: Callable[..., WorkerProcess],
                                            record_property: Callable[[str, object], None]) -> None:
    layout = make_topics(3)
    keys, seqs = 40, 100
    app_id = f"app-{layout.prefix}"
    first = start_worker(layout, app_id)
    producer = _paced(kafka_settings, layout.readings, keys, seqs, seconds=8.0)
    deadline = time.monotonic() + 60
    while first.metric("streamedge_stream_results_total", 'kind="forecasts"') < 600:
        assert time.monotonic() < deadline, "worker produced too few forecasts before the kill"
        time.sleep(0.2)
    consumed_before_kill = first.metric("streamedge_stream_readings_consumed_total")
    first.kill()
    committed_at_kill = committed_offsets(kafka_settings, app_id, layout.readings)
    assert producer.is_alive(), "the stream ended before the kill; the test proves nothing"
    second = start_worker(layout, app_id)
    producer.join(timeout=60)

    expected = keys * (seqs - TINY_WINDOW + 1)
    forecasts = _forecast_keys(kafka_settings, layout, expected)
    counts = Counter(str(f["idempotency_key"]) for f in forecasts)
    wanted = {f"forecast:tiny-forecaster:k{k}/s:{s}" for k in range(keys) for s in range(TINY_WINDOW - 1, seqs)}
    # Every copy of a result comes from the same readings message: one key, one reading identity.
    named = {reading_of(key) for key in counts}
    assert named == wanted and len(named) == len(counts), f"lost: {sorted(wanted - named)[:10]}"
    duplicates = sum(n - 1 for n in counts.values())
    # Duplicates come only from readings the killed worker answered past its last commit: each
    # is answered at most once by each worker, and only at or after the committed offset.
    assert max(counts.values()) <= 2
    for forecast in forecasts:
        if counts[str(forecast["idempotency_key"])] > 1:
            source = forecast["source"]
            assert source["offset"] >= committed_at_kill.get(source["partition"], 0), forecast
    record_property("readings", keys * seqs)
    record_property("consumed_before_kill", consumed_before_kill)
    record_property("duplicate_forecasts", duplicates)
    print(f"{keys * seqs} readings, killed after {consumed_before_kill:.0f} consumed, 0 lost, "
          f"{duplicates} duplicate forecasts (dropped by idempotency key)")
    # The restarted worker rebuilt windows from the readings before its committed offsets.
    assert second.metric("streamedge_stream_state_rebuild_readings_total") > 0
    assert second.metric("streamedge_stream_dead_letters_total", 'reason="duplicate"') == 0


def _tamper(folder: Path) -> None:
    model = folder / read_manifest(folder).model_file
    model.write_bytes(model.read_bytes() + b"tampered")


def test_model_update_mid_stream_and_corrupt_update_rejected(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess], tiny_models: TinyModels, tmp_path: Path) -> None:
    layout = make_topics(3)
    registry = ModelRegistry(tmp_path / "registry")
    key = load_private_key(tiny_models.signing_key)
    for _ in range(3):
        registry.add(tiny_models.forecaster, key)
    worker = start_worker(layout, f"app-{layout.prefix}")
    keys, seqs = 5, 200
    producer = _paced(kafka_settings, layout.readings, keys, seqs, seconds=8.0)
    time.sleep(2.0)
    publish_model_update(kafka_settings, layout, registry.promote("tiny-forecaster", 2, key))
    deadline = time.monotonic() + 30
    while worker.metric("streamedge_stream_model_version", 'model="tiny-forecaster"') != 2:
        assert time.monotonic() < deadline, worker.log.read_text()[-2000:]
        time.sleep(0.2)
    _tamper(registry.path("tiny-forecaster", 3))
    publish_model_update(kafka_settings, layout, registry.promote("tiny-forecaster", 3, key))
    while worker.metric("streamedge_stream_model_reloads_total", 'model="tiny-forecaster",outcome="rejected"') < 1:
        assert time.monotonic() < deadline, worker.log.read_text()[-2000:]
        time.sleep(0.2)
    producer.join(timeout=60)

    forecasts = _forecast_keys(kafka_settings, layout, keys * (seqs - TINY_WINDOW + 1))
    assert len({f["idempotency_key"] for f in forecasts}) == keys * (seqs - TINY_WINDOW + 1)
    versions = [f["model"]["version"] for f in sorted(forecasts, key=lambda f: f["produced_at"])]
    assert versions[0] == 1 and versions[-1] == 2 and 3 not in versions
    assert worker.metric("streamedge_stream_model_version", 'model="tiny-forecaster"') == 2
    assert worker.proc is not None and worker.proc.poll() is None
    assert "sha256" in worker.log.read_text()


def test_worker_refuses_to_start_without_its_models(kafka_settings: KafkaSettings,
                                                   make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamedge.cli.main import main

    layout = make_topics(1)
    code = main(["stream", "worker", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix",
                 layout.prefix, "--model-dir", str(tmp_path / "empty"), "--public-key", str(tiny_models.public_key),
                 "--routes", '{"s": ["tiny-forecaster"]}'])
    assert code == 1
    assert "tiny-forecaster" in capsys.readouterr().err


class _Stream:
    """Readings of keys ``k0..k{keys-1}`` with seq 0, 1, 2, ..., sent a few seqs at a time for as long as
    the test needs: the stream lasts until the events it waits for have happened, not a set time."""

    def __init__(self, kafka: KafkaSettings, topic: str, keys: int, chunk: int = 2) -> None:
        self.kafka, self.topic, self.keys, self.chunk = kafka, topic, keys, chunk
        self.seqs = 0  # seqs sent per key so far

    def send(self, seqs: int) -> None:
        produce(self.kafka, self.topic, ((f"k{k}/s".encode(), reading(f"k{k}", seq))
                                         for seq in range(self.seqs, self.seqs + seqs) for k in range(self.keys)))
        self.seqs += seqs

    def until(self, what: str, happened: Callable[[], bool], timeout: float = 120.0) -> None:
        """Keep sending chunks, looking for ``happened`` between them, until it holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(self.chunk)
            look_until = time.monotonic() + 0.25
            while time.monotonic() < look_until:
                if happened():
                    return
                time.sleep(0.05)
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s of streaming"


def _rebuilt(worker: WorkerProcess) -> Counter[str]:
    """How many times the worker rebuilt each readings partition's windows (once per new assignment)."""
    return Counter(re.findall(r"partition (\d+): (?:rebuilt windows|PARTIAL rebuild)", worker.log.read_text()))


def test_rebalance_between_live_workers_loses_nothing_and_dead_letters_nothing(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    layout = make_topics(3)
    app_id = f"app-{layout.prefix}"
    stream = _Stream(kafka_settings, layout.readings, keys=30)
    first = start_worker(layout, app_id)
    stream.until("the first worker's first forecasts",
                 lambda: (first.sample("streamedge_stream_results_total", 'kind="forecasts"') or 0) > 0)
    second = start_worker(layout, app_id)  # joins the group: partitions move between live workers
    stream.until("the first rebalance (the second worker rebuilding a partition it took)", lambda: bool(_rebuilt(second)))
    first.stop()  # leaves the group: the second takes every partition, rebuilding their windows
    stream.until("the second rebalance (the second worker rebuilding every partition)",
                 lambda: set(_rebuilt(second)) == {"0", "1", "2"})
    stream.send(10)  # and the stream goes on after it
    seqs = stream.seqs
    expected = stream.keys * (seqs - TINY_WINDOW + 1)
    forecasts = _forecast_keys(kafka_settings, layout, expected)
    wanted = {f"forecast:tiny-forecaster:k{k}/s:{s}" for k in range(stream.keys) for s in range(TINY_WINDOW - 1, seqs)}
    lost = sorted(wanted - {reading_of(f["idempotency_key"]) for f in forecasts})
    assert not lost, (lost[:20], first.log.read_text()[-3000:], second.log.read_text()[-3000:])
    letters = consume_until(kafka_settings, [layout.dead_letters], lambda ms: False, timeout=3)
    assert letters == []
    assert second.metric("streamedge_stream_state_rebuild_readings_total") > 0
    # The first worker kept some partitions when the second joined: only new ones are rebuilt.
    rebuilds = _rebuilt(first)
    assert rebuilds and max(rebuilds.values()) == 1, rebuilds
