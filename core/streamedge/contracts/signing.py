"""Ed25519 signing of model manifests.

The trainer holds the private key (PEM, PKCS#8); edge agents and workers hold only the
public key (PEM, SubjectPublicKeyInfo). A manifest's signature covers
:meth:`ModelManifest.signing_payload`, which includes the model file's sha256, so a valid
signature plus a matching sha256 (:func:`verify_model_dir`) means the model is the one the
trainer exported.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamedge.contracts.keys import TrustAnchor, load_trust_anchor, sign_payload, verify_payload
from streamedge.contracts.manifest import ModelManifest, read_manifest, read_verified_model, verify_model_file
from streamedge.errors import ConfigError

__all__ = [
    "generate_keypair",
    "load_verified_model",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
    "verify_manifest_signature",
    "verify_model_dir",
]


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Create a new Ed25519 key pair; the private key file is written with mode 0600."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a PEM Ed25519 private key; raises :class:`ConfigError` with the reason."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> TrustAnchor:
    """Load what a subscriber trusts: a PEM Ed25519 public key or a trusted-key list.

    See :func:`streamedge.contracts.keys.load_trust_anchor`; raises :class:`ConfigError` with the reason.
    """
    return load_trust_anchor(path)


def sign_manifest(manifest: ModelManifest, key: Ed25519PrivateKey) -> ModelManifest:
    """Return a copy of ``manifest`` carrying a signature over its signing payload."""
    return manifest.replace(signature=sign_payload(key, manifest.signing_payload()))


def verify_manifest_signature(manifest: ModelManifest, key: TrustAnchor) -> None:
    """Raise :class:`SignatureError` unless ``manifest.signature`` is valid for a key ``key`` trusts."""
    verify_payload(manifest.signature, manifest.signing_payload(), key,
                   f"manifest {manifest.name} v{manifest.version}")


def verify_model_dir(folder: Path, key: TrustAnchor) -> tuple[ModelManifest, Path]:
    """Full check of a model folder: manifest valid, signature valid, model sha256 matches.

    Returns:
        The manifest and the model file's path.

    Raises:
        ManifestError, SignatureError, VerificationError: with the reason.
    """
    manifest = read_manifest(folder)
    verify_manifest_signature(manifest, key)
    return manifest, verify_model_file(manifest, folder)


def load_verified_model(folder: Path, key: TrustAnchor) -> tuple[ModelManifest, Path, bytes]:
    """Like :func:`verify_model_dir`, but returns the model bytes that were hashed.

    Give these bytes to the interpreter (``TFLiteRunner(..., model_content=...)``) so the model
    that runs is exactly the one verified, whatever happens to the file afterwards.

    Raises:
        ManifestError, SignatureError, VerificationError: with the reason.
    """
    manifest = read_manifest(folder)
    verify_manifest_signature(manifest, key)
    return manifest, folder / manifest.model_file, read_verified_model(manifest, folder)
