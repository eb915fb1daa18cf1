"""Workers serve the fleet: a staged (canary/group) record keeps them on its fleet version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord, sign_record
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.services.models import active_version_dir
from streamedge.services.processor import Processor
from streamedge.services.updates import ModelFollower
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version
from tests.services.helpers import install
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
ROUTES = {"s": [NAME]}


def _staged(folder: Path, fleet: Path, signing_key: Path, sequence: int, target: str = "canary:20") -> ModelUpdate:
    manifest, fleet_manifest = read_manifest(folder), read_manifest(fleet)
    record = PromotionRecord(NAME, manifest.version, "promote", sequence, 1.7e9 + sequence, manifest.sha256,
                             target=target, fleet_version=fleet_manifest.version, fleet_sha256=fleet_manifest.sha256)
    return ModelUpdate(NAME, manifest.version, folder.as_uri(), manifest, "promote",
                       sign_record(record, load_private_key(signing_key)), (folder / manifest.model_file).read_bytes())


def test_worker_keeps_the_fleet_version_under_a_canary_and_refuses_its_replay(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    processor = make_processor(routes=ROUTES)
    models = tmp_path / "models"
    follower = ModelFollower(processor, models, load_public_key(tiny_models.public_key))
    canary = _staged(v2, tiny_models.forecaster, key, 2)
    assert follower.handle(KEY, canary.to_json()) == "current"  # serves v1, the fleet version: nothing loaded
    assert processor.models.describe()[NAME] == 1 and follower.ledger.get(NAME) == canary.promotion
    assert not (models / NAME / "2").exists()
    assert active_version_dir(models, NAME) == models / NAME / "1"  # a restart loads the fleet version
    assert follower.handle(KEY, signed_update(tiny_models.forecaster, key, 3, "rollback").to_json()) == "current"
    assert follower.handle(KEY, canary.to_json()) == "rejected"  # the replayed older canary record
    assert processor.models.describe()[NAME] == 1


def test_worker_returns_to_the_fleet_version_it_holds_or_refuses(
        make_processor: Callable[..., Processor], tiny_models: TinyModels, tmp_path: Path) -> None:
    key = tiny_models.signing_key
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, key)
    v3 = make_version(tiny_models.forecaster, tmp_path / "v3", 3, key)
    processor = make_processor(routes=ROUTES)
    models = tmp_path / "models"
    follower = ModelFollower(processor, models, load_public_key(tiny_models.public_key))
    assert follower.handle(KEY, signed_update(v2, key, 1, inline=True).to_json()) == "loaded"
    assert processor.models.describe()[NAME] == 2
    # Staged v3 with v1 as the fleet version, v1 not in the worker's folder: refused, v2 keeps serving.
    assert follower.handle(KEY, _staged(v3, tiny_models.forecaster, key, 2, "group:eu").to_json()) == "rejected"
    ledger = PromotionLedger(models).get(NAME)
    assert processor.models.describe()[NAME] == 2 and ledger is not None and ledger.sequence == 1
    install(models, tiny_models.forecaster, NAME, 1)
    assert follower.handle(KEY, _staged(v3, tiny_models.forecaster, key, 3, "group:eu").to_json()) == "loaded"
    assert processor.models.describe()[NAME] == 1 and not (models / NAME / "3").exists()
