"""Every dashboard panel and alert rule against a real Prometheus scraping a real worker and edge agent.

A stream worker process (tiny models) consumes live readings (some malformed, so dead-letter series
exist) from the test broker, an edge agent process runs its simulator and forwards to the same broker,
and the ``prometheus`` binary scrapes both every second with ``deploy/prometheus/prometheus.yml``
(targets and intervals replaced) and evaluates ``deploy/prometheus/alerts.yml``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamedge.contracts.signing import load_public_key
from streamedge.edge.models import ModelStore
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.deploy.helpers import (
    DEPLOY,
    EdgeProcess,
    PrometheusServer,
    alert_rules,
    dashboard_variables,
    load_yaml_docs,
    panel_queries,
    substitute,
)
from tests.services.helpers import WorkerProcess, free_port, install, reading, sine

_ROUTES = {"s": ["tiny-forecaster", "tiny-classifier"]}
_DEVICES = 5
_EDGE_DEVICE = "edge-e2e"
_MALFORMED = (b"{oops", b'{"device_id":"d0","stream":"s","ts":1.7e9,"value":1.0}')


def _scrape_config(worker_port: int, edge_port: int, prometheus_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with this test's targets, 1 s scrapes and the real alert rules."""
    config: dict[str, Any] = copy.deepcopy(load_yaml_docs(DEPLOY / "prometheus" / "prometheus.yml")[0])
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    ports = {"streamedge-stream": worker_port, "streamedge-edge": edge_port, "prometheus": prometheus_port}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(ports)
    for name, job in jobs.items():
        job["scrape_interval"] = "1s"
        (static,) = job["static_configs"]
        static["targets"] = [f"127.0.0.1:{ports[name]}"]
    # The device label names the agent's device id (one agent per target).
    assert jobs["streamedge-edge"]["static_configs"][0]["labels"]["device"]
    jobs["streamedge-edge"]["static_configs"][0]["labels"]["device"] = _EDGE_DEVICE
    return config


class _Readings:
    """Live readings for ``_DEVICES`` keys at event time now, one malformed message per round."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka, self._topic = kafka, topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(**self._kafka.kafka_python_config(), linger_ms=5)
        try:
            seq = 0
            while not self._stop.is_set():
                now = time.time()
                for d in range(_DEVICES):
                    producer.send(self._topic, key=f"d{d}/s".encode(), value=reading(f"d{d}", seq, ts=now))
                producer.send(self._topic, key=b"d0/s", value=_MALFORMED[seq % len(_MALFORMED)])
                producer.send(self._topic, key=b"x/other", value=reading("x", seq, value=sine(seq), stream="other"))
                producer.flush(timeout=30)
                self.sent += _DEVICES + 2
                seq += 1
                self._stop.wait(0.1)
        except BaseException as exc:  # surfaced by the test, never swallowed
            self.error = exc
        finally:
            producer.close(timeout=10)

    def __enter__(self) -> _Readings:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def running_stack(kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
                  tmp_path: Path) -> Iterator[tuple[PrometheusServer, _Readings]]:
    """Worker + edge agent + live readings + Prometheus, all stopped at the end."""
    layout = make_topics(3)
    worker_models = tmp_path / "worker-models"
    install(worker_models, tiny_models.forecaster, "tiny-forecaster")
    install(worker_models, tiny_models.classifier, "tiny-classifier")
    # Small monitor windows, a tiny MAE factor and no rate limit: the drift gauge, the rolling MAE and
    # retrain requests (trigger=error, the "above validation band" signal) all appear within seconds.
    worker = WorkerProcess(kafka_settings, layout, worker_models, tiny_models.public_key, _ROUTES,
                           tmp_path / "worker.log", f"deploy-{layout.prefix}", mae_window=5, mae_factor=0.001,
                           drift_window=10, retrain_min_interval_s=0, batch_wait_s=0.02)
    edge_models = tmp_path / "edge-models"
    ModelStore(edge_models, load_public_key(tiny_models.public_key)).install(tiny_models.forecaster)
    edge = EdgeProcess(["--device-id", _EDGE_DEVICE, "--model-dir", str(edge_models),
                        "--public-key", str(tiny_models.public_key), "--source", "simulator", "--rate", "50",
                        "--buffer-path", str(tmp_path / "edge.sqlite"), "--model-updates", "false",
                        "--heartbeat-interval-s", "1", "--kafka-timeout-s", "2", "--log-format", "text",
                        "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix],
                       free_port(), tmp_path / "edge.log")
    prometheus_port = free_port()
    prometheus = PrometheusServer(_scrape_config(worker.port, edge.port, prometheus_port), tmp_path,
                                  prometheus_port)
    try:
        worker.start()
        edge.start()
        with _Readings(kafka_settings, layout.readings) as readings:
            worker.wait_ready()
            edge.wait_ready()
            prometheus.start().wait_ready()
            yield prometheus, readings
    finally:
        prometheus.stop()
        edge.stop()
        worker.stop()


def _empty_or_invalid(prometheus: PrometheusServer, queries: list[tuple[str, str, str]]) -> list[str]:
    problems = []
    for dashboard, title, expr in queries:
        body = prometheus.query(substitute(expr))
        if body["status"] != "success":
            problems.append(f"{dashboard} / {title}: {expr}: {body.get('error')}")
        elif not body["data"]["result"]:
            problems.append(f"{dashboard} / {title}: {expr}: empty")
    return problems


def _edge_instance(prometheus: PrometheusServer) -> str:
    """The edge agent's ``instance`` label (its scrape target)."""
    (target,) = [t for t in prometheus.api("targets")["activeTargets"] if t["labels"]["job"] == "streamedge-edge"]
    instance: str = target["labels"]["instance"]
    return instance


def _alert_states(prometheus: PrometheusServer) -> dict[str, str]:
    return {alert["labels"]["alertname"]: alert["state"] for alert in prometheus.api("alerts")["alerts"]}


def test_every_panel_has_data_and_every_alert_rule_evaluates(
        running_stack: tuple[PrometheusServer, _Readings]) -> None:
    prometheus, readings = running_stack
    queries = panel_queries()
    assert len(queries) >= 30
    deadline = time.monotonic() + 60
    problems = _empty_or_invalid(prometheus, queries)
    while problems and time.monotonic() < deadline:
        assert readings.error is None, readings.error
        time.sleep(1.0)
        problems = _empty_or_invalid(prometheus, queries)
    assert problems == [], "\n".join(problems)
    assert readings.sent > 0 and readings.error is None

    for dashboard, label, metric in dashboard_variables():
        values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
        assert values, f"{dashboard}: variable {label} has no values from {metric}"

    # Every alert expression is valid PromQL on these series, and Prometheus evaluates every rule cleanly.
    rules = alert_rules()
    assert len(rules) >= 15
    for rule in rules:
        body = prometheus.query(rule["expr"])
        assert body["status"] == "success", f"{rule['alert']}: {body.get('error')}"
    time.sleep(2.0)  # at least one evaluation round of the rule files after the series exist
    loaded = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in rules}
    assert [r["name"] for r in loaded if r["health"] != "ok"] == [], [r.get("lastError") for r in loaded]

    # The data really drives the rules: 2 of every 7 messages are malformed or unrouted (DLQ share
    # far above 5%), and the worker's retrain requests (trigger=error) mark the MAE above its band.
    wanted = {"DeadLetterRateHigh": "pending", "ForecastErrorAboveValidationBand": "firing"}
    deadline = time.monotonic() + 30
    active = _alert_states(prometheus)
    while any(active.get(name) != state for name, state in wanted.items()) and time.monotonic() < deadline:
        time.sleep(1.0)
        active = _alert_states(prometheus)
    assert {name: active.get(name) for name in wanted} == wanted, active
    reasons = {series["metric"]["reason"] for series in
               prometheus.query("streamedge_stream_dead_letters_total")["data"]["result"]}
    assert {"bad_json", "missing_field", "unknown_stream"} <= reasons
    edge = {query: [(r["metric"], float(r["value"][1])) for r in prometheus.query(query)["data"]["result"]]
            for query in ("streamedge_edge_broker_reachable", "streamedge_edge_model_version")}
    assert edge["streamedge_edge_broker_reachable"] == [(
        {"__name__": "streamedge_edge_broker_reachable", "device": _EDGE_DEVICE, "instance": _edge_instance(prometheus),
         "job": "streamedge-edge"}, 1.0)]
    assert [(m["device"], m["model"], v) for m, v in edge["streamedge_edge_model_version"]] == [
        (_EDGE_DEVICE, "tiny-forecaster", 1.0)]
