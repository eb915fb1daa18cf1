"""``streamedge bench stream|edge|edge-chaos|chaos|models|gan|forecasters|anomalies|forwarding|predict``: run a benchmark.

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps its
heavy imports (TensorFlow, Faust) inside functions, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["register"]

_BENCHMARKS = {
    "stream": "stream processor vs a pass-through Faust agent and per-message Keras",
    "edge": "edge TFLite runtimes vs Keras: latency, RSS, cold start, install size",
    "edge-chaos": "random device faults against one edge agent: every reading delivered or counted, no key reused",
    "chaos": "random broker and worker faults on a local 3-broker cluster: lost and duplicated results",
    "models": "classifier candidates over many UCR/UEA data sets: accuracy vs published, int8 size and latency",
    "gan": "conditional GAN: discriminative and predictive scores over several runs, beside TimeGAN's",
    "forecasters": "the default LSTM forecaster vs seasonal naive, AutoETS and AutoTheta: MASE and sMAPE",
    "anomalies": "the shipped anomaly detector vs a rolling z-score on labelled series: point and event F1",
    "forwarding": "the edge forwarder draining a backlog: one message per result vs result blocks",
    "predict": "streamedge predict on a large CSV (default 1,000,000 rows): peak RSS and rows/s",
}


def register(subparsers: Any) -> None:
    """Add the ``bench`` command group."""
    parser = subparsers.add_parser("bench", help="run a benchmark and write its figures as JSON")
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name, text in _BENCHMARKS.items():
        sub = commands.add_parser(name, help=text, description=text)
        module = importlib.import_module(f"streamedge.benchmarks.{name.replace('-', '_')}")
        module.add_arguments(sub)
        sub.set_defaults(handler=_runner(name))


def _runner(name: str) -> Any:
    def _run(args: argparse.Namespace) -> int:
        code: int = importlib.import_module(f"streamedge.benchmarks.{name.replace('-', '_')}").run(args)
        return code

    return _run
