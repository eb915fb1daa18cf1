"""Publish model updates to the compacted model-updates topic."""

from __future__ import annotations

from streamedge.contracts.model_update import ModelUpdate
from streamedge.kafka.login import access_errors, check_login
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

__all__ = ["publish_model_update"]


def publish_model_update(settings: KafkaSettings, layout: TopicLayout, update: ModelUpdate, timeout: float = 30.0) -> None:
    """Send ``update`` keyed by model name and wait for the broker's acknowledgement.

    Raises:
        KafkaLoginError: the SASL credentials were refused (checked before the producer starts).
        KafkaAccessError: the user may not write to the model-updates topic.
    """
    from kafka import KafkaProducer

    check_login(settings, timeout)
    with access_errors(settings):
        producer = KafkaProducer(**settings.kafka_python_config(), acks="all")
        try:
            producer.send(layout.model_updates, key=update.key, value=update.to_json()).get(timeout=timeout)
        finally:
            producer.close(timeout=timeout)
