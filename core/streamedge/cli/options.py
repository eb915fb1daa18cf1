"""Flags that can also come from an env var or a config file, and say so in ``--help``.

Precedence: command-line flag, then env var, then config file (TOML), then the default.
Every :func:`option` gets an env var, ``STREAMEDGE_<DEST>`` unless named otherwise. The config
file (``--config FILE`` or ``STREAMEDGE_CONFIG``) holds the same names as flat keys, dest-style
(``epochs = 5``, ``bootstrap_servers = "host:9092"``), plus an optional ``[kafka]`` table with
:class:`~streamedge.kafka.settings.KafkaSettings` fields (the place for secrets besides env vars).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from streamedge.errors import ConfigError

__all__ = ["apply_env_and_config", "load_config", "option"]

_ENV_ATTR = "streamedge_env"


def option(parser: argparse.ArgumentParser, *flags: str, env: str | None = None, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` that also reads ``env`` (default ``STREAMEDGE_<DEST>``) and the config file."""
    action = parser.add_argument(*flags, **kwargs)
    env_name = env or f"STREAMEDGE_{action.dest.upper()}"
    setattr(action, _ENV_ATTR, env_name)
    shown_default = "" if action.default in (None, False, argparse.SUPPRESS) else f" (default: {action.default})"
    action.help = f"{action.help or ''}{shown_default} [env: {env_name}]".strip()
    return action


def load_config(path: Path | None) -> dict[str, Any]:
    """Read a TOML config file; ``None`` gives an empty config."""
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _walk(child)
        else:
            yield action


def apply_env_and_config(
    parser: argparse.ArgumentParser, config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> None:
    """Turn env vars and config values into parser defaults (flags still win)."""
    env = os.environ if environ is None else environ
    for action in _walk(parser):
        env_name = getattr(action, _ENV_ATTR, None)
        if env_name is None:
            continue
        value: Any = None
        if env_name in env:
            value = env[env_name]
        elif action.dest in config and not isinstance(config[action.dest], dict):
            value = config[action.dest]
        if value is None:
            continue
        if action.const is True and action.nargs == 0:
            value = str(value).strip().lower() in ("1", "true", "yes", "on")
        elif not isinstance(value, str):
            value = str(value)
        action.default = value
        action.required = False
