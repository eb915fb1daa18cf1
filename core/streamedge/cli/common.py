"""Options and helpers that several subcommands share: Kafka connection, topics, state folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from streamedge.cli.options import option, table_values
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.paths import user_state_dir

__all__ = ["add_kafka_options", "add_state_dir_option", "add_table_options", "build_settings", "kafka_settings", "topic_layout"]

_S = TypeVar("_S", bound=BaseModel)


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers`` and ``--topic-prefix``; security settings come from env/config only."""
    option(parser, "--bootstrap-servers", default="127.0.0.1:9092", env="STREAMEDGE_KAFKA_BOOTSTRAP_SERVERS",
           help="Kafka bootstrap servers, comma-separated (TLS/SASL: STREAMEDGE_KAFKA_* env or [kafka] in config)")
    option(parser, "--topic-prefix", default="streamedge.", help="prefix of every topic name")


def build_settings(cls: type[_S], what: str, **values: Any) -> _S:
    """``cls(**values)`` (a pydantic-settings class, which adds its env vars), every problem in one line.

    Raises:
        ConfigError: ``invalid <what> settings: field: problem; ...``.
    """
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid {what} settings: {problems}") from exc


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """KafkaSettings from the flags, ``STREAMEDGE_KAFKA_*`` env vars and the ``[kafka]`` config table, in that order.

    ``--bootstrap-servers`` already holds flag > env > ``[kafka] bootstrap_servers`` > default.
    """
    table = table_values(getattr(args, "config_data", {}), "kafka", "STREAMEDGE_KAFKA_")
    table["bootstrap_servers"] = args.bootstrap_servers
    return build_settings(KafkaSettings, "Kafka", **table)


def topic_layout(args: argparse.Namespace) -> TopicLayout:
    """The topic layout named by ``--topic-prefix``."""
    return TopicLayout(prefix=args.topic_prefix)


def add_state_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: where the local broker keeps jars, data and logs."""
    option(parser, "--state-dir", type=Path, default=user_state_dir() / "kafka",
           help="local broker state folder (jars, data, logs, pid); default under STREAMEDGE_HOME")


def add_table_options(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """``--time-column`` and ``--time-unit`` of the reading-file format (:mod:`streamedge.contracts.table`)."""
    option(parser, "--time-column", default=None, env=f"{env_prefix}_TIME_COLUMN",
           help="time column; default a column named ts/time/timestamp/datetime/date, or the one holding ISO dates")
    option(parser, "--time-unit", default="auto", choices=("auto", "iso", "yyyymmdd", "s", "ms", "us", "ns"),
           env=f"{env_prefix}_TIME_UNIT", help="ISO 8601, YYYYMMDD dates or epoch s/ms/us/ns; auto detects and the run states it")
