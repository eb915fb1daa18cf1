"""Hostile model-update messages: the parser raises only ManifestError; records order promotions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.model_update import ModelUpdate, parse_model_update, verify_update
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord, StaleUpdateError, sign_record, verify_record
from streamedge.contracts.signing import generate_keypair, load_private_key, load_public_key
from streamedge.errors import ManifestError, SignatureError, VerificationError
from streamedge.training.tiny import TinyModels
from tests.streamedge.updates import signed_update

_HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**450), max_value=10**450),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.just("[" * 5000), st.just(10**400), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _valid(tiny_models: TinyModels) -> dict[str, Any]:
    update = signed_update(tiny_models.forecaster, tiny_models.signing_key, 1)
    body: dict[str, Any] = json.loads(update.to_json())
    return body


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.none(), st.binary(max_size=2048)), key=st.one_of(st.none(), st.binary(max_size=16)))
def test_any_bytes_give_an_update_or_a_manifest_error(payload: bytes | None, key: bytes | None) -> None:
    with pytest.raises(ManifestError):
        parse_model_update(payload, key)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_messages_raise_only_documented_errors(tiny_models: TinyModels, data: st.DataObject) -> None:
    body = _valid(tiny_models)
    section = data.draw(st.sampled_from([body, body["manifest"], body["promotion"]]))
    field = data.draw(st.sampled_from(sorted(section)))
    section[field] = data.draw(_HOSTILE_VALUES)
    payload = json.dumps(body).encode()
    key = data.draw(st.sampled_from([b"tiny-forecaster", b"\xff\xfe", b"other"]))
    public = load_public_key(tiny_models.public_key)
    try:
        update = parse_model_update(payload, key)
        verify_update(update, public)
    except (ManifestError, VerificationError):
        return
    # Whatever got through both checks is exactly what the registry signed.
    assert key == b"tiny-forecaster"
    assert update.manifest == read_manifest(tiny_models.forecaster)


@pytest.mark.parametrize("payload", [
    b"[" * 100_000,
    b'{"name": ' + b"1" * 400 + b"}",
    b"\xff\xfe\x00not utf-8",
    b"null", b"[]", b'"x"', b"1e999",
])
def test_measured_crashes_are_manifest_errors(payload: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_model_update(payload, b"tiny-forecaster")


def test_huge_number_in_manifest_and_wrong_keys(tiny_models: TinyModels) -> None:
    body = _valid(tiny_models)
    body["manifest"]["normalisation"]["mean"] = [10**400]
    with pytest.raises(ManifestError, match=r"normalisation\.mean|integer .* is too large"):
        parse_model_update(json.dumps(body).encode(), b"tiny-forecaster")
    good = json.dumps(_valid(tiny_models)).encode()
    for key in (None, b"\xff\xfe", b"tiny-classifier", b"tiny-forecaster "):
        with pytest.raises(ManifestError, match="key"):
            parse_model_update(good, key)
    assert parse_model_update(good, b"tiny-forecaster").promotion is not None


def test_action_and_sequence_are_signed(tiny_models: TinyModels, tmp_path: Path) -> None:
    public = load_public_key(tiny_models.public_key)
    record = signed_update(tiny_models.forecaster, tiny_models.signing_key, 4, "rollback").promotion
    assert record is not None
    verify_record(record, public)
    for change in ({"action": "promote"}, {"sequence": 99}, {"version": 2}, {"sha256": "0" * 64}):
        forged = PromotionRecord.from_dict({**record.to_dict(), **change})
        with pytest.raises(SignatureError):
            verify_record(forged, public)
    generate_keypair(tmp_path / "rogue.pem", tmp_path / "rogue.pub")
    with pytest.raises(SignatureError):
        verify_record(record, load_public_key(tmp_path / "rogue.pub"))
    body = _valid(tiny_models)
    body["promotion"]["signature"] = None
    with pytest.raises(SignatureError, match="unsigned"):
        verify_update(parse_model_update(json.dumps(body).encode(), b"tiny-forecaster"), public)
    body["promotion"] = None
    with pytest.raises(ManifestError, match="promotion record"):
        parse_model_update(json.dumps(body).encode(), b"tiny-forecaster")


def test_ledger_orders_promotions_and_survives_a_restart(tiny_models: TinyModels, tmp_path: Path) -> None:
    def record(sequence: int, version: int, action: str = "promote") -> PromotionRecord:
        update = signed_update(tiny_models.forecaster, tiny_models.signing_key, sequence, action)  # type: ignore[arg-type]
        assert update.promotion is not None
        return sign_record(PromotionRecord.from_dict({**update.promotion.to_dict(), "version": version}),
                           load_private_key(tiny_models.signing_key))

    public = load_public_key(tiny_models.public_key)
    ledger = PromotionLedger(tmp_path, public)
    assert ledger.get("tiny-forecaster") is None
    second, rollback = record(2, 2), record(3, 1, "rollback")
    assert ledger.freshness(second) == "new"
    ledger.accept(second)
    assert ledger.freshness(second) == "current"
    assert ledger.freshness(rollback) == "new"
    ledger.accept(rollback)
    restarted = PromotionLedger(tmp_path, public)
    assert restarted.get("tiny-forecaster") == rollback
    with pytest.raises(StaleUpdateError, match="older than the accepted #3"):
        restarted.freshness(second)  # the replayed promotion of the rolled-back version
    with pytest.raises(StaleUpdateError):
        restarted.freshness(record(3, 2))  # same sequence, another version
    restarted.accept(second)  # a lower record never overwrites a higher one
    assert restarted.get("tiny-forecaster") == rollback
    (tmp_path / "tiny-forecaster" / "promotion.json").write_bytes(b"[" * 100_000)
    assert restarted.get("tiny-forecaster") is None  # an unreadable ledger is no ledger: it blocks nothing


def test_update_round_trips_inline(tiny_models: TinyModels) -> None:
    update = signed_update(tiny_models.forecaster, tiny_models.signing_key, 7, inline=True)
    parsed = parse_model_update(update.to_json(), update.key)
    assert parsed == update
    assert isinstance(parsed, ModelUpdate) and parsed.inline == (tiny_models.forecaster / "model.tflite").read_bytes()
