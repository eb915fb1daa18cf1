"""The retraining loop against the real broker: request -> retrain -> gate -> promote -> hot reload."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from streamedge.cli.main import main
from streamedge.contracts.model_update import parse_model_update
from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.training.config import ForecasterConfig
from streamedge.training.data import DataReport, SeriesData
from streamedge.training.forecast import train_forecaster
from streamedge.training.retrain import Retrainer, RetrainMetrics, RetrainPolicy, serve
from streamedge.training.tiny import TinyModels
from tests.services.helpers import WorkerProcess, consume_until, install, produce, reading

NAME = "plant-lstm"
ROUTES = {"s": [NAME]}
_DEVICES = 3
# Regime A (training of v1): level 10, season 8; regime B (the stream now): level shifted to 25.
_LEVEL_A, _LEVEL_B = 10.0, 25.0
_CONFIG = ForecasterConfig(window=24, horizon=2, season=8, units=8, epochs=20, patience=5)


@dataclass(frozen=True)
class Champion:
    """Version 1 trained by the training pipeline on regime A, and the key pair."""

    folder: Path
    signing_key: Path
    public_key: Path


def _regime(n: int, level: float, seed: int) -> npt.NDArray[np.float32]:
    """``n`` readings: ``level`` plus a season-8 sine of amplitude 3 and N(0, 0.3) noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values: npt.NDArray[np.float32] = (level + 3.0 * np.sin(2 * np.pi * t / 8)
                                       + rng.normal(0.0, 0.3, n)).astype(np.float32)
    return values


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    root = tmp_path_factory.mktemp("champion")
    generate_keypair(root / "signing.pem", root / "public.pem")
    data = SeriesData(series=[_regime(300, _LEVEL_A, d)[:, None] for d in range(_DEVICES)],
                      ids=[f"d{d}/s" for d in range(_DEVICES)], features=["value"], report=DataReport())
    train_forecaster(data, root / "v1", _CONFIG, name=NAME, progress=False)
    return Champion(root / "v1", root / "signing.pem", root / "public.pem")


def _registry(root: Path, champion: Champion) -> ModelRegistry:
    registry = ModelRegistry(root)
    registry.add(champion.folder, load_private_key(champion.signing_key))
    registry.promote(NAME, 1)
    return registry


def _produce_regime_b(kafka: KafkaSettings, layout: TopicLayout, start: int = 0, stop: int = 200) -> None:
    """Readings ``start`` to ``stop - 1`` of every device in regime B."""
    produce(kafka, layout.readings, [
        (f"d{d}/s".encode(), reading(f"d{d}", seq, float(_regime(stop, _LEVEL_B, 100 + d)[seq])))
        for d in range(_DEVICES) for seq in range(start, stop)])


def _request(version: int, model: str = NAME) -> bytes:
    return json.dumps({"model": model, "version": version, "trigger": "drift", "requested_at": 1.7e9}).encode()


def _retrainer(registry: ModelRegistry, champion: Champion, kafka: KafkaSettings, layout: TopicLayout,
               work: Path, **kwargs: object) -> Retrainer:
    return Retrainer(registry, load_private_key(champion.signing_key), load_public_key(champion.public_key),
                     kafka, layout, ROUTES, work, **kwargs)  # type: ignore[arg-type]


def test_drift_request_retrains_gates_promotes_and_announces(
        champion: Champion, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        tmp_path: Path) -> None:
    layout = make_topics(3)
    _produce_regime_b(kafka_settings, layout)
    registry = _registry(tmp_path / "registry", champion)
    metrics = CollectorRegistry()
    now = [0.0]
    retrainer = _retrainer(registry, champion, kafka_settings, layout, tmp_path / "work",
                           policy=RetrainPolicy(min_interval_s=60, promote_to="all"), metrics=RetrainMetrics(metrics),
                           clock=lambda: now[0])

    promoted = retrainer.handle(_request(1))
    assert promoted.outcome == "promoted", promoted
    assert promoted.new_version == 2 and promoted.trigger == "drift"
    assert promoted.champion_mae is not None and promoted.candidate_mae is not None
    assert promoted.candidate_mae < 0.98 * promoted.champion_mae
    assert registry.active_version(NAME) == 2
    v2 = registry.verify(NAME, 2, load_public_key(champion.public_key))
    v1 = registry.manifest(NAME, 1)
    assert v2.hyperparameters == v1.hyperparameters and (v2.window, v2.horizon) == (v1.window, v1.horizon)
    assert v2.metrics["retrain"]["parent_version"] == 1
    # v2 learnt regime B: its normalisation mean moved from about 10 to about 25.
    assert v1.normalisation["mean"][0] < 12 < 22 < v2.normalisation["mean"][0]
    updates = consume_until(kafka_settings, [layout.model_updates], lambda ms: len(ms) >= 1, timeout=30)
    announced = parse_model_update(updates[0].value, updates[0].key)
    assert (announced.name, announced.version, announced.action) == (NAME, 2, "promote")

    # The same request delivered again (at-least-once) is about a version no longer active.
    stale = retrainer.handle(_request(1))
    assert stale.outcome == "stale" and "v2" in stale.reason
    now[0] = 10.0
    limited = retrainer.handle(_request(2))
    assert limited.outcome == "rate_limited"
    # Same history, same hyperparameters and seed: the candidate cannot beat v2 by 2 %.
    now[0] = 100.0
    rejected = retrainer.handle(_request(2))
    assert rejected.outcome == "rejected", rejected
    assert rejected.candidate_mae is not None and rejected.champion_mae is not None
    assert rejected.candidate_mae >= 0.98 * rejected.champion_mae
    assert "does not beat champion v2" in rejected.reason
    assert registry.versions(NAME) == [1, 2] and registry.active_version(NAME) == 2
    assert len(consume_until(kafka_settings, [layout.model_updates], lambda ms: False, timeout=3)) == 1
    for outcome in ("promoted", "stale", "rate_limited", "rejected"):
        assert metrics.get_sample_value("streamedge_retrain_outcomes_total",
                                        {"model": NAME, "outcome": outcome}) == 1


def test_attack1_an_automatic_promotion_is_a_canary_by_default(
        champion: Champion, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        tmp_path: Path) -> None:
    layout = make_topics(1)
    _produce_regime_b(kafka_settings, layout)
    registry = _registry(tmp_path / "registry", champion)
    retrainer = _retrainer(registry, champion, kafka_settings, layout, tmp_path / "work")
    promoted = retrainer.handle(_request(1))
    assert promoted.outcome == "promoted" and "canary:10" in promoted.reason, promoted
    assert registry.active_version(NAME) == 1 and registry.canary(NAME) == (2, "canary:10")
    updates = consume_until(kafka_settings, [layout.model_updates], lambda ms: len(ms) >= 1, timeout=30)
    record = parse_model_update(updates[0].value, updates[0].key).promotion
    assert record is not None and (record.version, record.target, record.fleet_version) == (2, "canary:10", 1)
    # Until watch-canary judged it (and someone widened or rolled it back), no other retrain.
    waiting = retrainer.handle(_request(1))
    assert waiting.outcome == "stale" and "canary:10" in waiting.reason


def test_requests_that_cannot_be_retrained_are_recorded(
        champion: Champion, tiny_models: TinyModels, kafka_settings: KafkaSettings,
        make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(1)
    registry = _registry(tmp_path / "registry", champion)
    for folder in (tiny_models.classifier, tiny_models.forecaster):
        added = registry.add(folder, load_private_key(champion.signing_key))
        registry.promote(added.name, added.version)
    retrainer = _retrainer(registry, champion, kafka_settings, layout, tmp_path / "work")
    retrainer.routes = {"other": ["tiny-classifier", "tiny-forecaster"]}

    labels = retrainer.handle(_request(1, "tiny-classifier"))
    assert (labels.outcome, labels.model) == ("needs_labels", "tiny-classifier")
    assert "labelled data" in labels.reason
    foreign = retrainer.handle(_request(1, "tiny-forecaster"))
    assert foreign.outcome == "failed" and "no forecaster training hyperparameters" in foreign.reason
    unrouted = retrainer.handle(_request(1))
    assert unrouted.outcome == "failed" and f"no stream is routed to {NAME}" in unrouted.reason
    unknown = retrainer.handle(_request(1, "nobody"))
    assert unknown.outcome == "failed" and "no promoted version" in unknown.reason
    for payload in (b"{oops", None, b'{"model": "x", "version": "1"}', b"[1]"):
        assert retrainer.handle(payload).outcome == "invalid"
    assert registry.versions(NAME) == [1]


def test_watch_cli_commits_each_handled_request(
        champion: Champion, tiny_models: TinyModels, kafka_settings: KafkaSettings,
        make_topics: Callable[..., TopicLayout], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka import KafkaConsumer, TopicPartition

    layout = make_topics(1)
    registry = _registry(tmp_path / "registry", champion)
    registry.add(tiny_models.classifier, load_private_key(champion.signing_key))
    registry.promote("tiny-classifier", 1)
    produce(kafka_settings, layout.retrain_requests, [(b"tiny-classifier", _request(1, "tiny-classifier")),
                                                      (NAME.encode(), _request(7))])
    args = ["train", "watch", "--registry", str(registry.root), "--signing-key", str(champion.signing_key),
            "--public-key", str(champion.public_key), "--routes", json.dumps(ROUTES), "--group-id", "retrainer-cli",
            "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix,
            "--work-dir", str(tmp_path / "work"), "--no-progress"]
    assert main([*args, "--max-requests", "1"]) == 0
    assert main([*args, "--max-requests", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(o["model"], o["outcome"]) for o in printed] == [("tiny-classifier", "needs_labels"), (NAME, "stale")]
    reader = KafkaConsumer(**kafka_settings.kafka_python_config(), group_id="retrainer-cli",
                           enable_auto_commit=False)
    try:
        assert reader.committed(TopicPartition(layout.retrain_requests, 0)) == 2
    finally:
        reader.close()
    assert main([*args, "--routes", "{not json"]) != 0
    assert "--routes is not JSON" in capsys.readouterr().err


def test_drift_in_a_running_worker_is_retrained_and_hot_reloaded(
        champion: Champion, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        tmp_path: Path) -> None:
    layout = make_topics(3)
    registry = _registry(tmp_path / "registry", champion)
    install(tmp_path / "models", registry.path(NAME, 1), NAME)
    worker = WorkerProcess(kafka_settings, layout, tmp_path / "models", champion.public_key, ROUTES,
                           tmp_path / "worker.log", f"app-{layout.prefix}", drift_window=50,
                           # Only the drift rule may fire here: the error rule needs more scored readings.
                           mae_window=100_000, retrain_min_interval_s=3600).start()
    try:
        worker.wait_ready()
        assert worker.proc is not None
        pid = worker.proc.pid
        assert worker.metric("streamedge_stream_model_version", f'model="{NAME}"') == 1
        _produce_regime_b(kafka_settings, layout)
        stop = threading.Event()
        timer = threading.Timer(150, stop.set)
        timer.start()
        try:
            outcomes = serve(_retrainer(registry, champion, kafka_settings, layout, tmp_path / "work",
                                        policy=RetrainPolicy(promote_to="all")),
                             "retrainer-e2e", max_requests=1, stop=stop)
        finally:
            timer.cancel()
        assert [(o.outcome, o.trigger, o.new_version) for o in outcomes] == [("promoted", "drift", 2)], outcomes
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if worker.metric("streamedge_stream_model_version", f'model="{NAME}"') == 2:
                break
            time.sleep(0.5)
        assert worker.metric("streamedge_stream_model_version", f'model="{NAME}"') == 2, worker.log.read_text()[-3000:]
        assert worker.proc.pid == pid and worker.proc.poll() is None
        # v2 learnt regime B: once its own monitor has a full window, the drift is gone.
        assert worker.metric("streamedge_stream_input_drift_z", f'model="{NAME}"') > 3
        _produce_regime_b(kafka_settings, layout, 200, 260)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if worker.metric("streamedge_stream_input_drift_z", f'model="{NAME}"') < 1:
                break
            time.sleep(0.5)
        assert worker.metric("streamedge_stream_input_drift_z", f'model="{NAME}"') < 1
        assert worker.metric("streamedge_stream_retrain_requests_total", f'model="{NAME}",trigger="drift"') == 1
        assert worker.proc.pid == pid and worker.proc.poll() is None
    finally:
        worker.stop()
