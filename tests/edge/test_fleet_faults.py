"""Agents as separate processes on the real broker: a device that was off during a promotion
catches up when it comes back, and an agent killed (SIGKILL) at random points while forwarding
loses no result and never forwards one under two identities.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from streamedge.contracts.promotion import PromotionLedger
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.models import ModelStore
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.edge.helpers import consume_results, make_version, sine_readings, write_jsonl

NAME = "tiny-forecaster"


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


def _agent(folder: Path, device: str, kafka: KafkaSettings, layout: TopicLayout, public_key: Path,
           *source: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "streamedge.edge", "run", "--device-id", device,
            "--model-dir", str(folder / "models"), "--model-name", NAME, "--public-key", str(public_key),
            *source, "--buffer-path", str(folder / "buffer.sqlite"), "--buffer-fsync", "false",
            "--heartbeat-interval-s", "60", "--kafka-timeout-s", "2", "--drain-timeout-s", "60",
            "--metrics-port", "0", "--log-format", "text",
            "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", layout.prefix]
    return subprocess.Popen(argv, stdout=(folder / "agent.log").open("ab"), stderr=subprocess.STDOUT)


def _delivered(kafka: KafkaSettings, topic: str) -> int:
    """Messages on ``topic`` so far (sum of its partitions' end offsets): cheap enough to poll,
    where counting the rows inside result blocks means reading the whole topic each time."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum(consumer.end_offsets(partitions).values()) if partitions else 0
    finally:
        consumer.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_a_device_off_during_a_promotion_catches_up_when_it_comes_back(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(2)
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    publish_model_update(kafka_settings, layout, registry.promote(NAME, 1))
    public = load_public_key(tiny_models.public_key)
    devices = ["pump-0", "pump-1", "pump-2"]
    source = ("--source", "simulator", "--simulator-keys", "1", "--rate", "20")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for device in devices:
        ModelStore(tmp_path / device / "models", public).install(registry.path(NAME, 1))
        procs[device] = _agent(tmp_path / device, device, kafka_settings, layout, tiny_models.public_key, *source)
    off = devices[0]
    try:
        def ledger(device: str) -> object:
            return PromotionLedger(tmp_path / device / "models", public).get(NAME)

        _wait(lambda: all(ledger(d) == registry.record(NAME) for d in devices), 60, "every device on record #1")
        _stop(procs[off])  # switched off: misses the promotion
        update = registry.promote(NAME, 2)
        publish_model_update(kafka_settings, layout, update)
        online = devices[1:]
        _wait(lambda: all(ModelStore(tmp_path / d / "models", public).active_version(NAME) == 2 for d in online),
              60, "the online devices to serve v2")
        assert ModelStore(tmp_path / off / "models", public).versions(NAME) == [1]
        procs[off] = _agent(tmp_path / off, off, kafka_settings, layout, tiny_models.public_key, *source)
        # the ledger is written after the activation: wait for both
        _wait(lambda: ModelStore(tmp_path / off / "models", public).active_version(NAME) == 2
              and ledger(off) == update.promotion, 60, "the device that was off to catch up")
    finally:
        for proc in procs.values():
            _stop(proc)
    for device in devices:
        assert procs[device].returncode == 0, (tmp_path / device / "agent.log").read_text()[-2000:]


def test_sigkill_while_forwarding_loses_nothing_and_keeps_every_result_identity(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(2)
    public = load_public_key(tiny_models.public_key)
    ModelStore(tmp_path / "models", public).install(tiny_models.forecaster)
    # Each run replays the file from its start (readings it already scored are refused as out of
    # order, at the same pace), so each run reaches new readings later than the one before:
    # eight seconds a run, and a run whose source ends before its kill is not counted.
    n = 16000
    readings = write_jsonl(tmp_path / "readings.jsonl", sine_readings(n, device="dev-k"))
    source = ("--source", "file", "--source-path", str(readings), "--rate", "2000", "--model-updates", "false")
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        before = _delivered(kafka_settings, layout.edge_results)
        agent = _agent(tmp_path, "dev-k", kafka_settings, layout, tiny_models.public_key, *source)
        # Killed only once this run has forwarded results of its own (a message: a result block
        # may carry hundreds), at a seeded point after that.
        _wait(lambda floor=before + 1: _delivered(kafka_settings, layout.edge_results) >= floor, 60,
              "forwarding to start")
        time.sleep(rng.uniform(0.0, 1.5))
        if agent.poll() is not None:
            break
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        kills += 1
    assert kills >= 2, (tmp_path / "agent.log").read_text()[-3000:]
    final = _agent(tmp_path, "dev-k", kafka_settings, layout, tiny_models.public_key, *source)
    assert final.wait(timeout=180) == 0, (tmp_path / "agent.log").read_text()[-3000:]

    expected = {f"forecast:{NAME}:dev-k/s:{seq}" for seq in range(TINY_WINDOW - 1, n)}
    results = consume_results(kafka_settings, layout.edge_results, expect=len(expected), timeout_s=60)
    seen = {r["idempotency_key"] for r in results}
    assert expected <= seen, f"{len(expected - seen)} lost, e.g. {sorted(expected - seen)[:3]}"
    # One identity per result: every copy of a reading's result has the same idempotency key and
    # the same device sequence number, and is byte for byte the same message.
    copies: dict[tuple[str, int], list[dict[str, object]]] = {}
    for result in results:
        body = {k: v for k, v in result.items() if k not in ("partition", "offset")}
        copies.setdefault((str(result["key"]), int(result["source_seq"])), []).append(body)
    assert len(copies) == len(expected)
    assert all(all(copy == found[0] for copy in found) for found in copies.values())
    print(f"\n{kills} SIGKILLs while forwarding: {len(results)} results delivered for {len(expected)} readings "
          f"({len(results) - len(expected)} duplicates, each the same message)")
