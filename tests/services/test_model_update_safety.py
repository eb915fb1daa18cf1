"""The worker's model-update path: hostile messages stop nothing, replays are refused, rollbacks survive restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from streamedge.contracts.signing import load_public_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.app import StreamWorker
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


def _hostile(tiny_models: TinyModels) -> list[tuple[bytes | None, bytes | None]]:
    valid = json.loads(signed_update(tiny_models.forecaster, tiny_models.signing_key, 50).to_json())
    valid["manifest"]["normalisation"]["mean"] = [10**400]
    return [
        (b"\xff\xfe\xfd", b'{"name": "x"}'),  # non-UTF-8 key
        (KEY, b"[" * 100_000),
        (KEY, json.dumps(valid).encode()),  # 400-digit number in the manifest
        (KEY, None),
        (b"\xc3\x28", signed_update(tiny_models.forecaster, tiny_models.signing_key, 60).to_json()),
    ]


def test_follower_refuses_hostile_and_stale_updates(make_processor: Callable[..., Processor],
                                                    tiny_models: TinyModels, tmp_path: Path) -> None:
    processor = make_processor(routes=ROUTES)
    follower = ModelFollower(processor, tmp_path / "models", load_public_key(tiny_models.public_key))
    for key, value in _hostile(tiny_models):  # under a key that is no routed model: not even decoded
        assert follower.handle(key, value) == ("rejected" if key == KEY else "ignored")
    assert processor.models.describe()[NAME] == 1
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    promote_v2 = signed_update(v2, tiny_models.signing_key, 2, inline=True)
    assert follower.handle(KEY, promote_v2.to_json()) == "loaded"
    assert follower.handle(KEY, signed_update(tiny_models.forecaster, tiny_models.signing_key, 3, "rollback")
                           .to_json()) == "loaded"
    assert follower.handle(KEY, promote_v2.to_json()) == "rejected"  # replay of the rolled-back version
    assert processor.models.describe()[NAME] == 1
    rejected = processor.metrics.registry.get_sample_value(
        "streamedge_stream_model_reloads_total", {"model": "unparsable", "outcome": "rejected"})
    assert rejected == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.none(), st.binary(max_size=20), st.just(KEY)),
       value=st.one_of(st.none(), st.binary(max_size=400), st.sampled_from([b"[" * 5000, b"1" * 400, b"{}"])),
       field=st.sampled_from(["version", "manifest", "promotion", "inline", "uri", "action"]),
       junk=st.one_of(st.integers(min_value=-(10**400), max_value=10**400), st.text(max_size=8), st.none()))
def test_follower_survives_any_message(make_processor: Callable[..., Processor], tiny_models: TinyModels,
                                       tmp_path: Path, key: bytes | None, value: bytes | None, field: str,
                                       junk: object) -> None:
    processor = make_processor(routes=ROUTES)
    follower = ModelFollower(processor, tmp_path / "models", load_public_key(tiny_models.public_key))
    # arbitrary bytes: refused (ignored undecoded under another key), never raised
    assert follower.handle(key, value) == ("rejected" if key == KEY else "ignored")
    body = json.loads(signed_update(tiny_models.forecaster, tiny_models.signing_key, 2).to_json())
    body[field] = junk
    assert follower.handle(key, json.dumps(body).encode()) in ("rejected", "current", "ignored")
    assert processor.models.describe()[NAME] == 1
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("model.tflite"))


def _publish(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", max_request_size=2 * 1024 * 1024)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def test_worker_starts_through_hostile_messages_and_restarts_on_the_rollback(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(1)
    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, NAME)
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    promote_v2 = signed_update(v2, key, 2)
    _publish(kafka_settings, layout.model_updates, [
        *_hostile(tiny_models), (KEY, promote_v2.to_json()),
        (KEY, signed_update(tiny_models.forecaster, key, 3, "rollback").to_json()),
        (KEY, promote_v2.to_json()),  # a replay after the rollback, the last message of its key
    ])
    settings = StreamSettings(routes=ROUTES, public_key=tiny_models.public_key, model_dir=model_dir,
                              topic_prefix=layout.prefix, data_dir=tmp_path / "data")
    first = StreamWorker(settings, kafka_settings)
    first.prepare()  # used to raise UnicodeDecodeError / RecursionError / OverflowError
    assert first.models.describe() == {NAME: 1}
    install(model_dir, v2, NAME, 2)  # v2 on disk too: the highest version is not the promoted one
    restarted = StreamWorker(settings, kafka_settings)
    assert restarted.models.describe() == {NAME: 1}  # loaded from disk before any catch-up
    restarted.prepare()
    assert restarted.models.describe() == {NAME: 1}
