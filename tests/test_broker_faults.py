"""Broker faults: the stream worker, the edge forwarder and the retrainer lose nothing.

They run against their own single broker (no replica to fail over to: every fault is a full
outage), shared by the tests of this module. The worker and the forwarder see it SIGKILLed
mid-stream and restarted, then SIGSTOPped for longer than the worker's group session timeout
(6 s) and resumed: every reading must have its forecast and every buffered edge result must reach
the topic. The retrainer sees the broker die while it is handling a request (a retrain takes
minutes; the request's offset is committed after it): it must commit once the broker is back and
go on with the next request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.results import decode_results
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.buffer import Outbox
from streamedge.edge.forwarder import Forwarder
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.cluster import LocalCluster, free_ports
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.registry import ModelRegistry
from streamedge.services.records import reading_of
from streamedge.training.retrain import Retrainer, RetrainMetrics, RetrainOutcome, serve
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.helpers import WorkerProcess, consume_until, install, produce, reading

ROUTES = {"s": ["tiny-forecaster", "tiny-classifier"]}
KEYS = 10
# Longer than the worker's group session timeout (6 s, set below).
PAUSE_S = 10.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, kafka_broker: LocalBroker) -> Iterator[LocalCluster]:
    """A private one-node cluster (kill/pause/restart helpers) on free ports; stopped at the end."""
    cluster = LocalCluster(tmp_path_factory.mktemp("kafka"), brokers=1, port=free_ports(2),
                           libs_dir=kafka_broker.libs_dir)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def _layout(broker: LocalCluster) -> tuple[KafkaSettings, TopicLayout]:
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, client_id="broker-fault-tests")
    layout = TopicLayout(prefix=f"f{uuid.uuid4().hex[:8]}.", partitions=3)
    create_topics(kafka, layout)
    return kafka, layout


def _readings(kafka: KafkaSettings, layout: TopicLayout, seqs: range) -> None:
    produce(kafka, layout.readings, ((f"k{k}/s".encode(), reading(f"k{k}", seq)) for seq in seqs for k in range(KEYS)))


def _buffer(outbox: Outbox, forwarder: Forwarder, topic: str, count: int) -> None:
    for _ in range(count):
        outbox.append(lambda seq: [(topic, b"edge-1", json.dumps({"device_id": "edge-1", "seq": seq}).encode())], 1)
    forwarder.wake()


def _reading_of(message: Any) -> str:
    """The reading and model a result names: its idempotency key up to the source offset."""
    return reading_of(str(json.loads(message.value)["idempotency_key"]))


def _seqs(messages: list[Any]) -> set[int]:
    """The result seqs in ``messages``, single results and result blocks alike."""
    return {row["seq"] for m in messages for row in decode_results(m.value)}


def test_worker_and_forwarder_survive_broker_kill_and_pause(broker: LocalCluster, tiny_models: TinyModels,
                                                            tmp_path: Path) -> None:
    kafka, layout = _layout(broker)
    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, "tiny-forecaster")
    install(model_dir, tiny_models.classifier, "tiny-classifier")
    worker = WorkerProcess(kafka, layout, model_dir, tiny_models.public_key, ROUTES, tmp_path / "worker.log",
                           f"{layout.prefix}app", session_timeout_s=6).start()
    outbox = Outbox(tmp_path / "outbox.db")
    forwarder = Forwarder(outbox, kafka.kafka_python_config(), timeout_s=2.0, block_rows=8,
                          block_topics=(layout.edge_results,))
    try:
        worker.wait_ready()
        forwarder.start()

        _readings(kafka, layout, range(0, 40))
        _buffer(outbox, forwarder, layout.edge_results, 20)
        deadline = time.monotonic() + 60
        while worker.metric("streamedge_stream_results_total", 'kind="forecasts"') == 0:
            assert time.monotonic() < deadline, worker.log.read_text()[-3000:]
            time.sleep(0.05)
        broker.kill(1)  # mid-stream: the worker is answering the readings just sent
        _buffer(outbox, forwarder, layout.edge_results, 20)  # buffered while the broker is down
        time.sleep(2.0)
        broker.restart(1)

        _readings(kafka, layout, range(40, 80))
        broker.pause(1)
        _buffer(outbox, forwarder, layout.edge_results, 20)
        time.sleep(PAUSE_S)
        broker.resume(1)

        _readings(kafka, layout, range(80, 120))
        _buffer(outbox, forwarder, layout.edge_results, 20)

        wanted = {f"forecast:tiny-forecaster:k{k}/s:{s}" for k in range(KEYS) for s in range(TINY_WINDOW - 1, 120)}
        found = consume_until(kafka, [layout.forecasts],
                              lambda ms: wanted <= {_reading_of(m) for m in ms}, timeout=180)
        lost = sorted(wanted - {_reading_of(m) for m in found})
        assert not lost, (lost[:10], worker.log.read_text()[-3000:])
        assert worker.proc is not None and worker.proc.poll() is None, "the worker did not survive"

        rows = consume_until(kafka, [layout.edge_results], lambda ms: len(_seqs(ms)) >= 80, timeout=120)
        assert _seqs(rows) == set(range(80))
    finally:
        forwarder.stop()
        outbox.close()
        worker.stop()


class _SlowRetrainer(Retrainer):
    """A retrainer whose handling of each request waits for ``proceed``: the broker can die mid-retrain."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def handle(self, payload: bytes | None) -> RetrainOutcome:
        self.entered.set()
        self.proceed.wait(timeout=120)
        return super().handle(payload)


def _request(kafka: KafkaSettings, layout: TopicLayout, trigger: str) -> None:
    # A request for a version that is not the active one: answered at once ("stale"), no training.
    body = {"model": "tiny-forecaster", "version": 2, "trigger": trigger}
    produce(kafka, layout.retrain_requests, [(b"tiny-forecaster", json.dumps(body).encode())])


def test_retrainer_commits_after_the_broker_died_mid_retrain(broker: LocalCluster, tiny_models: TinyModels,
                                                            tmp_path: Path) -> None:
    kafka, layout = _layout(broker)
    registry = ModelRegistry(tmp_path / "registry")
    signing = load_private_key(tiny_models.signing_key)
    registry.add(tiny_models.forecaster, signing)
    registry.promote("tiny-forecaster", 1)
    metrics = CollectorRegistry()
    retrainer = _SlowRetrainer(registry, signing, load_public_key(tiny_models.public_key), kafka, layout,
                               {"s": ["tiny-forecaster"]}, tmp_path / "retrain", metrics=RetrainMetrics(metrics))
    stop = threading.Event()
    outcomes: list[RetrainOutcome] = []
    errors: list[BaseException] = []

    def _serve() -> None:
        try:
            outcomes.extend(serve(retrainer, f"{layout.prefix}retrainer", stop=stop, poll_s=0.5))
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    thread = threading.Thread(target=_serve, daemon=True)
    thread.start()
    try:
        _request(kafka, layout, "r0")
        assert retrainer.entered.wait(timeout=60), "the retrainer never received the request"
        broker.kill(1)
        retrainer.proceed.set()  # the retrain ends while the broker is down: its commit must wait
        time.sleep(2.0)
        broker.restart(1)
        _request(kafka, layout, "r1")
        deadline = time.monotonic() + 90
        while _stale(metrics) < 2 and not errors and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == [], f"the retrainer stopped: {errors[0]!r}" if errors else ""
    assert {o.trigger for o in outcomes if o.outcome == "stale"} == {"r0", "r1"}


def _stale(metrics: CollectorRegistry) -> float:
    value = metrics.get_sample_value("streamedge_retrain_outcomes_total",
                                     {"model": "tiny-forecaster", "outcome": "stale"})
    return value if value is not None else 0.0
