"""Worker wiring that needs no broker: settings checks, local models, shadow candidates, the Faust app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.app import StreamWorker, highwater_or_none
from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TinyModels
from tests.services.conftest import ROUTES


def _settings(model_dir: Path, tiny_models: TinyModels, **extra: object) -> StreamSettings:
    return StreamSettings(model_dir=model_dir, public_key=tiny_models.public_key, routes=ROUTES,
                          data_dir=model_dir.parent / "faust", **extra)  # type: ignore[arg-type]


def test_worker_loads_local_models_and_shadow_candidates(model_dir: Path, tiny_models: TinyModels) -> None:
    registry = CollectorRegistry()
    worker = StreamWorker(_settings(model_dir, tiny_models, shadow={"tiny-forecaster": 1}), KafkaSettings(),
                          registry)
    assert worker.models.describe() == {"tiny-forecaster": 1, "tiny-classifier": 1}
    assert worker.processor.shadows is not None and "tiny-forecaster" in worker.processor.shadows
    assert registry.get_sample_value("streamedge_stream_shadow_version", {"model": "tiny-forecaster"}) == 1
    app = worker.create_app()
    assert app.conf.id == "streamedge-stream" and "readings" in {agent.name.split(".")[-1]
                                                                  for agent in app.agents.values()}


def test_worker_settings_errors_are_one_line(model_dir: Path, tiny_models: TinyModels) -> None:
    with pytest.raises(ConfigError, match="public key"):
        StreamWorker(StreamSettings(routes=ROUTES), KafkaSettings())
    with pytest.raises(ConfigError, match="no routes"):
        StreamWorker(StreamSettings(public_key=tiny_models.public_key), KafkaSettings())
    with pytest.raises(ConfigError, match="shadow candidate tiny-forecaster v7"):
        StreamWorker(_settings(model_dir, tiny_models, shadow={"tiny-forecaster": 7}), KafkaSettings())


def test_worker_fetches_models_with_its_registry_token_and_size_cap(model_dir: Path, tiny_models: TinyModels,
                                                                     tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    worker = StreamWorker(_settings(model_dir, tiny_models, registry_token_file=token, max_model_bytes=4096,
                                    registry_cafile=tmp_path / "ca.pem", registry_url="https://Registry:8443/x"),
                          KafkaSettings(), CollectorRegistry())
    fetch = worker.follower.fetch
    assert (fetch.token, fetch.token_origin, fetch.max_bytes, fetch.cafile) == (
        "s3cret", "https://registry:8443", 4096, tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="cannot read registry token file"):
        StreamWorker(_settings(model_dir, tiny_models, registry_token_file=tmp_path / "missing"), KafkaSettings(),
                     CollectorRegistry())


def test_the_high_watermark_of_a_partition_not_held_is_none() -> None:
    # aiokafka asserts on a partition its consumer does not hold; the worker's lag timer and its
    # delivery callback ask about partitions it believes it holds, which a rebalance can change.
    async def read() -> tuple[int | None, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started: assignment state only
        consumer.assign([TopicPartition("readings", 0)])
        return highwater_or_none(consumer, "readings", 0), highwater_or_none(consumer, "readings", 1)

    assert asyncio.run(read()) == (None, None)  # held but not fetched yet: no watermark; not held: None
