"""A device judges a staged (canary/group) record by itself: serve it, stay on the fleet version, refuse a replay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionRecord, sign_record
from streamedge.contracts.rollout import canary_bucket
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never contacted: nothing here starts a thread
INSIDE = next(f"dev-{i}" for i in range(100) if canary_bucket(NAME, f"dev-{i}") < 20)
OUTSIDE = next(f"dev-{i}" for i in range(100) if canary_bucket(NAME, f"dev-{i}") >= 20)


def _staged(folder: Path, fleet: Path, signing_key: Path, sequence: int, target: str) -> ModelUpdate:
    """A signed update staging the model in ``folder`` to ``target``; the fleet keeps the one in ``fleet``."""
    manifest, fleet_manifest = read_manifest(folder), read_manifest(fleet)
    record = PromotionRecord(NAME, manifest.version, "promote", sequence, 1.7e9 + sequence, manifest.sha256,
                             target=target, fleet_version=fleet_manifest.version, fleet_sha256=fleet_manifest.sha256)
    return ModelUpdate(NAME, manifest.version, folder.as_uri(), manifest, "promote",
                       sign_record(record, load_private_key(signing_key)),
                       (folder / manifest.model_file).read_bytes())


def _agent(make_agent: Callable[..., EdgeAgent], tiny: TinyModels, device: str, folder: Path,
           group: str = "") -> EdgeAgent:
    """An offline agent with its own model folder (v1 installed) and buffer under ``folder``."""
    ModelStore(folder / "models", load_public_key(tiny.public_key)).install(tiny.forecaster)
    return make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="unused."),
                      model_updates=True, device_id=device, group=group, model_dir=folder / "models",
                      buffer_path=folder / "buffer.sqlite")


def _apply_all(agent: EdgeAgent) -> list[bool]:
    assert agent.watcher is not None
    return [agent.apply_update(agent.watcher.fetched.get_nowait()) for _ in range(agent.watcher.fetched.qsize())]


def _count(agent: EdgeAgent, outcome: str) -> float:
    return agent.metrics.registry.get_sample_value("streamedge_edge_model_updates_total", {"outcome": outcome}) or 0


def test_canary_record_moves_only_targeted_devices_and_a_replay_is_refused(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v1 = tiny_models.forecaster
    v2 = make_version(v1, tmp_path / "v2", 2, key)
    canary = _staged(v2, v1, key, 2, "canary:20")
    rollback = signed_update(v1, key, 3, "rollback")
    for device, expected in ((INSIDE, 2), (OUTSIDE, 1)):
        agent = _agent(make_agent, tiny_models, device, tmp_path / device)
        assert agent.watcher is not None and agent.predictor is not None and agent.predictor.version == 1
        agent.watcher.handle(KEY, signed_update(v1, key, 1).to_json())
        assert _apply_all(agent) == [False]  # already serving v1: the record is only accepted
        agent.watcher.handle(KEY, canary.to_json())
        assert _apply_all(agent) == [expected == 2]
        assert agent.predictor.version == expected
        assert agent.ledger.get(NAME) == canary.promotion  # both accept it: the order holds for both
        assert agent.store.versions(NAME) == ([1, 2] if expected == 2 else [1])  # outside: nothing fetched
        agent.watcher.handle(KEY, rollback.to_json())
        assert _apply_all(agent) == [expected == 2] and agent.predictor.version == 1
        agent.watcher.handle(KEY, canary.to_json())  # the replay of the older canary record
        assert agent.watcher.fetched.empty() and _count(agent, "stale") == 1 and agent.predictor.version == 1
        assert _count(agent, "applied") == (2 if expected == 2 else 0)
        agent.outbox.close()


def test_device_outside_a_new_canary_returns_to_the_fleet_version_it_holds(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v1 = tiny_models.forecaster
    v2 = make_version(v1, tmp_path / "v2", 2, key)
    v3 = make_version(v1, tmp_path / "v3", 3, key)
    agent = _agent(make_agent, tiny_models, OUTSIDE, tmp_path / "a", group="eu")
    assert agent.watcher is not None
    agent.watcher.handle(KEY, _staged(v2, v1, key, 2, "group:eu").to_json())
    assert _apply_all(agent) == [True] and agent.predictor is not None and agent.predictor.version == 2
    # A newer staged record for the US group only: this device goes back to the fleet's v1, without a fetch.
    agent.watcher.handle(KEY, _staged(v3, v1, key, 3, "group:us").to_json())
    assert _apply_all(agent) == [True] and agent.predictor.version == 1
    assert agent.store.versions(NAME) == [1, 2]
    agent.outbox.close()

    # A staged record whose fleet version a device never held: refused, it keeps serving, the ledger stays.
    fresh = _agent(make_agent, tiny_models, OUTSIDE, tmp_path / "b")
    assert fresh.watcher is not None
    fresh.watcher.handle(KEY, _staged(v3, v2, key, 4, "group:us").to_json())
    assert _apply_all(fresh) == [False] and fresh.predictor is not None and fresh.predictor.version == 1
    assert _count(fresh, "not_installed") == 1 and fresh.ledger.get(NAME) is None
    fresh.outbox.close()
