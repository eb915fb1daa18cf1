"""Workers serve the fleet: a staged (canary/group) record keeps them on its fleet version."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streamedge.contracts.manifest import read_manifest, write_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord, sign_record
from streamedge.contracts.signing import load_private_key, load_public_key, sign_manifest
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.app import StreamWorker
from streamedge.services.models import active_version_dir
from streamedge.services.processor import Processor
from streamedge.services.settings import StreamSettings
from streamedge.services.updates import ModelFollower
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version
from tests.services.helpers import install
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
ROUTES = {"s": [NAME]}


def _staged(folder: Path, fleet: Path, signing_key: Path, sequence: int, target: str = "canary:20") -> ModelUpdate:
    manifest, fleet_manifest = read_manifest(folder), read_manifest(fleet)
    record = PromotionRecord(NAME, manifest.version, "promote", sequence, 1.7e9 + sequence, manifest.sha256,
                             target=target, fleet_version=fleet_manifest.version, fleet_sha256=fleet_manifest.sha256)
    return ModelUpdate(NAME, manifest.version, folder.as_uri(), manifest, "promote",
                       sign_record(record, load_private_key(signing_key)), (folder / manifest.model_file).read_bytes())


def test_worker_keeps_the_fleet_version_under_a_canary_and_refuses_its_replay(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    processor = make_processor(routes=ROUTES)
    models = tmp_path / "models"
    follower = ModelFollower(processor, models, load_public_key(tiny_models.public_key))
    canary = _staged(v2, tiny_models.forecaster, key, 2)
    assert follower.handle(KEY, canary.to_json()) == "current"  # serves v1, the fleet version: nothing loaded
    assert processor.models.describe()[NAME] == 1 and follower.ledger.get(NAME) == canary.promotion
    assert not (models / NAME / "2").exists()
    assert active_version_dir(models, NAME, follower.public_key) == models / NAME / "1"  # a restart loads the fleet version
    assert follower.handle(KEY, signed_update(tiny_models.forecaster, key, 3, "rollback").to_json()) == "current"
    assert follower.handle(KEY, canary.to_json()) == "rejected"  # the replayed older canary record
    assert processor.models.describe()[NAME] == 1


def test_worker_returns_to_the_fleet_version_it_holds_or_refuses(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    v3 = make_version(tiny_models.forecaster, tmp_path / "v3", 3, key)
    processor = make_processor(routes=ROUTES)
    models = tmp_path / "models"
    follower = ModelFollower(processor, models, load_public_key(tiny_models.public_key))
    assert follower.handle(KEY, signed_update(v2, key, 1, inline=True).to_json()) == "loaded"
    assert processor.models.describe()[NAME] == 2
    # Staged v3 with v1 as the fleet version, v1 not in the worker's folder: refused, v2 keeps serving.
    assert follower.handle(KEY, _staged(v3, tiny_models.forecaster, key, 2, "group:eu").to_json()) == "rejected"
    ledger = PromotionLedger(models, follower.public_key).get(NAME)
    assert processor.models.describe()[NAME] == 2 and ledger is not None and ledger.sequence == 1
    install(models, tiny_models.forecaster, NAME, 1)
    assert follower.handle(KEY, _staged(v3, tiny_models.forecaster, key, 3, "group:eu").to_json()) == "loaded"
    assert processor.models.describe()[NAME] == 1 and not (models / NAME / "3").exists()


def _publish(kafka: KafkaSettings, topic: str, updates: list[ModelUpdate]) -> None:
    producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", max_request_size=2 * 1024 * 1024)
    try:
        for update in updates:
            producer.send(topic, key=update.key, value=update.to_json()).get(timeout=30)
    finally:
        producer.close()


def _other_bytes(source: Path, dest: Path, version: int, signing_key: Path) -> Path:
    """``version`` with a model file that differs from ``source``'s (so another sha256), signed."""
    folder = make_version(source, dest, version, signing_key)
    manifest = read_manifest(folder)
    model = folder / manifest.model_file
    model.write_bytes(model.read_bytes() + b"\0")
    changed = manifest.replace(sha256=hashlib.sha256(model.read_bytes()).hexdigest(), signature=None)
    write_manifest(sign_manifest(changed, load_private_key(signing_key)), folder)
    return folder


def test_new_worker_starts_under_a_canary_with_the_fleet_version_from_the_topic(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    key, v1 = tiny_models.signing_key, tiny_models.forecaster
    v2 = make_version(v1, tmp_path / "v2", 2, key)
    layout = make_topics(1)
    # v1, v2, rolled back to v1, then v2 staged to a canary share with v1 as the fleet version.
    canary = _staged(v2, v1, key, 4)
    _publish(kafka_settings, layout.model_updates, [
        signed_update(v1, key, 1, inline=True), signed_update(v2, key, 2, inline=True),
        signed_update(v1, key, 3, "rollback", inline=True), canary])
    model_dir = tmp_path / "models"  # a fresh worker: nothing installed (an emptyDir volume)
    settings = StreamSettings(routes=ROUTES, public_key=tiny_models.public_key, model_dir=model_dir,
                              topic_prefix=layout.prefix, data_dir=tmp_path / "data")
    worker = StreamWorker(settings, kafka_settings)
    worker.prepare()
    assert worker.models.describe() == {NAME: 1}
    # the ledger ends on the newest record
    assert PromotionLedger(model_dir, load_public_key(tiny_models.public_key)).get(NAME) == canary.promotion
    assert sorted(p.name for p in (model_dir / NAME).iterdir() if p.is_dir()) == ["1"]  # never the canary's v2
    restarted = StreamWorker(settings, kafka_settings)
    assert restarted.models.describe() == {NAME: 1}
    restarted.prepare()
    assert restarted.models.describe() == {NAME: 1}


def test_new_worker_refuses_a_canary_whose_fleet_record_is_gone_in_one_line(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    key, v1 = tiny_models.signing_key, tiny_models.forecaster
    v2 = make_version(v1, tmp_path / "v2", 2, key)
    layout = make_topics(1)
    # Left on the topic: a whole-fleet v1 whose bytes are not the ones the canary names, and the canary.
    _publish(kafka_settings, layout.model_updates, [
        signed_update(_other_bytes(v1, tmp_path / "v1x", 1, key), key, 1, inline=True), _staged(v2, v1, key, 2)])
    model_dir = tmp_path / "models"
    settings = StreamSettings(routes=ROUTES, public_key=tiny_models.public_key, model_dir=model_dir,
                              topic_prefix=layout.prefix, data_dir=tmp_path / "data")
    worker = StreamWorker(settings, kafka_settings)
    with pytest.raises(ConfigError) as refused:
        worker.prepare()
    message = str(refused.value)
    assert "\n" not in message and "staged record #2 keeps workers on v1" in message and "compacted" in message
    assert not (model_dir / NAME).exists() or not any((model_dir / NAME).iterdir())
    assert PromotionLedger(model_dir, load_public_key(tiny_models.public_key)).get(NAME) is None
