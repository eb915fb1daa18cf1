"""Fixtures of the stream processor tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.signing import load_public_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, load_model
from streamedge.services.processor import Processor
from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TinyModels
from tests.services.helpers import WorkerProcess, install

ROUTES = {"s": ["tiny-forecaster", "tiny-classifier"]}


@pytest.fixture
def model_dir(tmp_path: Path, tiny_models: TinyModels) -> Path:
    """A worker model folder with the tiny forecaster and classifier installed as version 1."""
    root = tmp_path / "models"
    install(root, tiny_models.forecaster, "tiny-forecaster")
    install(root, tiny_models.classifier, "tiny-classifier")
    return root


@pytest.fixture
def make_processor(tiny_models: TinyModels) -> Callable[..., Processor]:
    """Factory: a processor over the tiny models, with a fresh metrics registry."""

    def _make(**overrides: Any) -> Processor:
        key = load_public_key(tiny_models.public_key)
        settings = StreamSettings(routes=overrides.pop("routes", ROUTES), **overrides)
        models = ModelSet()
        models.swap(load_model(tiny_models.forecaster, key))
        models.swap(load_model(tiny_models.classifier, key))
        return Processor(settings, models, StreamMetrics(CollectorRegistry()))

    return _make


@pytest.fixture
def start_worker(kafka_settings: KafkaSettings, tiny_models: TinyModels, model_dir: Path,
                 tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a worker process on a topic layout; every worker is stopped at the end."""
    started: list[WorkerProcess] = []

    def _start(layout: TopicLayout, app_id: str, **settings: Any) -> WorkerProcess:
        worker = WorkerProcess(kafka_settings, layout, model_dir, tiny_models.public_key, ROUTES,
                               tmp_path / f"worker-{len(started)}.log", app_id, **settings).start()
        started.append(worker)
        worker.wait_ready()
        return worker

    yield _start
    for worker in started:
        worker.stop()
