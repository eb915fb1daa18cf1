"""The model-update message, its verification and the safe fetch of the model it announces.

Published on the compacted model-updates topic, key = model name (UTF-8, must equal ``name``),
value = JSON of at most :data:`MAX_MESSAGE_BYTES`::

    {"name": "airline-lstm", "version": 3, "action": "promote",
     "uri": "https://registry:8443/models/airline-lstm/3/",    (or file:///srv/registry/airline-lstm/3)
     "manifest": {...signed manifest...},
     "promotion": {"model", "version", "action", "sequence", "time", "sha256", "signature"},
     "inline": "<base64 model file>"}                           (optional, models under 512 KiB)

A subscriber (stream worker, edge agent) acts on a message only after
:func:`verify_update`: the manifest's Ed25519 signature, the promotion record's signature and
its agreement with the message (model, version, action, the model's sha256). Its
:class:`~streamedge.contracts.promotion.PromotionLedger` then decides new / current / stale.
:func:`fetch_model` takes the model file from the inline bytes, a ``file://`` folder or an
``http(s)://`` URL (size-capped, resumable, hashed while streaming) and installs it only once
its sha256 matches. :func:`parse_model_update` turns any bytes into a :class:`ModelUpdate` or
raises :class:`~streamedge.errors.ManifestError`; nothing else escapes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urljoin, urlparse

from streamedge.contracts.download import FetchOptions, download
from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest, read_verified_model, write_manifest
from streamedge.contracts.promotion import PromotionRecord, UpdateAction, verify_record
from streamedge.contracts.signing import verify_manifest_signature, verify_model_dir
from streamedge.contracts.untrusted import load_json
from streamedge.errors import ManifestError, VerificationError

__all__ = [
    "INLINE_MAX_BYTES",
    "MAX_MESSAGE_BYTES",
    "FetchOptions",
    "ModelUpdate",
    "UpdateAction",
    "fetch_model",
    "parse_model_update",
    "verify_update",
]

# Under Kafka's default 1 MiB message limit once base64 (4/3) and the manifest are added.
INLINE_MAX_BYTES: Final = 512 * 1024
MAX_MESSAGE_BYTES: Final = 1024 * 1024
_MAX_KEY: Final = 256  # a model name's bytes (PromotionRecord's name bound)
_FIELDS: Final = frozenset({"name", "version", "action", "uri", "manifest", "promotion", "inline"})


@dataclass(frozen=True)
class ModelUpdate:
    """One announcement: ``name`` serves ``version`` from now on; the model is at ``uri`` or inline.

    Attributes:
        name, version: the announced model version.
        uri: ``file://`` folder or ``http(s)://`` folder URL of the version (the model file is
            ``uri`` + ``manifest.model_file``).
        manifest: the version's signed manifest.
        action: ``"promote"`` or ``"rollback"``.
        promotion: the registry's signed record ordering this announcement (None: refused by subscribers).
        inline: the model file's bytes carried in the message, or None.
    """

    name: str
    version: int
    uri: str
    manifest: ModelManifest
    action: UpdateAction = "promote"
    promotion: PromotionRecord | None = None
    inline: bytes | None = None

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
            "promotion": self.promotion.to_dict() if self.promotion else None,
        }
        if self.inline is not None:
            body["inline"] = base64.b64encode(self.inline).decode()
        return json.dumps(body, sort_keys=True).encode()


def parse_model_update(payload: bytes | None, key: bytes | None = None) -> ModelUpdate:
    """Decode a model-update message and check that it is self-consistent (not that it is trusted).

    The key is checked before the value is decoded, and the value is decoded under the parse
    rule of :func:`streamedge.contracts.untrusted.load_json` (size, then depth, before any
    recursive code such as the signing payload sees it).

    Args:
        payload: the message value, any bytes.
        key: the message key; it must equal the model name's UTF-8 bytes.

    Raises:
        ManifestError: naming what is wrong; no other exception escapes for any input.
    """
    if payload is None:
        raise ManifestError("model update is empty (tombstone)")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ManifestError(f"model update of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if key is None or not 0 < len(key) <= _MAX_KEY:
        raise ManifestError(f"model update key {key[:80] if key else key!r} is no model name")
    try:
        return _parse(payload, key)
    except (ValueError, TypeError, OverflowError, RecursionError, UnicodeError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"model update is malformed: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _parse(payload: bytes, key: bytes | None) -> ModelUpdate:
    body = load_json(payload, "model update", MAX_MESSAGE_BYTES)
    if not isinstance(body, dict):
        raise ManifestError("model update must be a JSON object")
    missing = sorted({"name", "version", "uri", "manifest", "promotion"} - body.keys())
    if missing:
        raise ManifestError(f"model update lacks field(s): {', '.join(missing)}")
    unknown = sorted(body.keys() - _FIELDS)
    if unknown:
        raise ManifestError(f"model update has unknown field(s): {', '.join(unknown)}")
    manifest = ModelManifest.from_dict(body["manifest"])
    if body["name"] != manifest.name or body["version"] != manifest.version:
        raise ManifestError(f"model update names {body['name']!r} v{body['version']!r} but its manifest is "
                            f"{manifest.name} v{manifest.version}")
    if key is None or key != manifest.name.encode():
        raise ManifestError(f"model update key {key!r} is not the model name {manifest.name!r}")
    if not isinstance(body["uri"], str) or len(body["uri"]) > 4096:
        raise ManifestError("model update uri must be a string of at most 4096 characters")
    promotion = PromotionRecord.from_dict(body["promotion"])
    action = body.get("action", "promote")
    if (promotion.model, promotion.version, promotion.action, promotion.sha256) != (
            manifest.name, manifest.version, action, manifest.sha256):
        raise ManifestError(f"promotion record #{promotion.sequence} does not match the update "
                            f"({manifest.name} v{manifest.version} {action!r})")
    inline = body.get("inline")
    content: bytes | None = None
    if inline is not None:
        if not isinstance(inline, str):
            raise ManifestError("model update inline must be a base64 string")
        try:
            content = base64.b64decode(inline, validate=True)
        except binascii.Error as exc:
            raise ManifestError(f"model update inline is not base64: {exc}") from exc
        if len(content) > INLINE_MAX_BYTES:
            raise ManifestError(f"inline model of {len(content)} bytes exceeds {INLINE_MAX_BYTES}")
    return ModelUpdate(manifest.name, manifest.version, body["uri"], manifest, promotion.action, promotion, content)


def verify_update(update: ModelUpdate, public_key: TrustAnchor) -> PromotionRecord:
    """Check both signatures of an update; returns its verified promotion record.

    Raises:
        SignatureError, VerificationError: unsigned, tampered, signed by another key, or no record.
    """
    verify_manifest_signature(update.manifest, public_key)
    if update.promotion is None:
        raise VerificationError(f"update of {update.name} v{update.version} carries no promotion record")
    verify_record(update.promotion, public_key)
    return update.promotion


def fetch_model(update: ModelUpdate, dest_dir: Path, public_key: TrustAnchor,
                options: FetchOptions | None = None) -> tuple[Path, bool]:
    """Fetch, verify and install the announced model under ``dest_dir/<name>/<version>/``.

    The announced manifest's signature is checked before anything is fetched; the model bytes
    (inline, ``file://`` or ``http(s)://``) must match its sha256 before they are written into a
    temporary sibling folder, which is renamed into place only once the whole folder verifies.
    An already installed copy is re-verified and reused; it is never removed here.

    Returns:
        The installed folder and whether this call installed it (False: it was already there).

    Raises:
        VerificationError, SignatureError, ManifestError: with the reason; nothing installed is touched.
    """
    verify_manifest_signature(update.manifest, public_key)
    final = dest_dir / update.name / str(update.version)
    if final.is_dir():
        manifest, _ = verify_model_dir(final, public_key)
        if manifest != update.manifest:
            raise VerificationError(f"installed {update.name} v{update.version} differs from the announced one")
        return final, False
    content = _model_bytes(update, final.parent, options or FetchOptions())
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".incoming-{update.version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        (staging / update.manifest.model_file).write_bytes(content)
        write_manifest(update.manifest, staging)
        verify_model_dir(staging, public_key)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final, True


def _model_bytes(update: ModelUpdate, partial_dir: Path, options: FetchOptions) -> bytes:
    """The announced model file's bytes, checked against the manifest's sha256."""
    expected = update.manifest.sha256
    if update.inline is not None:
        content = update.inline
    else:
        try:  # the URI is not under any signature: a malformed one is refused, never raised as is
            parsed = urlparse(update.uri)
            base = update.uri if update.uri.endswith("/") else update.uri + "/"
            url = urljoin(base, update.manifest.model_file)
        except ValueError as exc:
            raise VerificationError(f"cannot fetch model from {update.uri!r}: {exc}") from exc
        if parsed.scheme in ("http", "https"):
            return download(url, expected, partial_dir, options)
        if parsed.scheme != "file":
            raise VerificationError(f"cannot fetch model from {update.uri!r}: use file://, http:// or https://")
        folder = Path(unquote(parsed.path))
        path = folder / update.manifest.model_file
        if not path.is_file() or path.stat().st_size > options.max_bytes:
            raise VerificationError(f"no model file of at most {options.max_bytes} bytes at {path}")
        content = read_verified_model(update.manifest, folder)
    if len(content) > options.max_bytes:
        raise VerificationError(f"model of {len(content)} bytes exceeds the {options.max_bytes}-byte cap")
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise VerificationError(f"model bytes of {update.name} v{update.version} have sha256 {actual[:16]}..., "
                                f"manifest says {expected[:16]}...")
    return content
