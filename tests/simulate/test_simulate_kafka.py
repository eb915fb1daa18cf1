"""The load generator against the real broker: nothing it reports is lost, kinds included."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from streamedge.cli.main import main
from streamedge.contracts.reading import Reading, ReadingBlock, Rejection, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.simulate import SimulateSettings, simulate


def _read_all(settings: KafkaSettings, topic: str, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the start (kafka-python ConsumerRecords)."""
    consumer = KafkaConsumer(**settings.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        values: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(records)
        return values
    finally:
        consumer.close()


@pytest.mark.parametrize("block", [1, 16])
def test_every_reading_and_malformed_record_arrives(kafka_settings: KafkaSettings,
                                                    make_topics: Callable[..., TopicLayout], block: int) -> None:
    layout = make_topics(partitions=3)
    settings = SimulateSettings(devices=5, rate=0.0, count=2000, block_size=block, anomalies=0.01, garbage=0.05,
                                drift_at_s=1.0, seed=11)
    report = simulate(kafka_settings, layout.readings, settings)
    assert report.failed == 0 and report.readings == 2000
    assert report.delivered == report.messages + report.garbage_total
    records = _read_all(kafka_settings, layout.readings, report.delivered)
    assert len(records) == report.delivered
    parsed = [parse_message(r.value) for r in records]
    # Keyed as the Java client would: one partition per device, murmur2 of the key.
    assert {(r.key, r.partition) for r in records} == {
        (f"sim-{i}/signal".encode(), (murmur2(f"sim-{i}/signal".encode()) & 0x7FFFFFFF) % 3) for i in range(5)}
    samples = sum(1 if isinstance(p, Reading) else len(p) for p in parsed if not isinstance(p, Rejection))
    rejected = Counter(p.reason for p in parsed if isinstance(p, Rejection))
    assert samples == report.readings
    assert dict(rejected) == report.garbage and report.garbage_total > 0
    assert all(isinstance(p, Rejection | (ReadingBlock if block > 1 else Reading)) for p in parsed)


def test_cli_prints_its_report_as_the_last_line(kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_topics(partitions=2)
    code = main(["simulate", "--devices", "3", "--rate", "2000", "--count", "300", "--block-size", "4",
                 "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["readings"] == 300 and report["delivered"] == report["messages"] == 75
    assert report["topic"] == layout.readings and report["failed"] == 0
    assert len(_read_all(kafka_settings, layout.readings, 75)) == 75


def test_cli_refuses_bad_settings_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--devices", "0", "--count", "10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamedge: error: invalid simulate settings: devices") and len(err.splitlines()) == 1


def test_enrolled_simulated_devices_sign_their_readings_and_the_retrainer_keeps_only_those(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    from streamedge.contracts.identity import enrol, load_enrolment
    from streamedge.training.kafka_source import replay_topic

    layout = make_topics(partitions=1)
    for device in ("sim-0", "sim-1"):
        enrol(tmp_path / "enrolment", device)
    enrolment = load_enrolment(tmp_path / "enrolment")
    settings = SimulateSettings(devices=3, rate=0.0, count=300, seed=3)  # sim-2 is not enrolled: sent unsigned
    report = simulate(kafka_settings, layout.readings, settings, device_keys=enrolment.keys)
    assert report.failed == 0
    checked = replay_topic(kafka_settings, layout.readings, enrolment=enrolment)
    assert checked.ids == ["sim-0/signal", "sim-1/signal"] and [len(s) for s in checked.series] == [100, 100]
    assert any("'unauthenticated': 100" in note for note in checked.report.notes)
