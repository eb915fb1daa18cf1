"""Shared fixtures: one real local Kafka broker per test run, fresh topics per test.

The broker runs on 127.0.0.1:39092 (controller 39093; ``STREAMEDGE_TEST_KAFKA_PORT`` moves both)
from ``.streamedge/test-kafka``, so it never touches a developer's own broker on 9092. It is stopped
at the end of the run unless it was already running or ``STREAMEDGE_TEST_KEEP_BROKER=1``.

Property tests draw the same examples on every run (Hypothesis' ``derandomize``, no example
database), so a run's outcome never depends on the day; ``HYPOTHESIS_PROFILE=explore`` draws
fresh ones when hunting for new failures.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """The real local broker, started once for the whole run."""
    port = int(os.environ.get("STREAMEDGE_TEST_KAFKA_PORT", "39092"))
    broker = LocalBroker(REPO / ".streamedge" / "test-kafka", port=port, controller_port=port + 1)
    was_running = broker.status().running
    broker.up(timeout=120)
    yield broker
    if not was_running and os.environ.get("STREAMEDGE_TEST_KEEP_BROKER") != "1":
        broker.down()


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
