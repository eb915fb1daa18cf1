"""Test helper: model-update messages carrying a signed promotion record."""

from __future__ import annotations

from pathlib import Path

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionRecord, UpdateAction, sign_record
from streamedge.contracts.signing import load_private_key

__all__ = ["signed_update"]


def signed_update(folder: Path, signing_key: Path, sequence: int, action: UpdateAction = "promote", *,
                  uri: str | None = None, inline: bool = False) -> ModelUpdate:
    """An update announcing the model in ``folder`` under promotion record ``sequence``, signed by ``signing_key``."""
    manifest = read_manifest(folder)
    record = PromotionRecord(manifest.name, manifest.version, action, sequence, 1.7e9 + sequence, manifest.sha256)
    content = (folder / manifest.model_file).read_bytes() if inline else None
    return ModelUpdate(manifest.name, manifest.version, uri or folder.as_uri(), manifest, action,
                       sign_record(record, load_private_key(signing_key)), content)
