"""The refusal matrix against real brokers: every way the broker can refuse a worker's write.

Each case runs the same story on a broker of this module's own (never the shared test broker:
one case kills its broker, one needs ``auto.create.topics.enable=false`` as a production cluster
has, one needs ACLs, so it runs on a SASL_SSL broker with the project's ACL table):

1. a worker answers 20 readings and commits them (offset 20);
2. the broker starts refusing one of its writes, and more readings arrive (first at offset 20);
3. once a batch has waited over 2 s for acknowledgement (``/health`` 503), the worker gets SIGTERM
   in the middle of that refused write: it must stop gracefully, its group's committed offset
   still 20 (not past the first reading whose output was never acknowledged);
4. the refusal is lifted, a new worker of the same group starts: every reading after the commit
   has its result (and the hostile one its dead letter), and everything is committed.

Broker down mid-batch: a refused forecast pins the batch in flight (so "mid-batch" is certain,
not a race), then the broker is SIGKILLed under it and the worker gets SIGTERM while it is down.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamedge.kafka.acls import grant_acls
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.cluster import free_ports
from streamedge.kafka.security import BrokerSecurity
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.services.records import parse_dead_letter
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.conftest import ROUTES
from tests.services.helpers import WorkerProcess, committed_offsets, consume_until, produce, reading

_PREFIX = 20  # readings answered and committed before the refusal
_MORE = 10  # readings sent once the broker refuses
_APP = "streamedge-stream-refusals"  # under the ACL table's worker group prefix


class _NoAutoCreate(LocalBroker):
    """A broker that never creates a topic on a client's metadata request (as production clusters run)."""

    def _write_config(self) -> Path:
        config = super()._write_config()
        config.write_text(config.read_text().replace("auto.create.topics.enable=true", "auto.create.topics.enable=false"))
        return config


@dataclass
class _Broker:
    broker: LocalBroker
    admin: KafkaSettings
    worker: KafkaSettings
    worker_env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, kafka_broker: LocalBroker) -> Iterator[_Broker]:
    port = free_ports(2)
    broker = _NoAutoCreate(tmp_path_factory.mktemp("no-auto-create"), port, port + 1, libs_dir=kafka_broker.libs_dir)
    broker.up(timeout=120)
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, client_id="refusal-tests")
    try:
        yield _Broker(broker, settings, settings)
    finally:
        broker.down()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, kafka_broker: LocalBroker) -> Iterator[_Broker]:
    state = tmp_path_factory.mktemp("secure-kafka")
    port = free_ports(2)
    security = BrokerSecurity.ensure(state / "security")
    broker = LocalBroker(state, port, port + 1, security=security, libs_dir=kafka_broker.libs_dir)
    broker.up(timeout=120)
    worker = security.client_settings("worker", broker.bootstrap, client_id="refusal-tests")
    assert worker.sasl_password is not None
    env = {"STREAMEDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAMEDGE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMEDGE_KAFKA_SASL_USERNAME": "worker",
           "STREAMEDGE_KAFKA_SASL_PASSWORD": worker.sasl_password.get_secret_value(),
           "STREAMEDGE_KAFKA_SSL_CAFILE": str(security.cafile)}
    try:
        yield _Broker(broker, security.client_settings("admin", broker.bootstrap, client_id="refusal-tests"),
                      worker, env)
    finally:
        broker.down()


def _admin(kafka: KafkaSettings) -> object:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**kafka.kafka_python_config())


def _topic_config(kafka: KafkaSettings, topic: str, configs: dict[str, str]) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = _admin(kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])  # type: ignore[attr-defined]
    finally:
        admin.close()  # type: ignore[attr-defined]


def _delete_topic(kafka: KafkaSettings, topic: str) -> None:
    admin = _admin(kafka)
    try:
        admin.delete_topics([topic])  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while topic in admin.list_topics():  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"{topic} not deleted"
            time.sleep(0.2)
    finally:
        admin.close()  # type: ignore[attr-defined]


def _forecast_write(kafka: KafkaSettings, layout: TopicLayout, allowed: bool) -> None:
    """Grant (``allowed``) or revoke the worker's WRITE on the forecasts topic."""
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    args = ("User:worker", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW)
    admin = _admin(kafka)
    try:
        if allowed:
            pattern = ResourcePattern(ResourceType.TOPIC, layout.forecasts, ACLResourcePatternType.LITERAL)
            admin.create_acls([ACL(*args, pattern)])  # type: ignore[attr-defined]
        else:
            where = ResourcePatternFilter(ResourceType.TOPIC, layout.forecasts, ACLResourcePatternType.LITERAL)
            admin.delete_acls([ACLFilter(*args, where)])  # type: ignore[attr-defined]
    finally:
        admin.close()  # type: ignore[attr-defined]


def _recreate(kafka: KafkaSettings, layout: TopicLayout) -> None:
    create_topics(kafka, layout)


def _wait(condition: Callable[[], bool], what: str, worker: WorkerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {worker.log.read_text()[-3000:]}"
        time.sleep(0.3)


@dataclass
class _Refusal:
    """How one case makes the broker refuse, and how it lifts the refusal."""

    refuse: Callable[[_Broker, TopicLayout], None]
    lift: Callable[[_Broker, TopicLayout], None]
    hostile: bool = False  # a reading whose dead letter is the refused write


def _size(topic: str, limit: int) -> _Refusal:
    """The broker refuses messages over ``limit`` bytes on the layout's ``topic``."""
    return _Refusal(lambda b, layout: _topic_config(b.admin, getattr(layout, topic), {"max.message.bytes": str(limit)}),
                    lambda b, layout: _topic_config(b.admin, getattr(layout, topic), {"max.message.bytes": "1048588"}),
                    hostile=topic == "dead_letters")


_CASES = {
    "dead_letter_too_big": ("plain", _size("dead_letters", 20_000)),
    "result_too_big": ("plain", _size("forecasts", 100)),
    "output_topic_missing": ("plain", _Refusal(lambda b, layout: _delete_topic(b.admin, layout.forecasts),
                                               lambda b, layout: _recreate(b.admin, layout))),
    "acl_denied": ("secure", _Refusal(lambda b, layout: _forecast_write(b.admin, layout, False),
                                      lambda b, layout: _forecast_write(b.admin, layout, True))),
}


def _story(kafka: _Broker, refusal: _Refusal, tiny_models: TinyModels, model_dir: Path, tmp_path: Path,
           kill_broker: bool = False) -> None:
    layout = TopicLayout(prefix=f"r{uuid.uuid4().hex[:8]}.", partitions=1)
    create_topics(kafka.admin, layout)
    app_id = f"{_APP}-{layout.prefix}"
    if kafka.worker_env:
        grant_acls(kafka.admin, layout, worker_group_prefix=app_id)

    def start(name: str, **settings: object) -> WorkerProcess:
        worker = WorkerProcess(kafka.worker, layout, model_dir, tiny_models.public_key, ROUTES,
                               tmp_path / f"{name}.log", app_id, **settings)
        worker.env.update(kafka.worker_env)
        worker.start().wait_ready(timeout=90)
        return worker

    def committed() -> int | None:
        return committed_offsets(kafka.admin, app_id, layout.readings).get(0)

    first = start("first", unhealthy_after_s=2, exit_after_s=600)
    try:
        produce(kafka.admin, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(_PREFIX)])
        _wait(lambda: committed() == _PREFIX, "the first readings committed", first)

        refusal.refuse(kafka, layout)
        more = [(b"d0/s", reading("d0", seq)) for seq in range(_PREFIX, _PREFIX + _MORE)]
        if refusal.hostile:
            more.insert(0, (b"d0/s", b"{" + b"x" * 60_000))  # its dead letter is over 20,000 bytes
        produce(kafka.admin, layout.readings, more)
        _wait(lambda: first.health()[0] == 503, "a batch held past unhealthy_after_s", first)
        if kill_broker:
            pid = kafka.broker.pid
            assert pid is not None, "the module's broker is not running"
            os.kill(pid, signal.SIGKILL)
        assert first.proc is not None
        first.proc.terminate()  # SIGTERM in the middle of the refused write
        # With the broker dead the consumer's own shutdown waits 60 s for it (measured); the
        # worker's waits for held batches and the producer are bounded at 5 s each.
        code = first.proc.wait(timeout=120 if kill_broker else 60)
        assert code != -signal.SIGKILL, "the worker did not stop on SIGTERM"
        if kill_broker:
            kafka.broker.up(timeout=120)
        assert committed() == _PREFIX, "committed past a reading whose output the broker never acknowledged"
    finally:
        first.stop()

    refusal.lift(kafka, layout)
    second = start("second")
    try:
        total = _PREFIX + len(more)
        wanted = set(range(_PREFIX, _PREFIX + _MORE))
        found = consume_until(kafka.admin, [layout.forecasts],
                              lambda ms: wanted <= {json.loads(m.value)["seq"] for m in ms})
        assert wanted <= {json.loads(m.value)["seq"] for m in found}, second.log.read_text()[-3000:]
        if refusal.hostile:
            letters = consume_until(kafka.admin, [layout.dead_letters], lambda ms: len(ms) >= 1)
            assert [parse_dead_letter(m.value)[0]["source"]["offset"] for m in letters] == [_PREFIX]
        _wait(lambda: committed() == total, "every reading committed", second)
    finally:
        second.stop()
    assert TINY_WINDOW <= _PREFIX  # the first readings gave forecasts: offset 20 was a real commit


@pytest.mark.parametrize("case", sorted(_CASES))
def test_a_refused_write_under_sigterm_commits_nothing_past_it_and_a_restart_delivers_everything(
        case: str, request: pytest.FixtureRequest, tiny_models: TinyModels, model_dir: Path, tmp_path: Path) -> None:
    where, refusal = _CASES[case]
    _story(request.getfixturevalue(where), refusal, tiny_models, model_dir, tmp_path)


def test_broker_killed_mid_batch_then_sigterm_commits_nothing_past_it_and_a_restart_delivers_everything(
        plain: _Broker, tiny_models: TinyModels, model_dir: Path, tmp_path: Path) -> None:
    _story(plain, _size("forecasts", 100), tiny_models, model_dir, tmp_path, kill_broker=True)
