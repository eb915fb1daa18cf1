"""``streamedge monitor``: Prometheus and Grafana for the local stack, and the heartbeat exporter.

``monitor config`` writes the recipe of :mod:`streamedge.monitor.recipe`. Its scrape targets are the
ports the stack runs with: without ``--worker``/``--agent`` it takes the worker's web port and the
agent's device id and metrics port from the same flags-env-file settings ``stream worker`` and
``edge run`` would read (``streamedge config show`` prints them), so the config follows
``STREAMEDGE_STREAM_WEB_PORT``, ``STREAMEDGE_EDGE_METRICS_PORT`` and the config file. ``monitor
exporter`` serves the fleet metrics of :mod:`streamedge.monitor.fleet` from the telemetry topic.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Final

from streamedge.cli.common import add_kafka_options, kafka_settings, topic_layout
from streamedge.cli.options import option
from streamedge.errors import ConfigError
from streamedge.paths import user_state_dir

__all__ = ["register"]

# The edge agent's own defaults (EdgeSettings: device_id, metrics_host, metrics_port), for an agent
# started without them; a test keeps them equal.
EDGE_DEFAULTS: Final = ("edge-1", "127.0.0.1", 9108)
_ENDPOINT = re.compile(r"^(?:(?P<host>[^:=\s]+):)?(?P<port>\d{1,5})$")


def register(subparsers: Any) -> None:
    """Add the ``monitor`` command group."""
    parser = subparsers.add_parser("monitor", help="Prometheus and Grafana for the local stack; fleet metrics")
    commands = parser.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    config = commands.add_parser(
        "config", help="write a Prometheus config and Grafana provisioning for the local stack",
        description="Write prometheus.yml, alerts.yml and Grafana provisioning (datasource and the project's "
                    "dashboards) under --out. Targets default to the ports 'stream worker' and 'edge run' "
                    "would use (flag > env > config file > default).")
    option(config, "--out", type=Path, default=user_state_dir() / "monitor", env="STREAMEDGE_MONITOR_OUT",
           help="folder to write into")
    # Repeatable, so flags only; without them the targets follow the worker's and agent's own settings.
    config.add_argument("--worker", dest="workers", action="append", default=None,
                        help="a stream worker's /metrics as [HOST:]PORT (repeat for several)")
    config.add_argument("--agent", dest="agents", action="append", default=None,
                        help="an edge agent's /metrics as DEVICE=[HOST:]PORT (repeat for several)")
    option(config, "--exporter", default="127.0.0.1:9119", env="STREAMEDGE_MONITOR_EXPORTER",
           help="the heartbeat exporter's [HOST:]PORT ('none': no fleet job)")
    option(config, "--prometheus", default="127.0.0.1:9090", env="STREAMEDGE_MONITOR_PROMETHEUS",
           help="where Prometheus listens, [HOST:]PORT (its own job and Grafana's datasource)")
    option(config, "--scrape-interval", default="15s", env="STREAMEDGE_MONITOR_SCRAPE_INTERVAL",
           help="scrape and rule evaluation interval (Prometheus duration)")
    config.set_defaults(handler=_config)

    exporter = commands.add_parser(
        "exporter", help="serve fleet metrics (devices, heartbeat age, model version) from the telemetry topic",
        description="Follow the edge-telemetry topic and serve streamedge_fleet_* metrics on /metrics until "
                    "interrupted.")
    add_kafka_options(exporter)
    option(exporter, "--host", default="127.0.0.1", env="STREAMEDGE_MONITOR_HOST", help="address to bind")
    option(exporter, "--port", type=int, default=9119, env="STREAMEDGE_MONITOR_PORT", help="metrics port")
    option(exporter, "--max-devices", type=int, default=10_000, env="STREAMEDGE_MONITOR_MAX_DEVICES",
           help="devices kept at most (the device label's cardinality)")
    option(exporter, "--new", action="store_true", default=False, env="STREAMEDGE_MONITOR_NEW",
           help="only heartbeats sent after the start (default: every one the topic keeps)")
    option(exporter, "--once", action="store_true", default=False, env="STREAMEDGE_MONITOR_ONCE",
           help="read the heartbeats the topic holds, print the fleet metrics and exit (no server)")
    exporter.set_defaults(handler=_exporter)


def _endpoint(text: str, what: str, host: str = "127.0.0.1") -> tuple[str, int]:
    match = _ENDPOINT.match(text.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"{what} {text!r} is no [HOST:]PORT (e.g. 127.0.0.1:6066)")
    return match["host"] or host, int(match["port"])


def _settings(config_data: dict[str, Any], command: list[str]) -> dict[str, Any]:
    """Every setting ``command`` would run with, by name (None: its own default); empty when not installed."""
    from streamedge.cli.config_cmd import effective_settings

    _path, sections = effective_settings(config_data, command)
    values: dict[str, Any] = {}
    for _title, rows in sections:
        values.update({name: value for name, value, _source in rows if value is not None or name not in values})
    return values


def _targets(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from streamedge.monitor.recipe import Target

    if args.workers is None:
        worker = _settings(args.config_data, ["stream", "worker"])
        workers = [Target(str(worker.get("web_host") or "127.0.0.1"), int(worker.get("web_port") or 6066))]
    else:
        workers = [Target(*_endpoint(text, "--worker")) for text in args.workers]
    if args.agents is None:
        edge = _settings(args.config_data, ["edge", "run"])
        device, host, port = EDGE_DEFAULTS
        port = int(edge["metrics_port"] if edge.get("metrics_port") is not None else port)
        # No metrics_port setting: the edge distribution is not installed here, so no agent to scrape.
        agents = ([Target(str(edge.get("metrics_host") or host), port, str(edge.get("device_id") or device))]
                  if port and "metrics_port" in edge else [])
    else:
        agents = []
        for text in args.agents:
            device, _, endpoint = text.partition("=")
            if not device or not endpoint:
                raise ConfigError(f"--agent {text!r} is no DEVICE=[HOST:]PORT (e.g. pump-1=127.0.0.1:9108)")
            agents.append(Target(*_endpoint(endpoint, "--agent"), device=device))
    return workers, agents


def _config(args: argparse.Namespace) -> int:
    from streamedge.monitor.recipe import Target, write_recipe

    workers, agents = _targets(args)
    exporter = None if args.exporter.strip().lower() == "none" else Target(*_endpoint(args.exporter, "--exporter"))
    prometheus = Target(*_endpoint(args.prometheus, "--prometheus"))
    written = write_recipe(args.out, workers, agents, exporter, prometheus, args.scrape_interval)
    print(f"wrote {len(written)} files under {args.out}")
    print(f"  workers: {', '.join(t.address for t in workers) or 'none'}")
    print(f"  agents: {', '.join(f'{t.device}={t.address}' for t in agents) or 'none'}")
    print(f"  fleet exporter: {exporter.address if exporter else 'none'}")
    print(f"run: prometheus --config.file={args.out / 'prometheus.yml'} --web.listen-address={prometheus.address}")
    print(f"Grafana: point its provisioning folder (paths.provisioning) at {args.out / 'grafana' / 'provisioning'}")
    return 0


def _exporter(args: argparse.Namespace) -> int:
    import time

    from streamedge.monitor.exporter import follow_telemetry, registry, serve
    from streamedge.monitor.fleet import FleetState

    state = FleetState(args.max_devices)
    topic = topic_layout(args).edge_telemetry
    kafka = kafka_settings(args).kafka_python_config()
    stop = threading.Event()
    if args.once:
        from prometheus_client import generate_latest

        follow_telemetry(state, kafka, topic, stop, from_beginning=not args.new, until_end=True)
        sys.stdout.write(generate_latest(registry(state, time.time)).decode())
        return 0
    port = serve(state, args.host, args.port)
    print(f"fleet metrics of {topic} on http://{args.host}:{port}/metrics", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        follow_telemetry(state, kafka, topic, stop, from_beginning=not args.new)
    except KeyboardInterrupt:
        stop.set()
    return 0
