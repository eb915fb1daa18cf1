"""``streamedge edge run|status|rollback|install|enrol``: the device agent and its local model folder.

Every :class:`~edge.settings.EdgeSettings` field is a flag (``--device-id``, ``--buffer-path``, ...)
and an env var (``STREAMEDGE_EDGE_DEVICE_ID``, ...); Kafka TLS/SASL come from
``STREAMEDGE_KAFKA_*`` or the config file's ``[kafka]`` table. Light at import time: the agent,
numpy and the TFLite runtime load only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from streamedge.cli.common import add_kafka_options, build_settings, kafka_settings, topic_layout
from streamedge.cli.options import option

__all__ = ["register"]


def _add_settings_options(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    from streamedge.edge.settings import EdgeSettings

    for name, info in EdgeSettings.model_fields.items():
        if only is not None and name not in only:
            continue
        default = info.get_default(call_default_factory=True)
        shown = f" (default: {default})" if default not in (None, "") else ""
        option(parser, f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE",
               env=f"STREAMEDGE_EDGE_{name.upper()}", help=f"{info.description}{shown}")


def register(subparsers: Any) -> None:
    """Add the ``edge`` command group."""
    parser = subparsers.add_parser("edge", help="run the edge agent; manage the device's model folder")
    commands = parser.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run = commands.add_parser("run", help="serve the active model on a source; buffer and forward results",
                              description="Serve the active model on readings from a source; results go to a "
                                          "durable buffer and on to Kafka when it is reachable.")
    _add_settings_options(run)
    add_kafka_options(run)
    run.set_defaults(handler=_run)
    local = ("model_dir", "model_name", "public_key", "buffer_path")
    for name, handler, text in (
        ("status", _status, "print the active model, local versions and buffer state as JSON"),
        ("rollback", _rollback, "make the previous local version active again (a running agent follows)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        _add_settings_options(sub, local)
        sub.set_defaults(handler=handler)
    install = commands.add_parser("install", help="verify a signed model folder, copy it in and activate it")
    install.add_argument("source_dir", help="folder with manifest.json and the model file")
    install.add_argument("--promotion", default=None, metavar="FILE",
                         help="the signed promotion record of this version (default: the registry's "
                              "promotions.json beside SOURCE_DIR, when there is one); seeds the ledger")
    _add_settings_options(install, local)
    install.set_defaults(handler=_install)
    enrol = commands.add_parser("enrol", help="enrol a device: add it with a fresh telemetry key to the enrolment "
                                              "file, and write that key for the device")
    enrol.add_argument("device_id")
    enrol.add_argument("--enrolment", required=True, help="the fleet's enrolment file (kept by the operator)")
    enrol.add_argument("--key-out", required=True, help="where to write the device's key (give it to the device "
                                                        "as --device-key-file)")
    enrol.set_defaults(handler=_enrol)


def _settings(args: argparse.Namespace) -> Any:
    from streamedge.edge.settings import EdgeSettings

    values = {name: getattr(args, name) for name in EdgeSettings.model_fields if getattr(args, name, None) is not None}
    return build_settings(EdgeSettings, "edge", **values)


def _store(settings: Any) -> Any:
    from streamedge.contracts.signing import load_public_key
    from streamedge.edge.models import ModelStore
    from streamedge.errors import ConfigError

    if settings.public_key is None:
        raise ConfigError("a trusted public key is needed: --public-key or STREAMEDGE_EDGE_PUBLIC_KEY")
    return ModelStore(settings.model_dir, load_public_key(settings.public_key))


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from streamedge.edge.agent import EdgeAgent
    from streamedge.edge.logs import configure_logging
    from streamedge.edge.sources import open_source

    settings = _settings(args)
    configure_logging(settings.log_format, args.log_level)
    kafka, layout = kafka_settings(args), topic_layout(args)
    store = _store(settings)
    source = open_source(settings, kafka.kafka_python_config(), layout.readings)
    registry = CollectorRegistry()
    agent = EdgeAgent(settings, kafka, layout, source, store.public_key, registry)
    server = None
    if settings.metrics_port:
        try:
            server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
        except OSError as exc:  # monitoring never stops scoring: the port is taken, the host unknown
            logging.getLogger("streamedge.edge").error(
                "metrics endpoint %s:%d not served (%s); scoring goes on without it", settings.metrics_host,
                settings.metrics_port, exc, extra={"reason": "metrics_port"})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        drained = agent.run(stop)
    finally:
        if server is not None:
            server.shutdown()
    return 0 if drained or stop.is_set() else 3


def _status(args: argparse.Namespace) -> int:
    from streamedge.edge.buffer import Outbox

    settings = _settings(args)
    store = _store(settings)
    name = store.resolve_name(settings.model_name)
    from streamedge.contracts.promotion import PromotionLedger

    record = PromotionLedger(settings.model_dir, store.public_key).get(name)
    report: dict[str, Any] = {"model": name, "active": store.active_version(name),
                              "previous": store.previous_version(name), "versions": store.versions(name),
                              "promotion": ({"sequence": record.sequence, "version": record.version,
                                             "action": record.action} if record else None)}
    if settings.buffer_path.is_file():
        outbox = Outbox(settings.buffer_path, settings.buffer_max_bytes, settings.buffer_max_age_s)
        stats = outbox.stats()
        outbox.close()
        report["buffer"] = {"depth": stats.depth, "bytes": stats.bytes, "oldest_age_s": round(stats.oldest_age_s, 3),
                            "dropped": stats.dropped, "next_seq": stats.next_seq}
    print(json.dumps(report, indent=2))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    name = store.resolve_name(settings.model_name)
    version = store.rollback(name)
    print(f"{name}: v{version} is active")
    return 0


def _install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streamedge.contracts.promotion import PromotionLedger
    from streamedge.edge.models import install_record
    from streamedge.errors import StreamedgeError

    settings = _settings(args)
    store = _store(settings)
    source = Path(args.source_dir)
    manifest = store.install(source)
    print(f"{manifest.name}: v{manifest.version} installed and active")
    promotions = Path(args.promotion) if args.promotion else source.resolve().parent / "promotions.json"
    if args.promotion is None and not promotions.is_file():
        print("no promotion record beside it: the agent learns the current one from the model-updates topic")
        return 0
    try:
        record = install_record(manifest, promotions, store.public_key)
    except StreamedgeError as exc:
        print(f"ledger not seeded: {exc}", file=sys.stderr)
        return 1 if args.promotion else 0
    PromotionLedger(settings.model_dir, store.public_key).accept(record)
    print(f"promotion #{record.sequence} recorded: older records on the topic are refused as stale")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streamedge.contracts.identity import enrol, write_private

    key = enrol(Path(args.enrolment), args.device_id)
    write_private(Path(args.key_out), key.hex() + "\n")
    print(f"{args.device_id} enrolled; its key is in {args.key_out}")
    return 0
