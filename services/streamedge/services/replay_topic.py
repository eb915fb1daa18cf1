"""What ``stream replay`` asks the readings topic before it writes: does the topic exist, and where
does each device's numbering stand.

A mistyped ``--topic-prefix`` must not create a new topic on a broker that creates topics on first
use: :func:`require_topic` only reads metadata. :func:`last_seqs` reads the partitions the keys
hash to (the Java/kafka-python murmur2 partitioner every producer of the project uses), from the
beginning to the end offsets taken at the start, so it ends even while producers keep writing.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.replay import next_seq

__all__ = ["last_seqs", "require_topic"]

_NEW_TOPIC_WAIT_S = 5.0


def require_topic(kafka: KafkaSettings, topic: str) -> None:
    """Raise unless ``topic`` exists.

    Raises:
        ConfigError: it does not; the message names the prefixes that do exist.
    """
    import time

    from kafka import KafkaConsumer

    # No group: nothing to commit (auto-commit on would log kafka-python's "group_id is None" WARNING).
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False)
    try:
        # A topic created a moment ago (`kafka topics` just before) may not be in every broker's
        # metadata yet: ask again for a few seconds before calling it missing.
        deadline = time.monotonic() + _NEW_TOPIC_WAIT_S
        topics = consumer.topics()
        while topic not in topics and time.monotonic() < deadline:
            time.sleep(0.2)
            topics = consumer.topics()
    finally:
        consumer.close()
    if topic in topics:
        return
    suffix = topic.rsplit(".", 1)[-1]
    prefixes = sorted(t[: -len(suffix)] for t in topics if t.endswith("." + suffix))
    raise ConfigError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}; check --topic-prefix "
                      f"(prefixes with a {suffix} topic: {prefixes or 'none'}) or create the topics with "
                      "'streamedge kafka topics'")


def last_seqs(kafka: KafkaSettings, topic: str, keys: Sequence[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Key -> the seq after the last message of that key in ``topic``; keys with no message are absent.

    Raises:
        ConfigError: the topic has no partitions (it does not exist).
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2

    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=int(timeout_s * 1000), allow_auto_create_topics=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}")
        wanted = {TopicPartition(topic, partitions[(murmur2(k.encode()) & 0x7FFFFFFF) % len(partitions)])
                  for k in keys}
        consumer.assign(sorted(wanted))
        consumer.seek_to_beginning()
        ends = {tp: end for tp, end in consumer.end_offsets(list(wanted)).items() if end > 0}
        found: dict[str, int] = {}
        if not ends:  # nothing to read: iterating would wait out the consumer timeout
            return found
        names = set(keys)
        for record in consumer:
            tp = TopicPartition(record.topic, record.partition)
            key = record.key.decode("utf-8", "replace") if record.key else ""
            following = next_seq(record.value) if key in names else None
            if following is not None:
                found[key] = max(found.get(key, 0), following)
            if tp in ends and record.offset + 1 >= ends[tp]:
                del ends[tp]
            if not ends:
                break
        return found
    finally:
        consumer.close()
