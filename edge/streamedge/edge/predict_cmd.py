"""``streamedge predict``: offline scoring of CSV/Parquet files (edge distribution: TFLite only, no TensorFlow).

Light at import time: numpy, the runtime and pyarrow load only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streamedge.cli.options import option
from streamedge.paths import user_state_dir

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``predict`` command."""
    parser = subparsers.add_parser(
        "predict", help="score a CSV/Parquet file (or a folder of them) with a model; one result row per input row",
        description="Score readings offline with the edge agent's windowing and TFLite runner. The input has the "
                    "agent's CSV columns: ts (seconds since the epoch), the value column(s), optional device_id, "
                    "stream and seq. Bad rows are reported on stderr with their line number and get an error cell.")
    parser.add_argument("input", type=Path, help="a .csv or .parquet file, or a folder of them")
    option(parser, "--model", required=True, help="model folder, or NAME@VERSION in the registry")
    option(parser, "--out", type=Path, required=True,
           help="output .csv/.parquet file (a folder when the input is a folder)")
    option(parser, "--out-format", choices=[".csv", ".parquet"], default=None,
           help="format of a folder's outputs (default: each input's own)")
    option(parser, "--registry", type=Path, default=user_state_dir() / "registry",
           help="model registry folder for NAME@VERSION; default under STREAMEDGE_HOME")
    option(parser, "--public-key", type=Path, default=None,
           help="trusted Ed25519 public key (PEM): check the manifest's signature too (sha256 is always checked)")
    option(parser, "--device-id", default="offline", help="device_id of rows without one")
    option(parser, "--stride", type=int, default=1, help="classifiers: a result every N readings per key")
    option(parser, "--max-keys", type=int, default=10_000, help="keys whose windows are kept in memory")
    option(parser, "--anomaly-sigmas", type=float, default=4.0,
           help="anomaly band half-width in validation residual standard deviations")
    option(parser, "--runtime", choices=["auto", "ai_edge_litert", "tflite_runtime"], default="auto",
           help="TFLite interpreter")
    parser.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from streamedge.edge.predict import PredictOptions, load_model, predict

    if args.stride < 1 or args.max_keys < 1 or not args.anomaly_sigmas > 0:
        raise ValueError("--stride and --max-keys must be at least 1 and --anomaly-sigmas positive")
    options = PredictOptions(device_id=args.device_id, stride=args.stride, max_keys=args.max_keys,
                             anomaly_sigmas=args.anomaly_sigmas, runtime=args.runtime)
    model = load_model(args.model, args.registry, args.public_key)
    predict(args.input, args.out, model, options, sys.stderr, args.out_format)
    return 0
