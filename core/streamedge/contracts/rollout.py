"""Staged rollout targets: which devices a promotion record is for.

A promotion record may carry a ``target`` (inside its signed payload, see
:class:`~streamedge.contracts.promotion.PromotionRecord`)::

    "all"            every device and worker (the same as no target: records issued before
                     staged rollouts exist carry none)
    "group:<name>"   devices whose configured group is ``<name>``
    "canary:<pct>"   devices whose canary bucket is below ``<pct>`` (1-100)

The canary bucket of a device is ``int.from_bytes(sha256(model + "\\n" + device_id)[:8]) % 100``:
stable across restarts and processes, independent of the fleet's size, and drawn per model,
so a canary of one model does not always land on the same devices as another's. A share of
``pct`` percent targets each device with probability ``pct / 100``; for a fleet of ``n``
devices the exact count is whatever the hash gives (:func:`canary_bucket` of each device id
tells), not ``round(n * pct / 100)``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal

from streamedge.errors import ManifestError

__all__ = ["RolloutTarget", "TargetKind", "canary_bucket", "parse_target"]

TargetKind = Literal["all", "group", "canary"]
# Group names follow the device id rule (printable, no spaces, bounded).
_GROUP: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(frozen=True)
class RolloutTarget:
    """A parsed target.

    Attributes:
        kind: ``"all"``, ``"group"`` or ``"canary"``.
        group: the group name (``kind == "group"``), else None.
        percent: the canary share, 1-100 (``kind == "canary"``), else None.
    """

    kind: TargetKind
    group: str | None = None
    percent: int | None = None

    def __str__(self) -> str:
        if self.kind == "group":
            return f"group:{self.group}"
        if self.kind == "canary":
            return f"canary:{self.percent}"
        return "all"

    def includes(self, model: str, device_id: str, group: str = "") -> bool:
        """Whether the device ``device_id`` (in ``group``, empty: none) is targeted for ``model``."""
        if self.kind == "group":
            return bool(group) and group == self.group
        if self.kind == "canary":
            return canary_bucket(model, device_id) < (self.percent or 0)
        return True


def canary_bucket(model: str, device_id: str) -> int:
    """The device's stable bucket 0..99 for ``model`` (see the module docstring)."""
    digest = hashlib.sha256(f"{model}\n{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def parse_target(text: str) -> RolloutTarget:
    """Parse ``all``, ``group:<name>`` or ``canary:<pct>`` (``canary:10%`` accepted too).

    Raises:
        ManifestError: naming the value when it is none of these.
    """
    if not isinstance(text, str):
        raise ManifestError(f"rollout target must be a string, got {type(text).__name__}")
    if text == "all":
        return RolloutTarget("all")
    kind, sep, value = text.partition(":")
    if sep and kind == "group" and _GROUP.match(value):
        return RolloutTarget("group", group=value)
    if sep and kind == "canary":
        digits = value.removesuffix("%")
        if digits.isdigit() and len(digits) <= 3 and 1 <= int(digits) <= 100:
            return RolloutTarget("canary", percent=int(digits))
    raise ManifestError(f"rollout target {text[:80]!r} is not 'all', 'group:<name>' or 'canary:<1-100>'")
