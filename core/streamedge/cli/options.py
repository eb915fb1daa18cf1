"""Flags that can also come from an env var or a config file, and say so in ``--help``.

Precedence, for every setting: command-line flag, then env var, then config file (TOML), then the
default. Every :func:`option` gets an env var, ``STREAMEDGE_<DEST>`` unless named otherwise. The
config file (``--config FILE`` or ``STREAMEDGE_CONFIG``) holds the same names as flat keys,
dest-style (``epochs = 5``, ``port = 39092``), plus tables: ``[kafka]`` with
:class:`~streamedge.kafka.settings.KafkaSettings` fields (the place for secrets besides env vars)
and the tables commands declare with :func:`config_table` (``[stream]``: every stream worker
setting). A table key that a flag also sets (``[kafka] bootstrap_servers`` for
``--bootstrap-servers``) is that flag's file value. An unknown key or table is an error naming the
nearest valid one. A relative path in the file is relative to the file's folder. :func:`value_sources`
says where each value came from (``streamedge config show``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings

__all__ = [
    "apply_env_and_config",
    "check_config",
    "config_table",
    "given_flags",
    "load_config",
    "option",
    "table_values",
    "value_sources",
]

_ENV_ATTR = "streamedge_env"
_SOURCE_ATTR = "streamedge_source"
_TABLES_ATTR = "streamedge_config_tables"
# Tables every command may read: name -> (fields, env prefix).
_BUILTIN_TABLES: dict[str, tuple[frozenset[str], str]] = {
    "kafka": (frozenset(KafkaSettings.model_fields), "STREAMEDGE_KAFKA_"),
}


def option(parser: argparse.ArgumentParser | argparse._ActionsContainer, *flags: str, env: str | None = None,
           **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` that also reads ``env`` (default ``STREAMEDGE_<DEST>``) and the config file."""
    action = parser.add_argument(*flags, **kwargs)
    env_name = env or f"STREAMEDGE_{action.dest.upper()}"
    setattr(action, _ENV_ATTR, env_name)
    shown_default = "" if action.default in (None, False, argparse.SUPPRESS) else f" (default: {action.default})"
    action.help = f"{action.help or ''}{shown_default} [env: {env_name}]".strip()
    return action


def config_table(parser: argparse.ArgumentParser, name: str, fields: Callable[[], Iterable[str]],
                 env_prefix: str) -> None:
    """Declare a ``[name]`` config table whose keys are ``fields()`` (a settings class's, called only
    when a config is checked, so registering imports nothing), env vars ``<env_prefix><FIELD>``."""
    tables = dict(getattr(parser, _TABLES_ATTR, {}))
    tables[name] = (fields, env_prefix)
    setattr(parser, _TABLES_ATTR, tables)


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


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for one in _parsers(parser):
        yield from (a for a in one._actions if not isinstance(a, argparse._SubParsersAction))


def _tables(parser: argparse.ArgumentParser) -> dict[str, tuple[frozenset[str], str]]:
    tables = dict(_BUILTIN_TABLES)
    for one in _parsers(parser):
        for name, (fields, prefix) in getattr(one, _TABLES_ATTR, {}).items():
            tables[name] = (frozenset(fields()), prefix)
    return tables


def _nearest(key: str, candidates: Sequence[str]) -> str:
    bare = {c.split("] ")[-1].strip("[]"): c for c in reversed(candidates)}
    match = difflib.get_close_matches(key, list(bare), n=1, cutoff=0.6)
    return f"; did you mean {bare[match[0]]}?" if match else f"; valid: {', '.join(sorted(candidates))}"


def check_config(parser: argparse.ArgumentParser, config: Mapping[str, Any]) -> None:
    """Refuse a key or table no command reads.

    Raises:
        ConfigError: ``config file: unknown key 'x'; did you mean 'y'?`` (or the valid names).
    """
    flat = sorted({a.dest for a in _walk(parser) if getattr(a, _ENV_ATTR, None)})
    tables = _tables(parser)
    in_tables = [f"[{t}] {f}" for t, (fields, _) in sorted(tables.items()) for f in sorted(fields)]
    for key, value in config.items():
        if isinstance(value, dict):
            if key not in tables:
                raise ConfigError(f"config file: unknown table [{key}]"
                                  + _nearest(key, [*in_tables, *(f"[{t}]" for t in tables), *flat]))
            fields = tables[key][0]
            for inner in value:
                if inner not in fields:
                    raise ConfigError(f"config file: unknown key {inner!r} in [{key}]"
                                      + _nearest(inner, [f"[{key}] {f}" for f in sorted(fields)]))
        elif key not in flat:
            raise ConfigError(f"config file: unknown key {key!r}" + _nearest(key, [*flat, *in_tables]))


def _table_key(env_name: str, tables: Mapping[str, tuple[frozenset[str], str]],
               config: Mapping[str, Any]) -> tuple[str, str] | None:
    """The ``(table, field)`` of the config that an option with this env var reads, if any."""
    for name, (fields, prefix) in tables.items():
        field = env_name[len(prefix):].lower() if env_name.startswith(prefix) else None
        if field in fields and isinstance(config.get(name), dict) and field in config[name]:
            return name, field
    return None


_PATH_SUFFIXES = ("_path", "_dir", "_file", "_cafile", "_cert", "_key")


def _is_path(action: argparse.Action) -> bool:
    """Whether an option names a file or folder: typed ``Path``, or named like one (``buffer_path``,
    ``model_dir``, ``token_file``, ``public_key``)."""
    return action.type is Path or action.dest.endswith(_PATH_SUFFIXES)


def _from_file(action: argparse.Action, value: Any, base: Path | None) -> Any:
    """A config-file value; a relative path is taken relative to the config file's folder ``base``."""
    if base is None or not isinstance(value, str) or not value or not _is_path(action):
        return value
    path = Path(value)
    return value if path.is_absolute() or value.startswith("~") else str(base / path)


def apply_env_and_config(
    parser: argparse.ArgumentParser, config: Mapping[str, Any], environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> None:
    """Check the config, then turn env vars and config values into parser defaults (flags still win).

    Each option remembers where its default came from (see :func:`value_sources`). A relative
    path in the config file (an option typed ``Path`` or named ``*_path``, ``*_dir``, ``*_file``,
    ``*_key``, ...) is relative to ``base``, the config file's folder, never the working folder;
    env vars and flags stay relative to the working folder.

    Raises:
        ConfigError: an unknown config key or table.
    """
    check_config(parser, config)
    env = os.environ if environ is None else environ
    tables = _tables(parser)
    for action in _walk(parser):
        env_name = getattr(action, _ENV_ATTR, None)
        if env_name is None:
            continue
        value: Any = None
        source = "default"
        in_table = _table_key(env_name, tables, config)
        if env_name in env:
            value, source = env[env_name], f"env {env_name}"
        elif action.dest in config and not isinstance(config[action.dest], dict):
            value, source = _from_file(action, config[action.dest], base), f"file {action.dest}"
        elif in_table is not None:
            value = _from_file(action, config[in_table[0]][in_table[1]], base)
            source = f"file [{in_table[0]}] {in_table[1]}"
        setattr(action, _SOURCE_ATTR, source)
        if value is None:
            continue
        if action.const is True and action.nargs == 0:
            value = str(value).strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        elif not isinstance(value, str):
            value = str(value)
        action.default = value
        action.required = False


def table_values(config: Mapping[str, Any], table: str, env_prefix: str,
                 environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``[table]`` values that no env var overrides (env beats file; a settings class's own
    init arguments would beat its env vars otherwise)."""
    env = os.environ if environ is None else environ
    values = config.get(table, {})
    return {k: v for k, v in values.items() if f"{env_prefix}{k.upper()}" not in env}


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Dests of ``parser``'s options written on the command line ``argv`` (``--flag v`` or ``--flag=v``)."""
    words = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    return {a.dest for a in parser._actions if words.intersection(a.option_strings)}


def value_sources(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, str]:
    """Dest -> where its value comes from: ``flag``, ``env NAME``, ``file KEY`` or ``default``."""
    given = given_flags(parser, argv)
    return {a.dest: "flag" if a.dest in given else getattr(a, _SOURCE_ATTR, "default")
            for a in parser._actions if getattr(a, _ENV_ATTR, None)}
