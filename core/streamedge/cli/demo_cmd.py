"""``streamedge demo``: the whole living system on real data (see :mod:`streamedge.demo`)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_state_dir_option
from streamedge.cli.options import option
from streamedge.errors import StreamedgeError
from streamedge.paths import data_dir, user_state_dir

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    text = ("train on real data, serve through Kafka and Faust, drift and retrain live, ride out an edge outage; "
            "a live view, a summary of every record and an HTML report")
    parser = subparsers.add_parser("demo", help=text, description=text)
    option(parser, "--workdir", type=Path, default=user_state_dir() / "demo",
           help="folder for models, keys, logs and the report; default under STREAMEDGE_HOME")
    option(parser, "--data-dir", type=Path, default=None,
           help="the data sets (default: the ones shipped in streamedge-training)")
    add_state_dir_option(parser)
    option(parser, "--port", type=int, default=9092, env="STREAMEDGE_KAFKA_PORT", help="local broker port")
    option(parser, "--quick", action="store_true", help="few epochs, 300 meters, a faster edge replay (a few minutes)")
    option(parser, "--keep-running", action="store_true",
           help="after the summary, leave the broker, worker and retrainer up (Prometheus endpoints) until Ctrl-C")
    option(parser, "--classifier-epochs", type=int, default=None, help="override the classifier's epochs")
    option(parser, "--forecaster-epochs", type=int, default=None, help="override the forecaster's epochs")
    option(parser, "--retrain-epochs", type=int, default=None, help="cap the retrainer's epochs")
    option(parser, "--web-port", type=int, default=6066, help="the demo worker's /metrics port")
    option(parser, "--edge-metrics-port", type=int, default=9108, help="the demo edge agent's /metrics port")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        demo: Any = importlib.import_module("streamedge.demo")  # an area: imported by name, like every area
    except ModuleNotFoundError as exc:
        if exc.name is None or not "streamedge.demo".startswith(exc.name):
            raise
        raise StreamedgeError("'streamedge demo' needs the streamedge-demo distribution: pip install streamedge-demo") from exc

    config = demo.DemoConfig(workdir=args.workdir, data_dir=args.data_dir or data_dir(), state_dir=args.state_dir, port=args.port,
                        web_port=args.web_port, edge_metrics_port=args.edge_metrics_port, quick=bool(args.quick),
                        keep_running=bool(args.keep_running), classifier_epochs=args.classifier_epochs,
                        forecaster_epochs=args.forecaster_epochs, retrain_epochs=args.retrain_epochs)
    try:
        return int(demo.run_demo(config))
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started was stopped", file=sys.stderr, flush=True)
        return 130
