"""Key ids, the signed list of trusted signing keys, and the one signature check every record goes through.

**Key ids.** A key's id is the first 16 hex digits of the sha256 of its raw 32-byte Ed25519
public key. Every signature streamedge writes names the key that made it:
``"<key id>:<base64 signature>"`` (:func:`sign_payload`). The id is a hint for picking the key,
not a secret and not signed: a signature verifies only with the key its id names.

**The trusted-key list** (TUF's root role, reduced): a JSON file ::

    {"signed": {"type": "streamedge-trusted-keys", "version": 3, "expires": 1799999999.0,
                "root": {"<root id>": "<hex raw public key>"},
                "keys": {"<id>": "<hex raw public key>", ...}},
     "signatures": {"<root id>": "<base64>"}}

The root key (kept offline) signs the list of model-signing keys (``keys``). A subscriber (edge
agent, stream worker, retrainer) given the list as its ``--public-key`` verifies the list with
its root, then trusts exactly the keys it names (:class:`TrustedKeys`):

- *rotation*: a new list (higher ``version``) adds a key; records signed by it verify;
- *revocation*: a new list leaves a key out; every record it signed is refused, counted
  (:attr:`TrustedKeys.refused`, by key id) and logged, whatever its sequence;
- *expiry*: a list past ``expires`` is reported when loaded (it still verifies: a device keeps
  serving); a new list replaces an installed one only when it is signed by the installed
  list's root, has a higher version and has not expired (:func:`replace_key_list`).

A plain PEM public key is still accepted as an anchor (a single trusted key, no list): it
verifies signatures with its own key id, and, for records issued before key ids, bare ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streamedge.contracts.untrusted import load_json
from streamedge.errors import ConfigError, ManifestError, SignatureError

__all__ = [
    "KEY_LIST_TYPE",
    "KeyList",
    "TrustAnchor",
    "TrustedKeys",
    "key_id",
    "load_trust_anchor",
    "make_key_list",
    "parse_key_list",
    "read_key_list",
    "replace_key_list",
    "sign_payload",
    "verify_payload",
    "write_key_list",
]

KEY_LIST_TYPE: Final = "streamedge-trusted-keys"
_DOMAIN: Final = b"streamedge-trusted-keys-v1\n"
_ID_HEX: Final = 16  # 64 bits: ids only pick a key, the signature is what is checked
_MAX_LIST_BYTES: Final = 1024 * 1024
_MAX_KEYS: Final = 1024
_log = logging.getLogger(__name__)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The key's id: 16 hex digits of the sha256 of its raw public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(_raw(public)).hexdigest()[:_ID_HEX]


def sign_payload(key: Ed25519PrivateKey, payload: bytes) -> str:
    """``"<key id>:<base64 Ed25519 signature of payload>"``."""
    return f"{key_id(key)}:{base64.b64encode(key.sign(payload)).decode()}"


@dataclass
class TrustedKeys:
    """The model-signing keys a verified key list names (see the module docstring).

    Attributes:
        keys: key id to public key.
        version, expires: the list's version and expiry (unix seconds).
        refused: signatures refused because their key id is not in the list (revoked or
            unknown), counted by key id.
    """

    keys: dict[str, Ed25519PublicKey]
    version: int
    expires: float
    refused: Counter[str] = field(default_factory=Counter)

    def expired(self, now: float | None = None) -> bool:
        """Whether the list is past its expiry."""
        return (time.time() if now is None else now) >= self.expires


TrustAnchor: TypeAlias = Ed25519PublicKey | TrustedKeys


def verify_payload(signature: str | None, payload: bytes, anchor: TrustAnchor, label: str) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is a valid signature of ``payload`` by a trusted key.

    Under a :class:`TrustedKeys` list the signature must name a key id the list holds; one that
    does not (a revoked key) is refused, counted and logged. Under a single public key the id,
    when present, must be that key's.
    """
    if not signature:
        raise SignatureError(f"{label} is unsigned")
    kid, sep, encoded = signature.rpartition(":")
    if isinstance(anchor, TrustedKeys):
        key = anchor.keys.get(kid) if sep else None
        if key is None:
            anchor.refused[kid or "-"] += 1
            _log.warning("%s is signed by key %r, which trusted key list v%d does not hold (revoked or unknown): "
                         "refused", label, kid or None, anchor.version, extra={"key_id": kid})
            raise SignatureError(f"{label} is signed by key {kid or '(no id)'!r}, not in trusted key list "
                                 f"v{anchor.version} (revoked or unknown)")
    else:
        key = anchor
        if sep and kid != key_id(anchor):
            raise SignatureError(f"signature of {label} does not match: signed by key {kid[:32]!r}, "
                                 f"the trusted key is {key_id(anchor)} (wrong key)")
    try:
        key.verify(base64.b64decode(encoded, validate=True), payload)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{label} has a malformed signature") from exc
    except InvalidSignature as exc:
        raise SignatureError(f"signature of {label} does not match (tampered or wrong key)") from exc


@dataclass(frozen=True)
class KeyList:
    """A trusted-key list as written to disk: the signed part and its root signatures."""

    version: int
    expires: float
    root: dict[str, str]
    keys: dict[str, str]
    signatures: dict[str, str]

    def signed(self) -> dict[str, Any]:
        """The part the root signs."""
        return {"type": KEY_LIST_TYPE, "version": self.version, "expires": self.expires,
                "root": self.root, "keys": self.keys}

    def signing_payload(self) -> bytes:
        """Domain prefix plus the canonical JSON of :meth:`signed`."""
        return _DOMAIN + json.dumps(self.signed(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def to_json(self) -> bytes:
        """The file's bytes."""
        return json.dumps({"signed": self.signed(), "signatures": self.signatures}, sort_keys=True, indent=1).encode()

    def verify(self, roots: dict[str, str]) -> None:
        """Raise :class:`SignatureError` unless a root key of ``roots`` (id to hex) signed this list."""
        for kid, hex_key in roots.items():
            if kid not in self.signatures:
                continue
            verify_payload(f"{kid}:{self.signatures[kid]}", self.signing_payload(), _public(hex_key),
                           f"trusted key list v{self.version}")
            return
        raise SignatureError(f"trusted key list v{self.version} is not signed by root key(s) {sorted(roots)}")

    def trusted(self) -> TrustedKeys:
        """The model-signing keys this list names (verify it first)."""
        return TrustedKeys({kid: _public(hex_key) for kid, hex_key in self.keys.items()}, self.version, self.expires)


def _public(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError as exc:
        raise ManifestError(f"trusted key list holds a malformed key: {exc}") from exc


def _key_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not 0 < len(value) <= _MAX_KEYS:
        raise ManifestError(f"trusted key list {what} must map 1-{_MAX_KEYS} key ids to keys")
    for kid, hex_key in value.items():
        if not isinstance(hex_key, str) or key_id(_public(hex_key)) != kid:
            raise ManifestError(f"trusted key list {what}: id {str(kid)[:32]!r} is not its key's id")
    return dict(value)


def parse_key_list(payload: bytes) -> KeyList:
    """Decode a key list under the parse rule; raises :class:`ManifestError` naming what is wrong."""
    body = load_json(payload, "trusted key list", _MAX_LIST_BYTES)
    if not isinstance(body, dict) or set(body) != {"signed", "signatures"} or not isinstance(body["signed"], dict):
        raise ManifestError("trusted key list must be {'signed': {...}, 'signatures': {...}}")
    signed, signatures = body["signed"], body["signatures"]
    if signed.get("type") != KEY_LIST_TYPE or set(signed) != {"type", "version", "expires", "root", "keys"}:
        raise ManifestError(f"trusted key list must be of type {KEY_LIST_TYPE!r} with version, expires, root, keys")
    version, expires = signed["version"], signed["expires"]
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 1 << 53:
        raise ManifestError(f"trusted key list version must be a positive integer, got {str(version)[:32]}")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise ManifestError("trusted key list expires must be unix seconds")
    if not isinstance(signatures, dict) or not all(isinstance(s, str) for s in signatures.values()):
        raise ManifestError("trusted key list signatures must map root key ids to base64 strings")
    return KeyList(version, float(expires), _key_map(signed["root"], "root"), _key_map(signed["keys"], "keys"),
                   dict(signatures))


def read_key_list(path: Path) -> KeyList:
    """Read and self-verify a key list file (signed by a root key it names); raises ConfigError."""
    try:
        key_list = parse_key_list(path.read_bytes()[: _MAX_LIST_BYTES + 1])
        key_list.verify(key_list.root)
    except OSError as exc:
        raise ConfigError(f"cannot read trusted key list {path}: {exc}") from exc
    except (ManifestError, SignatureError) as exc:
        raise ConfigError(f"trusted key list {path} refused: {exc}") from exc
    return key_list


def make_key_list(root: Ed25519PrivateKey, keys: list[Ed25519PublicKey], version: int, expires: float,
                  new_root: Ed25519PrivateKey | None = None) -> KeyList:
    """A key list naming ``keys``, signed by ``root`` (and by ``new_root`` when the root rotates)."""
    owner = new_root or root
    roots = {key_id(owner): _raw(owner.public_key()).hex()}
    unsigned = KeyList(version, float(expires), roots, {key_id(k): _raw(k).hex() for k in keys}, {})
    payload = unsigned.signing_payload()
    signers = {key_id(k): k for k in (root, owner)}
    signatures = {kid: base64.b64encode(k.sign(payload)).decode() for kid, k in signers.items()}
    return KeyList(version, float(expires), roots, unsigned.keys, signatures)


def write_key_list(key_list: KeyList, path: Path) -> None:
    """Write ``key_list`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
    with tmp.open("wb") as handle:
        handle.write(key_list.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_key_list(new: Path, installed: Path, now: float | None = None) -> KeyList:
    """Install the list at ``new`` over the one at ``installed`` when the installed root signed it.

    Raises:
        ConfigError: not signed by the installed list's root, not a higher version, or expired.
    """
    current, candidate = read_key_list(installed), read_key_list(new)
    try:
        candidate.verify(current.root)
    except SignatureError as exc:
        raise ConfigError(f"{new} is not signed by the root of the installed list {installed}: {exc}") from exc
    if candidate.version <= current.version:
        raise ConfigError(f"{new} is version {candidate.version}, not above the installed {current.version}")
    if (time.time() if now is None else now) >= candidate.expires:
        raise ConfigError(f"{new} expired at {candidate.expires:.0f}")
    write_key_list(candidate, installed)
    return candidate


def load_trust_anchor(path: Path) -> TrustAnchor:
    """A subscriber's ``--public-key``: a PEM Ed25519 public key, or a trusted-key list file.

    Raises:
        ConfigError: unreadable, not a key, or a list that does not verify with its root.
    """
    try:
        head = path.read_bytes()[:64]
    except OSError as exc:
        raise ConfigError(f"cannot load trusted public key {path}: {exc}") from exc
    if not head.lstrip().startswith(b"{"):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load trusted public key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"trusted key {path} is not an Ed25519 public key")
        return key
    trusted = read_key_list(path).trusted()
    if trusted.expired():
        _log.warning("trusted key list %s (v%d) expired at %.0f: install a newer one", path, trusted.version,
                     trusted.expires)
    return trusted
