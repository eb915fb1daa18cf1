"""The real local broker: CLI lifecycle, topic layout, and round trips through both Python clients."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from streamedge.cli.main import main
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.services.helpers import free_port

REPO = Path(__file__).resolve().parents[2]


def test_cli_up_status_down_and_stale_pid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "broker"
    port, controller = free_port(), free_port()
    common = ["--state-dir", str(state), "--port", str(port), "--controller-port", str(controller)]
    assert main(["kafka", "status", *common]) == 1
    assert main(["kafka", "up", *common]) == 0
    assert main(["kafka", "up", *common]) == 0
    assert main(["kafka", "status", *common]) == 0
    pid = int((state / "broker.pid").read_text())
    assert main(["kafka", "down", *common]) == 0
    assert main(["kafka", "status", *common]) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # A pid file left by a crashed broker (process gone) is recovered by the next `up`.
    (state / "broker.pid").write_text("999999")
    assert main(["kafka", "status", *common]) == 1
    broker = LocalBroker(state, port=port, controller_port=controller)
    try:
        assert broker.up().running
        os.kill(int((state / "broker.pid").read_text()), signal.SIGKILL)
        time.sleep(1)
        assert not broker.status().running
        assert broker.up().running
    finally:
        broker.down()
    assert "running" in capsys.readouterr().out


def test_topics_command_creates_layout(kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}."
    args = ["kafka", "topics", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", prefix,
            "--partitions", "4"]
    assert main(args) == 0
    assert main(args) == 0
    assert "exists" in capsys.readouterr().out
    layout = TopicLayout(prefix=prefix, partitions=4)
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([layout.readings, layout.model_updates])}
        assert described == {layout.readings: 4, layout.model_updates: 1}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, layout.model_updates)])
        assert configs["topic"][layout.model_updates]["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()


def test_kafka_python_round_trip(kafka_settings: KafkaSettings, make_topics: type[TopicLayout]) -> None:
    layout = make_topics()
    started_ms = time.time() * 1000
    year_2100_ms = 4_102_444_800_000
    producer = KafkaProducer(**kafka_settings.kafka_python_config())
    for i in range(50):
        # A producer's timestamp (here one in 2100) never reaches the stream: the broker stamps readings.
        producer.send(layout.readings, key=f"dev-{i % 5}".encode(), value=f"v{i}".encode(), timestamp_ms=year_2100_ms)
    producer.flush(timeout=30)
    producer.close()
    consumer = KafkaConsumer(layout.readings, **kafka_settings.kafka_python_config(), group_id=f"g-{uuid.uuid4().hex}",
                             auto_offset_reset="earliest", consumer_timeout_ms=15000)
    messages = list(consumer)
    consumer.close()
    assert sorted(message.value.decode() for message in messages) == sorted(f"v{i}" for i in range(50))
    assert all(started_ms - 1000 <= message.timestamp <= time.time() * 1000 + 1000 for message in messages)


async def _collect(settings: KafkaSettings, topic: str, count: int, timeout: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, **settings.aiokafka_config(), auto_offset_reset="earliest",
                                group_id=f"g-{uuid.uuid4().hex}")
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(values) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            values.extend(message.value for messages in batch.values() for message in messages)
    finally:
        await consumer.stop()
    return values


def test_faust_agent_round_trip_over_aiokafka(kafka_settings: KafkaSettings, make_topics: type[TopicLayout],
                                              tmp_path: Path) -> None:
    layout = make_topics()
    env = {**os.environ, "ECHO_APP_ID": f"echo-{uuid.uuid4().hex[:8]}", "ECHO_BROKER": kafka_settings.bootstrap_servers,
           "ECHO_IN": layout.readings, "ECHO_OUT": layout.forecasts}
    log = (tmp_path / "faust.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "tests.streamedge.faust_echo", "--datadir", str(tmp_path / "faust-data"),
                               "worker", "-l", "warn"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        producer = KafkaProducer(**kafka_settings.kafka_python_config())
        for i in range(20):
            producer.send(layout.readings, value=f"reading-{i}".encode())
        producer.flush(timeout=30)
        producer.close()
        values = asyncio.run(_collect(kafka_settings, layout.forecasts, 20, timeout=60))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    assert sorted(values) == sorted(f"READING-{i}".encode() for i in range(20)), (tmp_path / "faust.log").read_text()[-2000:]
