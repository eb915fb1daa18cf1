"""The ``streamedge`` command: one entry point, a subcommand per area.

Each area registers its subcommands from a light ``cli`` module (no TensorFlow, Faust or
interpreter import at module level) and imports its heavy parts only when its command runs,
so ``streamedge edge ...`` works on an edge-only install. An area whose distribution is not
installed keeps its command, which then says what to install. Errors print as one line on stderr
with a non-zero exit, never a traceback (set ``STREAMEDGE_DEBUG=1`` for one).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from streamedge.cli.options import apply_env_and_config, load_config, option
from streamedge.cli.parser import CommandParser
from streamedge.cli.quiet import install_transient_filter, quiet_tensorflow_warnings
from streamedge.errors import StreamedgeError

__all__ = ["build_parser", "main"]

# Every area's light CLI module; each exposes register(subparsers). The value is the area's own
# distribution and its command, for the areas that may be absent (an edge-only install, say).
_AREAS: dict[str, tuple[str, str] | None] = {
    "streamedge.cli.kafka_cmd": None,
    "streamedge.cli.config_cmd": None,
    "streamedge.cli.results_cmd": None,
    "streamedge.cli.monitor_cmd": None,
    "streamedge.training.cli": ("streamedge-training", "train"),
    "streamedge.cli.models_cmd": None,
    "streamedge.services.cli": ("streamedge-services", "stream"),
    "streamedge.edge.cli": ("streamedge-edge", "edge"),
    "streamedge.edge.predict_cmd": ("streamedge-edge", "predict"),
    "streamedge.benchmarks.cli": ("streamedge-benchmarks", "bench"),
    "streamedge.cli.demo_cmd": None,
    "streamedge.simulate.cli": None,
}


def _version() -> str:
    try:
        return version("streamedge-core")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _register_missing(subparsers: argparse._SubParsersAction[CommandParser],
                      distribution: str, command: str) -> None:
    """A command whose area is not installed: any use of it (``--help`` too) says which distribution to install."""
    text = f"(not installed: pip install {distribution})"
    # No prefix characters: every word after the command, options included, is taken as it comes.
    parser = subparsers.add_parser(command, help=text, description=text, add_help=False, prefix_chars="\x00")
    parser.add_argument("rest", nargs="*")

    def refuse(_args: argparse.Namespace) -> int:
        raise StreamedgeError(f"'streamedge {command}' needs the {distribution} distribution: pip install {distribution}")

    parser.set_defaults(handler=refuse)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every area registered."""
    parser = CommandParser(
        prog="streamedge",
        description="Streaming time-series inference from Kafka to edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"streamedge {_version()}")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config file with flag values and a [kafka] table [env: STREAMEDGE_CONFIG]")
    option(parser, "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module, area in _AREAS.items():
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if area is None or exc.name is None or not module.startswith(exc.name):
                raise
            _register_missing(subparsers, *area)
            continue
        loaded.register(subparsers)
    return parser


def _config_path(argv: Sequence[str]) -> Path | None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        return Path(known.config)
    from_env = os.environ.get("STREAMEDGE_CONFIG")
    return Path(from_env) if from_env else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("STREAMEDGE_DEBUG") == "1"
    try:
        config_path = _config_path(args_list)
        config = load_config(config_path)
        parser = build_parser()
        apply_env_and_config(parser, config, base=config_path.absolute().parent if config_path else None)
        args = parser.parse_args(args_list)
        args.config_data, args.config_path = config, config_path
        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # Client libraries log every connection at INFO; keep their warnings only.
        for noisy in ("kafka", "aiokafka"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
        # Rebalances and short broker restarts: shown only when they persist (streamedge.cli.quiet).
        install_transient_filter()
        quiet_tensorflow_warnings()
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        return 130
    except (StreamedgeError, ImportError, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"streamedge: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
