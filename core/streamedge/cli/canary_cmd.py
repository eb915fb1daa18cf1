"""``streamedge models watch-canary NAME``: roll a staged promotion back when its devices do worse.

The watcher itself is :mod:`streamedge.services.canary`; it is imported by name when the
command runs, so the CLI stays importable on an edge-only install.
"""

from __future__ import annotations

import argparse
import importlib
import threading
import time
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_kafka_options, kafka_settings, topic_layout
from streamedge.cli.options import option
from streamedge.paths import user_state_dir

__all__ = ["register_watch"]


def register_watch(commands: Any) -> None:
    """Add ``watch-canary`` to the ``models`` command group."""
    text = ("follow edge heartbeats and roll the staged (canary/group) promotion of NAME back, signed, "
            "when its devices' live error is worse than the fleet's by --margin")
    watch = commands.add_parser("watch-canary", help=text, description=text)
    watch.add_argument("name")
    option(watch, "--registry", type=Path, default=user_state_dir() / "registry",
           help="model registry folder; default under STREAMEDGE_HOME")
    option(watch, "--signing-key", type=Path, required=True, help="Ed25519 private key (PEM) that signs the rollback")
    option(watch, "--margin", type=float, default=0.25,
           help="roll back when canary MAE > fleet MAE * (1 + margin)")
    option(watch, "--min-samples", type=int, default=50,
           help="scored readings a device needs on its version before its error counts")
    option(watch, "--min-devices", type=int, default=1, help="devices each cohort needs before any judgement")
    option(watch, "--stale-after-s", type=float, default=120.0, help="ignore heartbeats older than this")
    option(watch, "--timeout-s", type=float, default=0.0, help="give up after this long (0: watch until a rollback)")
    option(watch, "--keep-watching", action="store_true", help="go on after a rollback (for a long-running service)")
    option(watch, "--metrics-port", type=int, default=0,
           help="serve streamedge_fleet_* Prometheus metrics on this port (0: off)")
    option(watch, "--metrics-host", default="127.0.0.1", help="address the metrics endpoint binds")
    option(watch, "--serve-url", env="STREAMEDGE_MODELS_SERVE_URL", default=None,
           help="base URL of 'streamedge models serve' for the rollback's model URI; default: a file:// URI")
    option(watch, "--enrolment", type=Path, default=None,
           help="enrolment file ('edge enrol'): count only heartbeats signed by enrolled devices")
    add_kafka_options(watch)
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from streamedge.contracts.identity import load_enrolment
    from streamedge.contracts.signing import load_private_key
    from streamedge.kafka.model_updates import publish_model_update
    from streamedge.registry import ModelRegistry

    canary: Any = importlib.import_module("streamedge.services.canary")
    kafka, layout = kafka_settings(args), topic_layout(args)
    metrics = None
    if args.metrics_port:
        registry = CollectorRegistry()
        metrics = canary.FleetMetrics(registry)
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    policy = canary.CanaryPolicy(args.margin, args.min_samples, args.min_devices, args.stale_after_s)
    watcher = canary.CanaryWatcher(ModelRegistry(args.registry), args.name, load_private_key(args.signing_key),
                                   lambda update: publish_model_update(kafka, layout, update), policy, metrics,
                                   base_url=args.serve_url,
                                   enrolment=load_enrolment(args.enrolment) if args.enrolment else None)
    stop = threading.Event()
    if args.timeout_s > 0:
        timer = threading.Timer(args.timeout_s, stop.set)
        timer.daemon = True
        timer.start()
    started = time.monotonic()
    update = watcher.run(kafka.kafka_python_config(), layout.edge_telemetry, stop,
                         until_rollback=not args.keep_watching)
    if update is None:
        print(f"{args.name}: no rollback after {time.monotonic() - started:.0f} s ({watcher.last_verdict})")
        return 0
    print(f"{args.name}: staged version rolled back to v{update.version} (record #{update.promotion.sequence}); "
          f"{watcher.last_verdict}")
    return 0
