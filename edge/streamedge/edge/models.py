"""The device's local model folder: verified versions and an atomically swapped ``current`` link.

Layout::

    <root>/<name>/<version>/manifest.json + model file   (installed only once verified)
    <root>/<name>/current  -> <version>                  the active version (symlink)
    <root>/<name>/previous -> <version>                  what ``rollback`` returns to

A swap writes a new symlink under a temporary name and renames it over ``current``;
``rename(2)`` is atomic, so a reader (or a power cut) sees the old or the new version, never
a half-written link. Versions are verified (Ed25519 signature + sha256) every time they are
activated or loaded, so a file changed on disk is refused too.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest, verify_model_file
from streamedge.contracts.promotion import PromotionRecord, verify_record
from streamedge.contracts.signing import load_verified_model, verify_model_dir
from streamedge.contracts.untrusted import load_json
from streamedge.edge.errors import NoModelError
from streamedge.errors import ManifestError

__all__ = ["ModelStore", "install_record"]

_MAX_PROMOTIONS_BYTES = 1024 * 1024

_CURRENT = "current"
_PREVIOUS = "previous"


class ModelStore:
    """Versions of models under ``root`` and which one is active.

    Args:
        root: the local model folder.
        public_key: the trusted key every version is verified with.
    """

    def __init__(self, root: Path, public_key: TrustAnchor) -> None:
        self.root = Path(root)
        self.public_key = public_key

    def names(self) -> list[str]:
        """Model names present locally."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def resolve_name(self, name: str) -> str:
        """``name`` itself, or the only model present when ``name`` is empty.

        Raises:
            NoModelError: no name given and not exactly one model present.
        """
        if name:
            return name
        names = self.names()
        if len(names) != 1:
            raise NoModelError(f"{self.root} holds {len(names)} models ({', '.join(names) or 'none'}): set model_name")
        return names[0]

    def versions(self, name: str) -> list[int]:
        """Installed versions of ``name``, ascending."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def _link(self, name: str, link: str) -> int | None:
        try:
            target = os.readlink(self.root / name / link)
        except (FileNotFoundError, OSError):
            return None
        return int(target) if target.isdigit() else None

    def active_version(self, name: str) -> int | None:
        """The version ``current`` points to, or None."""
        return self._link(name, _CURRENT)

    def previous_version(self, name: str) -> int | None:
        """The version ``rollback`` would return to, or None."""
        return self._link(name, _PREVIOUS)

    def path(self, name: str, version: int) -> Path:
        """Folder of one version (it may not exist)."""
        return self.root / name / str(version)

    def verify(self, name: str, version: int) -> tuple[ModelManifest, Path]:
        """Verify one installed version; returns its manifest and model file.

        Raises:
            NoModelError: the version is not installed.
            ManifestError, SignatureError, VerificationError: it does not verify.
        """
        folder = self.path(name, version)
        if not folder.is_dir():
            raise NoModelError(f"{name} v{version} is not installed under {self.root}")
        manifest, model_path = verify_model_dir(folder, self.public_key)
        if manifest.name != name or manifest.version != version:
            raise NoModelError(f"{folder} holds {manifest.name} v{manifest.version}, not {name} v{version}")
        return manifest, model_path

    def load(self, name: str, version: int) -> tuple[ModelManifest, Path, bytes]:
        """Verify one installed version and return its manifest, model path and the verified bytes.

        Raises:
            NoModelError: the version is not installed (or holds another name/version).
            ManifestError, SignatureError, VerificationError: it does not verify.
        """
        folder = self.path(name, version)
        if not folder.is_dir():
            raise NoModelError(f"{name} v{version} is not installed under {self.root}")
        manifest, model_path, content = load_verified_model(folder, self.public_key)
        if manifest.name != name or manifest.version != version:
            raise NoModelError(f"{folder} holds {manifest.name} v{manifest.version}, not {name} v{version}")
        return manifest, model_path, content

    def _swap(self, name: str, link: str, version: int) -> None:
        folder = self.root / name
        tmp = folder / f".{link}-{uuid.uuid4().hex[:8]}"
        os.symlink(str(version), tmp)
        os.replace(tmp, folder / link)
        _fsync_dir(folder)

    def activate(self, name: str, version: int) -> None:
        """Point ``current`` at ``version`` (verified first); the old one becomes ``previous``."""
        self.verify(name, version)
        active = self.active_version(name)
        if active == version:
            return
        if active is not None:
            self._swap(name, _PREVIOUS, active)
        self._swap(name, _CURRENT, version)

    def rollback(self, name: str) -> int:
        """Swap ``current`` and ``previous``; returns the version now active.

        Raises:
            NoModelError: there is no previous version.
            ManifestError, SignatureError, VerificationError: the previous version does not verify.
        """
        previous = self.previous_version(name)
        if previous is None:
            raise NoModelError(f"{name} has no previous version to roll back to")
        self.verify(name, previous)
        active = self.active_version(name)
        if active is not None:
            self._swap(name, _PREVIOUS, active)
        self._swap(name, _CURRENT, previous)
        return previous

    def install(self, source: Path, activate: bool = True) -> ModelManifest:
        """Copy a signed model folder in (verified before and after the copy); optionally activate it."""
        manifest, model_path = verify_model_dir(source, self.public_key)
        final = self.path(manifest.name, manifest.version)
        if not final.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = final.parent / f".incoming-{manifest.version}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                shutil.copy2(source / "manifest.json", staging / "manifest.json")
                shutil.copy2(model_path, staging / manifest.model_file)
                for runtime in manifest.runtime_variants:
                    # Each runtime's variant that came along, checked against its signed sha256. A
                    # folder fetched with its default file only runs that file (runner.runtime_model).
                    variant = manifest.for_runtime(runtime)
                    if (source / variant.model_file).is_file():
                        shutil.copy2(verify_model_file(variant, source), staging / variant.model_file)
                verify_model_dir(staging, self.public_key)
                staging.rename(final)
            finally:
                if staging.exists():
                    shutil.rmtree(staging)
        if activate:
            self.activate(manifest.name, manifest.version)
        return manifest

    def discard(self, name: str, version: int) -> None:
        """Remove a version that a verified update just installed and the agent then refused.

        Never the active or previous one; callers never pass a version an unverified message named.
        """
        if version in (self.active_version(name), self.previous_version(name)):
            return
        shutil.rmtree(self.path(name, version), ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable across a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_record(manifest: ModelManifest, promotions: Path, public_key: TrustAnchor) -> PromotionRecord:
    """The verified whole-fleet promotion record that makes ``manifest``'s version the one to serve.

    ``edge install`` seeds the device's ledger with it, so the agent starts from the record of
    what it installed instead of replaying the topic from its first record (old versions,
    rolled-back ones included). ``promotions`` is the registry's ``<name>/promotions.json``
    (its ``record``) or a file holding one record.

    Raises:
        ManifestError, VerificationError: unreadable, unsigned, for another model or version, or
            staged (a canary's record names two versions: the device learns its own from the topic).
    """
    try:
        with promotions.open("rb") as handle:
            raw = handle.read(_MAX_PROMOTIONS_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read promotion record {promotions}: {exc}") from exc
    data = load_json(raw, f"promotion record {promotions}", _MAX_PROMOTIONS_BYTES)
    body = data.get("record") if isinstance(data, dict) and "sequence" in data and "record" in data else data
    if body is None:
        raise ManifestError(f"{promotions} holds no promotion record ({manifest.name} was never promoted)")
    record = PromotionRecord.from_dict(body)
    verify_record(record, public_key)
    if record.partial or (record.model, record.version, record.sha256) != (manifest.name, manifest.version,
                                                                              manifest.sha256):
        raise ManifestError(f"promotion #{record.sequence} in {promotions} puts {record.model} v{record.version} "
                            f"({record.target or 'all'}), not the installed v{manifest.version}, on this device")
    return record
