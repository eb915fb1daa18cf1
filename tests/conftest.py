"""Shared fixtures: one real local Kafka broker per test run, fresh topics per test.

The broker runs on 127.0.0.1:39092 (controller 39093; ``STREAMEDGE_TEST_KAFKA_PORT`` moves both)
from ``.streamedge/test-kafka``, so it never touches a developer's own broker on 9092. Under
pytest-xdist every worker shares it: the first to need it starts it under a file lock and marks it
with the run's token; the run's controller stops it at the end unless another run started it or
``STREAMEDGE_TEST_KEEP_BROKER=1``.

Property tests draw the same examples on every run (Hypothesis' ``derandomize``, no example
database), so a run's outcome never depends on the day; ``HYPOTHESIS_PROFILE=explore`` draws
fresh ones when hunting for new failures.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, create_topics
from streamedge.training.tiny import TinyModels, build_tiny_models

REPO = Path(__file__).resolve().parent.parent

settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


_RUN_TOKEN = "STREAMEDGE_TEST_RUN"


def _test_broker() -> LocalBroker:
    port = int(os.environ.get("STREAMEDGE_TEST_KAFKA_PORT", "39092"))
    return LocalBroker(REPO / ".streamedge" / "test-kafka", port=port, controller_port=port + 1)


def pytest_configure(config: pytest.Config) -> None:
    """The controller (or a run without workers) names this run; its workers inherit the name."""
    if not hasattr(config, "workerinput"):
        os.environ[_RUN_TOKEN] = uuid.uuid4().hex


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller stops the test broker if this run started it."""
    if hasattr(session.config, "workerinput") or os.environ.get("STREAMEDGE_TEST_KEEP_BROKER") == "1":
        return
    broker = _test_broker()
    marker = broker.state_dir / "started-by-run"
    if marker.is_file() and marker.read_text() == os.environ.get(_RUN_TOKEN):
        broker.down()
        marker.unlink()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """The real local broker, started once for the whole run (shared by every xdist worker)."""
    broker = _test_broker()
    broker.state_dir.mkdir(parents=True, exist_ok=True)
    with (broker.state_dir / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not broker.status().running:
            broker.up(timeout=120)
            (broker.state_dir / "started-by-run").write_text(os.environ.get(_RUN_TOKEN, ""))
    yield broker


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: LocalBroker) -> KafkaSettings:
    """Client settings for the test broker."""
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap, client_id="streamedge-tests")


@pytest.fixture
def make_topics(kafka_settings: KafkaSettings) -> Callable[..., TopicLayout]:
    """Factory: a topic layout under a unique prefix, created on the broker."""

    def _make(partitions: int = 3) -> TopicLayout:
        layout = TopicLayout(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=partitions)
        create_topics(kafka_settings, layout)
        return layout

    return _make


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Signed tiny forecaster and classifier folders (float32 TFLite) and their key pair."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
