"""``streamedge results tail``: read a results topic as lines a person can read (or as JSON lines).

Reads from the oldest message kept (or only new ones with ``--new``) up to the end offsets taken at
the start, then exits, unless ``--follow``. Consumes without a group, so it never moves the
offsets of a worker or an agent. A message that is not JSON is still shown, as its size.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, Final

from streamedge.cli.common import add_kafka_options, kafka_settings, topic_layout
from streamedge.cli.options import option
from streamedge.kafka.settings import KafkaSettings

__all__ = ["register"]

_TOPICS: Final = ("forecasts", "anomalies", "classifications", "dead-letters", "edge-results")
# Shown by the human format for every message; the rest of a result is printed compactly.
_LEAVE_OUT: Final = frozenset({"type", "key", "device_id", "stream", "seq", "samples", "ts", "source", "model",
                               "produced_at", "idempotency_key"})
_WIDTH: Final = 160


def register(subparsers: Any) -> None:
    """Add the ``results`` command group."""
    parser = subparsers.add_parser("results", help="read the results topics (forecasts, anomalies, ...)")
    commands = parser.add_subparsers(dest="results_command", metavar="ACTION", required=True)
    tail = commands.add_parser("tail", help="print the messages of a results topic, one line each",
                               description="Print a results topic's messages, oldest first, then exit "
                                           "(--follow: keep waiting for new ones).")
    add_kafka_options(tail)
    option(tail, "--topic", choices=_TOPICS, default="forecasts", env="STREAMEDGE_RESULTS_TOPIC",
           help="which results topic")
    option(tail, "--device", default=None, env="STREAMEDGE_RESULTS_DEVICE", help="only this device id")
    option(tail, "--json", action="store_true", default=False, env="STREAMEDGE_RESULTS_JSON",
           help="print each message's JSON as is, one per line")
    option(tail, "--max", dest="max_messages", type=int, default=0, env="STREAMEDGE_RESULTS_MAX",
           help="stop after this many messages shown (0: no limit)")
    option(tail, "--new", action="store_true", default=False, env="STREAMEDGE_RESULTS_NEW",
           help="skip the messages already in the topic")
    option(tail, "--follow", action="store_true", default=False, env="STREAMEDGE_RESULTS_FOLLOW",
           help="keep waiting for new messages (Ctrl-C stops)")
    tail.set_defaults(handler=_tail)


def _device(key: bytes | None, body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("device_id"), str):
        return str(body["device_id"])
    if isinstance(body, dict) and isinstance(body.get("key"), str) and "reason" in body:
        key = base64.b64decode(body["key"]) if body.get("key") else key  # a dead letter's original key
    text = key.decode("utf-8", "replace") if key else None
    return text.split("/", 1)[0] if text else None


def _line(topic: str, key: bytes | None, body: Any, size: int) -> str:
    if not isinstance(body, dict):
        return f"{topic}  (not a JSON object, {size} bytes)"
    if "reason" in body and "original_size" in body:
        sample = f" sample={body['sample']}" if "sample" in body else ""
        return f"{topic}  {_device(key, body)}  {body['reason']}{sample}: {body.get('detail', '')}"[:_WIDTH]
    seq = body.get("seq", body.get("first_seq"))
    span = f"seq={seq}" + (f"+{body['samples']}" if isinstance(body.get("samples"), int) else "")
    model = body.get("model")
    named = f"  {model.get('name')} v{model.get('version')}" if isinstance(model, dict) else ""
    stamp = body.get("ts")
    when = f"  {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(stamp))}" if isinstance(stamp, int | float) else ""
    rest = json.dumps({k: v for k, v in body.items() if k not in _LEAVE_OUT}, separators=(",", ":"))
    return f"{body.get('type', topic)}  {body.get('key', _device(key, body))}  {span}{when}{named}  {rest}"[:_WIDTH]


def _records(kafka: KafkaSettings, topic: str, new: bool, follow: bool) -> Iterator[Any]:
    from kafka import KafkaConsumer, TopicPartition

    from streamedge.errors import ConfigError

    # No topic creation: a mistyped prefix must not make a new topic on a broker that creates on first use.
    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=None, enable_auto_commit=False,
                             allow_auto_create_topics=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist on {kafka.bootstrap_servers}; check --topic-prefix")
        consumer.assign(partitions)
        (consumer.seek_to_end if new else consumer.seek_to_beginning)()
        ends = {tp: end for tp, end in consumer.end_offsets(partitions).items()
                if end > consumer.position(tp)}
        while follow or ends:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    yield record
                    if tp in ends and record.offset + 1 >= ends[tp]:
                        del ends[tp]
    finally:
        consumer.close()


def _tail(args: argparse.Namespace) -> int:
    layout = topic_layout(args)
    topic = getattr(layout, args.topic.replace("-", "_"))
    shown = 0
    for record in _records(kafka_settings(args), topic, args.new, args.follow):
        try:
            body: Any = json.loads(record.value) if record.value is not None else None
        except ValueError:
            body = None
        if args.device is not None and _device(record.key, body) != args.device:
            continue
        if args.json:
            print(record.value.decode("utf-8", "replace") if record.value is not None else "null")
        else:
            print(_line(args.topic, record.key, body, len(record.value or b"")))
        sys.stdout.flush()
        shown += 1
        if args.max_messages and shown >= args.max_messages:
            break
    return 0
