"""A secure broker of its own (SASL_SSL, SCRAM-SHA-512, ACLs): each principal's real path, and the refusals.

One broker for the module, on free ports in a temporary folder (never the shared PLAINTEXT test
broker): started through the Python API, then ``streamedge kafka up`` on the same state folder
finds its ``security/`` folder, grants the ACLs and writes the per-principal config files.
``kafka add-device`` / ``remove-device`` then give devices their own credentials on the running broker.
"""

from __future__ import annotations

import json
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamedge.cli.common import kafka_settings
from streamedge.cli.main import build_parser, main
from streamedge.cli.options import apply_env_and_config, load_config
from streamedge.contracts.identity import Enrolment, load_device_key, load_enrolment
from streamedge.contracts.results import decode_results
from streamedge.contracts.signing import load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import IteratorSource, simulator_payloads
from streamedge.errors import ConfigError
from streamedge.kafka.acls import RETRAINER_GROUP_PREFIX, Grant, acl_table
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.cluster import free_ports
from streamedge.kafka.devices import device_grants
from streamedge.kafka.login import KafkaAccessError, KafkaLoginError, check_login
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.security import BrokerSecurity
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.conftest import REPO
from tests.edge.helpers import make_version
from tests.services.helpers import WorkerProcess, consume_until, install, produce, reading
from tests.streamedge.updates import signed_update

LAYOUT = TopicLayout()  # the broker is this module's own: the default prefix, as in production


@dataclass(frozen=True)
class Secure:
    """The running secure broker, its security files and the CLI's config file per principal."""

    broker: LocalBroker
    security: BrokerSecurity
    configs: dict[str, Path]

    def settings(self, principal: Any) -> KafkaSettings:
        return self.security.client_settings(principal, self.broker.bootstrap, client_id="streamedge-sasl-tests")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    state = tmp_path_factory.mktemp("secure-kafka")
    libs = LocalBroker(REPO / ".streamedge" / "test-kafka").fetch_jars()  # the test broker's cached jars
    port = free_ports(2)
    security = BrokerSecurity.ensure(state / "security")
    broker = LocalBroker(state, port, port + 1, security=security, libs_dir=libs)
    broker.up(timeout=120)
    try:
        common = ["--state-dir", str(state), "--port", str(port), "--controller-port", str(port + 1)]
        assert main(["kafka", "up", *common]) == 0  # found secure: grants the ACLs, writes the configs
        configs = {name: state / "security" / f"{name}.toml" for name in ("admin", "device", "worker", "promoter")}
        assert main(["--config", str(configs["admin"]), "kafka", "topics", "--partitions", "3"]) == 0
        assert main(["kafka", "status", *common]) == 0
        yield Secure(broker, security, configs)
    finally:
        broker.down()


def test_the_acl_table_keeps_model_updates_to_the_promoter() -> None:
    table = acl_table(LAYOUT)
    writers = {(g.principal, g.name) for g in table if g.operation in ("WRITE", "ALL")}
    assert {who for who, topic in writers if topic == LAYOUT.model_updates} == {"promoter"}
    assert not any(LAYOUT.model_updates.startswith(name) for _, name in writers if name != LAYOUT.model_updates)
    with pytest.raises(ConfigError, match="also covers topic"):
        acl_table(LAYOUT, worker_group_prefix="streamedge.")  # a prefix grant that would cover model-updates
    with pytest.raises(ConfigError, match="also covers topic"):
        acl_table(LAYOUT, retrainer_group_prefix="streamedge.")


def test_the_acl_table_lets_the_promoter_run_the_canary_watcher_and_the_retrainer() -> None:
    table = acl_table(LAYOUT)
    readers = {(g.principal, g.name) for g in table if g.kind == "topic" and g.operation in ("READ", "ALL")}
    writers = {(g.principal, g.name) for g in table if g.operation in ("WRITE", "ALL")}
    # models watch-canary follows edge-telemetry (no group); train watch reads retrain-requests in a
    # group and replays readings. Both publish signed updates, so both run as the promoter, not admin.
    assert {(who, t) for who, t in readers if t in (LAYOUT.edge_telemetry, LAYOUT.retrain_requests)} == {
        ("promoter", LAYOUT.edge_telemetry), ("promoter", LAYOUT.retrain_requests)}
    assert ("promoter", LAYOUT.readings) in readers
    assert Grant("promoter", "group", RETRAINER_GROUP_PREFIX, "READ", prefixed=True) in table
    watch = build_parser().parse_args(["train", "watch", "--registry", "r", "--signing-key", "k", "--public-key", "p",
                                       "--routes", "{}"])
    assert watch.group_id.startswith(RETRAINER_GROUP_PREFIX)  # the default group is covered
    # The promoter writes model-updates only, and reads nothing of the workers' output.
    assert {t for who, t in writers if who == "promoter"} == {LAYOUT.model_updates}
    assert {t for who, t in readers if who == "promoter"} == {
        LAYOUT.edge_telemetry, LAYOUT.retrain_requests, LAYOUT.readings}


def test_the_client_port_speaks_no_plaintext(secure: Secure) -> None:
    broker = secure.broker
    assert broker.status().running  # TLS handshake verified against the run's CA, SCRAM offered
    plain = LocalBroker(broker.state_dir, broker.port, broker.controller_port)  # the same process, PLAINTEXT probe
    assert plain.status().detail.endswith(f"alive but not answering on {broker.bootstrap}")


def test_worker_reads_readings_and_writes_results_over_sasl_ssl(secure: Secure, tiny_models: TinyModels,
                                                               tmp_path: Path) -> None:
    devices, seqs = 3, 12
    messages = [(f"d{d}/s".encode(), reading(f"d{d}", seq)) for seq in range(seqs) for d in range(devices)]
    messages.append((b"d0/s", b"{oops"))
    produce(secure.settings("device"), LAYOUT.readings, messages)  # a device writes readings

    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, "tiny-forecaster")
    install(model_dir, tiny_models.classifier, "tiny-classifier")
    worker_settings = secure.settings("worker")
    worker = WorkerProcess(worker_settings, LAYOUT, model_dir, tiny_models.public_key,
                           {"s": ["tiny-forecaster", "tiny-classifier"]}, tmp_path / "worker.log",
                           "streamedge-stream-sasl")
    assert worker_settings.sasl_password is not None
    worker.env.update({
        "STREAMEDGE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAMEDGE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMEDGE_KAFKA_SASL_USERNAME": "worker",
        "STREAMEDGE_KAFKA_SASL_PASSWORD": worker_settings.sasl_password.get_secret_value(),
        "STREAMEDGE_KAFKA_SSL_CAFILE": str(secure.security.cafile),
    })
    worker.start()
    try:
        worker.wait_ready(timeout=90)
        per_kind = devices * (seqs - TINY_WINDOW + 1)
        found = consume_until(secure.settings("admin"), [LAYOUT.forecasts, LAYOUT.classifications, LAYOUT.dead_letters],
                              lambda ms: len(ms) >= 2 * per_kind + 1, timeout=60)
        by_topic = {topic: [m for m in found if m.topic == topic]
                    for topic in (LAYOUT.forecasts, LAYOUT.classifications, LAYOUT.dead_letters)}
        assert [len(by_topic[t]) for t in (LAYOUT.forecasts, LAYOUT.classifications, LAYOUT.dead_letters)] == [
            per_kind, per_kind, 1]
        assert {json.loads(m.value)["key"] for m in by_topic[LAYOUT.forecasts]} == {f"d{d}/s" for d in range(devices)}
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.metric("streamedge_stream_readings_consumed_total") == len(messages)
    finally:
        worker.stop()


def test_promotion_reaches_a_running_agent_over_sasl_ssl(secure: Secure, tiny_models: TinyModels, tmp_path: Path) -> None:
    key, public = tiny_models.signing_key, tiny_models.public_key
    registry = tmp_path / "registry"
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    for folder in (tiny_models.forecaster, v2):
        assert main(["models", "add", str(folder), "--registry", str(registry), "--signing-key", str(key)]) == 0

    device_models = tmp_path / "device-models"
    ModelStore(device_models, load_public_key(public)).install(tiny_models.forecaster)
    settings = EdgeSettings(device_id="dev-sasl", model_dir=device_models, public_key=public,
                            buffer_path=tmp_path / "buffer.sqlite", metrics_port=0, heartbeat_interval_s=1.0,
                            kafka_timeout_s=5.0, drain_timeout_s=30.0, model_updates=True, log_format="text",
                            batch_size=16)
    source = IteratorSource(simulator_payloads(keys=1, rate=200.0), queue_size=64)
    agent = EdgeAgent(settings, secure.settings("device"), LAYOUT, source, load_public_key(public), CollectorRegistry())
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # The registry's promoter publishes, through the CLI with its config file.
        assert main(["--config", str(secure.configs["promoter"]), "models", "promote", "tiny-forecaster", "2",
                     "--registry", str(registry), "--public-key", str(public), "--signing-key", str(key)]) == 0
        deadline = time.monotonic() + 30
        while agent.predictor.version != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.predictor.version == 2  # read with the device's credential, verified, swapped
        found = consume_until(secure.settings("admin"), [LAYOUT.edge_results],
                              lambda ms: any(r["version"] == 2 for m in ms for r in decode_results(m.value)),
                              timeout=60)
        results = [r for m in found for r in decode_results(m.value)]  # single results and result blocks
        assert {r["device_id"] for r in results} == {"dev-sasl"} and 2 in {r["version"] for r in results}
        # What models watch-canary reads: the device's heartbeats, with the promoter's credential.
        beats = consume_until(secure.settings("promoter"), [LAYOUT.edge_telemetry],
                              lambda ms: any(_is_heartbeat(m.value, "dev-sasl", 2) for m in ms), timeout=60)
        assert any(_is_heartbeat(m.value, "dev-sasl", 2) for m in beats)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def _is_heartbeat(value: bytes, device: str, version: int) -> bool:
    event = json.loads(value)
    return bool(event["device_id"] == device and event["type"] == "heartbeat" and event["version"] == version)


@pytest.mark.parametrize("principal", ["device", "worker"])
def test_device_and_worker_cannot_publish_model_updates(secure: Secure, tiny_models: TinyModels, principal: str) -> None:
    from kafka.errors import TopicAuthorizationFailedError

    update = signed_update(tiny_models.forecaster, tiny_models.signing_key, 99)
    with pytest.raises(KafkaAccessError, match="TopicAuthorizationFailed") as refused:
        publish_model_update(secure.settings(principal), LAYOUT, update, timeout=10)
    assert isinstance(refused.value.__cause__, TopicAuthorizationFailedError)
    assert f"'{principal}'" in str(refused.value)

    check_login(secure.settings(principal))  # the credential itself is good: only the write is refused
    # model-updates has one partition: a marker the promoter sends after the refusal is the first
    # message the refused update could have come before.
    marker = f"acl-marker-{principal}-{uuid.uuid4().hex}".encode()
    produce(secure.settings("promoter"), LAYOUT.model_updates, [(marker, None)])  # a tombstone: no update
    found = consume_until(secure.settings("admin"), [LAYOUT.model_updates],
                          lambda ms: any(m.key == marker for m in ms), timeout=60)
    keys = [m.key for m in found]
    assert marker in keys
    before = found[:keys.index(marker)]
    assert update.to_json() not in {m.value for m in before}
    assert all(json.loads(m.value)["promotion"]["sequence"] != 99 for m in before if m.value and b"promotion" in m.value)


def test_the_promoter_runs_the_retrainer_in_its_consumer_group(secure: Secure, tiny_models: TinyModels,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from streamedge.training.kafka_source import replay_topic

    produce(secure.settings("device"), LAYOUT.readings, [(b"dev-replay/s", reading("dev-replay", seq)) for seq in range(3)])
    replayed = replay_topic(secure.settings("promoter"), LAYOUT.readings, keys=["dev-replay/s"])
    assert replayed.ids == ["dev-replay/s"] and len(replayed.series[0]) == 3  # the retrainer's history replay

    admin = KafkaConsumer(**secure.settings("admin").kafka_python_config(), group_id=None)
    try:
        partition = TopicPartition(LAYOUT.retrain_requests, 0)  # one partition: requests are answered in order
        earlier = admin.end_offsets([partition])[partition]  # e.g. what the worker test's monitor asked
    finally:
        admin.close()
    run = uuid.uuid4().hex
    produce(secure.settings("worker"), LAYOUT.retrain_requests, [
        (b"tiny-forecaster", json.dumps({"model": "tiny-forecaster", "version": 1, "trigger": f"{name}-{run}"}).encode())
        for name in ("first", "second")])
    watch = ["--config", str(secure.configs["promoter"]), "train", "watch", "--registry", str(tmp_path / "registry"),
             "--signing-key", str(tiny_models.signing_key), "--public-key", str(tiny_models.public_key),
             "--routes", '{"s": ["tiny-forecaster"]}', "--group-id", "streamedge-retrainer-sasl",
             "--work-dir", str(tmp_path / "work"), "--no-progress"]
    capsys.readouterr()
    assert main([*watch, "--max-requests", str(earlier + 1)]) == 0
    outcomes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["trigger"] for o in outcomes[-1:]] == [f"first-{run}"]
    # The registry has no promoted version: answered (not retrained), and committed in the group.
    assert outcomes[-1]["outcome"] == "failed" and "no promoted version" in outcomes[-1]["reason"]
    assert main([*watch, "--max-requests", "1"]) == 0
    assert [json.loads(line)["trigger"] for line in capsys.readouterr().out.splitlines()] == [f"second-{run}"]


def test_a_wrong_password_is_one_clear_line(secure: Secure, tiny_models: TinyModels, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pydantic import SecretStr

    wrong = secure.security.client_settings("promoter", secure.broker.bootstrap, password=SecretStr("not-it"))
    with pytest.raises(KafkaLoginError, match="invalid credentials"):
        check_login(wrong)

    config = tmp_path / "wrong.toml"
    config.write_text(secure.configs["promoter"].read_text().replace(
        f'sasl_password = "{secure.security.password("promoter").get_secret_value()}"', 'sasl_password = "not-it"'))
    assert 'sasl_password = "not-it"' in config.read_text()
    registry = tmp_path / "registry"
    key, public = tiny_models.signing_key, tiny_models.public_key
    assert main(["models", "add", str(tiny_models.forecaster), "--registry", str(registry), "--signing-key", str(key)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "models", "promote", "tiny-forecaster", "1", "--registry", str(registry),
                 "--public-key", str(public), "--signing-key", str(key)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("streamedge: error: Kafka login as 'promoter' at 127.0.0.1:")
    assert "invalid credentials" in err and "not-it" not in err

    assert main(["--config", str(config), "kafka", "topics"]) == 1  # the admin path says the same
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Kafka login as 'promoter'" in err and "invalid credentials" in err


def test_secure_refuses_a_state_folder_formatted_without_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("node.id=1\n")  # what a PLAINTEXT first start leaves
    assert main(["kafka", "up", "--secure", "--state-dir", str(tmp_path), "--port", "1", "--controller-port", "2"]) == 1
    assert "formatted without --secure" in capsys.readouterr().err
    assert not (tmp_path / "security").exists()


def _add_device(secure: Secure, device: str, tmp_path: Path, *extra: str) -> tuple[int, Path, Path]:
    """``kafka add-device`` with the admin's config file; returns the exit code, the enrolment file and --out."""
    enrolment, out = tmp_path / "enrolment", tmp_path / "devices"
    code = main(["--config", str(secure.configs["admin"]), "kafka", "add-device", device, "--enrolment",
                 str(enrolment), "--out", str(out), *extra])
    return code, enrolment, out


def _device_settings(config: Path) -> KafkaSettings:
    """The KafkaSettings the CLI builds from a device's config file (as ``edge run --config`` does)."""
    args = _parsed(config, ["kafka", "topics"])
    return kafka_settings(args).model_copy(update={"client_id": "streamedge-sasl-tests"})


def _parsed(config: Path, argv: list[str]) -> Any:
    parser = build_parser()
    data = load_config(config)
    apply_env_and_config(parser, data)
    args = parser.parse_args(argv)
    args.config_data = data
    return args


def test_the_device_grants_are_its_own_and_never_model_updates() -> None:
    grants = device_grants(LAYOUT, "pump-1")
    assert {g.principal for g in grants} == {"device-pump-1"}
    assert {(g.name, g.operation) for g in grants if g.kind == "topic"} == {
        (LAYOUT.readings, "WRITE"), (LAYOUT.edge_results, "WRITE"), (LAYOUT.edge_telemetry, "WRITE"),
        (LAYOUT.model_updates, "READ")}
    # Its own consumer group only: literal, so pump-1's grant does not cover pump-10's group.
    assert [g for g in grants if g.kind == "group"] == [Grant("device-pump-1", "group", "streamedge-edge-pump-1", "READ")]
    assert not any(g.prefixed for g in grants)
    assert (LAYOUT.readings, "READ") in {(g.name, g.operation) for g in device_grants(LAYOUT, "p", kafka_source=True)}
    with pytest.raises(ConfigError, match="device id"):
        device_grants(LAYOUT, "pump 1")


def test_a_provisioned_device_produces_readings_with_its_own_credential(secure: Secure, tiny_models: TinyModels,
                                                                        tmp_path: Path) -> None:
    code, enrolment, out = _add_device(secure, "pump-own", tmp_path)
    assert code == 0
    config, key_file = out / "pump-own.toml", out / "pump-own.key"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The key file is the device's enrolment key; the config names the device and its key for edge run.
    assert load_enrolment(enrolment).keys["pump-own"] == load_device_key(key_file)
    run = _parsed(config, ["edge", "run"])
    assert (run.device_id, Path(run.device_key_file)) == ("pump-own", key_file.resolve())

    device = _device_settings(config)
    assert device.sasl_username == "device-pump-own"
    assert device.sasl_password != secure.security.password("device")
    check_login(device)
    marker = f"pump-own-{uuid.uuid4().hex}".encode()
    value = reading("pump-own", 0)
    produce(device, LAYOUT.readings, [(marker, value)])
    found = consume_until(secure.settings("admin"), [LAYOUT.readings], lambda ms: any(m.key == marker for m in ms),
                          timeout=60)
    assert [m.value for m in found if m.key == marker] == [value]

    # An agent run from the file: its results and heartbeats go out as device-pump-own, and the
    # heartbeats verify against the enrolment add-device wrote (what watch-canary --enrolment counts).
    public = tiny_models.public_key
    models = tmp_path / "device-models"
    ModelStore(models, load_public_key(public)).install(tiny_models.forecaster)
    settings = EdgeSettings(device_id=run.device_id, device_key_file=run.device_key_file, model_dir=models,
                            public_key=public, buffer_path=tmp_path / "buffer.sqlite", metrics_port=0,
                            heartbeat_interval_s=1.0, kafka_timeout_s=5.0, drain_timeout_s=30.0, log_format="text")
    source = IteratorSource(simulator_payloads(keys=1, rate=200.0), queue_size=64)
    agent = EdgeAgent(settings, device, LAYOUT, source, load_public_key(public), CollectorRegistry())
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        enrolled = load_enrolment(enrolment)
        beats = consume_until(secure.settings("promoter"), [LAYOUT.edge_telemetry],
                              lambda ms: any(_signed_beat(m.value, enrolled) for m in ms), timeout=60)
        assert any(_signed_beat(m.value, enrolled) for m in beats)
        results = consume_until(secure.settings("admin"), [LAYOUT.edge_results], lambda ms: any(
            r["device_id"] == "pump-own" for m in ms for r in decode_results(m.value)), timeout=60)
        assert any(r["device_id"] == "pump-own" for m in results for r in decode_results(m.value))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def _signed_beat(value: bytes, enrolled: Enrolment) -> bool:
    event = json.loads(value)
    return bool(event["device_id"] == "pump-own" and event["type"] == "heartbeat" and enrolled.verify_event(event))


def test_a_device_credential_cannot_write_model_updates_nor_read_an_ungranted_topic(
        secure: Secure, tiny_models: TinyModels, tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    assert _add_device(secure, "pump-limited", tmp_path)[0] == 0
    device = _device_settings(tmp_path / "devices" / "pump-limited.toml")
    update = signed_update(tiny_models.forecaster, tiny_models.signing_key, 98)
    with pytest.raises(KafkaAccessError, match="TopicAuthorizationFailed"):
        publish_model_update(device, LAYOUT, update, timeout=10)
    consumer = KafkaConsumer(**device.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        # The broker hides every topic it grants nothing on (forecasts, anomalies, dead letters, ...).
        assert consumer.topics() & {spec.name for spec in LAYOUT.specs()} == {
            LAYOUT.readings, LAYOUT.edge_results, LAYOUT.edge_telemetry, LAYOUT.model_updates}
        # Without --kafka-source it writes readings but cannot read the fleet's.
        consumer.assign([TopicPartition(LAYOUT.readings, 0)])
        consumer.seek_to_beginning()
        with pytest.raises(TopicAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    # Another device's consumer group is not its own.
    consumer = KafkaConsumer(LAYOUT.model_updates, **device.kafka_python_config(), group_id="streamedge-edge-pump-other")
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            for _ in range(20):
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


def test_a_removed_device_can_no_longer_log_in(secure: Secure, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _add_device(secure, "pump-gone", tmp_path)[0] == 0
    device = _device_settings(tmp_path / "devices" / "pump-gone.toml")
    check_login(device)
    admin = ["--config", str(secure.configs["admin"]), "kafka"]
    capsys.readouterr()
    assert main([*admin, "remove-device", "pump-gone"]) == 0
    assert "device-pump-gone and 5 ACL(s) removed" in capsys.readouterr().out
    with pytest.raises(KafkaLoginError, match="invalid credentials"):
        check_login(device)
    assert main([*admin, "remove-device", "pump-gone"]) == 1  # nothing left to remove
    assert "no Kafka credential" in capsys.readouterr().err
    # Enrolled once: adding the id again is refused before the broker is touched.
    assert _add_device(secure, "pump-gone", tmp_path)[0] == 1
    assert "enrolled already" in capsys.readouterr().err
    check_login(secure.settings("device"))  # the shared principals are untouched
