"""Who may do what on a secure broker: the ACL table of the topic layout, and granting it.

Principals (SCRAM users, see :mod:`streamedge.kafka.security`) and what they are allowed
(``READ`` and ``WRITE`` imply ``DESCRIBE``; everything not listed is denied)::

    principal  resource                                   operations
    device     topic readings                             WRITE, READ (agents with source=kafka)
    device     topic edge-results, edge-telemetry         WRITE
    device     topic model-updates                        READ
    device     group  <device group prefix>* (prefixed)   READ
    worker     topic readings, model-updates              READ
    worker     topic forecasts, anomalies, classifications,
                     dead-letters, retrain-requests       WRITE
    worker     topic, group, transactional id
                     <worker group prefix>* (prefixed)    ALL (Faust's own topics, its consumer group)
    promoter   topic model-updates                        WRITE
    promoter   topic edge-telemetry                       READ (models watch-canary)
    promoter   topic readings, retrain-requests           READ (train watch: the retrainer)
    promoter   group <retrainer group prefix>* (prefixed) READ (train watch's consumer group)
    admin      everything (super user; creates topics, runs the brokers' own traffic)

Only the promoter may write model updates: a device or worker credential that tries gets
``TopicAuthorizationFailed``. The promoter is whoever holds the model signing key: ``models
promote``, the canary watcher (rolls a staged promotion back) and the retrainer (promotes what it
trained) all sign and publish updates, so they share it. Its reads add little to what writing
model updates already allows (replacing every model of the fleet), and a separate retrainer user
would write model updates all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

__all__ = ["DEVICE_GROUP_PREFIX", "RETRAINER_GROUP_PREFIX", "WORKER_GROUP_PREFIX", "Grant", "acl_table", "grant_acls",
           "kafka_acl"]

# The edge agent's Kafka source joins group "streamedge-edge-<device id>".
DEVICE_GROUP_PREFIX = "streamedge-edge-"
# A stream worker's Faust app id (default "streamedge-stream") is its consumer group and the
# prefix of the topics Faust creates for itself.
WORKER_GROUP_PREFIX = "streamedge-stream"
# ``streamedge train watch --group-id`` (default "streamedge-retrainer") must start with this.
RETRAINER_GROUP_PREFIX = "streamedge-retrainer"

ResourceKind = Literal["topic", "group", "transactional_id"]
Operation = Literal["READ", "WRITE", "ALL"]


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL: ``principal`` may do ``operation`` on ``kind`` named (or prefixed) ``name``."""

    principal: str
    kind: ResourceKind
    name: str
    operation: Operation
    prefixed: bool = False


def acl_table(layout: TopicLayout, worker_group_prefix: str = WORKER_GROUP_PREFIX,
              device_group_prefix: str = DEVICE_GROUP_PREFIX,
              retrainer_group_prefix: str = RETRAINER_GROUP_PREFIX) -> list[Grant]:
    """The grants of every non-admin principal for ``layout``.

    Raises:
        ConfigError: a group prefix would also cover a layout topic (a worker or device could then
            write model updates through its prefixed grant).
    """
    for prefix in (worker_group_prefix, device_group_prefix, retrainer_group_prefix):
        if not prefix:
            raise ConfigError("a consumer group prefix of the ACL table is empty")
        covered = [spec.name for spec in layout.specs() if spec.name.startswith(prefix)]
        if covered:
            raise ConfigError(f"group prefix {prefix!r} also covers topic(s) {', '.join(covered)}")
    grants = [
        Grant("device", "topic", layout.readings, "WRITE"),
        Grant("device", "topic", layout.readings, "READ"),
        Grant("device", "topic", layout.edge_results, "WRITE"),
        Grant("device", "topic", layout.edge_telemetry, "WRITE"),
        Grant("device", "topic", layout.model_updates, "READ"),
        Grant("device", "group", device_group_prefix, "READ", prefixed=True),
        Grant("worker", "topic", layout.readings, "READ"),
        Grant("worker", "topic", layout.model_updates, "READ"),
    ]
    grants += [Grant("worker", "topic", topic, "WRITE") for topic in (
        layout.forecasts, layout.anomalies, layout.classifications, layout.dead_letters, layout.retrain_requests)]
    grants += [Grant("worker", kind, worker_group_prefix, "ALL", prefixed=True)
               for kind in ("topic", "group", "transactional_id")]
    grants += [
        Grant("promoter", "topic", layout.model_updates, "WRITE"),
        Grant("promoter", "topic", layout.edge_telemetry, "READ"),
        Grant("promoter", "topic", layout.readings, "READ"),
        Grant("promoter", "topic", layout.retrain_requests, "READ"),
        Grant("promoter", "group", retrainer_group_prefix, "READ", prefixed=True),
    ]
    return grants


def kafka_acl(grant: Grant) -> Any:
    """``grant`` as kafka-python's ``ACL`` (ALLOW, any host)."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    pattern = ResourcePattern(ResourceType[grant.kind.upper()], grant.name,
                              ACLResourcePatternType.PREFIXED if grant.prefixed else ACLResourcePatternType.LITERAL)
    return ACL(f"User:{grant.principal}", "*", ACLOperation[grant.operation], ACLPermissionType.ALLOW, pattern)


def grant_acls(admin_settings: KafkaSettings, layout: TopicLayout, worker_group_prefix: str = WORKER_GROUP_PREFIX,
               device_group_prefix: str = DEVICE_GROUP_PREFIX,
               retrainer_group_prefix: str = RETRAINER_GROUP_PREFIX) -> list[Grant]:
    """Create the ACLs of :func:`acl_table` with the admin's settings (existing ones stay); returns them.

    Raises:
        ConfigError: the broker refused one of them.
    """
    from kafka.admin import KafkaAdminClient

    grants = acl_table(layout, worker_group_prefix, device_group_prefix, retrainer_group_prefix)
    admin = KafkaAdminClient(**admin_settings.kafka_python_config())
    try:
        result = admin.create_acls([kafka_acl(grant) for grant in grants])
    finally:
        admin.close()
    failed = result.get("failed", [])
    if failed:
        raise ConfigError(f"the broker refused {len(failed)} ACL(s), first: {failed[0]}")
    return grants
