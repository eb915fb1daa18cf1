"""The deploy files: they parse, they agree with each other and with the code, Prometheus accepts them."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamedge.cli.main import build_parser
from streamedge.cli.options import apply_env_and_config
from streamedge.edge.settings import EdgeSettings
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.settings import StreamSettings
from tests.deploy.helpers import DEPLOY, REPO, alert_rules, load_yaml_docs, panel_queries, promtool

# The oldest Kubernetes the manifests target (autoscaling/v2, policy/v1 are GA well before it).
_K8S_VERSION = "1.30.0"
_CRD_GROUPS = ("keda.sh/", "kafka.strimzi.io/", "kustomize.config.k8s.io/")
_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes and "state" not in p.parts)


def _compose() -> dict[str, Any]:
    docs = load_yaml_docs(DEPLOY / "compose" / "docker-compose.yml")
    assert len(docs) == 1
    compose: dict[str, Any] = docs[0]
    return compose


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> tuple[Any, Any, Any]:
    """StreamSettings, EdgeSettings and KafkaSettings built from ``env`` alone (validates names and values)."""
    for key in [k for k in os.environ if k.startswith("STREAMEDGE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return StreamSettings(), EdgeSettings(), KafkaSettings()


def test_every_yaml_and_json_file_parses() -> None:
    files = _deploy_files(".yml", ".yaml", ".json")
    assert len(files) >= 15
    for path in files:
        if path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        else:
            assert load_yaml_docs(path), path


def test_compose_file_structure_images_and_healthchecks() -> None:
    compose = _compose()
    services: dict[str, dict[str, Any]] = compose["services"]
    expected = {"kafka-1", "kafka-2", "kafka-3", "topics", "stream-worker", "sensors", "edge-agent", "prometheus",
                "grafana", "cli"}
    assert expected <= set(services)
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        one_shot = name == "topics" or "profiles" in service
        if not one_shot:
            assert service["healthcheck"]["test"], f"{name}: no healthcheck"
            assert service.get("restart") == "unless-stopped", name
        if "build" in service:
            assert (DEPLOY / "compose" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            assert tag == _VERSION, f"{name}: streamedge image tag {tag} is not the project version {_VERSION}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("../") or (source.startswith("./") and not source.startswith("./state/")):
                assert (DEPLOY / "compose" / source).exists(), f"{name}: mounts missing {source}"

    # 3 KRaft nodes, pinned broker, one quorum, distinct node ids and external ports.
    kafka = [services[f"kafka-{i}"] for i in (1, 2, 3)]
    assert {k["image"] for k in kafka} == {"apache/kafka:3.9.1"}
    assert {k["environment"]["KAFKA_NODE_ID"] for k in kafka} == {1, 2, 3}
    voters = {k["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for k in kafka}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({k["environment"]["CLUSTER_ID"] for k in kafka}) == 1
    assert len({tuple(k["ports"]) for k in kafka}) == 3
    assert kafka[0]["environment"]["KAFKA_MIN_INSYNC_REPLICAS"] == 2

    # Workers scale: replicas set, no fixed name or host port, and Prometheus finds them by DNS.
    worker = services["stream-worker"]
    assert int(str(worker["deploy"]["replicas"]).split(":-")[-1].rstrip("}")) >= 2
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == ["stream", "worker"]
    prometheus_config = load_yaml_docs(DEPLOY / "prometheus" / "prometheus-compose.yml")[0]
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    (dns,) = jobs["streamedge-stream"]["dns_sd_configs"]
    assert dns["names"] == ["stream-worker"] and dns["port"] == int(worker["environment"]["STREAMEDGE_STREAM_WEB_PORT"])
    edge = services["edge-agent"]
    assert jobs["streamedge-edge"]["static_configs"][0]["targets"] == [
        f"edge-agent:{edge['environment']['STREAMEDGE_EDGE_METRICS_PORT']}"]
    assert jobs["streamedge-edge"]["static_configs"][0]["labels"]["device"] == edge["environment"][
        "STREAMEDGE_EDGE_DEVICE_ID"]

    # Grafana mounts the provisioning and dashboards where the provider looks.
    provider = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamedge.yml")[0]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["../grafana/dashboards"] == provider["providers"][0]["options"]["path"]


def test_compose_settings_are_valid_worker_and_edge_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    shared = _env_file(DEPLOY / "compose" / "streamedge.env")
    stream, _, kafka = _settings_from_env(monkeypatch, {**shared, **services["stream-worker"]["environment"]})
    assert stream.web_host == "0.0.0.0" and stream.model_names() == ["sim-lstm"]
    assert kafka.bootstrap_servers == ",".join(f"kafka-{i}:19092" for i in (1, 2, 3))
    _, edge, _ = _settings_from_env(monkeypatch, {**shared, **services["edge-agent"]["environment"]})
    assert edge.metrics_host == "0.0.0.0" and edge.model_name == "sim-lstm" and edge.source == "simulator"
    # The retrainer replays exactly the streams the workers route, and its command is a valid CLI call.
    retrainer = services["retrainer"]
    assert json.loads(shared["STREAMEDGE_TRAIN_ROUTES"]) == stream.routes
    parser = build_parser()
    apply_env_and_config(parser, {}, environ=shared)
    args = parser.parse_args(retrainer["command"])
    assert (args.train_command, args.registry, args.metrics_port) == ("watch", Path("/registry"), 9110)
    assert "9110/metrics" in " ".join(retrainer["healthcheck"]["test"])
    assert retrainer["build"]["args"]["DISTS"].split() == ["core", "edge", "training"]


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted((DEPLOY / "k8s").rglob("*.yaml")) for doc in load_yaml_docs(path)]


def _kafka_secret() -> dict[str, Any]:
    """The Secret kustomization.yaml generates, from the example credentials file."""
    kustomization = load_yaml_docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    (generator,) = kustomization["secretGenerator"]
    assert generator["envs"] == ["kafka-credentials.env"] and generator["options"]["disableNameSuffixHash"]
    assert "kafka-credentials.env" in (DEPLOY / "k8s" / ".gitignore").read_text().split()
    return {"apiVersion": "v1", "kind": "Secret", "type": generator["type"],
            "metadata": {"name": generator["name"], "namespace": kustomization["namespace"]},
            "stringData": _env_file(DEPLOY / "k8s" / "kafka-credentials.env.example")}


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
    return list(template["spec"]["containers"]) if template else []


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    docs = _k8s_docs()
    docs.append((DEPLOY / "k8s" / "kustomization.yaml", _kafka_secret()))
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "Job", "ScaledObject", "Kafka"} <= kinds
    for path, doc in docs:
        where = f"{path.relative_to(DEPLOY)} {doc.get('kind')}"
        assert doc.get("apiVersion") and doc.get("kind"), where
        if doc["kind"] == "Kustomization":
            continue
        assert doc["metadata"]["name"], where
        if not doc["apiVersion"].startswith(_CRD_GROUPS):
            kubernetes_validate.validate(doc, _K8S_VERSION, strict=True)
        if doc["kind"] in ("Deployment", "Job"):
            for container in _containers(doc):
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), where
                assert "memory" in resources["limits"], where
                assert container["image"].rpartition(":")[2] not in ("", "latest"), where
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                if doc["kind"] == "Deployment":
                    assert container["livenessProbe"] and container["readinessProbe"], where


def test_k8s_worker_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _k8s_docs() if doc["kind"] != "Kustomization"}
    worker = docs[("Deployment", "stream-worker")]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    selector = worker["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for kind in ("PodDisruptionBudget",):
        assert docs[(kind, "stream-worker")]["spec"]["selector"]["matchLabels"] == selector
    assert docs[("Service", "stream-worker")]["spec"]["selector"] == selector
    hpa = docs[("HorizontalPodAutoscaler", "stream-worker")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stream-worker"}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"] <= 12  # never more busy workers than partitions
    keda = docs[("ScaledObject", "stream-worker")]["spec"]
    assert keda["maxReplicaCount"] == hpa["maxReplicas"] and keda["scaleTargetRef"]["name"] == "stream-worker"

    config = docs[("ConfigMap", "streamedge-config")]["data"]
    secret = _kafka_secret()["stringData"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {"streamedge-config", "streamedge-kafka"}
    stream, _, kafka = _settings_from_env(monkeypatch, {**config, **secret})
    assert kafka.uses_sasl and kafka.sasl_password is not None  # credentials come from the Secret
    assert not any("PASSWORD" in key for key in config)
    assert stream.app_id == keda["triggers"][0]["metadata"]["consumerGroup"]
    assert f"{stream.topic_prefix}readings" == keda["triggers"][0]["metadata"]["topic"]
    assert stream.web_host == "0.0.0.0"  # probes and Prometheus reach the pod IP, not loopback
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == stream.web_port == container["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": annotations["prometheus.io/path"], "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}  # 503 when stuck
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(stream.model_dir) == mounts["models"] and str(stream.data_dir) == mounts["faust-data"]
    assert str(stream.public_key).startswith(mounts["model-key"])
    assert str(kafka.ssl_cafile).startswith(mounts["kafka-ca"])

    # The retrainer: same routes as the workers, a valid CLI call, the registry writable, the signing key mounted.
    (retrainer,) = docs[("Deployment", "retrainer")]["spec"]["template"]["spec"]["containers"]
    assert json.loads(config["STREAMEDGE_TRAIN_ROUTES"]) == stream.routes
    parser = build_parser()
    apply_env_and_config(parser, {}, environ=config)
    args = parser.parse_args(retrainer["args"])
    retrainer_mounts = {m["mountPath"]: m for m in retrainer["volumeMounts"]}
    assert args.train_command == "watch" and not retrainer_mounts[str(args.registry)].get("readOnly", False)
    assert str(args.signing_key.parent) in retrainer_mounts and str(args.public_key.parent) in retrainer_mounts
    assert args.metrics_port == retrainer["ports"][0]["containerPort"]

    kustomization = load_yaml_docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (DEPLOY / "k8s" / entry.split("=")[-1]).is_file(), entry


def _check_config(config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = subprocess.run([promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("relative", ["prometheus/prometheus.yml", "prometheus/prometheus-compose.yml",
                                      "k8s/prometheus/prometheus.yml"])
def test_promtool_accepts_every_prometheus_config(relative: str, tmp_path: Path) -> None:
    config = load_yaml_docs(DEPLOY / relative)[0]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"streamedge-stream", "streamedge-edge"} <= jobs  # the alerts and dashboards rely on these names
    # Rule files are given by in-container paths; promtool checks the real rules file in their place.
    assert [Path(p).name for p in config["rule_files"]] == ["alerts.yml"]
    config = copy.deepcopy(config)
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    for job in config["scrape_configs"]:
        # Debian's prometheus build leaves out the Kubernetes discovery: check that block by hand and
        # let promtool check everything else (relabel regexes, intervals, the rules).
        for sd in job.pop("kubernetes_sd_configs", []):
            assert sd["role"] in ("pod", "endpoints", "service") and sd["namespaces"]["names"] == ["streamedge"]
            job.setdefault("static_configs", [{"targets": ["127.0.0.1:6066"]}])
    _check_config(config, tmp_path)


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    rules = DEPLOY / "prometheus" / "alerts.yml"
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([promtool(), "test", "rules", str(rules.with_name("alerts_test.yml"))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    tested = {case["alertname"] for test in load_yaml_docs(rules.with_name("alerts_test.yml"))[0]["tests"]
              for case in test["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alert_rules()} - {"EdgeAgentDown"}


def test_alert_rules_cover_the_operational_risks() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"StreamWorkerDown", "ConsumerLagGrowing", "DeadLetterRateHigh", "EndToEndLatencyP99High",
            "ForecastErrorAboveValidationBand", "InputDrift", "EdgeBufferBacklog", "EdgeBufferOldRows",
            "EdgeBrokerUnreachable", "ModelReloadRejected"} <= names
    assert len(names) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert "streamedge_" in rule["expr"] or "up{" in rule["expr"], rule["alert"]


def _dashboards_module() -> Any:
    spec = importlib.util.spec_from_file_location("streamedge_dashboards", DEPLOY / "grafana" / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_dashboards_are_generated_and_consistent(tmp_path: Path) -> None:
    module = _dashboards_module()
    assert module.main([str(tmp_path)]) == 0
    committed = DEPLOY / "grafana" / "dashboards"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in committed.glob("*.json"))
    for generated in tmp_path.iterdir():
        assert generated.read_text() == (committed / generated.name).read_text(), (
            f"{generated.name} is stale: run python deploy/grafana/dashboards.py")
    datasource = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[0]
    uid = datasource["datasources"][0]["uid"]
    titles = set()
    for path in committed.glob("*.json"):
        dashboard = json.loads(path.read_text())
        titles.add(dashboard["title"])
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    assert titles == {"streamedge stream", "streamedge edge fleet"}
    exprs = " ".join(expr for _, _, expr in panel_queries())
    for metric in ("results_total", "dead_letters_total", "inference_seconds_bucket", "batch_size_windows",
                   "end_to_end_seconds_bucket", "model_version", "forecast_mae", "input_drift_z",
                   "anomalies_total", "consumer_lag_messages", "active_keys", "edge_inference_latency_seconds_bucket",
                   "buffer_depth_rows", "buffer_oldest_age_seconds", "buffer_dropped_total", "broker_reachable",
                   "last_sync_timestamp_seconds", "edge_model_version"):
        assert metric in exprs, f"no panel shows {metric}"
