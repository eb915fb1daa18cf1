"""``streamedge kafka up|down|status|topics|add-device|remove-device``: the local broker, the topic layout, devices.

``up --secure`` starts it with SASL_SSL and ACLs (:mod:`streamedge.kafka.security`); the state
folder then holds ``security/`` and ``down``/``status`` find it there. ``add-device`` and
``remove-device`` (run with the admin's ``--config``) give one device its own credential and ACLs
on a running secure broker, or take them away (:mod:`streamedge.kafka.devices`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, add_state_dir_option, kafka_settings, topic_layout
from streamedge.cli.options import option
from streamedge.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``kafka`` command group."""
    parser = subparsers.add_parser("kafka", help="run a local Kafka broker; create the topic layout")
    commands = parser.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _up, "start the local KRaft broker (or --brokers N node cluster) on 127.0.0.1 (no-op if running)"),
        ("down", _down, "stop the local broker or cluster"),
        ("status", _status, "exit 0 if the local broker (every node of a cluster) answers metadata, 1 if not"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        add_state_dir_option(sub)
        option(sub, "--port", type=int, default=9092, env="STREAMEDGE_KAFKA_PORT", help="client port on 127.0.0.1")
        option(sub, "--controller-port", type=int, default=9093, env="STREAMEDGE_KAFKA_CONTROLLER_PORT",
               help="KRaft controller port on 127.0.0.1 (single broker; a cluster uses the port after each node's)")
        option(sub, "--brokers", type=int, default=None, env="STREAMEDGE_KAFKA_BROKERS",
               help="nodes: 1 = single broker; 3 = a cluster of combined controller+broker nodes on "
                    "--port, --port+2, --port+4 (replication 3, min.insync.replicas 2). "
                    "down/status default to what up started in --state-dir")
        sub.set_defaults(handler=handler)
        if name == "up":
            option(sub, "--secure", action="store_true",
                   help="SASL_SSL (SCRAM-SHA-512) listeners and ACLs; writes the CA, credentials and one "
                        "--config file per principal under --state-dir/security (kept for later starts)")
            option(sub, "--topic-prefix", default="streamedge.", help="topic prefix the ACLs of --secure cover")
            option(sub, "--worker-group-prefix", default="streamedge-stream",
                   help="--secure: stream workers' app ids (consumer groups, Faust topics) start with this")
            option(sub, "--retrainer-group-prefix", default="streamedge-retrainer",
                   help="--secure: the retrainer's consumer group ('train watch --group-id') starts with this")
    topics = commands.add_parser("topics", help="create the topic layout (existing topics are kept)")
    add_kafka_options(topics)
    option(topics, "--partitions", type=int, default=6, help="partitions of the readings and result topics")
    option(topics, "--replication-factor", type=int, default=None,
           help="replicas per partition (default: 3 on a cluster of 3 or more brokers, else 1)")
    topics.set_defaults(handler=_topics)
    add = commands.add_parser(
        "add-device", help="secure broker: enrol a device and give it its own SCRAM user and ACLs",
        description="Create the device's SCRAM user on the running secure broker (admin --config), grant it "
                    "only what an edge agent needs, enrol it, and write OUT/DEVICE_ID.toml (its --config for "
                    "'edge run') and OUT/DEVICE_ID.key (its enrolment key), both 0600.")
    add.add_argument("device_id")
    add_kafka_options(add)
    option(add, "--enrolment", type=Path, required=True, env="STREAMEDGE_ENROLMENT",
           help="the fleet's enrolment file (kept by the operator; created 0600)")
    option(add, "--out", type=Path, required=True, help="folder for the device's config and key files")
    option(add, "--kafka-source", action="store_true", help="also let it read the readings topic (edge run --source kafka)")
    add.set_defaults(handler=_add_device)
    remove = commands.add_parser("remove-device", help="secure broker: delete a device's SCRAM user and its ACLs",
                                 description="Delete the device's SCRAM user and every ACL of its principal; "
                                             "its next login is refused.")
    remove.add_argument("device_id")
    add_kafka_options(remove)
    remove.set_defaults(handler=_remove_device)


def _broker(args: argparse.Namespace) -> Any:
    """The single broker, or the cluster that ``--brokers`` (else ``cluster.json``) asks for."""
    from streamedge.kafka.broker import LocalBroker
    from streamedge.kafka.cluster import LocalCluster, read_cluster_file
    from streamedge.kafka.security import BrokerSecurity

    brokers, port = args.brokers, args.port
    known = read_cluster_file(args.state_dir)
    if brokers is None and known is not None:
        brokers, port = int(str(known["brokers"])), int(str(known["port"]))
    folder = args.state_dir / "security"
    secure = getattr(args, "secure", False)
    formatted = [*args.state_dir.glob("data/meta.properties"), *args.state_dir.glob("node-*/data/meta.properties")]
    if secure and not BrokerSecurity.exists(folder) and formatted:
        raise ConfigError(f"{args.state_dir} was formatted without --secure (its SCRAM users are made at format "
                          "time): use a new --state-dir")
    security = BrokerSecurity.ensure(folder) if secure or BrokerSecurity.exists(folder) else None
    if brokers is not None and brokers > 1:
        return LocalCluster(args.state_dir, brokers=brokers, port=port, security=security)
    return LocalBroker(args.state_dir, port=args.port, controller_port=args.controller_port, security=security)


def _up(args: argparse.Namespace) -> int:
    broker = _broker(args)
    status = broker.up()
    print(status.detail)
    if broker.security is not None:
        from streamedge.kafka.acls import grant_acls
        from streamedge.kafka.topics import TopicLayout

        security = broker.security
        grants = grant_acls(security.client_settings("admin", status.bootstrap), TopicLayout(prefix=args.topic_prefix),
                            args.worker_group_prefix, retrainer_group_prefix=args.retrainer_group_prefix)
        configs = security.write_client_configs(status.bootstrap)
        print(f"SASL_SSL (SCRAM-SHA-512) with {len(grants)} ACLs on {args.topic_prefix}*; CA {security.cafile}")
        print(f"client configs (streamedge --config FILE): {', '.join(str(path) for path in configs)}")
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
    from streamedge.kafka.login import access_errors, check_login
    from streamedge.kafka.topics import TopicLayout, create_topics, default_replication

    layout = TopicLayout(prefix=topic_layout(args).prefix, partitions=args.partitions)
    settings = kafka_settings(args)
    check_login(settings)  # a wrong password is one line here, not the admin client's timeout
    with access_errors(settings):
        replicas = args.replication_factor if args.replication_factor is not None else default_replication(settings)
        created = create_topics(settings, layout, replicas)
    for spec in layout.specs():
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:40s} partitions={spec.partitions:<3d} {spec.configs['cleanup.policy']:8s} {state}")
    return 0


def _add_device(args: argparse.Namespace) -> int:
    from streamedge.contracts.identity import enrol, load_enrolment
    from streamedge.kafka.devices import add_device, device_user, write_device_config
    from streamedge.kafka.security import write_secret

    device_user(args.device_id)  # a bad id is refused before the broker is touched
    if args.enrolment.exists() and args.device_id in load_enrolment(args.enrolment).keys:
        raise ConfigError(f"{args.device_id} is enrolled already in {args.enrolment}")
    device = add_device(kafka_settings(args), topic_layout(args), args.device_id, kafka_source=args.kafka_source)
    args.out.mkdir(parents=True, exist_ok=True)
    key_file, config = args.out / f"{args.device_id}.key", args.out / f"{args.device_id}.toml"
    write_secret(key_file, enrol(args.enrolment, args.device_id).hex().encode() + b"\n")
    write_device_config(config, device, args.device_id, key_file)
    print(f"{args.device_id}: Kafka user {device.sasl_username}, enrolled in {args.enrolment}; "
          f"give the device {config} (edge run --config) and {key_file}")
    return 0


def _remove_device(args: argparse.Namespace) -> int:
    from streamedge.kafka.devices import device_user, remove_device

    removed = remove_device(kafka_settings(args), args.device_id)
    print(f"{args.device_id}: Kafka user {device_user(args.device_id)} and {removed} ACL(s) removed")
    return 0
