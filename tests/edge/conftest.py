"""Fixtures for the edge agent tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamedge.contracts.signing import load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import Source
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels


@pytest.fixture
def model_dir(tmp_path: Path, tiny_models: TinyModels) -> Path:
    """A device model folder with the tiny forecaster v1 installed and active."""
    root = tmp_path / "models"
    ModelStore(root, load_public_key(tiny_models.public_key)).install(tiny_models.forecaster)
    return root


@pytest.fixture
def make_agent(tmp_path: Path, model_dir: Path, tiny_models: TinyModels) -> Callable[..., EdgeAgent]:
    """Factory: an agent on ``source`` with the tiny forecaster; settings overridable."""

    def _make(source: Source, kafka: KafkaSettings, layout: TopicLayout, **overrides: Any) -> EdgeAgent:
        values: dict[str, Any] = {
            "device_id": "dev-1", "model_dir": model_dir, "public_key": tiny_models.public_key,
            "buffer_path": tmp_path / "buffer.sqlite", "metrics_port": 0, "heartbeat_interval_s": 1.0,
            "kafka_timeout_s": 2.0, "drain_timeout_s": 30.0, "model_updates": False, "log_format": "text",
            "batch_size": 16,
        }
        values.update(overrides)
        settings = EdgeSettings(**values)
        return EdgeAgent(settings, kafka, layout, source, load_public_key(tiny_models.public_key),
                         CollectorRegistry())

    return _make
