"""A model download that fails in the transport (a garbled HTTP reply, a bad Content-Length)
refuses that update only: the old version keeps serving and the follower takes the next one."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamedge.services.updates as updates
from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.promotion import PromotionRecord
from streamedge.contracts.signing import load_public_key
from streamedge.services.processor import Processor
from streamedge.services.updates import ModelFollower
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
ROUTES = {"s": [NAME]}

# What http.client and urllib raise on the bytes of a hostile or broken server.
TRANSPORT_ERRORS: list[Exception] = [
    http.client.BadStatusLine("garbage"),
    http.client.HTTPException("got more than 100 headers"),
    http.client.LineTooLong("header line"),
    http.client.IncompleteRead(b"xx", 10),
    ValueError("invalid literal for int() with base 10: '\u00b2'"),
]


class FailingFetch:
    """``fetch_model`` that raises ``errors`` in turn, then fetches for real."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.real = updates.fetch_model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return self.real(*args, **kwargs)


def _rejected(processor: Processor) -> float | None:
    return processor.metrics.registry.get_sample_value(
        "streamedge_stream_model_reloads_total", {"model": NAME, "outcome": "rejected"})


def _follower(make_processor: Callable[..., Processor], tiny_models: TinyModels,
              tmp_path: Path) -> tuple[Path, Processor, ModelFollower]:
    """A v2 of the tiny forecaster, a processor serving v1, and its follower over ``tmp_path/models``."""
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    processor = make_processor(routes=ROUTES)
    return v2, processor, ModelFollower(processor, tmp_path / "models", load_public_key(tiny_models.public_key))


def test_transport_errors_refuse_the_update_and_the_next_one_loads(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tiny_models.signing_key
    v2, processor, follower = _follower(make_processor, tiny_models, tmp_path)
    monkeypatch.setattr(updates, "fetch_model", FailingFetch(TRANSPORT_ERRORS))
    for sequence, error in enumerate(TRANSPORT_ERRORS, start=2):
        assert follower.handle(KEY, signed_update(v2, key, sequence, inline=True).to_json()) == "rejected"
        assert processor.models.describe()[NAME] == 1
        assert follower.refusals[NAME].startswith(f"fetch of {NAME} v2 failed: {type(error).__name__}")
    assert _rejected(processor) == len(TRANSPORT_ERRORS)
    assert follower.handle(KEY, signed_update(v2, key, 20, inline=True).to_json()) == "loaded"
    assert processor.models.describe()[NAME] == 2 and NAME not in follower.refusals


def test_transport_errors_on_the_event_loop_refuse_the_update(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tiny_models.signing_key
    v2, processor, follower = _follower(make_processor, tiny_models, tmp_path)
    monkeypatch.setattr(updates, "fetch_model", FailingFetch(TRANSPORT_ERRORS))

    async def follow() -> list[str]:
        outcomes = []
        for sequence in range(2, 3 + len(TRANSPORT_ERRORS)):
            outcomes.append(await follower.handle_async(KEY, signed_update(v2, key, sequence, inline=True).to_json()))
        return outcomes

    assert asyncio.run(follow()) == ["rejected"] * len(TRANSPORT_ERRORS) + ["loaded"]
    assert processor.models.describe()[NAME] == 2


def test_fleet_version_not_installed_on_a_transport_error(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tiny_models.signing_key
    v2, processor, follower = _follower(make_processor, tiny_models, tmp_path)
    v3 = make_version(tiny_models.forecaster, tmp_path / "v3", 3, key)
    models = tmp_path / "models"
    staged = PromotionRecord(NAME, 3, "promote", 2, 1.7e9, read_manifest(v3).sha256, target="canary:20",
                             fleet_version=2, fleet_sha256=read_manifest(v2).sha256)
    monkeypatch.setattr(updates, "fetch_model", FailingFetch([http.client.BadStatusLine("garbage")]))
    assert not follower.install_fleet_version(staged, signed_update(v2, key, 1, inline=True))
    assert "BadStatusLine" in follower.refusals[NAME] and not (models / NAME / "2").exists()
    assert follower.install_fleet_version(staged, signed_update(v2, key, 1, inline=True))
    assert (models / NAME / "2").is_dir() and processor.models.describe()[NAME] == 1


def test_an_unforeseen_error_refuses_that_message_only(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tiny_models.signing_key
    v2, processor, follower = _follower(make_processor, tiny_models, tmp_path)
    monkeypatch.setattr(updates, "fetch_model", FailingFetch([RuntimeError("a bug"), RuntimeError("a bug")]))
    assert follower.handle(KEY, signed_update(v2, key, 2, inline=True).to_json()) == "rejected"
    assert follower.refusals[NAME] == "RuntimeError: a bug" and _rejected(processor) == 1
    assert asyncio.run(follower.handle_async(KEY, signed_update(v2, key, 3, inline=True).to_json())) == "rejected"
    assert asyncio.run(follower.handle_async(KEY, signed_update(v2, key, 4, inline=True).to_json())) == "loaded"
    assert processor.models.describe()[NAME] == 2
