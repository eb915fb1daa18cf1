"""Helpers for the deploy tests: the deploy files, a real Prometheus server, an edge agent process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from streamedge.processes import stop_process

__all__ = ["DEPLOY", "EdgeProcess", "PrometheusServer", "alert_rules", "dashboard_variables", "load_yaml_docs",
           "panel_queries", "promtool", "substitute"]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Grafana's variables, replaced the way Grafana would with "All" selected and a 30 s rate window.
_SUBSTITUTIONS = {"$__rate_interval": "30s", "$__interval": "30s", "$__range": "5m", "$model": ".*",
                  "$device": ".*"}


def load_yaml_docs(path: Path) -> list[Any]:
    """Every YAML document of ``path`` (empty documents dropped)."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def promtool() -> str:
    """Path of ``promtool`` (Debian's ``prometheus`` package; deploy/local/install-system-deps.sh)."""
    found = shutil.which("promtool")
    assert found, "promtool missing: run deploy/local/install-system-deps.sh (apt-get install prometheus)"
    return found


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by concrete values."""
    for name, value in _SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), f"unsubstituted variable in {expr}"
    return expr


def _dashboards() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        yield path.name, json.loads(path.read_text())


def panel_queries() -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, expr)`` for every target of every panel (rows included)."""
    found: list[tuple[str, str, str]] = []

    def _walk(name: str, panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            _walk(name, panel.get("panels", []))
            found.extend((name, panel["title"], target["expr"]) for target in panel.get("targets", []))

    for name, dashboard in _dashboards():
        _walk(name, dashboard["panels"])
    return found


def dashboard_variables() -> list[tuple[str, str, str]]:
    """``(dashboard file, label, metric)`` of every ``label_values(metric, label)`` variable."""
    found = []
    for name, dashboard in _dashboards():
        for variable in dashboard["templating"]["list"]:
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            assert query.startswith("label_values(") and query.endswith(")"), query
            metric, label = (part.strip() for part in query[len("label_values("):-1].split(","))
            found.append((name, label, metric))
    return found


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of ``deploy/prometheus/alerts.yml``."""
    groups = load_yaml_docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


class PrometheusServer:
    """The real ``prometheus`` binary on a loopback port with a given config, data in ``workdir``."""

    def __init__(self, config: dict[str, Any], workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: run deploy/local/install-system-deps.sh (apt-get install prometheus)"
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=handle, stderr=subprocess.STDOUT)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            # Refused until it listens: poll again.
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {self.log.read_text()[-3000:]}")

    def query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query`` response body (``status`` is ``success`` or ``error`` with ``error`` text)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            body: dict[str, Any] = _get(url)
        except urllib.error.HTTPError as exc:  # 400/422: the body says why (bad PromQL)
            body = json.loads(exc.read().decode())
        return body

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>`` data."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = _get(f"{self.url}/api/v1/{path}{query}")
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)


class EdgeProcess:
    """``python -m streamedge.edge run`` on the simulator source, serving /metrics on ``port``."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "streamedge.edge", "run", "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                    *args]
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EdgeProcess:
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=dict(os.environ), stdout=handle,
                                         stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            # Refused until it listens: poll again.
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
                if b"streamedge_edge_results_total{" in response.read():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"edge agent not serving results: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
