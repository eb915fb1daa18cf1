"""Signed promotion records and the subscriber's ledger of the highest one accepted.

A promotion record says "model ``model`` serves version ``version`` as of this ``action``". The
registry numbers the records of each model with a ``sequence`` that grows by one on every
promotion and rollback, and signs each record with its Ed25519 key. A rollback is therefore a
new, higher record that points at an older version, and a replayed old record (a version that
was rolled back as bad, or never promoted) carries a lower sequence than what a subscriber has
already accepted: the subscriber refuses it (:class:`StaleUpdateError`).

The signature covers ``b"streamedge-promotion-v1\\n"`` followed by the canonical JSON of every
field except ``signature``, so it can never be mistaken for a manifest signature. ``sha256``
binds the record to the version's model file (the manifest's ``sha256``); ``time`` (unix
seconds) is informative only, ordering is by ``sequence``.

**Staged rollouts.** A record may name a ``target`` (:mod:`streamedge.contracts.rollout`: a
device group or a canary share of the fleet) and then also ``fleet_version`` and
``fleet_sha256``: the version every device outside the target keeps (or goes back to)
serving. So the latest record per model, the one a compacted topic keeps, always describes the
whole fleet, and a device decides from the verified record alone which version it must serve
(:meth:`PromotionRecord.serving_version`). These fields are signed like the others; a record
without them (every record issued before staged rollouts) targets the whole fleet, and its
signed payload and JSON are exactly what they were.

Subscribers persist the highest accepted record per model in a :class:`PromotionLedger`
(``<root>/<name>/promotion.json``, replaced atomically), so the order survives restarts; the
file is verified with the registry's key whenever it is read, like any record.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamedge.contracts.keys import TrustAnchor, sign_payload, verify_payload
from streamedge.contracts.rollout import RolloutTarget, parse_target
from streamedge.contracts.untrusted import load_json
from streamedge.errors import ManifestError, VerificationError

__all__ = [
    "LEDGER_FILE",
    "Freshness",
    "PromotionLedger",
    "PromotionRecord",
    "StaleUpdateError",
    "UpdateAction",
    "sign_record",
    "verify_record",
]

LEDGER_FILE: Final = "promotion.json"
UpdateAction = Literal["promote", "rollback"]
Freshness = Literal["new", "current"]
_ACTIONS: Final = get_args(UpdateAction)
_DOMAIN: Final = b"streamedge-promotion-v1\n"
# Sequences and versions are JSON integers every consumer can hold exactly (2**53: a double's mantissa).
_MAX_INT: Final = 1 << 53
_MAX_NAME: Final = 256
# Optional fields: left out of the signed payload and the JSON when None, so records issued
# before staged rollouts keep their signatures and bytes.
_OPTIONAL: Final = ("target", "fleet_version", "fleet_sha256", "expires")
_MAX_LEDGER_BYTES: Final = 64 * 1024
_log = logging.getLogger(__name__)


class StaleUpdateError(VerificationError):
    """A verified record older than (or conflicting with) the highest one already accepted."""


@dataclass(frozen=True)
class PromotionRecord:
    """One signed promotion or rollback of a model.

    Attributes:
        model: model name (also the Kafka key of the update carrying it).
        version: the version that is active from this record on.
        action: ``"promote"`` or ``"rollback"``.
        sequence: per-model, starts at 1, one more for every record the registry issues.
        time: unix seconds when the registry issued it (informative; order is ``sequence``).
        sha256: the model file's sha256 (the version's manifest ``sha256``).
        signature: base64 Ed25519 signature of :meth:`signing_payload`, or None.
        target: ``"group:<name>"`` or ``"canary:<pct>"`` (or ``"all"``); None: the whole fleet.
        fleet_version: with a partial target, the version devices outside it serve.
        fleet_sha256: that version's model sha256.
        expires: unix seconds after which a subscriber that has seen nothing newer reports the
            record as expired (an update may be withheld from it) and keeps serving; None: never.
            The registry issues records with it when given a ``record_ttl_s`` and re-issues the
            current one (``models refresh``) before it runs out, TUF's timestamp role reduced.
    """

    model: str
    version: int
    action: UpdateAction
    sequence: int
    time: float
    sha256: str
    signature: str | None = None
    target: str | None = None
    fleet_version: int | None = None
    fleet_sha256: str | None = None
    expires: float | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.model, str) and 0 < len(self.model) <= _MAX_NAME,
               f"promotion model must be a name of 1-{_MAX_NAME} characters")
        _check(_small_int(self.version) and self.version >= 1,
               f"promotion version must be a positive integer, got {self.version!r}")
        _check(self.action in _ACTIONS, f"promotion action must be one of {_ACTIONS}, got {self.action!r}")
        _check(_small_int(self.sequence) and self.sequence >= 1,
               f"promotion sequence must be a positive integer, got {self.sequence!r}")
        _check(isinstance(self.time, int | float) and not isinstance(self.time, bool) and _finite(self.time),
               "promotion time must be a finite number")
        _check(isinstance(self.sha256, str) and len(self.sha256) == 64
               and all(c in "0123456789abcdef" for c in self.sha256), "promotion sha256 must be 64 lowercase hex digits")
        _check(self.signature is None or (isinstance(self.signature, str) and len(self.signature) < 256),
               "promotion signature must be a short base64 string or null")
        _check(self.expires is None or (isinstance(self.expires, int | float) and not isinstance(self.expires, bool)
                                        and _finite(self.expires)), "promotion expires must be finite unix seconds")
        self._check_target()

    def expired(self, now: float) -> bool:
        """Whether the record carries an expiry and ``now`` is past it."""
        return self.expires is not None and now >= self.expires

    def _check_target(self) -> None:
        if self.target is None:
            _check(self.fleet_version is None and self.fleet_sha256 is None,
                   "promotion fleet_version/fleet_sha256 need a target")
            return
        _check(isinstance(self.target, str) and str(parse_target(self.target)) == self.target,
               f"promotion target {str(self.target)[:80]!r} is not in canonical form")
        if self.rollout().kind == "all":
            _check(self.fleet_version is None and self.fleet_sha256 is None,
                   "a promotion to 'all' names no fleet version")
            return
        _check(_small_int(self.fleet_version) and (self.fleet_version or 0) >= 1 and self.fleet_version != self.version,
               f"promotion to {self.target} needs a fleet_version other than v{self.version}, got {self.fleet_version!r}")
        _check(isinstance(self.fleet_sha256, str) and len(self.fleet_sha256) == 64
               and all(c in "0123456789abcdef" for c in self.fleet_sha256),
               "promotion fleet_sha256 must be 64 lowercase hex digits")

    def rollout(self) -> RolloutTarget:
        """The parsed target (no target: the whole fleet)."""
        return parse_target(self.target) if self.target is not None else RolloutTarget("all")

    @property
    def partial(self) -> bool:
        """Whether the record targets only part of the fleet (a group or a canary share)."""
        return self.rollout().kind != "all"

    @property
    def fleet_serving(self) -> int:
        """The version devices outside the target serve (the record's version for a whole-fleet record)."""
        return self.fleet_version if self.partial and self.fleet_version is not None else self.version

    def serving_version(self, device_id: str, group: str = "") -> int:
        """The version the device ``device_id`` (in ``group``) must serve under this record."""
        return self.version if self.rollout().includes(self.model, device_id, group) else self.fleet_serving

    def signing_payload(self) -> bytes:
        """The bytes the signature covers: a domain prefix and every field but ``signature``.

        The optional target fields are covered when present and left out when None.
        """
        body = self.to_dict()
        body.pop("signature")
        return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the optional target fields only when set)."""
        body = asdict(self)
        for name in _OPTIONAL:
            if body[name] is None:
                body.pop(name)
        return body

    @classmethod
    def from_dict(cls, data: Any) -> PromotionRecord:
        """Build from parsed JSON; raises :class:`ManifestError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ManifestError("promotion record must be a JSON object")
        names = {f.name for f in fields(cls)}
        required = names - {"signature", *_OPTIONAL}
        if not data.keys() <= names or not required <= data.keys():
            raise ManifestError(f"promotion record must hold {sorted(required)} and at most {sorted(names - required)}")
        return cls(**data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestError(message)


def _small_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_INT


def _finite(value: float) -> bool:
    try:
        return abs(float(value)) < float("inf")
    except OverflowError:
        return False


def sign_record(record: PromotionRecord, key: Ed25519PrivateKey) -> PromotionRecord:
    """A copy of ``record`` carrying the registry's signature."""
    return replace(record, signature=sign_payload(key, record.signing_payload()))


def verify_record(record: PromotionRecord, key: TrustAnchor) -> None:
    """Raise :class:`SignatureError` unless ``record`` carries a valid signature by a key ``key`` trusts."""
    verify_payload(record.signature, record.signing_payload(), key,
                   f"promotion #{record.sequence} of {record.model} v{record.version}")


class PromotionLedger:
    """The highest verified promotion record accepted per model, persisted under ``root``.

    Only records that passed :func:`verify_record` may be given to :meth:`accept`. The file on
    disk is input like any record: :meth:`get` reads it under the parse rule
    (:func:`streamedge.contracts.untrusted.load_json`) and verifies its signature with
    ``public_key``; a file that does not verify (forged, unsigned, for another model, garbled)
    counts as no record, so a forged sequence can never block updates, and the next accepted
    record replaces it. Writes replace ``<root>/<name>/promotion.json`` atomically (temporary
    file, fsync, rename), so a crash leaves the old or the new record.

    Args:
        root: the subscriber's model folder.
        public_key: the registry's key (or trusted-key list) every record on disk must be signed with.
    """

    def __init__(self, root: Path, public_key: TrustAnchor) -> None:
        self.root = Path(root)
        self.public_key = public_key

    def _path(self, model: str) -> Path:
        if "/" in model or model in (".", "..") or model.startswith("."):
            raise ManifestError(f"model name {model!r} cannot name a folder")
        return self.root / model / LEDGER_FILE

    def get(self, model: str) -> PromotionRecord | None:
        """The accepted record of ``model``, or None when none was accepted or the file does not verify."""
        path = self._path(model)
        try:
            # Non-blocking and a regular file only: a FIFO (or a device) put there must not hang the reader.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise OSError(f"{path} is not a regular file")
                raw = handle.read(_MAX_LEDGER_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("promotion ledger %s unreadable, counted as none: %s", path, exc)
            return None
        try:
            record = PromotionRecord.from_dict(load_json(raw, f"promotion ledger {path}", _MAX_LEDGER_BYTES))
            verify_record(record, self.public_key)
            if record.model != model:
                raise VerificationError(f"promotion ledger {path} holds a record of {record.model!r}")
        except (ManifestError, VerificationError) as exc:
            _log.warning("promotion ledger %s does not verify, counted as none: %s", path, exc)
            return None
        return record

    def freshness(self, record: PromotionRecord) -> Freshness:
        """``"new"`` when ``record`` is newer than the accepted one, ``"current"`` when it is that one.

        Raises:
            StaleUpdateError: its sequence is lower, or equal with a different version or signature.
        """
        accepted = self.get(record.model)
        if accepted is None or record.sequence > accepted.sequence:
            return "new"
        if record == accepted:
            return "current"
        raise StaleUpdateError(
            f"promotion #{record.sequence} of {record.model} (v{record.version}, {record.action}) is older than "
            f"the accepted #{accepted.sequence} (v{accepted.version}); a replay or a downgrade is refused"
        )

    def accept(self, record: PromotionRecord) -> None:
        """Persist ``record`` as the highest accepted for its model (a lower one is ignored)."""
        accepted = self.get(record.model)
        if accepted is not None and accepted.sequence >= record.sequence:
            return
        path = self._path(record.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{LEDGER_FILE}.{uuid.uuid4().hex[:8]}"
        with tmp.open("wb") as handle:
            handle.write(json.dumps(record.to_dict(), sort_keys=True).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
