"""The model-update message and the safe fetch of the artefact it points to.

Published on the compacted model-updates topic, key = model name (UTF-8), value = JSON::

    {"name": "airline-lstm", "version": 3, "action": "promote",
     "uri": "file:///srv/registry/airline-lstm/3", "manifest": {...signed manifest...}}

A subscriber (stream worker, edge agent) never runs what the message says without
:func:`fetch_model`: copy to a temporary folder, check the copied manifest equals the announced
one, check its Ed25519 signature against the subscriber's trusted key and the model's sha256,
then rename into place. Only ``file://`` URIs (a shared or synced folder) are served today; the
scheme dispatch is where an HTTP or object-store fetcher would go.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streamedge.contracts.manifest import MANIFEST_FILE, ModelManifest, read_manifest
from streamedge.contracts.signing import verify_manifest_signature, verify_model_dir
from streamedge.errors import ManifestError, VerificationError

__all__ = ["ModelUpdate", "UpdateAction", "fetch_model", "parse_model_update"]

UpdateAction = Literal["promote", "rollback"]
_ACTIONS = get_args(UpdateAction)


@dataclass(frozen=True)
class ModelUpdate:
    """One announcement: model ``name`` version ``version`` is now active, fetch it from ``uri``."""

    name: str
    version: int
    uri: str
    manifest: ModelManifest
    action: UpdateAction = "promote"

    @property
    def key(self) -> bytes:
        """The Kafka message key (compaction keeps the latest update per model)."""
        return self.name.encode()

    def to_json(self) -> bytes:
        """The Kafka message value."""
        body: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "action": self.action,
            "uri": self.uri,
            "manifest": self.manifest.to_dict(),
        }
        return json.dumps(body, sort_keys=True).encode()


def parse_model_update(payload: bytes | None) -> ModelUpdate:
    """Decode a model-update message; raises :class:`ManifestError` naming what is wrong."""
    if payload is None:
        raise ManifestError("model update is empty (tombstone)")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"model update is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ManifestError("model update must be a JSON object")
    missing = sorted({"name", "version", "uri", "manifest"} - body.keys())
    if missing:
        raise ManifestError(f"model update lacks field(s): {', '.join(missing)}")
    manifest = ModelManifest.from_dict(body["manifest"])
    action = body.get("action", "promote")
    if action not in _ACTIONS:
        raise ManifestError(f"model update action must be one of {_ACTIONS}, got {action!r}")
    if body["name"] != manifest.name or body["version"] != manifest.version:
        raise ManifestError(
            f"model update names {body['name']} v{body['version']} but its manifest is {manifest.name} v{manifest.version}"
        )
    if not isinstance(body["uri"], str):
        raise ManifestError("model update uri must be a string")
    return ModelUpdate(manifest.name, manifest.version, body["uri"], manifest, action)


def _source_folder(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise VerificationError(f"cannot fetch model from {uri!r}: only file:// URIs are supported")
    return Path(unquote(parsed.path))


def fetch_model(update: ModelUpdate, dest_dir: Path, public_key: Ed25519PublicKey) -> Path:
    """Copy, verify and install the announced model under ``dest_dir/<name>/<version>/``.

    The announced manifest's signature is checked before anything is copied. An already
    installed copy is re-verified and reused. Nothing partial is ever left at the
    final path: the copy lands in a temporary sibling folder and is renamed only once verified.

    Returns:
        The installed, verified model folder.

    Raises:
        VerificationError, SignatureError, ManifestError: with the reason; the destination is untouched.
    """
    verify_manifest_signature(update.manifest, public_key)
    final = dest_dir / update.name / str(update.version)
    if final.is_dir():
        verify_model_dir(final, public_key)
        return final
    source = _source_folder(update.uri)
    if not (source / MANIFEST_FILE).is_file():
        raise VerificationError(f"no model at {update.uri}")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".incoming-{update.version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        shutil.copy2(source / MANIFEST_FILE, staging / MANIFEST_FILE)
        copied = read_manifest(staging)
        if copied != update.manifest:
            raise VerificationError(f"manifest at {update.uri} differs from the announced {update.name} v{update.version}")
        shutil.copy2(source / copied.model_file, staging / copied.model_file)
        verify_model_dir(staging, public_key)
        staging.rename(final)
    except FileNotFoundError as exc:
        raise VerificationError(f"model file missing at {update.uri}: {exc.filename}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final
