"""``streamedge demo``: the end-to-end job on real data (see :mod:`streamedge.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamedge.cli.common import add_state_dir_option
from streamedge.cli.options import option
from streamedge.paths import data_dir, user_state_dir

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``demo`` command."""
    text = "train on real data, serve through Kafka and Faust, check the results end to end"
    parser = subparsers.add_parser("demo", help=text, description=text)
    option(parser, "--workdir", type=Path, default=user_state_dir() / "demo",
           help="folder for models, keys and logs; default under STREAMEDGE_HOME")
    option(parser, "--data-dir", type=Path, default=data_dir(), help="the data sets (default: the ones shipped in the package)")
    add_state_dir_option(parser)
    option(parser, "--port", type=int, default=9092, env="STREAMEDGE_KAFKA_PORT", help="local broker port")
    option(parser, "--classifier-epochs", type=int, default=None, help="override the classifier's default epochs")
    option(parser, "--forecaster-epochs", type=int, default=None, help="override the forecaster's default epochs")
    option(parser, "--web-port", type=int, default=6066, help="the demo worker's /metrics port")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from streamedge.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(workdir=args.workdir, data_dir=args.data_dir, state_dir=args.state_dir, port=args.port,
                               classifier_epochs=args.classifier_epochs, forecaster_epochs=args.forecaster_epochs,
                               web_port=args.web_port))
