"""`streamedge monitor` end to end: real edge agents send heartbeats to the test broker, the exporter turns
them into fleet metrics, and the real ``prometheus`` binary scrapes the agents and the exporter with the
config `monitor config` wrote, as written, alert rules included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streamedge.cli.main import main
from streamedge.contracts.signing import load_public_key
from streamedge.edge.models import ModelStore
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.processes import stop_process
from streamedge.training.tiny import TinyModels
from tests.deploy.helpers import EdgeProcess, PrometheusServer
from tests.services.helpers import free_port

_DEVICES = ("pump-1", "pump-2")


def _series(prometheus: PrometheusServer, expr: str) -> dict[str, float]:
    body = prometheus.query(expr)
    assert body["status"] == "success", body
    return {r["metric"].get("device", ""): float(r["value"][1]) for r in body["data"]["result"]}


def _wait_for(check: Callable[[], bool], what: str, logs: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: " + "\n".join(p.read_text()[-2000:] for p in logs if p.exists()))


def test_prometheus_scrapes_the_fleet_from_heartbeats_with_the_written_config(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(2)
    kafka = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix]
    models = tmp_path / "models"
    ModelStore(models, load_public_key(tiny_models.public_key)).install(tiny_models.forecaster)
    agents = [EdgeProcess(["--device-id", device, "--model-dir", str(models), "--public-key", str(tiny_models.public_key),
                           "--source", "simulator", "--rate", "20", "--buffer-path", str(tmp_path / f"{device}.sqlite"),
                           "--model-updates", "false", "--heartbeat-interval-s", "1", "--kafka-timeout-s", "2",
                           "--log-format", "text", *kafka], free_port(), tmp_path / f"{device}.log")
              for device in _DEVICES]
    exporter_port, prometheus_port = free_port(), free_port()
    out = tmp_path / "monitor"
    assert main(["monitor", "config", "--out", str(out), "--worker", str(free_port()),
                 *[arg for agent, device in zip(agents, _DEVICES, strict=True)
                   for arg in ("--agent", f"{device}=127.0.0.1:{agent.port}")],
                 "--exporter", f"127.0.0.1:{exporter_port}", "--prometheus", f"127.0.0.1:{prometheus_port}",
                 "--scrape-interval", "1s"]) == 0
    prometheus = PrometheusServer({}, tmp_path, prometheus_port)
    prometheus.config_path = out / "prometheus.yml"  # the file as `monitor config` wrote it
    exporter_log = tmp_path / "exporter.log"
    with exporter_log.open("ab") as log:
        exporter = subprocess.Popen([sys.executable, "-m", "streamedge.cli.main", "monitor", "exporter",
                                     "--port", str(exporter_port), *kafka], env=dict(os.environ),
                                    stdout=log, stderr=subprocess.STDOUT)
    logs = [exporter_log, prometheus.log, *(agent.log for agent in agents)]
    try:
        for agent in agents:
            agent.start()
        prometheus.start().wait_ready()
        _wait_for(lambda: _series(prometheus, 'streamedge_fleet_model_version{job="streamedge-fleet",model="tiny-forecaster"}')
                  == dict.fromkeys(_DEVICES, 1.0), "fleet model versions never reached Prometheus", logs)
        assert _series(prometheus, "streamedge_fleet_devices")[""] == len(_DEVICES)
        ages = _series(prometheus, "streamedge_fleet_heartbeat_age_seconds")
        assert set(ages) == set(_DEVICES) and all(0 <= age < 30 for age in ages.values()), ages
        _wait_for(lambda: _series(prometheus, 'up{job="streamedge-edge"}') == dict.fromkeys(_DEVICES, 1.0),
                  "the agents' own endpoints were not scraped with their device labels", logs)
        rules = [rule["name"] for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert rules, "the alert rules the config names were not loaded"
        # A device that stops: its heartbeat age grows while the others stay fresh.
        agents[0].stop()
        _wait_for(lambda: _series(prometheus, "streamedge_fleet_heartbeat_age_seconds").get(_DEVICES[0], 0) > 5,
                  "a stopped device's heartbeat age did not grow", logs)
        assert _series(prometheus, "streamedge_fleet_heartbeat_age_seconds")[_DEVICES[1]] < 5
    finally:
        prometheus.stop()
        stop_process(exporter)
        for agent in agents:
            agent.stop()
