"""Staged rollout targets: the hash rule, the signed target fields, the registry's canary bookkeeping."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord, StaleUpdateError, sign_record, verify_record
from streamedge.contracts.rollout import RolloutTarget, canary_bucket, parse_target
from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key
from streamedge.errors import ManifestError, SignatureError
from streamedge.registry import ModelRegistry, RegistryError
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version

SHA1, SHA2 = "1" * 64, "2" * 64


def test_parse_target_accepts_the_three_forms_and_names_bad_values() -> None:
    assert parse_target("all") == RolloutTarget("all")
    assert parse_target("group:eu-west") == RolloutTarget("group", group="eu-west")
    assert parse_target("canary:10") == parse_target("canary:10%") == RolloutTarget("canary", percent=10)
    assert str(parse_target("canary:10%")) == "canary:10" and str(parse_target("group:a")) == "group:a"
    for bad in ("", "some", "canary:0", "canary:101", "canary:-5", "canary:1.5", "group:", "group:a b",
                "canary:0010", "everyone:1"):
        with pytest.raises(ManifestError, match="rollout target"):
            parse_target(bad)


def test_canary_bucket_is_a_pinned_stable_hash_and_shares_are_proportional() -> None:
    # Pinned values: a change of the rule would move devices in and out of running canaries.
    assert canary_bucket("m", "d") == 91
    assert [canary_bucket("tiny-forecaster", f"dev-{i}") for i in range(6)] == [50, 72, 37, 51, 21, 30]
    buckets = [canary_bucket("tiny-forecaster", f"d{i}") for i in range(10_000)]
    assert set(buckets) == set(range(100))
    assert sum(b < 10 for b in buckets) == 963  # about 10 %, exactly this every run
    share = RolloutTarget("canary", percent=20)
    targeted = [i for i in range(10_000) if share.includes("tiny-forecaster", f"d{i}")]
    assert len(targeted) == sum(b < 20 for b in buckets)
    group = RolloutTarget("group", group="eu")
    assert group.includes("m", "x", "eu") and not group.includes("m", "x", "us") and not group.includes("m", "x", "")
    assert RolloutTarget("canary", percent=100).includes("m", "anything")


def test_record_serving_version_follows_the_target() -> None:
    canary = PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, target="canary:20", fleet_version=1, fleet_sha256=SHA1)
    inside = next(f"d{i}" for i in range(100) if canary_bucket("m", f"d{i}") < 20)
    outside = next(f"d{i}" for i in range(100) if canary_bucket("m", f"d{i}") >= 20)
    assert canary.partial and canary.fleet_serving == 1
    assert canary.serving_version(inside) == 2 and canary.serving_version(outside) == 1
    group = replace(canary, target="group:eu")
    assert group.serving_version(outside, "eu") == 2 and group.serving_version(inside, "us") == 1
    whole = PromotionRecord("m", 2, "promote", 5, 1.0, SHA2)
    assert not whole.partial and whole.fleet_serving == 2 and whole.serving_version(outside) == 2


def test_target_fields_are_checked() -> None:
    with pytest.raises(ManifestError, match="fleet_version"):
        PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, target="canary:20")
    with pytest.raises(ManifestError, match="fleet_version"):
        PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, target="canary:20", fleet_version=2, fleet_sha256=SHA1)
    with pytest.raises(ManifestError, match="canonical"):
        PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, target="canary:20%", fleet_version=1, fleet_sha256=SHA1)
    with pytest.raises(ManifestError, match="need a target"):
        PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, fleet_version=1, fleet_sha256=SHA1)
    with pytest.raises(ManifestError, match="fleet_sha256"):
        PromotionRecord("m", 2, "promote", 5, 1.0, SHA2, target="group:a", fleet_version=1, fleet_sha256="x")


def test_old_records_keep_their_bytes_and_signatures_and_the_target_is_signed(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    private, public = load_private_key(tmp_path / "k.pem"), load_public_key(tmp_path / "k.pub")
    old = sign_record(PromotionRecord("m", 1, "promote", 1, 1.0, SHA1), private)
    # The payload a registry without staged rollouts signed: exactly these seven fields.
    assert set(old.to_dict()) == {"model", "version", "action", "sequence", "time", "sha256", "signature"}
    assert old.signing_payload() == (b"streamedge-promotion-v1\n" + json.dumps(
        {"action": "promote", "model": "m", "sequence": 1, "sha256": SHA1, "time": 1.0, "version": 1},
        sort_keys=True, separators=(",", ":")).encode())
    assert PromotionRecord.from_dict(json.loads(json.dumps(old.to_dict()))) == old
    canary = sign_record(PromotionRecord("m", 2, "promote", 2, 2.0, SHA2, target="canary:20", fleet_version=1,
                                         fleet_sha256=SHA1), private)
    verify_record(PromotionRecord.from_dict(json.loads(json.dumps(canary.to_dict()))), public)
    for tampered in (replace(canary, target="canary:100"), replace(canary, target="group:x"),
                     replace(canary, fleet_version=3), replace(canary, target=None, fleet_version=None,
                                                                fleet_sha256=None)):
        with pytest.raises(SignatureError):
            verify_record(tampered, public)


def test_ledger_refuses_a_replayed_older_canary_record(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    private = load_private_key(tmp_path / "k.pem")
    ledger = PromotionLedger(tmp_path, load_public_key(tmp_path / "k.pub"))
    canary = sign_record(PromotionRecord("m", 2, "promote", 2, 2.0, SHA2, target="canary:20", fleet_version=1,
                                         fleet_sha256=SHA1), private)
    rollback = sign_record(PromotionRecord("m", 1, "rollback", 3, 3.0, SHA1), private)
    ledger.accept(canary)
    assert ledger.get("m") == canary and ledger.freshness(canary) == "current"
    ledger.accept(rollback)
    with pytest.raises(StaleUpdateError, match="#2"):
        ledger.freshness(canary)
    # Same sequence, a wider target: a conflicting record, refused too.
    fourth = sign_record(replace(canary, sequence=4), private)
    ledger.accept(fourth)
    with pytest.raises(StaleUpdateError):
        ledger.freshness(sign_record(replace(fourth, target="canary:100"), private))


def test_registry_stages_a_canary_and_rolls_it_back(tiny_models: TinyModels, tmp_path: Path) -> None:
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    name = registry.names()[0]
    with pytest.raises(RegistryError, match="fleet must serve another version"):
        registry.promote(name, 2, target="canary:10")  # no fleet version yet
    registry.promote(name, 1)
    with pytest.raises(RegistryError, match="no staged promotion"):
        registry.rollback_canary(name)
    update = registry.promote(name, 2, target="canary:10%")
    record = update.promotion
    assert record is not None and update.version == 2 and update.inline is not None
    assert (record.sequence, record.target, record.fleet_version) == (2, "canary:10", 1)
    assert record.fleet_sha256 == registry.manifest(name, 1).sha256
    assert registry.active_version(name) == 1 and registry.canary(name) == (2, "canary:10")
    verify_record(record, load_public_key(tiny_models.public_key))
    back = registry.rollback(name)  # with a canary out, rollback ends the canary
    assert back.promotion is not None and (back.version, back.action, back.promotion.sequence) == (1, "rollback", 3)
    assert back.promotion.target is None and registry.canary(name) is None and registry.history(name) == [1]
    registry.promote(name, 2, target="group:eu")
    full = registry.promote(name, 2)  # the whole fleet: the group promotion ends
    assert full.promotion is not None and full.promotion.target is None and registry.canary(name) is None
    assert registry.active_version(name) == 2 and registry.history(name) == [1, 2]


def test_rollback_canary_ends_only_the_record_it_was_given(tiny_models: TinyModels, tmp_path: Path) -> None:
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    name = registry.names()[0]
    registry.promote(name, 1)
    judged = registry.promote(name, 2, target="canary:10").promotion
    assert judged is not None and judged.sequence == 2
    registry.promote(name, 2, target="group:eu")  # a newer staged promotion replaces the judged one
    with pytest.raises(RegistryError, match="#3, not the judged #2"):
        registry.rollback_canary(name, expect_sequence=judged.sequence)
    assert registry.canary(name) == (2, "group:eu")
    back = registry.rollback_canary(name, expect_sequence=3)
    assert back.promotion is not None and (back.version, back.promotion.sequence) == (1, 4)
    assert registry.canary(name) is None and registry.history(name) == [1]


def test_cli_promotes_to_a_group_or_a_canary_share(tiny_models: TinyModels, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from streamedge.cli.main import main

    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    name = registry.names()[0]
    common = ["--registry", str(registry.root), "--public-key", str(tiny_models.public_key),
              "--signing-key", str(tiny_models.signing_key), "--no-publish"]
    assert main(["models", "promote", name, "1", *common]) == 0
    assert main(["models", "promote", name, "2", "--canary", "20%", *common]) == 0
    assert registry.canary(name) == (2, "canary:20") and registry.active_version(name) == 1
    assert main(["models", "promote", name, "2", "--to", "eu-west", *common]) == 0
    record = registry.record(name)
    assert record is not None and (record.target, record.fleet_version, record.sequence) == ("group:eu-west", 1, 3)
    with pytest.raises(SystemExit) as usage:
        main(["models", "promote", name, "2", "--to", "eu", "--canary", "5", *common])
    assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["models", "promote", name, "2", "--canary", "150%", *common]) == 1
    assert "canary:<1-100>" in capsys.readouterr().err
    assert main(["models", "rollback", name, *common]) == 0
    assert registry.canary(name) is None and registry.active_version(name) == 1


def test_cli_refuses_an_empty_target_and_reads_none_from_the_environment(
        tiny_models: TinyModels, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamedge.cli.main import main

    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    name = registry.names()[0]
    common = ["--registry", str(registry.root), "--public-key", str(tiny_models.public_key),
              "--signing-key", str(tiny_models.signing_key), "--no-publish"]
    assert main(["models", "promote", name, "1", *common]) == 0
    for flag in ("--to", "--canary"):
        for empty in ("", " "):
            assert main(["models", "promote", name, "2", flag, empty, *common]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"{flag} needs a value" in err
    assert registry.active_version(name) == 1 and registry.record(name).sequence == 1  # type: ignore[union-attr]
    # A leftover export (under the names option() would have derived, or any other) stages nothing.
    for env in ("STREAMEDGE_TO_GROUP", "STREAMEDGE_CANARY", "STREAMEDGE_MODELS_PROMOTE_TO",
                "STREAMEDGE_MODELS_PROMOTE_CANARY"):
        monkeypatch.setenv(env, "10")
    assert main(["models", "promote", name, "2", *common]) == 0
    record = registry.record(name)
    assert record is not None and record.target is None and registry.canary(name) is None
    assert "[flag only: no env var]" in _help(main, ["models", "promote", "--help"], capsys)


def _help(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return " ".join(capsys.readouterr().out.split())


def test_cli_announce_republishes_the_current_record_without_issuing_one(
        tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from streamedge.cli.main import main
    from streamedge.kafka import model_updates

    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    registry.add(make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key), key)
    name = registry.names()[0]
    registry.promote(name, 1)
    registry.promote(name, 2, target="canary:20")
    registry.rollback_canary(name)
    sent: list[ModelUpdate] = []
    monkeypatch.setattr(model_updates, "publish_model_update", lambda settings, layout, update: sent.append(update))
    assert main(["models", "announce", name, "--registry", str(registry.root),
                 "--public-key", str(tiny_models.public_key)]) == 0
    assert len(sent) == 1 and sent[0].promotion == registry.record(name)
    back = sent[0].promotion
    assert back is not None and (sent[0].version, sent[0].action, back.sequence) == (1, "rollback", 3)
    assert "record #3" in capsys.readouterr().out
    assert main(["models", "announce", "unknown", "--registry", str(registry.root),
                 "--public-key", str(tiny_models.public_key)]) == 1
    assert "no promotion to announce" in capsys.readouterr().err and len(sent) == 1
