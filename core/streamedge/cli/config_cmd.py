"""``streamedge config show [COMMAND ...]``: the settings a command would run with, and where each came from.

Sources, in precedence order: ``flag``, ``env NAME``, ``file KEY`` (the config file's flat key or
``[table] key``), ``default``. Secrets print as ``**********``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streamedge.cli.options import apply_env_and_config, value_sources
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings

__all__ = ["effective_settings", "register"]


def register(subparsers: Any) -> None:
    """Add the ``config`` command group."""
    parser = subparsers.add_parser("config", help="show the effective settings of a command and their sources")
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = commands.add_parser(
        "show", help="print every setting of COMMAND (e.g. 'stream worker') with its value and source",
        description="Print the settings COMMAND would run with: each value and where it came from "
                    "(flag > env > file > default). Flags after COMMAND count as given.")
    show.add_argument("command_line", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                      help="a command and its flags, as you would run it")
    show.set_defaults(handler=_show)


def _leaf(parser: argparse.ArgumentParser, tokens: list[str]) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    path: list[str] = []
    while tokens and not tokens[0].startswith("-"):
        children = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if children is None:
            break
        if tokens[0] not in children.choices:
            raise ConfigError(f"no command '{' '.join([*path, tokens[0]])}'; commands: {sorted(children.choices)}")
        path.append(tokens[0])
        parser = children.choices[tokens.pop(0)]
    return parser, path, tokens


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return '"**********"'
    if value is None:
        return "(unset)"
    return f'"{value}"' if isinstance(value, str | os.PathLike) else repr(value)


def _kafka_rows(args: argparse.Namespace, sources: dict[str, str]) -> list[tuple[str, Any, str]]:
    from streamedge.cli.common import kafka_settings

    settings = kafka_settings(args)
    table = args.config_data.get("kafka", {})
    rows = []
    for field in KafkaSettings.model_fields:
        env = f"STREAMEDGE_KAFKA_{field.upper()}"
        if field == "bootstrap_servers":
            source = sources["bootstrap_servers"]
        else:
            source = f"env {env}" if env in os.environ else f"file [kafka] {field}" if field in table else "default"
        rows.append((field, getattr(settings, field), source))
    return rows


def effective_settings(config_data: dict[str, Any], command_line: list[str], base: Path | None = None,
                       ) -> tuple[list[str], list[tuple[str, list[tuple[str, Any, str]]]]]:
    """The settings ``streamedge COMMAND ...`` would run with, without running it (``base``: the
    config file's folder, which its relative paths are relative to).

    Returns:
        The command's path (``["stream", "worker"]``) and its sections: ``(title, [(name, value, source)])``
        for its options, its Kafka settings (when it connects) and its own settings class.

    Raises:
        ConfigError: no such command.
    """
    from streamedge.cli.main import build_parser

    parser = build_parser()
    apply_env_and_config(parser, config_data, base=base)
    leaf, path, flags = _leaf(parser, list(command_line))
    for action in leaf._actions:
        action.required = False
    parsed = leaf.parse_args(flags)
    parsed.config_data = config_data
    sources = value_sources(leaf, flags)
    sections: list[tuple[str, list[tuple[str, Any, str]]]] = [
        ("options", [(dest, getattr(parsed, dest, None), source) for dest, source in sources.items()])]
    if "bootstrap_servers" in sources:
        sections.append(("kafka", _kafka_rows(parsed, sources)))
    show_settings = leaf.get_default("show_settings")
    if show_settings is not None:
        sections.append((path[0], show_settings(parsed, sources)))
    return path, sections


def _show(args: argparse.Namespace) -> int:
    base = args.config_path.absolute().parent if args.config_path else None
    path, sections = effective_settings(args.config_data, list(args.command_line), base)
    where = f"config file {args.config_path}" if args.config_path else "no config file"
    print(f"# streamedge {' '.join(path) or '(global)'}: {where}; precedence flag > env > file > default")
    for title, rows in sections:
        print(f"[{title}]")
        for name, value, source in rows:
            print(f"{name} = {_shown(value)}  # {source}")
    return 0
