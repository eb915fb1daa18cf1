"""Hostile retrain requests: every one ends as an outcome, is committed, and labels stay bounded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry

from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.training.retrain import Retrainer, RetrainError, RetrainMetrics, parse_request, serve
from tests.services.helpers import produce
from tests.services.hostile import hostile_payloads, known_bad

ROUTES = {"s": ["plant-lstm"]}


@pytest.fixture
def make_retrainer(tmp_path: Path) -> Callable[[KafkaSettings, TopicLayout], tuple[Retrainer, CollectorRegistry]]:
    generate_keypair(tmp_path / "signing.pem", tmp_path / "public.pem")

    def _make(kafka: KafkaSettings, layout: TopicLayout) -> tuple[Retrainer, CollectorRegistry]:
        registry = CollectorRegistry()
        retrainer = Retrainer(ModelRegistry(tmp_path / "registry"), load_private_key(tmp_path / "signing.pem"),
                              load_public_key(tmp_path / "public.pem"), kafka, layout, ROUTES, tmp_path / "work",
                              metrics=RetrainMetrics(registry))
        return retrainer, registry

    return _make


def _labels(registry: CollectorRegistry) -> set[str]:
    return {sample.labels["model"] for metric in registry.collect() for sample in metric.samples
            if sample.name == "streamedge_retrain_outcomes_total"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=hostile_payloads)
def test_parse_request_raises_only_retrain_error(payload: bytes | None) -> None:
    try:
        model, version, trigger = parse_request(payload)
    except RetrainError:
        return
    assert model and version >= 1 and isinstance(trigger, str)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(payload=hostile_payloads)
def test_any_request_ends_in_an_outcome_with_a_bounded_label(
        make_retrainer: Callable[[KafkaSettings, TopicLayout], tuple[Retrainer, CollectorRegistry]],
        payload: bytes | None) -> None:
    retrainer, registry = make_retrainer(KafkaSettings(), TopicLayout(prefix="unused."))
    outcome = retrainer.handle(payload)
    assert outcome.outcome in ("invalid", "failed")
    assert _labels(registry) <= {"-", "other", "plant-lstm"}


def test_hostile_requests_on_the_topic_are_committed_and_never_stop_the_retrainer(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        make_retrainer: Callable[[KafkaSettings, TopicLayout], tuple[Retrainer, CollectorRegistry]]) -> None:
    from kafka import KafkaConsumer, TopicPartition

    layout = make_topics(1)
    hostile = [payload for _, payload in known_bad()]
    hostile += [json.dumps({"model": "../../etc", "version": 1}).encode(),
                json.dumps({"model": "x", "version": int("9" * 400)}).encode()]
    # Distinct, well-formed but unknown model names: each would have been its own metric series.
    hostile += [json.dumps({"model": f"invented-{i}", "version": 1, "trigger": "drift"}).encode() for i in range(50)]
    produce(kafka_settings, layout.retrain_requests, [(b"\xff\xfe", payload) for payload in hostile])
    retrainer, registry = make_retrainer(kafka_settings, layout)

    outcomes = serve(retrainer, "retrainer-hostile", max_requests=len(hostile), poll_s=0.5)
    assert [o.outcome for o in outcomes] == ["invalid"] * 11 + ["failed"] * 50
    assert _labels(registry) == {"-", "other"}
    assert registry.get_sample_value("streamedge_retrain_outcomes_total", {"model": "other", "outcome": "failed"}) == 50
    reader = KafkaConsumer(**kafka_settings.kafka_python_config(), group_id="retrainer-hostile",
                           enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(layout.retrain_requests, 0)) == len(hostile)
    finally:
        reader.close()
