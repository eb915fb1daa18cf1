"""Issue 25: "latency measured from the broker's append time (or ingest) ... alerts use the former".

The worker's end-to-end histogram takes each record's Kafka timestamp, which is the broker's append
time only when the readings topic says ``message.timestamp.type=LogAppendTime``. A readings topic
that already exists with the broker's default (CreateTime: created by an earlier version, or
auto-created by the first producer) is kept as it is by ``streamedge kafka topics``, so the
latency (and its p99 alert) silently goes back to the producer's clock.
"""

from __future__ import annotations

import uuid

from streamedge.cli.main import main
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout


def _timestamp_type(kafka: KafkaSettings, topic: str) -> str:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(**kafka.kafka_python_config())
    try:
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    text = repr(result)
    return "LogAppendTime" if "LogAppendTime" in text else "CreateTime"


def test_kafka_topics_leaves_no_readings_topic_on_the_producers_clock(kafka_settings: KafkaSettings) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    layout = TopicLayout(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=3)
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:  # as the broker's auto-create (or an earlier version) left it
        admin.create_topics([NewTopic(layout.readings, 3, 1)])
    finally:
        admin.close()
    code = main(["kafka", "topics", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", layout.prefix])
    if code != 0:
        return  # refused, saying why: fine
    assert _timestamp_type(kafka_settings, layout.readings) == "LogAppendTime", \
        "'kafka topics' exits 0 and the worker's latency is taken from the producer's clock"
