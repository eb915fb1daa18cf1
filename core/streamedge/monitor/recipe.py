"""The monitoring recipe for a local stack: a Prometheus config and Grafana provisioning, written to a folder.

What :func:`write_recipe` writes under ``out``::

    prometheus.yml                               scrape jobs (below), rule_files: alerts.yml
    alerts.yml                                   the project's alert rules
    grafana/provisioning/datasources/streamedge.yml   Prometheus at ``prometheus_url``, uid "prometheus"
    grafana/provisioning/dashboards/streamedge.yml    loads grafana/dashboards (absolute path)
    grafana/dashboards/*.json                    the project's dashboards

Scrape jobs (the names the alerts and dashboards rely on): ``streamedge-stream`` (every worker),
``streamedge-edge`` (every agent, each target labelled with its ``device``), ``streamedge-fleet``
(the heartbeat exporter) and ``prometheus`` itself. The alert rules and dashboards ship inside this
distribution (``streamedge.monitor.recipes``); they are the files of deploy/ in the source tree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final

__all__ = ["Target", "check_duration", "prometheus_config", "recipe_files", "write_recipe"]


@dataclass(frozen=True)
class Target:
    """A ``/metrics`` endpoint: ``host:port``, and the device id for an edge agent."""

    host: str
    port: int
    device: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text)


# Prometheus's duration syntax (units largest first, each at most once; "0" alone).
_DURATION: Final = re.compile(r"(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?")


def check_duration(text: str) -> str:
    """``text`` if it is a Prometheus duration such as ``15s`` or ``1m30s``.

    Raises:
        ValueError: it is not (it would be written unquoted into prometheus.yml).
    """
    if text != "0" and (not _DURATION.fullmatch(text) or not any(c.isdigit() for c in text)):
        raise ValueError(f"scrape interval {text[:40]!r} is not a Prometheus duration such as 15s, 1m or 1m30s")
    return text


def _job(name: str, targets: list[Target], interval: str) -> list[str]:
    lines = [f"  - job_name: {name}", "    metrics_path: /metrics", f"    scrape_interval: {interval}", "    static_configs:"]
    if not targets:
        return [*lines, "      []"]
    for target in targets:
        lines.append(f"      - targets: [{_q(target.address)}]")
        if target.device is not None:
            lines += ["        labels:", f"          device: {_q(target.device)}"]
    return lines


def prometheus_config(workers: list[Target], agents: list[Target], exporter: Target | None, prometheus: Target,
                      scrape_interval: str = "15s") -> str:
    """The ``prometheus.yml`` text for these targets (agents must carry a device id)."""
    check_duration(scrape_interval)
    if any(agent.device is None for agent in agents):
        raise ValueError("every edge agent target needs its device id")
    lines = ["# Written by `streamedge monitor config` for the stack it found; run it again when the stack changes.",
             "global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}",
             "  external_labels:", "    environment: local", "rule_files:", "  - alerts.yml", "scrape_configs:"]
    lines += _job("streamedge-stream", workers, scrape_interval)
    lines += _job("streamedge-edge", agents, scrape_interval)
    lines += _job("streamedge-fleet", [exporter] if exporter is not None else [], scrape_interval)
    lines += _job("prometheus", [prometheus], scrape_interval)
    return "\n".join(lines) + "\n"


def recipe_files() -> dict[str, bytes]:
    """The shipped alert rules and dashboards: ``{"alerts.yml": ..., "dashboards/<name>.json": ...}``."""
    root = files("streamedge.monitor") / "recipes"
    found = {"alerts.yml": (root / "alerts.yml").read_bytes()}
    for entry in (root / "dashboards").iterdir():
        if entry.name.endswith(".json"):
            found[f"dashboards/{entry.name}"] = entry.read_bytes()
    return found


def _grafana(out: Path, prometheus_url: str) -> dict[Path, str]:
    dashboards = (out / "grafana" / "dashboards").resolve()
    datasource = ["apiVersion: 1", "datasources:", "  - name: Prometheus", "    uid: prometheus", "    type: prometheus",
                  "    access: proxy", f"    url: {_q(prometheus_url)}", "    isDefault: true", "    editable: false"]
    provider = ["apiVersion: 1", "providers:", "  - name: streamedge", "    orgId: 1", "    folder: streamedge",
                "    type: file", "    disableDeletion: true", "    allowUiUpdates: false", "    options:",
                f"      path: {_q(str(dashboards))}"]
    base = out / "grafana" / "provisioning"
    return {base / "datasources" / "streamedge.yml": "\n".join(datasource) + "\n",
            base / "dashboards" / "streamedge.yml": "\n".join(provider) + "\n"}


def write_recipe(out: Path, workers: list[Target], agents: list[Target], exporter: Target | None,
                 prometheus: Target, scrape_interval: str = "15s") -> list[Path]:
    """Write the recipe (see the module docstring) under ``out``; returns the files written."""
    written: dict[Path, bytes] = {
        out / "prometheus.yml": prometheus_config(workers, agents, exporter, prometheus, scrape_interval).encode()}
    for name, data in recipe_files().items():
        written[out / name if name == "alerts.yml" else out / "grafana" / name] = data
    url = f"http://{prometheus.address}"
    written.update({path: text.encode() for path, text in _grafana(out, url).items()})
    for path, data in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sorted(written)
