"""The topic layout: names, partitions and cleanup policies, created by one command.

Partitions are the unit of parallelism: a consumer group can use at most as many workers as
the readings topic has partitions, so readings and results default to 6. Model updates are a
compacted topic keyed by model name, so a new subscriber reads the latest version of each.

The topics devices write (readings, edge results, edge telemetry) are ``compression.type=uncompressed``:
the broker re-encodes a compressed batch and checks the result against ``max.message.bytes``, so a
gzip bomb is refused at produce time instead of being decompressed whole by every consumer
(docs/stream.md, "Compressed records"). Uncompressed batches, what the project's producers send,
are appended as they are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from streamedge.kafka.settings import KafkaSettings

__all__ = ["TopicLayout", "TopicSpec", "create_topics", "default_replication"]

_WEEK_MS: Final = 7 * 24 * 3600 * 1000
_CREATE_ATTEMPTS: Final = 5
_RETRY_PAUSE_S: Final = 1.0


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partition count and topic-level configs."""

    name: str
    partitions: int
    configs: dict[str, str]


@dataclass(frozen=True)
class TopicLayout:
    """Topic names under one prefix (``streamedge.`` by default; tests use a unique one)."""

    prefix: str = "streamedge."
    partitions: int = 6

    @property
    def readings(self) -> str:
        return f"{self.prefix}readings"

    @property
    def forecasts(self) -> str:
        return f"{self.prefix}forecasts"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}anomalies"

    @property
    def classifications(self) -> str:
        return f"{self.prefix}classifications"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    @property
    def model_updates(self) -> str:
        return f"{self.prefix}model-updates"

    @property
    def retrain_requests(self) -> str:
        return f"{self.prefix}retrain-requests"

    @property
    def edge_results(self) -> str:
        return f"{self.prefix}edge-results"

    @property
    def edge_telemetry(self) -> str:
        return f"{self.prefix}edge-telemetry"

    def specs(self) -> list[TopicSpec]:
        """Every topic of the layout with its partitions and configs."""
        week = {"cleanup.policy": "delete", "retention.ms": str(_WEEK_MS)}
        month = {"cleanup.policy": "delete", "retention.ms": str(4 * _WEEK_MS)}
        compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
        # Written by devices: a compressed batch is re-encoded and size-checked by the broker.
        untrusted = {"compression.type": "uncompressed"}
        n = self.partitions
        return [
            # The broker stamps readings as it appends them: idle expiry and the window rebuild run
            # on message time, which a device's clock or a forged future stamp must not drive.
            TopicSpec(self.readings, n, {**week, **untrusted, "message.timestamp.type": "LogAppendTime"}),
            TopicSpec(self.forecasts, n, week),
            TopicSpec(self.anomalies, n, month),
            TopicSpec(self.classifications, n, week),
            TopicSpec(self.dead_letters, max(1, n // 2), month),
            TopicSpec(self.model_updates, 1, compacted),
            TopicSpec(self.retrain_requests, 1, month),
            TopicSpec(self.edge_results, n, {**week, **untrusted}),
            TopicSpec(self.edge_telemetry, max(1, n // 2), {**week, **untrusted}),
        ]


def default_replication(settings: KafkaSettings) -> int:
    """Replicas per partition for the cluster ``settings`` reach: 3 with 3 brokers or more, else 1."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka_python_config())
    try:
        brokers = len(admin.describe_cluster()["brokers"])
    finally:
        admin.close()
    return 3 if brokers >= 3 else 1


def create_topics(settings: KafkaSettings, layout: TopicLayout, replication_factor: int = 1) -> list[str]:
    """Create the layout's missing topics; returns the names created (existing ones are kept).

    With 3 replicas or more every topic also gets ``min.insync.replicas=2``: an ``acks=all``
    write (every producer of the project uses it) is then on two brokers before it is
    acknowledged, so losing any one broker loses no acknowledged message.

    A cluster that has just started or lost a node may name a controller the client has no
    address for yet, or move it mid-request: such answers are retried with a fresh client, up
    to ``_CREATE_ATTEMPTS`` times; the last one's error is raised.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import RetriableError, UnknownBrokerIdError
    from streamedge.kafka.broker import min_insync_replicas

    durability = {"min.insync.replicas": str(min_insync_replicas(replication_factor))}
    created: list[str] = []
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        admin = KafkaAdminClient(**settings.kafka_python_config())
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(spec.name, spec.partitions, replication_factor, topic_configs={**spec.configs, **durability})
                for spec in layout.specs()
                if spec.name not in existing
            ]
            created += [topic.name for topic in new if topic.name not in created]
            if new:
                admin.create_topics(new, wait_for_metadata=True)  # usable as soon as this returns
            return created
        except (RetriableError, UnknownBrokerIdError):
            if attempt == _CREATE_ATTEMPTS:
                raise
        finally:
            admin.close()
        time.sleep(_RETRY_PAUSE_S)
    raise AssertionError("unreachable: the last attempt returns or raises")
