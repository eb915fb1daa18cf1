"""The model registry: versioned, signed model folders on a local (or shared) file system.

Layout::

    <root>/<name>/<version>/manifest.json   signed manifest (version assigned here)
    <root>/<name>/<version>/<model_file>    the selected .tflite
    <root>/<name>/<version>/report/         training report, when the trainer wrote one
    <root>/<name>/<version>/metrics.json    training metrics, when present
    <root>/<name>/promotions.json           {"active": 3, "history": [1, 3], "sequence": 4, "record": {...},
                                             "canary": {"version": 4, "target": "canary:10"} or null}

Versions are immutable once added. ``promote`` appends to the history and makes a version
active; ``rollback`` returns to the version promoted before the active one. A staged
promotion (``target="group:eu"`` or ``"canary:10"``, see :mod:`streamedge.contracts.rollout`)
leaves ``active`` (the fleet version) alone and records the ``canary``; its record names both
versions, so the latest record still describes the whole fleet. While a canary is out,
``rollback`` (or :meth:`ModelRegistry.rollback_canary`) ends it: a new record puts every
device back on the fleet version. A whole-fleet ``promote`` ends it too. The registry signs
each version's manifest on ``add``, and each promotion and rollback as its own
:class:`~streamedge.contracts.promotion.PromotionRecord` whose per-model ``sequence`` grows by
one every time (under a file lock, so two promoters never issue the same number). Consumers
verify both with the public key and refuse a record older than one they accepted.

The announcement carries the model inline when it is at most
:data:`~streamedge.contracts.model_update.INLINE_MAX_BYTES` (a device then needs nothing but
Kafka), and a ``uri``: ``<base_url>/models/<name>/<version>/`` when the registry is served over
HTTP(S) (:mod:`streamedge.registry_server`), else the version folder's ``file://`` URI.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest, read_manifest, verify_model_file, write_manifest
from streamedge.contracts.model_update import INLINE_MAX_BYTES, ModelUpdate
from streamedge.contracts.promotion import PromotionRecord, UpdateAction, sign_record
from streamedge.contracts.rollout import parse_target
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
        signing_key: signs promotion records when ``promote``/``rollback`` are given none.
        record_ttl_s: every record issued carries ``expires`` = issue time + this (None: no
            expiry); :meth:`refresh` re-issues the current record before it runs out, so a
            subscriber that sees an expired record knows a newer one is withheld from it.
    """

    def __init__(self, root: Path, signing_key: Ed25519PrivateKey | None = None,
                 record_ttl_s: float | None = None) -> None:
        self.root = Path(root)
        self.signing_key = signing_key
        self.record_ttl_s = record_ttl_s

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

        ``source_dir`` holds ``manifest.json`` (signed or not, any version number), the model
        file it names and each runtime variant's file (all checked against their sha256),
        optionally ``report/`` and ``metrics.json``.

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
            for runtime in source.runtime_variants:
                variant = source.for_runtime(runtime)
                verify_model_file(variant, source_dir)
                shutil.copy2(source_dir / variant.model_file, staging / variant.model_file)
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
            return {"active": None, "history": [], "sequence": 0, "record": None, "canary": None}
        data: dict[str, Any] = json.loads(path.read_text())
        data.setdefault("sequence", len(data.get("history", [])))
        data.setdefault("record", None)
        data.setdefault("canary", None)
        return data

    def _write_promotions(self, name: str, data: dict[str, Any]) -> None:
        """Replace the promotions file durably (fsync file, rename, fsync folder) before a record leaves.

        A sequence number must never be issued twice: after a power cut the file holds the last
        sequence of every record that was returned (and so may have been published).
        """
        path = self.root / name / _PROMOTIONS
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Serialise promotions of ``name`` across processes (the sequence must only grow)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".promotions.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def active_version(self, name: str) -> int | None:
        """The promoted version of ``name``, or None."""
        active = self._promotions(name)["active"]
        return int(active) if active is not None else None

    def canary(self, name: str) -> tuple[int, str] | None:
        """The staged version and its target (``"canary:10"``, ``"group:eu"``) while one is out, else None."""
        canary = self._promotions(name)["canary"]
        return (int(canary["version"]), str(canary["target"])) if canary else None

    def history(self, name: str) -> list[int]:
        """Promoted versions, oldest first (the active one last)."""
        return [int(v) for v in self._promotions(name)["history"]]

    def record(self, name: str) -> PromotionRecord | None:
        """The latest promotion record of ``name`` (signed when a key was given), or None."""
        data = self._promotions(name)["record"]
        return PromotionRecord.from_dict(data) if data is not None else None

    def _issue(self, name: str, data: dict[str, Any], action: UpdateAction,
               signing_key: Ed25519PrivateKey | None) -> PromotionRecord:
        version = int(data["active"])
        staged = data["canary"]
        now = round(time.time(), 3)
        expires = None if self.record_ttl_s is None else round(now + self.record_ttl_s, 3)
        if staged:
            fleet = version
            version = int(staged["version"])
            record = PromotionRecord(name, version, action, int(data["sequence"]) + 1, now,
                                     self.manifest(name, version).sha256, target=staged["target"],
                                     fleet_version=fleet, fleet_sha256=self.manifest(name, fleet).sha256,
                                     expires=expires)
        else:
            record = PromotionRecord(name, version, action, int(data["sequence"]) + 1, now,
                                     self.manifest(name, version).sha256, expires=expires)
        key = signing_key or self.signing_key
        if key is not None:
            record = sign_record(record, key)
        data["sequence"] = record.sequence
        data["record"] = record.to_dict()
        self._write_promotions(name, data)
        return record

    def announcement(self, name: str, base_url: str | None = None, inline: bool = True) -> ModelUpdate:
        """The update message for the latest promotion record of ``name``.

        Args:
            base_url: where :mod:`streamedge.registry_server` serves this registry
                (``https://host:8443``); None for a ``file://`` URI.
            inline: carry the model file in the message when it is at most ``INLINE_MAX_BYTES``.

        Raises:
            RegistryError: ``name`` was never promoted.
        """
        record = self.record(name)
        if record is None:
            raise RegistryError(f"model {name!r} has no promotion to announce")
        folder = self.path(name, record.version)
        manifest = read_manifest(folder)
        served = f"{base_url.rstrip('/')}/models/{quote(name, safe='')}/{record.version}/" if base_url else None
        uri = served or folder.resolve().as_uri()
        model = folder / manifest.model_file
        content = model.read_bytes() if inline and model.stat().st_size <= INLINE_MAX_BYTES else None
        return ModelUpdate(name, record.version, uri, manifest, record.action, record, content)

    def promote(self, name: str, version: int, signing_key: Ed25519PrivateKey | None = None, *,
                base_url: str | None = None, inline: bool = True, target: str | None = None) -> ModelUpdate:
        """Make ``version`` active under a new signed record; returns the update to publish.

        Args:
            signing_key: signs the record (default: the registry's key). Subscribers refuse an
                unsigned record, so without any key the promotion is bookkeeping only.
            base_url, inline: see :meth:`announcement`.
            target: ``None``/``"all"`` for the whole fleet (ends any canary), or ``"group:<name>"``
                / ``"canary:<pct>"``: only those devices serve ``version``, the others keep the
                active (fleet) version, which must exist and differ from ``version``.

        Raises:
            RegistryError: unknown version; a staged promotion without a different fleet version.
            ManifestError: a malformed target.
        """
        self.path(name, version)
        rollout = parse_target(target) if target is not None else None
        with self._locked(name):
            data = self._promotions(name)
            if rollout is not None and rollout.kind != "all":
                if data["active"] is None or int(data["active"]) == version:
                    raise RegistryError(f"{name} v{version} to {rollout}: the fleet must serve another version "
                                        f"first (active: {data['active']})")
                data["canary"] = {"version": version, "target": str(rollout)}
            else:
                data["canary"] = None
                if data["active"] != version:
                    data["history"].append(version)
                    data["active"] = version
            self._issue(name, data, "promote", signing_key)
        return self.announcement(name, base_url, inline)

    def refresh(self, name: str, signing_key: Ed25519PrivateKey | None = None, *,
                base_url: str | None = None, inline: bool = True) -> ModelUpdate:
        """Re-issue the latest record of ``name`` unchanged but for a new sequence, time and expiry.

        Publish the result before the previous record expires: subscribers take it as current
        news (the version they serve is already installed) and stop reporting expiry.

        Raises:
            RegistryError: ``name`` was never promoted.
        """
        with self._locked(name):
            data = self._promotions(name)
            if data["record"] is None:
                raise RegistryError(f"model {name!r} has no promotion to refresh")
            self._issue(name, data, PromotionRecord.from_dict(data["record"]).action, signing_key)
        return self.announcement(name, base_url, inline)

    def rollback_canary(self, name: str, signing_key: Ed25519PrivateKey | None = None, *,
                        base_url: str | None = None, inline: bool = True,
                        expect_sequence: int | None = None) -> ModelUpdate:
        """End the staged promotion of ``name``: a new, higher record puts every device on the fleet version.

        Args:
            expect_sequence: end the canary only while the latest record is still this one (the
                record a watcher judged); None ends whatever canary is out.

        Raises:
            RegistryError: no canary is out (so a watcher never rolls back a whole-fleet promotion),
                or the latest record is no longer ``expect_sequence`` (a newer promotion replaced it).
        """
        with self._locked(name):
            data = self._promotions(name)
            if not data["canary"]:
                raise RegistryError(f"model {name!r} has no staged promotion to roll back")
            if expect_sequence is not None and int(data["sequence"]) != expect_sequence:
                raise RegistryError(f"the latest record of {name!r} is #{data['sequence']}, not the judged "
                                    f"#{expect_sequence}: not rolled back")
            self._end_canary(name, data, signing_key)
        return self.announcement(name, base_url, inline)

    def _end_canary(self, name: str, data: dict[str, Any], signing_key: Ed25519PrivateKey | None) -> None:
        """Issue the rollback record that puts every device on the fleet version (caller holds the lock)."""
        data["canary"] = None
        self._issue(name, data, "rollback", signing_key)

    def rollback(self, name: str, signing_key: Ed25519PrivateKey | None = None, *,
                 base_url: str | None = None, inline: bool = True) -> ModelUpdate:
        """Return to the version promoted before the active one, under a new, higher record.

        While a staged promotion is out, end it instead (:meth:`rollback_canary`): the fleet
        version stays active.
        """
        with self._locked(name):
            data = self._promotions(name)
            if data["canary"]:
                self._end_canary(name, data, signing_key)
            else:
                if len(data["history"]) < 2:
                    raise RegistryError(f"model {name!r} has no earlier promoted version to roll back to")
                data["history"].pop()
                data["active"] = data["history"][-1]
                self._issue(name, data, "rollback", signing_key)
        return self.announcement(name, base_url, inline)

    def verify(self, name: str, version: int, public_key: TrustAnchor) -> ModelManifest:
        """Check one version's manifest, signature and model sha256; raises with the reason."""
        manifest, _ = verify_model_dir(self.path(name, version), public_key)
        if manifest.name != name or manifest.version != version:
            raise RegistryError(
                f"{self.path(name, version)} holds {manifest.name} v{manifest.version}, not {name} v{version}"
            )
        return manifest
