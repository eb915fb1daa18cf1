"""Device enrolment: which devices belong to the fleet, and a per-device key their telemetry is signed with.

The enrolment file is kept by the operator (mode 0600), one device a line::

    # device-id  hex HMAC-SHA256 key (32 bytes)
    pump-0017    9f2c...e1

:func:`enrol` adds a device with a fresh random key and returns the key, which goes onto that
device only (``edge run --device-key-file``). A device signs every telemetry event
(:func:`sign_event`: HMAC-SHA256 over a domain prefix and the canonical JSON of the event
without ``auth``); the canary watcher (:func:`Enrolment.verify_event`) acts only on events whose
``device_id`` is enrolled and whose ``auth`` verifies with that device's key, so a device holding
the shared Kafka credential cannot speak for another device or invent new ones. The retrainer
admits readings only of enrolled device ids (:attr:`Enrolment.devices`).

**Readings.** A device signs every message it sends to the readings topic with the same key
(:func:`sign_message`: HMAC-SHA256 over a domain prefix and the message value, sent as the
Kafka header :data:`AUTH_HEADER`; the value, the reading contract, is unchanged). A consumer that
acts on readings checks the header against the enrolled key of the ``device_id`` inside the value
(:meth:`Enrolment.verify_message`), so a device holding the shared Kafka credential cannot write
readings under another enrolled device's id. A copy of a device's own signed message is still
that device's reading (the sequence number dedups it).

The keys are symmetric: whoever holds the enrolment file (the watcher, the retrainer, the
operator) could sign for any device; they are the judges already.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streamedge.contracts.reading import is_valid_id
from streamedge.errors import ConfigError

__all__ = ["AUTH_HEADER", "Enrolment", "enrol", "load_device_key", "load_enrolment", "message_auth", "sign_event",
           "sign_message", "write_private"]

_DOMAIN: Final = b"streamedge-telemetry-v1\n"
_MESSAGE_DOMAIN: Final = b"streamedge-reading-v1\n"
AUTH_HEADER: Final = "streamedge-auth"
_KEY_BYTES: Final = 32
_MAX_FILE_BYTES: Final = 64 * 1024 * 1024


def _payload(event: dict[str, Any]) -> bytes:
    body = {k: v for k, v in event.items() if k != "auth"}
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_event(event: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of ``event`` carrying ``auth``: the hex HMAC-SHA256 of its canonical JSON under ``key``."""
    return {**event, "auth": hmac.new(key, _payload(event), hashlib.sha256).hexdigest()}


def sign_message(value: bytes, key: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers binding ``value`` to the device holding ``key``: ``[(AUTH_HEADER, 32-byte MAC)]``."""
    return [(AUTH_HEADER, hmac.digest(key, _MESSAGE_DOMAIN + value, "sha256"))]


def message_auth(headers: Any) -> bytes | None:
    """The :data:`AUTH_HEADER` value among a Kafka message's ``(name, value)`` headers, or None."""
    pairs = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in pairs:
        if name == AUTH_HEADER and isinstance(value, bytes):
            return value
    return None


@dataclass(frozen=True)
class Enrolment:
    """The enrolled devices and their telemetry keys."""

    keys: dict[str, bytes]

    @property
    def devices(self) -> frozenset[str]:
        """The enrolled device ids."""
        return frozenset(self.keys)

    def verify_event(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` names an enrolled device and carries that device's valid ``auth``."""
        device, auth = event.get("device_id"), event.get("auth")
        if not isinstance(device, str) or not isinstance(auth, str) or len(auth) != 64:
            return False
        key = self.keys.get(device)
        if key is None:
            return False
        expected = hmac.new(key, _payload(event), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, auth)


    def verify_message(self, value: bytes, device_id: str, auth: bytes | None) -> bool:
        """Whether ``auth`` is the MAC of ``value`` by the enrolled key of ``device_id`` (the id inside ``value``)."""
        key = self.keys.get(device_id)
        if key is None or auth is None:
            return False
        return hmac.compare_digest(hmac.digest(key, _MESSAGE_DOMAIN + value, "sha256"), auth)


def load_enrolment(path: Path) -> Enrolment:
    """Read an enrolment file; raises :class:`ConfigError` naming the bad line."""
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise ConfigError(f"enrolment file {path} is larger than {_MAX_FILE_BYTES} bytes")
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read enrolment file {path}: {exc}") from exc
    keys: dict[str, bytes] = {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        try:
            device, key = parts[0], bytes.fromhex(parts[1])
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"{path}:{number}: expected '<device-id> <hex key>'") from exc
        if len(parts) != 2 or not is_valid_id(device) or len(key) != _KEY_BYTES or device in keys:
            raise ConfigError(f"{path}:{number}: a valid, new device id and a {_KEY_BYTES}-byte hex key are needed")
        keys[device] = key
    return Enrolment(keys)


def enrol(path: Path, device_id: str) -> bytes:
    """Add ``device_id`` with a fresh random key to the enrolment file (created 0600); returns the key.

    Raises:
        ConfigError: an invalid or already enrolled id, or an unreadable file.
    """
    if not is_valid_id(device_id):
        raise ConfigError(f"device id {device_id!r} must be 1-128 chars of [A-Za-z0-9._:-]")
    if path.exists() and device_id in load_enrolment(path).keys:
        raise ConfigError(f"{device_id} is enrolled already in {path}")
    key = secrets.token_bytes(_KEY_BYTES)
    write_private(path, f"{device_id} {key.hex()}\n", append=True)
    return key


def write_private(path: Path, text: str, append: bool = False) -> None:
    """Write (or append) ``text`` to ``path``, which is left with mode 0600 even if it existed with another.

    ``os.open``'s mode applies only to a file it creates: an existing enrolment or key file
    keeps whatever mode it had (0644 from a copy or a touch) unless it is set here.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "a" if append else "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # before the secret is written
        handle.write(text)


def load_device_key(path: Path) -> bytes:
    """A device's own key (hex in a file, as ``edge enrol`` writes it); raises :class:`ConfigError`."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read device key {path}: {exc}") from exc
    if len(key) != _KEY_BYTES:
        raise ConfigError(f"device key {path} must hold {_KEY_BYTES} bytes in hex")
    return key
