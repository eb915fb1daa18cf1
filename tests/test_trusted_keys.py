"""Key ids, the signed trusted-key list (rotation, revocation), and record expiry (a withheld update).

docs/security.md ("Key ids, rotation, revocation, expiry") maps each promise to these tests. The
promises about delivery run an edge update thread against the real test broker.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamedge.cli.main import main
from streamedge.contracts.keys import TrustedKeys, key_id, make_key_list, read_key_list, replace_key_list, write_key_list
from streamedge.contracts.promotion import PromotionLedger, sign_record
from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key, verify_manifest_signature
from streamedge.errors import ConfigError, SignatureError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, load_model
from streamedge.services.processor import Processor
from streamedge.services.settings import StreamSettings
from streamedge.services.updates import ModelFollower
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version
from tests.test_trust_boundaries import KEY, NAME, ROUTES, _publish, _Watched


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    generate_keypair(private, public)
    return private, public


@pytest.fixture
def lists(tiny_models: TinyModels, tmp_path: Path) -> dict[str, Path]:
    """Key list versions made with the CLI: v1 trusts A, v2 adds B (rotation), v3 drops A (revocation)."""
    root, _ = _keypair(tmp_path, "root")
    b_private, b_public = _keypair(tmp_path, "b")
    keys = tmp_path / "keys.json"
    kid_a = key_id(load_private_key(tiny_models.signing_key))
    out = {"a": tiny_models.signing_key, "b": b_private, "root": root}
    assert main(["models", "keys", "init", "--root-key", str(root), "--keys", str(keys),
                 "--add", str(tiny_models.public_key)]) == 0
    out["v1"] = Path(shutil.copy(keys, tmp_path / "keys-v1.json"))
    assert main(["models", "keys", "rotate", "--root-key", str(root), "--keys", str(keys), "--add", str(b_public)]) == 0
    out["v2"] = Path(shutil.copy(keys, tmp_path / "keys-v2.json"))
    assert main(["models", "keys", "rotate", "--root-key", str(root), "--keys", str(keys), "--revoke", kid_a]) == 0
    out["v3"] = Path(shutil.copy(keys, tmp_path / "keys-v3.json"))
    return out


def _history(tiny_models: TinyModels, tmp_path: Path, lists: dict[str, Path]) -> list[bytes]:
    """v1 promoted under key A (#1), v2 under key B (#2), v3 under key A again (#3)."""
    registry = ModelRegistry(tmp_path / "registry")
    messages = []
    for version, signer in ((1, "a"), (2, "b"), (3, "a")):
        key = load_private_key(lists[signer])
        registry.add(make_version(tiny_models.forecaster, tmp_path / f"src{version}", version, lists[signer]), key)
        messages.append(registry.promote(NAME, version, key).to_json())
    return messages


def test_every_signature_names_its_key_and_a_bare_one_verifies_under_a_single_key_only(
        tiny_models: TinyModels, lists: dict[str, Path], tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    key = load_private_key(tiny_models.signing_key)
    manifest = registry.add(make_version(tiny_models.forecaster, tmp_path / "src", 1, tiny_models.signing_key), key)
    record = registry.promote(NAME, 1, key).promotion
    assert record is not None and record.signature is not None and manifest.signature is not None
    assert manifest.signature.startswith(key_id(key) + ":") and record.signature.startswith(key_id(key) + ":")
    bare = manifest.replace(signature=manifest.signature.split(":", 1)[1])  # as signed before key ids
    verify_manifest_signature(bare, load_public_key(tiny_models.public_key))
    trusted = load_public_key(lists["v2"])
    assert isinstance(trusted, TrustedKeys)
    with pytest.raises(SignatureError, match="revoked or unknown"):
        verify_manifest_signature(bare, trusted)  # a list demands the key id: revocation cannot be dodged
    verify_manifest_signature(manifest, trusted)


@pytest.mark.parametrize(("version", "served", "refused"), [
    ("v1", [1, 3], 1),     # B is not trusted yet: its record is refused
    ("v2", [1, 2, 3], 0),  # rotation: the list adds B, B's record verifies
    ("v3", [2], 2),        # revocation: A left the list, both records it signed are refused
])
def test_rotation_and_revocation_decide_what_a_device_takes_from_the_real_topic(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        lists: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, version: str,
        served: list[int], refused: int) -> None:
    layout = make_topics(1)
    _publish(kafka_settings, layout.model_updates,
             [(KEY, m) for m in _history(tiny_models, tmp_path, lists)] + [(KEY, b"end of history")])
    trusted = load_public_key(lists[version])
    assert isinstance(trusted, TrustedKeys)
    with caplog.at_level(logging.WARNING), _Watched(kafka_settings, layout.model_updates, tmp_path / "device",
                                                    trusted) as edge:
        edge.wait_refused("malformed", 1)  # the sentinel: every record before it was judged
        fetched = [edge.watcher.fetched.get_nowait().update.version for _ in range(edge.watcher.fetched.qsize())]
    assert fetched == served
    assert edge.refused.count("verification") == refused
    assert sum(trusted.refused.values()) == refused  # counted by key id
    if version == "v3":
        kid_a = key_id(load_private_key(lists["a"]))
        assert trusted.refused == {kid_a: 2}
        assert any("revoked or unknown" in r.getMessage() and kid_a in r.getMessage() for r in caplog.records)


def test_a_worker_refuses_a_record_signed_by_a_revoked_key(
        tiny_models: TinyModels, lists: dict[str, Path], tmp_path: Path) -> None:
    trusted = load_public_key(lists["v3"])
    models = ModelSet()
    models.swap(load_model(make_version(tiny_models.forecaster, tmp_path / "b1", 1, lists["b"]), trusted))
    follower = ModelFollower(Processor(StreamSettings(routes=ROUTES), models, StreamMetrics(CollectorRegistry())),
                             tmp_path / "worker", trusted)
    messages = _history(tiny_models, tmp_path, lists)
    assert follower.handle(KEY, messages[2]) == "rejected"  # v3 signed by revoked A
    assert follower.handle(KEY, messages[1]) == "loaded"  # v2 signed by B
    assert models.describe() == {NAME: 2}


def test_a_key_list_replaces_the_installed_one_only_when_its_root_signed_a_newer_unexpired_version(
        lists: dict[str, Path], tmp_path: Path) -> None:
    installed = Path(shutil.copy(lists["v2"], tmp_path / "device-keys.json"))
    with pytest.raises(ConfigError, match="not above"):
        replace_key_list(lists["v1"], installed)  # a rollback of the list
    root = load_private_key(lists["root"])
    rogue, _ = _keypair(tmp_path, "rogue")
    b_public = load_public_key(lists["b"].with_suffix(".pub"))
    assert not isinstance(b_public, TrustedKeys)
    forged = tmp_path / "forged.json"
    write_key_list(make_key_list(load_private_key(rogue), [b_public], 9, time.time() + 3600), forged)
    with pytest.raises(ConfigError, match="not signed by the root"):
        replace_key_list(forged, installed)
    write_key_list(make_key_list(root, [b_public], 9, time.time() - 1), forged)
    with pytest.raises(ConfigError, match="expired"):
        replace_key_list(forged, installed)
    edited = tmp_path / "edited.json"
    edited.write_text(lists["v3"].read_text().replace('"version": 3', '"version": 30'))
    with pytest.raises(ConfigError, match="does not match"):
        replace_key_list(edited, installed)
    assert read_key_list(installed).version == 2  # nothing refused was installed
    # Root rotation: the old root countersigns the first list of the new root, which then rules alone.
    new_root, _ = _keypair(tmp_path, "root2")
    handover = tmp_path / "handover.json"
    write_key_list(make_key_list(root, [b_public], 4, time.time() + 3600, load_private_key(new_root)), handover)
    assert main(["models", "keys", "install", str(handover), "--keys", str(installed)]) == 0
    write_key_list(make_key_list(load_private_key(new_root), [b_public], 5, time.time() + 3600), forged)
    assert replace_key_list(forged, installed).version == 5
    write_key_list(make_key_list(root, [b_public], 6, time.time() + 3600), forged)
    with pytest.raises(ConfigError, match="not signed by the root"):
        replace_key_list(forged, installed)  # the old root no longer rules


def test_an_expired_record_reports_a_withheld_update_once_and_a_refresh_ends_it(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(1)
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key, record_ttl_s=3600)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "src", 1, tiny_models.signing_key), key)
    first = registry.promote(NAME, 1)
    assert first.promotion is not None and first.promotion.expires is not None
    assert first.promotion.expires == pytest.approx(first.promotion.time + 3600)
    public = load_public_key(tiny_models.public_key)
    device = tmp_path / "device"
    ledger = PromotionLedger(device, public)
    _publish(kafka_settings, layout.model_updates, [(KEY, first.to_json())])
    with _Watched(kafka_settings, layout.model_updates, device, public) as edge:
        ledger.accept(edge.next_fetched().update.promotion)  # type: ignore[arg-type]  # as the agent does
        assert not edge.watcher.check_expiry(first.promotion.expires - 1)
        late = first.promotion.expires + 1  # nothing newer arrived in time: a withheld update
        assert edge.watcher.check_expiry(late) and edge.watcher.check_expiry(late)
        assert edge.refused.count("expired") == 1  # reported once per record, not once per check
        assert (device / NAME / "1").is_dir()  # nothing removed: the device keeps serving v1
        refreshed = registry.refresh(NAME, key)
        assert refreshed.promotion is not None and refreshed.promotion.sequence == 2
        assert refreshed.promotion.version == 1 and (refreshed.promotion.expires or 0) > first.promotion.expires
        _publish(kafka_settings, layout.model_updates, [(KEY, refreshed.to_json())])
        again = edge.next_fetched()
        assert again.folder is not None and not again.installed  # the same version: nothing fetched anew
        ledger.accept(again.update.promotion)  # type: ignore[arg-type]
        assert not edge.watcher.check_expiry(refreshed.promotion.expires - 1)  # type: ignore[operator]
        assert edge.refused.count("expired") == 1


def test_an_unsigned_expiry_edit_breaks_the_record_signature(tiny_models: TinyModels) -> None:
    from dataclasses import replace

    from streamedge.contracts.promotion import PromotionRecord, verify_record

    key = load_private_key(tiny_models.signing_key)
    record = sign_record(PromotionRecord(NAME, 1, "promote", 1, 1.0, "0" * 64, expires=100.0), key)
    verify_record(record, load_public_key(tiny_models.public_key))
    with pytest.raises(SignatureError, match="does not match"):
        verify_record(replace(record, expires=1e12), load_public_key(tiny_models.public_key))
