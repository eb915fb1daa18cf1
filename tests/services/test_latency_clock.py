"""Latency is the pipeline's (from the reading message's Kafka timestamp), data age is apart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TINY_WINDOW
from tests.services.helpers import WorkerProcess, consume_until, sine


def test_replayed_history_is_old_data_not_a_slow_pipeline(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_topics(1)
    worker = start_worker(layout, "latency-app")
    path = tmp_path / "history.csv"
    path.write_text("value\n" + "".join(f"{sine(s)}\n" for s in range(4 * TINY_WINDOW)))
    # History from 2001: the data is 25 years old; the worker answers within a second or so.
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix",
                 layout.prefix, "--file", str(path), "--device", "old", "--block-size", str(TINY_WINDOW),
                 "--period", "60", "--start-ts", "1e9"]) == 0
    consume_until(kafka_settings, [layout.forecasts], lambda found: len(found) >= 3)
    deadline = time.monotonic() + 30
    while worker.sample("streamedge_stream_end_to_end_seconds_count") != 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker.metric("streamedge_stream_end_to_end_seconds_count") == 4
    # Every one in the 10 s bucket: measured from the event time, each was ~25 years and landed in +Inf.
    assert worker.metric("streamedge_stream_end_to_end_seconds_bucket", 'le="10.0"') == 4
    assert worker.metric("streamedge_stream_data_age_seconds") > 20 * 365 * 86400
