"""``streamedge kafka up|down|status|topics``: the local broker and the topic layout."""

from __future__ import annotations

import argparse
from typing import Any

from streamedge.cli.common import add_kafka_options, add_state_dir_option, kafka_settings, topic_layout
from streamedge.cli.options import option

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``kafka`` command group."""
    parser = subparsers.add_parser("kafka", help="run a local Kafka broker; create the topic layout")
    commands = parser.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _up, "start the local single-node KRaft broker on 127.0.0.1 (no-op if running)"),
        ("down", _down, "stop the local broker"),
        ("status", _status, "exit 0 if the local broker answers metadata, 1 if not"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        add_state_dir_option(sub)
        option(sub, "--port", type=int, default=9092, env="STREAMEDGE_KAFKA_PORT", help="client port on 127.0.0.1")
        option(sub, "--controller-port", type=int, default=9093, env="STREAMEDGE_KAFKA_CONTROLLER_PORT",
               help="KRaft controller port on 127.0.0.1")
        sub.set_defaults(handler=handler)
    topics = commands.add_parser("topics", help="create the topic layout (existing topics are kept)")
    add_kafka_options(topics)
    option(topics, "--partitions", type=int, default=6, help="partitions of the readings and result topics")
    option(topics, "--replication-factor", type=int, default=1, help="replicas per partition (1 for a local broker)")
    topics.set_defaults(handler=_topics)


def _broker(args: argparse.Namespace) -> Any:
    from streamedge.kafka.broker import LocalBroker

    return LocalBroker(args.state_dir, port=args.port, controller_port=args.controller_port)


def _up(args: argparse.Namespace) -> int:
    status = _broker(args).up()
    print(status.detail)
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = _broker(args).down()
    print("stopped" if stopped else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _broker(args).status()
    print(status.detail)
    return 0 if status.running else 1


def _topics(args: argparse.Namespace) -> int:
    from streamedge.kafka.topics import TopicLayout, create_topics

    layout = TopicLayout(prefix=topic_layout(args).prefix, partitions=args.partitions)
    created = create_topics(kafka_settings(args), layout, args.replication_factor)
    for spec in layout.specs():
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:40s} partitions={spec.partitions:<3d} {spec.configs['cleanup.policy']:8s} {state}")
    return 0
