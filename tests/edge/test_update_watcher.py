"""The device's update path without a broker: hostile messages change nothing, replays are refused."""

from __future__ import annotations

import errno
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamedge.contracts.signing import load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version, other_key
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # never contacted: nothing here starts a thread


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256, and every symlink with its target."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = "-> " + str(path.readlink())
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _agent(make_agent: Callable[..., EdgeAgent]) -> EdgeAgent:
    return make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="unused."),
                      model_updates=True)


def _count(agent: EdgeAgent, outcome: str) -> float:
    return agent.metrics.registry.get_sample_value("streamedge_edge_model_updates_total", {"outcome": outcome}) or 0


def _apply_all(agent: EdgeAgent) -> list[bool]:
    assert agent.watcher is not None
    applied = []
    while not agent.watcher.fetched.empty():
        applied.append(agent.apply_update(agent.watcher.fetched.get_nowait()))
    return applied


def test_unverified_updates_never_delete_or_change_anything(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, model_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(model_dir, load_public_key(tiny_models.public_key))
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    store.install(v2, activate=False)  # installed, neither current nor previous
    agent = _agent(make_agent)
    assert agent.watcher is not None
    before = _tree(model_dir)
    rogue = other_key(tmp_path)
    unsigned = json.loads(signed_update(v2, tiny_models.signing_key, 2).to_json())
    unsigned["promotion"]["signature"] = None
    hostile: list[tuple[bytes | None, bytes | None]] = [
        (KEY, json.dumps(unsigned).encode()),  # the update that used to delete v2
        (KEY, signed_update(v2, rogue, 2).to_json()),  # record signed by an untrusted key
        (KEY, signed_update(make_version(tiny_models.forecaster, tmp_path / "r2", 2, rogue), rogue, 2).to_json()),
        (b"\xff\xfe", signed_update(v2, tiny_models.signing_key, 2).to_json()),
        (KEY, b"[" * 100_000),
        (KEY, b'{"name": "tiny-forecaster", "version": ' + b"9" * 400 + b"}"),
        (KEY, None),
    ]
    for key, value in hostile:
        agent.watcher.handle(key, value)
    assert agent.watcher.fetched.empty()
    assert _tree(model_dir) == before  # v2 is still installed, nothing changed
    assert agent.predictor is not None and agent.predictor.version == 1
    assert _count(agent, "verification") == 3 and _count(agent, "malformed") == 3
    agent.outbox.close()


_MUTATIONS = st.sampled_from(["name", "version", "action", "uri", "manifest", "promotion", "inline"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=_MUTATIONS, value=st.one_of(st.none(), st.integers(min_value=-(10**420), max_value=10**420),
                                        st.text(max_size=20), st.just([[[[[]]]]]), st.just({"a": 1})),
       key=st.sampled_from([KEY, b"\xc3\x28", b"", b"other"]))
def test_mutated_updates_reach_nothing(make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels,
                                       model_dir: Path, field: str, value: Any, key: bytes) -> None:
    original = signed_update(tiny_models.forecaster, tiny_models.signing_key, 9)
    body = json.loads(original.to_json())
    body[field] = value
    agent = _agent(make_agent)
    assert agent.watcher is not None
    before = _tree(model_dir)
    try:
        agent.watcher.handle(key, json.dumps(body).encode())
        assert _tree(model_dir) == before
        if not agent.watcher.fetched.empty():  # only a mutation that changed nothing signed gets through
            assert key == KEY and agent.watcher.fetched.get_nowait().update.promotion == original.promotion
    finally:
        agent.outbox.close()


def test_replayed_older_promotion_is_refused_and_rollback_honoured(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    promote_v2 = signed_update(v2, key, 2, inline=True)
    rollback_v1 = signed_update(tiny_models.forecaster, key, 3, "rollback")
    agent = _agent(make_agent)
    assert agent.watcher is not None
    agent.watcher.handle(KEY, promote_v2.to_json())
    assert _apply_all(agent) == [True] and agent.predictor is not None and agent.predictor.version == 2
    agent.watcher.handle(KEY, rollback_v1.to_json())
    assert _apply_all(agent) == [True] and agent.predictor.version == 1
    agent.watcher.handle(KEY, promote_v2.to_json())  # the replay
    assert agent.watcher.fetched.empty() and _count(agent, "stale") == 1
    assert agent.predictor.version == 1

    # A newer record queued ahead of an older one: the agent re-checks the ledger when it applies.
    agent.watcher.handle(KEY, signed_update(v2, key, 5).to_json())
    agent.watcher.handle(KEY, signed_update(tiny_models.forecaster, key, 4, "rollback").to_json())
    assert _apply_all(agent) == [True, False] and agent.predictor.version == 2 and _count(agent, "stale") == 2
    agent.watcher.handle(KEY, signed_update(tiny_models.forecaster, key, 6, "rollback").to_json())
    assert _apply_all(agent) == [True] and agent.predictor.version == 1
    agent.outbox.close()

    restarted = _agent(make_agent)  # same model folder and ledger
    assert restarted.watcher is not None and restarted.predictor is not None and restarted.predictor.version == 1
    restarted.watcher.handle(KEY, signed_update(v2, key, 5).to_json())
    assert restarted.watcher.fetched.empty() and _count(restarted, "stale") == 1
    restarted.watcher.handle(KEY, signed_update(tiny_models.forecaster, key, 6, "rollback").to_json())
    assert restarted.watcher.fetched.empty()  # the accepted record itself, re-read: nothing to do
    restarted.outbox.close()


def test_a_malformed_uri_is_refused_not_raised(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    # The URI is under no signature: a genuine manifest and record with a URI that does not parse
    # used to raise out of the watcher, which then re-read the same message forever.
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    agent = _agent(make_agent)
    assert agent.watcher is not None
    agent.watcher.handle(KEY, signed_update(v2, tiny_models.signing_key, 2, uri="http://[::1/m/").to_json())
    assert _apply_all(agent) == [False]
    assert agent.predictor is not None and agent.predictor.version == 1
    assert _count(agent, "verification") == 1
    agent.outbox.close()


def test_a_swap_the_disk_refuses_is_refused_and_the_old_model_serves(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    agent = _agent(make_agent)
    assert agent.watcher is not None
    agent.watcher.handle(KEY, signed_update(v2, tiny_models.signing_key, 2, inline=True).to_json())

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("streamedge.edge.models.os.symlink", disk_full)
    assert _apply_all(agent) == [False]
    assert agent.predictor is not None and agent.predictor.version == 1
    assert _count(agent, "activate") == 1
    monkeypatch.undo()
    assert agent.store.active_version(NAME) == 1
    agent.outbox.close()


def _payload(stream: str, seq: int, value: float | list[float]) -> bytes:
    return json.dumps({"device_id": "d", "stream": stream, "ts": 1.7e9 + seq, "value": value, "seq": seq}).encode()


def test_one_hostile_width_before_the_first_model_locks_nothing_out(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    agent = make_agent(IteratorSource(iter(()), queue_size=4), _OFFLINE, TopicLayout(prefix="unused."),
                       model_updates=True, model_dir=tmp_path / "no-model-yet", model_name=NAME)
    assert agent.watcher is not None and agent.predictor is None
    agent.process([_payload("evil", 0, [1.0, 2.0, 3.0])])  # the last key seen sends 3 values
    agent.process([_payload("s", i, 10.0 + math.sin(i)) for i in range(20)])
    readings = agent.metrics.registry.get_sample_value
    assert readings("streamedge_edge_readings_total", {"outcome": "accepted"}) == 21
    assert not readings("streamedge_edge_readings_total", {"outcome": "feature_count"})
    agent.watcher.handle(KEY, signed_update(tiny_models.forecaster, tiny_models.signing_key, 1, inline=True).to_json())
    assert _apply_all(agent) == [True] and agent.predictor is not None and agent.predictor.version == 1
    agent.process([_payload("evil", 1, [1.0, 2.0, 3.0])])  # now the model sets the width
    assert readings("streamedge_edge_readings_total", {"outcome": "feature_count"}) == 1
    agent.outbox.close()


def test_a_window_no_float32_model_can_score_does_not_refuse_every_update(
        make_agent: Callable[..., EdgeAgent], tiny_models: TinyModels, tmp_path: Path) -> None:
    agent = _agent(make_agent)
    assert agent.watcher is not None
    agent.process([_payload("s", i, 10.0 + math.sin(i)) for i in range(20)])
    agent.process([_payload("extreme", i, 1e300) for i in range(20)])  # valid readings, then a quiet key
    assert agent.metrics.registry.get_sample_value("streamedge_edge_readings_total",
                                                   {"outcome": "non_finite_output"})
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    agent.watcher.handle(KEY, signed_update(v2, tiny_models.signing_key, 2, inline=True).to_json())
    assert _apply_all(agent) == [True] and agent.predictor is not None and agent.predictor.version == 2
    agent.outbox.close()
