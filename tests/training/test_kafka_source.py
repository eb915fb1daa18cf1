"""History replayed from a real Kafka readings topic, then a forecaster trained on it via the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamedge.cli.main import main
from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.reading import Reading
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.errors import DataError
from streamedge.training.kafka_source import replay_topic


def _publish(settings: KafkaSettings, topic: str, payloads: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.kafka_python_config())
    for key, value in payloads:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush()
    producer.close()


def _readings(device: str, n: int, offset: float) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        value = offset + 0.1 * i + 5 * np.sin(2 * np.pi * i / 8)
        reading = Reading(device_id=device, stream="load", ts=1000.0 + 60 * i, values=(float(value),), seq=i)
        out.append((reading.key, reading.to_json()))
    return out


def test_replay_groups_orders_and_reports(
    kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topics(partitions=3).readings
    a, b = _readings("dev-a", 70, 10.0), _readings("dev-b", 70, 20.0)
    shuffled = a[::-1] + b + [a[5], ("dev-a/load", b"{not json"), ("x", b'{"device_id": "x"}')]
    _publish(kafka_settings, topic, shuffled)

    data = replay_topic(kafka_settings, topic, timeout_s=30)
    assert data.ids == ["dev-a/load", "dev-b/load"]
    assert data.features == ["value"]
    assert [s.shape for s in data.series] == [(70, 1), (70, 1)]
    np.testing.assert_allclose(data.series[0][:, 0], [json.loads(v)["value"] for _, v in a], rtol=1e-6)
    notes = " ".join(data.report.notes)
    assert "skipped 2 invalid record(s)" in notes
    assert "dev-a/load: dropped 1 duplicate sequence number(s)" in notes

    only_b = replay_topic(kafka_settings, topic, keys=["dev-b/load"])
    assert only_b.ids == ["dev-b/load"]

    out = tmp_path / "from-kafka"
    code = main(["train", "forecaster", "--from-topic", topic, "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--horizon", "4", "--season", "8", "--window", "16", "--epochs", "2", "--units", "8",
                 "--out", str(out), "--no-progress", "--name", "plant-load"])
    assert code == 0
    assert "replayed 140 readings of 2 series" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.name == "plant-load" and manifest.features == ["value"]
    assert json.loads((out / "metrics.json").read_text())["data"]["series"] == 2


def test_empty_topic_is_a_clear_error(kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    topic = make_topics(partitions=1).readings
    with pytest.raises(DataError, match="holds no valid readings"):
        replay_topic(kafka_settings, topic, timeout_s=10)


def test_stream_filter_separates_mixed_widths(kafka_settings: KafkaSettings,
                                              make_topics: Callable[..., TopicLayout]) -> None:
    topic = make_topics(partitions=1).readings
    wide = [Reading("imu-1", "motion", 1000.0 + i, (1.0, 2.0, 3.0), i) for i in range(5)]
    _publish(kafka_settings, topic, _readings("dev-a", 12, 1.0) + [(r.key, r.to_json()) for r in wide])
    # One device of another width no longer fails the replay: most readings decide, the rest are noted.
    mixed = replay_topic(kafka_settings, topic, timeout_s=20)
    assert mixed.ids == ["dev-a/load"] and "skipped 1 series with another number of values" in " ".join(
        mixed.report.notes)
    load = replay_topic(kafka_settings, topic, timeout_s=20, streams={"load"})
    assert load.ids == ["dev-a/load"] and load.series[0].shape == (12, 1)
    motion = replay_topic(kafka_settings, topic, timeout_s=20, streams={"motion"})
    assert motion.ids == ["imu-1/motion"] and motion.series[0].shape == (5, 3)
    with pytest.raises(DataError, match="of streams \\['vibration'\\]"):
        replay_topic(kafka_settings, topic, timeout_s=20, streams={"vibration"})


def test_item6_replay_reads_blocks_and_skips_values_infinite_as_float32(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    """Before: blocks were rejected as readings (a block-fed model could not be retrained) and 1e300 was kept."""
    from streamedge.contracts.reading import ReadingBlock

    topic = make_topics(partitions=1).readings
    block = ReadingBlock("dev-b", "load", 0, 1000.0 + np.arange(10.0), np.arange(10.0).reshape(10, 1))
    huge = Reading("dev-a", "load", 5000.0, (1e300,), 99)
    sent = [*_readings("dev-a", 12, 1.0), ("dev-b/load", block.to_json(period=1.0)), (huge.key, huge.to_json())]
    _publish(kafka_settings, topic, sent)
    data = replay_topic(kafka_settings, topic, timeout_s=20)
    assert data.ids == ["dev-a/load", "dev-b/load"]
    assert [s.shape for s in data.series] == [(12, 1), (10, 1)]
    assert np.isfinite(data.series[0]).all()
    assert "not_finite_as_float32" in " ".join(data.report.notes)


def test_item6_replay_keeps_the_models_feature_count_and_counts_the_readings_that_do_not_fit(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    """Before: the width most readings had decided, so 20 wide readings made a 1-feature model unretrainable."""
    topic = make_topics(partitions=1).readings
    wide = [Reading("imu-1", "load", 1000.0 + i, (1.0, 2.0, 3.0), i) for i in range(20)]
    _publish(kafka_settings, topic, _readings("dev-a", 12, 1.0) + [(r.key, r.to_json()) for r in wide])
    data = replay_topic(kafka_settings, topic, timeout_s=20, features=1)
    assert data.ids == ["dev-a/load"] and data.series[0].shape == (12, 1)
    assert data.report.skipped == {"wrong_feature_count": 20}
    assert "skipped 20 reading(s) that do not fit" in " ".join(data.report.notes)


def test_item6_replay_applies_the_device_allow_list(kafka_settings: KafkaSettings,
                                                    make_topics: Callable[..., TopicLayout]) -> None:
    """Before: readings the worker dead-letters as unknown_device were learnt from."""
    topic = make_topics(partitions=1).readings
    _publish(kafka_settings, topic, _readings("dev-a", 12, 1.0) + _readings("rogue-1", 9, 50.0))
    data = replay_topic(kafka_settings, topic, timeout_s=20, devices=("dev-*", "pump-?"))
    assert data.ids == ["dev-a/load"]
    assert data.report.skipped == {"device_not_allowed": 9}


def test_item6_replay_keeps_the_newest_history_per_key_by_event_time_with_bounded_memory(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout]) -> None:
    """Before: every record of the topic was held in one list, then every reading of every key."""
    import tracemalloc

    topic = make_topics(partitions=1).readings
    rows = _readings("dev-a", 12_000, 1.0)
    _publish(kafka_settings, topic, rows[6000:] + rows[:6000])  # out of event-time order
    tracemalloc.start()
    try:
        data = replay_topic(kafka_settings, topic, timeout_s=180, history=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.series[0].shape == (50, 1)
    np.testing.assert_allclose(data.series[0][:, 0], [json.loads(v)["value"] for _, v in rows[-50:]], rtol=1e-6)
    # Measured: the whole-topic list and every key's readings peaked at 3.4 MB for 6,000 readings,
    # growing with the topic's length; streaming peaked at 2.0 MB for 6,000 (50 readings kept, one
    # fetch, the client's own buffers), and its peak does not grow with the topic.
    assert peak < 3_000_000, peak
