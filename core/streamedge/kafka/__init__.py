"""Kafka plumbing shared by every component: client settings, topic layout, the local broker."""

from __future__ import annotations

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

__all__ = ["KafkaSettings", "TopicLayout"]
