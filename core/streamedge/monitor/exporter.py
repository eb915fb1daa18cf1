"""The heartbeat exporter: follows the edge-telemetry topic and serves the fleet metrics on a Prometheus port.

Consumes without a consumer group (every partition assigned, from the oldest message kept unless
``from_beginning`` is off), so it never moves anyone's offsets and several exporters may run. Ages
come from each heartbeat's own send time, so reading old telemetry never makes a silent device look
alive. A Kafka error closes the consumer and reconnects after a pause (1 s, doubling up to 30 s),
resuming where it left off; the metrics endpoint keeps serving meanwhile (the ages keep growing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, start_http_server

from streamedge.errors import StreamedgeError
from streamedge.monitor.fleet import FleetCollector, FleetState

__all__ = ["ExporterError", "follow_telemetry", "registry", "serve"]

_log = logging.getLogger(__name__)
_RECONNECT_FIRST_S: Final = 1.0
_RECONNECT_MAX_S: Final = 30.0


class ExporterError(StreamedgeError):
    """Kafka refuses the exporter for good (authentication, authorisation, configuration)."""


def registry(state: FleetState, clock: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry holding only ``state``'s fleet metrics."""
    fleet = CollectorRegistry()
    fleet.register(FleetCollector(state, clock))
    return fleet


def serve(state: FleetState, host: str, port: int, clock: Callable[[], float] = time.time) -> int:
    """Serve ``state``'s metrics on ``http://host:port/metrics`` in a daemon thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry(state, clock))
    return int(server.server_port)


def _consumer(kafka_config: dict[str, Any], topic: str, positions: dict[Any, int], from_beginning: bool,
              stop: threading.Event) -> Any:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_config, group_id=None, enable_auto_commit=False, allow_auto_create_topics=False)
    while not stop.is_set():
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if partitions:
            consumer.assign(partitions)
            for tp in partitions:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                elif from_beginning:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek_to_end(tp)
            return consumer
        _log.warning("topic %s has no partitions yet (streamedge kafka topics creates it); waiting", topic)
        stop.wait(_RECONNECT_FIRST_S)
    consumer.close()
    return None


def follow_telemetry(state: FleetState, kafka_config: dict[str, Any], topic: str, stop: threading.Event, *,
                     from_beginning: bool = True, ready: threading.Event | None = None, until_end: bool = False) -> None:
    """Feed every message of ``topic`` into ``state`` until ``stop`` is set.

    Args:
        state: where the heartbeats go.
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        topic: the edge-telemetry topic.
        stop: set to return.
        from_beginning: start at the oldest message kept (else at the end: only new heartbeats).
        ready: set once the consumer is first positioned.
        until_end: return once the messages the topic held when the consumer was positioned are read.

    Raises:
        ExporterError: Kafka refuses the exporter for good.
    """
    from kafka.errors import AuthorizationError, KafkaConfigurationError, KafkaError, SaslAuthenticationFailedError

    consumer: Any = None
    positions: dict[Any, int] = {}
    ends: dict[Any, int] | None = None
    pause = _RECONNECT_FIRST_S
    try:
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = _consumer(kafka_config, topic, positions, from_beginning, stop)
                    if consumer is None:
                        return
                    if ready is not None:
                        ready.set()
                    if until_end and ends is None:
                        ends = consumer.end_offsets(list(consumer.assignment()))
                batches = consumer.poll(timeout_ms=500)
            except (AuthorizationError, SaslAuthenticationFailedError, KafkaConfigurationError) as exc:
                raise ExporterError(f"Kafka refuses the exporter on {topic}: {type(exc).__name__}: {exc}") from exc
            except (KafkaError, OSError) as exc:
                _log.warning("telemetry consumer of %s failed, reconnecting in %.0f s: %s", topic, pause, exc)
                if consumer is not None:
                    consumer.close()
                consumer = None
                stop.wait(pause)
                pause = min(pause * 2, _RECONNECT_MAX_S)
                continue
            pause = _RECONNECT_FIRST_S
            for tp, records in batches.items():
                for record in records:
                    state.observe(record.value)
                    positions[tp] = record.offset + 1
            if ends is not None and all(positions.get(tp, consumer.position(tp)) >= end for tp, end in ends.items()):
                return
    finally:
        if consumer is not None:
            consumer.close()
