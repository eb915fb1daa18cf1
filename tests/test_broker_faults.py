"""Broker faults: the stream worker, the retrainer and the edge forwarder lose nothing.

They run together against their own single broker (no replica to fail over to: every fault is a
full outage), which is SIGKILLed mid-stream and restarted, then SIGSTOPped for longer than the
consumer-group session timeouts (worker 6 s, retrainer 10 s) and resumed. Every reading must have
its forecast, every retrain request its outcome, every buffered edge result must reach the topic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.buffer import Outbox
from streamedge.edge.forwarder import Forwarder
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.cluster import LocalCluster, free_ports
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.registry import ModelRegistry
from streamedge.training.retrain import Retrainer, RetrainMetrics, RetrainOutcome, serve
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.helpers import WorkerProcess, consume_until, install, produce, reading

ROUTES = {"s": ["tiny-forecaster", "tiny-classifier"]}
KEYS = 10
# The retrainer's consumer uses kafka-python's default group session timeout (10 s).
PAUSE_S = 12.0


@pytest.fixture
def broker(tmp_path: Path, kafka_broker: LocalBroker) -> Iterator[LocalCluster]:
    """A private one-node cluster (kill/pause/restart helpers) on free ports; stopped at the end."""
    cluster = LocalCluster(tmp_path / "kafka", brokers=1, port=free_ports(2), libs_dir=kafka_broker.libs_dir)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def _phase(kafka: KafkaSettings, layout: TopicLayout, seqs: range, request: int) -> None:
    produce(kafka, layout.readings, ((f"k{k}/s".encode(), reading(f"k{k}", seq)) for seq in seqs for k in range(KEYS)))
    # A request for a version that is not the active one: answered at once ("stale"), no training.
    body = {"model": "tiny-forecaster", "version": 2, "trigger": f"r{request}"}
    produce(kafka, layout.retrain_requests, [(b"tiny-forecaster", json.dumps(body).encode())])


def _buffer(outbox: Outbox, forwarder: Forwarder, topic: str, count: int) -> None:
    for _ in range(count):
        outbox.append(lambda seq: [(topic, b"edge-1", json.dumps({"device_id": "edge-1", "seq": seq}).encode())], 1)
    forwarder.wake()


def test_worker_retrainer_and_forwarder_survive_broker_kill_and_pause(
        broker: LocalCluster, tiny_models: TinyModels, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, client_id="broker-fault-tests")
    layout = TopicLayout(prefix="faults.", partitions=3)
    create_topics(kafka, layout)
    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, "tiny-forecaster")
    install(model_dir, tiny_models.classifier, "tiny-classifier")
    worker = WorkerProcess(kafka, layout, model_dir, tiny_models.public_key, ROUTES, tmp_path / "worker.log",
                           "faults-app", session_timeout_s=6).start()
    registry = ModelRegistry(tmp_path / "registry")
    signing = load_private_key(tiny_models.signing_key)
    registry.add(tiny_models.forecaster, signing)
    registry.promote("tiny-forecaster", 1)
    metrics = CollectorRegistry()
    retrainer = Retrainer(registry, signing, load_public_key(tiny_models.public_key), kafka, layout,
                          {"s": ["tiny-forecaster"]}, tmp_path / "retrain", metrics=RetrainMetrics(metrics))
    stop = threading.Event()
    outcomes: list[RetrainOutcome] = []
    errors: list[BaseException] = []

    def _serve() -> None:
        try:
            outcomes.extend(serve(retrainer, "faults-retrainer", stop=stop, poll_s=0.5))
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    retrain_thread = threading.Thread(target=_serve, daemon=True)
    outbox = Outbox(tmp_path / "outbox.db")
    forwarder = Forwarder(outbox, kafka.kafka_python_config(), timeout_s=2.0)
    try:
        worker.wait_ready()
        retrain_thread.start()
        forwarder.start()

        _phase(kafka, layout, range(0, 40), request=0)
        _buffer(outbox, forwarder, layout.edge_results, 20)
        deadline = time.monotonic() + 60
        while worker.metric("streamedge_stream_results_total", 'kind="forecasts"') == 0:
            assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
            time.sleep(0.05)
        broker.kill(1)  # mid-stream: the worker is answering the readings just sent
        _buffer(outbox, forwarder, layout.edge_results, 20)  # buffered while the broker is down
        time.sleep(2.0)
        broker.restart(1)

        _phase(kafka, layout, range(40, 80), request=1)
        broker.pause(1)
        _buffer(outbox, forwarder, layout.edge_results, 20)
        time.sleep(PAUSE_S)
        broker.resume(1)

        _phase(kafka, layout, range(80, 120), request=2)
        _buffer(outbox, forwarder, layout.edge_results, 20)

        wanted = {f"forecast:tiny-forecaster:k{k}/s:{s}" for k in range(KEYS) for s in range(TINY_WINDOW - 1, 120)}
        found = consume_until(kafka, [layout.forecasts],
                              lambda ms: wanted <= {json.loads(m.value)["idempotency_key"] for m in ms}, timeout=180)
        lost = sorted(wanted - {json.loads(m.value)["idempotency_key"] for m in found})
        assert not lost, (lost[:10], worker.log.read_text()[-3000:])
        assert worker.proc is not None and worker.proc.poll() is None, "the worker did not survive"

        rows = consume_until(kafka, [layout.edge_results], lambda ms: len({json.loads(m.value)["seq"] for m in ms}) >= 80,
                             timeout=120)
        assert {json.loads(m.value)["seq"] for m in rows} == set(range(80))

        deadline = time.monotonic() + 60
        while _stale(metrics) < 3 and not errors and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        if retrain_thread.ident is not None:
            retrain_thread.join(timeout=60)
        forwarder.stop()
        outbox.close()
        worker.stop()
    assert errors == [], f"the retrainer stopped: {errors[0]!r}" if errors else ""
    assert {o.trigger for o in outcomes if o.outcome == "stale"} == {"r0", "r1", "r2"}


def _stale(metrics: CollectorRegistry) -> float:
    value = metrics.get_sample_value("streamedge_retrain_outcomes_total",
                                     {"model": "tiny-forecaster", "outcome": "stale"})
    return value if value is not None else 0.0
