"""Per-device Kafka credentials on a secure broker: a SCRAM user and the ACLs of one device.

``streamedge kafka add-device DEVICE_ID`` (with the admin's ``--config``) gives a device its own
SCRAM-SHA-512 user ``device-<DEVICE_ID>`` on the running broker (AlterUserScramCredentials: no
restart, no reformat) and grants that principal only what an edge agent needs::

    resource                                        operations
    topic readings, edge-results, edge-telemetry    WRITE
    topic model-updates                             READ
    topic readings                                  READ (only with --kafka-source)
    group streamedge-edge-<DEVICE_ID> (literal)     READ (the Kafka source's consumer group)

The group grant is literal, not a prefix: ``streamedge-edge-pump-1`` as a prefix would also cover
the group of ``pump-10``. ``remove-device`` deletes the credential and every ACL of the principal;
the broker then refuses the device's next login. A connection that authenticated before the
removal is not cut, but every request on it is refused once its ACLs are gone.

Both calls return only once the broker applies the change (a login with the credential succeeds,
resp. is refused), so a caller may use the device credential at once.

Python use::

    device = add_device(admin_settings, TopicLayout(), "pump-0017")   # KafkaSettings of the device
    write_device_config(folder / "pump-0017.toml", device, "pump-0017", folder / "pump-0017.key")
    remove_device(admin_settings, "pump-0017")
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streamedge.contracts.reading import is_valid_id
from streamedge.errors import ConfigError
from streamedge.kafka.acls import DEVICE_GROUP_PREFIX, Grant, kafka_acl
from streamedge.kafka.login import KafkaLoginError, check_login
from streamedge.kafka.security import MECHANISM, write_secret
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

__all__ = ["DEVICE_USER_PREFIX", "add_device", "device_grants", "device_user", "remove_device",
           "write_device_config"]

DEVICE_USER_PREFIX = "device-"
_POLL_S = 0.2


def device_user(device_id: str) -> str:
    """The SCRAM user of ``device_id`` (``device-<id>``).

    Raises:
        ConfigError: not a valid device id (1-128 chars of ``[A-Za-z0-9._:-]``).
    """
    if not is_valid_id(device_id):
        raise ConfigError(f"device id {device_id!r} must be 1-128 chars of [A-Za-z0-9._:-]")
    return DEVICE_USER_PREFIX + device_id


def device_grants(layout: TopicLayout, device_id: str, *, kafka_source: bool = False) -> list[Grant]:
    """The ACLs of one device's principal; ``kafka_source`` adds READ on readings (``--source kafka``)."""
    user = device_user(device_id)
    grants = [Grant(user, "topic", topic, "WRITE")
              for topic in (layout.readings, layout.edge_results, layout.edge_telemetry)]
    grants += [Grant(user, "topic", layout.model_updates, "READ"),
               Grant(user, "group", f"{DEVICE_GROUP_PREFIX}{device_id}", "READ")]
    if kafka_source:
        grants.append(Grant(user, "topic", layout.readings, "READ"))
    return grants


def _admin(settings: KafkaSettings) -> Any:
    from kafka.admin import KafkaAdminClient

    if not settings.uses_sasl:
        raise ConfigError("per-device credentials need a secure broker: give the admin's --config "
                          "(kafka up --secure writes security/admin.toml)")
    check_login(settings)
    return KafkaAdminClient(**settings.kafka_python_config())


def _wait_login(settings: KafkaSettings, timeout: float) -> None:
    """Poll until a login with ``settings`` succeeds; ConfigError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check_login(settings, timeout=min(5.0, timeout))
            return
        except KafkaLoginError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(f"the broker did not accept the new credential of {settings.sasl_username!r} "
                                  f"within {timeout:.0f} s: {exc}") from exc
        time.sleep(_POLL_S)


def add_device(admin: KafkaSettings, layout: TopicLayout, device_id: str, *, kafka_source: bool = False,
               timeout: float = 30.0) -> KafkaSettings:
    """Create ``device_id``'s SCRAM user with a fresh password and its ACLs; returns its settings.

    The returned settings are ``admin``'s (bootstrap, TLS, CA) with the device's user and password.

    Raises:
        ConfigError: an invalid id, ``admin`` not SASL, the device has a credential already, or
            the broker refused an ACL or the credential.
        KafkaLoginError: the admin credential is wrong.
    """
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    user = device_user(device_id)
    password = secrets.token_urlsafe(24)
    client = _admin(admin)
    try:
        existing = client.describe_user_scram_credentials([user]).get(user, {})
        if existing.get("credential_infos"):
            raise ConfigError(f"device {device_id} has a Kafka credential already (remove-device first)")
        # ACLs first: once the login works, everything the device may do works too.
        failed = client.create_acls([kafka_acl(g) for g in device_grants(layout, device_id,
                                                                          kafka_source=kafka_source)]).get("failed", [])
        if failed:
            raise ConfigError(f"the broker refused {len(failed)} ACL(s) of {user}, first: {failed[0]}")
        errors = client.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password)])
    finally:
        client.close()
    if errors.get(user):
        raise ConfigError(f"the broker refused the credential of {user}: {errors[user]}")
    device = admin.model_copy(update={"sasl_username": user, "sasl_password": SecretStr(password),
                                      "sasl_mechanism": MECHANISM, "client_id": f"streamedge-edge-{device_id}"})
    _wait_login(device, timeout)
    return device


def remove_device(admin: KafkaSettings, device_id: str, timeout: float = 30.0) -> int:
    """Delete ``device_id``'s SCRAM user and every ACL of its principal; returns how many ACLs went.

    Returns once the broker no longer lists the user's credential (its next login is refused).

    Raises:
        ConfigError: an invalid id, ``admin`` not SASL, the device has no credential, or the broker
            still lists it after ``timeout``.
    """
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
        ScramMechanism,
        UserScramCredentialDeletion,
    )

    user = device_user(device_id)
    client = _admin(admin)
    try:
        errors = client.alter_user_scram_credentials([UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)])
        if errors.get(user):
            raise ConfigError(f"device {device_id} has no Kafka credential to remove: {errors[user]}")
        every = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
        deleted = client.delete_acls([ACLFilter(f"User:{user}", None, ACLOperation.ANY, ACLPermissionType.ANY, every)])
        deadline = time.monotonic() + timeout
        while client.describe_user_scram_credentials([user]).get(user, {}).get("credential_infos"):
            if time.monotonic() >= deadline:
                raise ConfigError(f"the broker still lists the credential of {user} after {timeout:.0f} s")
            time.sleep(_POLL_S)
    finally:
        client.close()
    return sum(len(matched) for _filter, matched, _error in deleted)


def write_device_config(path: Path, settings: KafkaSettings, device_id: str, key_file: Path) -> None:
    """Write the device's ``streamedge --config`` file (0600): bootstrap, ``[kafka]``, its id and key file."""
    assert settings.sasl_password is not None
    lines = [f"bootstrap_servers = {json.dumps(settings.bootstrap_servers)}",
             f"device_id = {json.dumps(device_id)}",
             f"device_key_file = {json.dumps(str(Path(key_file).resolve()))}", "", "[kafka]",
             f"security_protocol = {json.dumps(settings.security_protocol)}",
             f"sasl_mechanism = {json.dumps(settings.sasl_mechanism)}",
             f"sasl_username = {json.dumps(settings.sasl_username)}",
             f"sasl_password = {json.dumps(settings.sasl_password.get_secret_value())}"]
    if settings.ssl_cafile is not None:
        lines.append(f"ssl_cafile = {json.dumps(str(settings.ssl_cafile))}")
    write_secret(Path(path), ("\n".join(lines) + "\n").encode())
