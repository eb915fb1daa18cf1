"""Safe model updates over the real model-updates topic: refusals keep the old model serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamedge.cli.main import main
from streamedge.contracts.manifest import read_manifest
from streamedge.edge.sources import IteratorSource, simulator_payloads
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import consume_all, consume_results, make_version, other_key
from tests.streamedge.updates import signed_update


def _announce(settings: KafkaSettings, layout: TopicLayout, folder: Path, signing_key: Path, sequence: int) -> None:
    publish_model_update(settings, layout, signed_update(folder, signing_key, sequence))


def _wait_for(registry: Any, outcome: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (registry.get_sample_value("streamedge_edge_model_updates_total", {"outcome": outcome}) or 0) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no model update with outcome {outcome!r}")


def test_bad_updates_are_refused_and_a_good_one_swaps(
    tmp_path: Path, kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
    make_agent: Callable[..., Any], tiny_models: TinyModels, model_dir: Path,
) -> None:
    layout = make_topics()
    source = IteratorSource(simulator_payloads(keys=1, rate=300.0), queue_size=64)
    agent = make_agent(source, kafka_settings, layout, model_updates=True)
    registry = agent.metrics.registry
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        src, key = tiny_models.forecaster, tiny_models.signing_key
        tampered = make_version(src, tmp_path / "v2", 2, key)
        blob = bytearray((tampered / "model.tflite").read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        (tampered / "model.tflite").write_bytes(bytes(blob))
        wrong_key = make_version(src, tmp_path / "v3", 3, other_key(tmp_path))
        stats = read_manifest(src).normalisation
        wrong_shape = make_version(src, tmp_path / "v4", 4, key, features=["a", "b"], input_shape=[-1, 8, 2],
                                   output_shape=[-1, 4], normalisation={k: v * 2 for k, v in stats.items()})
        for sequence, folder in enumerate((tampered, wrong_key, wrong_shape), start=2):
            _announce(kafka_settings, layout, folder, key, sequence)
        _wait_for(registry, "verification", 2)
        _wait_for(registry, "shape", 1)
        assert agent.predictor.version == 1  # the old model keeps serving
        assert agent.store.versions("tiny-forecaster") == [1]  # nothing refused stays installed

        _announce(kafka_settings, layout, make_version(src, tmp_path / "v5", 5, key), key, 5)
        _wait_for(registry, "applied", 1)
        assert agent.predictor.version == 5
        assert agent.store.active_version("tiny-forecaster") == 5
        assert registry.get_sample_value("streamedge_edge_model_version", {"model": "tiny-forecaster"}) == 5

        common = ["--model-dir", str(model_dir), "--public-key", str(tiny_models.public_key)]
        assert main(["edge", "rollback", *common]) == 0
        deadline = time.monotonic() + 10
        while agent.predictor.version != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.predictor.version == 1  # the running agent followed the rollback
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)

    events = consume_all(kafka_settings, layout.edge_telemetry, expect=100, timeout_s=8)
    updates = {e["version"]: e for e in events if e["type"] == "model_update"}
    assert updates[2]["status"] == "refused" and "sha256" in updates[2]["detail"]
    assert 3 not in updates  # an unverified message never reaches the agent (counted and logged only)
    assert updates[4]["status"] == "refused" and updates[4]["reason"] == "shape"
    assert all(updates[v]["serving"] == 1 for v in (2, 4))
    assert updates[5]["status"] == "applied"
    results = consume_results(kafka_settings, layout.edge_results, expect=10_000, timeout_s=8)
    assert {r["version"] for r in results} == {1, 5}  # no refused version ever produced a result
