"""The model registry: versioned, signed model folders on a local (or shared) file system.

Layout::

    <root>/<name>/<version>/manifest.json   signed manifest (version assigned here)
    <root>/<name>/<version>/<model_file>    the selected .tflite
    <root>/<name>/<version>/report/         training report, when the trainer wrote one
    <root>/<name>/<version>/metrics.json    training metrics, when present
    <root>/<name>/promotions.json           {"active": 3, "history": [1, 3]}

Versions are immutable once added. ``promote`` appends to the history and makes a version
active; ``rollback`` returns to the version promoted before the active one. The registry signs
on ``add`` with the configured Ed25519 private key; consumers verify with the public key.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streamedge.contracts.manifest import ModelManifest, read_manifest, verify_model_file, write_manifest
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.signing import sign_manifest, verify_model_dir
from streamedge.errors import StreamedgeError

__all__ = ["ModelRegistry", "RegistryError"]

_PROMOTIONS = "promotions.json"
_EXTRAS = ("report", "metrics.json")


class RegistryError(StreamedgeError, LookupError):
    """A name or version is unknown, or a promotion/rollback is impossible."""


class ModelRegistry:
    """A directory of versioned, signed models.

    Args:
        root: registry folder (created on first ``add``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Model names with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Versions of ``name``, ascending."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def path(self, name: str, version: int) -> Path:
        """Folder of one version; raises :class:`RegistryError` when unknown."""
        folder = self.root / name / str(version)
        if not folder.is_dir():
            known = self.versions(name)
            raise RegistryError(f"model {name!r} has no version {version} (known: {known or 'none'})")
        return folder

    def manifest(self, name: str, version: int) -> ModelManifest:
        """The stored manifest of one version."""
        return read_manifest(self.path(name, version))

    def add(self, source_dir: Path, signing_key: Ed25519PrivateKey) -> ModelManifest:
        """Store the model in ``source_dir`` as the next version of its name, signed.

        ``source_dir`` holds ``manifest.json`` (signed or not, any version number) and the model
        file it names, optionally ``report/`` and ``metrics.json``.

        Returns:
            The stored, signed manifest.
        """
        source = read_manifest(source_dir)
        verify_model_file(source, source_dir)
        family = self.root / source.name
        family.mkdir(parents=True, exist_ok=True)
        staging = family / f".staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            shutil.copy2(source_dir / source.model_file, staging / source.model_file)
            for extra in _EXTRAS:
                item = source_dir / extra
                if item.is_dir():
                    shutil.copytree(item, staging / extra)
                elif item.is_file():
                    shutil.copy2(item, staging / extra)
            while True:
                version = max(self.versions(source.name), default=0) + 1
                signed = sign_manifest(source.replace(version=version, signature=None), signing_key)
                write_manifest(signed, staging)
                try:
                    staging.rename(family / str(version))
                    return signed
                except OSError:
                    if not (family / str(version)).exists():
                        raise
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def _promotions(self, name: str) -> dict[str, Any]:
        path = self.root / name / _PROMOTIONS
        if not path.is_file():
            return {"active": None, "history": []}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _write_promotions(self, name: str, data: dict[str, Any]) -> None:
        path = self.root / name / _PROMOTIONS
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    def active_version(self, name: str) -> int | None:
        """The promoted version of ``name``, or None."""
        active = self._promotions(name)["active"]
        return int(active) if active is not None else None

    def history(self, name: str) -> list[int]:
        """Promoted versions, oldest first (the active one last)."""
        return [int(v) for v in self._promotions(name)["history"]]

    def _update(self, name: str, version: int, action: str) -> ModelUpdate:
        folder = self.path(name, version)
        return ModelUpdate(name, version, folder.resolve().as_uri(), read_manifest(folder),
                           "rollback" if action == "rollback" else "promote")

    def promote(self, name: str, version: int) -> ModelUpdate:
        """Make ``version`` active; returns the update to publish."""
        self.path(name, version)
        data = self._promotions(name)
        if data["active"] != version:
            data["history"].append(version)
            data["active"] = version
            self._write_promotions(name, data)
        return self._update(name, version, "promote")

    def rollback(self, name: str) -> ModelUpdate:
        """Return to the version promoted before the active one; returns the update to publish."""
        data = self._promotions(name)
        if len(data["history"]) < 2:
            raise RegistryError(f"model {name!r} has no earlier promoted version to roll back to")
        data["history"].pop()
        data["active"] = data["history"][-1]
        self._write_promotions(name, data)
        return self._update(name, int(data["active"]), "rollback")

    def verify(self, name: str, version: int, public_key: Ed25519PublicKey) -> ModelManifest:
        """Check one version's manifest, signature and model sha256; raises with the reason."""
        manifest, _ = verify_model_dir(self.path(name, version), public_key)
        if manifest.name != name or manifest.version != version:
            raise RegistryError(
                f"{self.path(name, version)} holds {manifest.name} v{manifest.version}, not {name} v{version}"
            )
        return manifest
