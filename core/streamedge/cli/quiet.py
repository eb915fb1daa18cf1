"""Third-party log noise, filtered to what an operator must see.

Kafka clients log a normal consumer-group rebalance, a group's first join and a broker restart of
a few seconds as ERRORs and WARNINGs, many a second: aiokafka's "Marking the coordinator dead",
"Group Coordinator Request failed", "Failed fetch messages from N: NodeNotReadyError", Faust's
"No active partitions". Each retries on its own, and an operator cannot act on them. They are held
back while they are transient: :class:`TransientFilter` drops each kind (logger and message
template) until it has kept recurring for ``grace_s`` seconds, then lets one line through every
``every_s`` seconds, saying how long it has lasted and how many like it were held back. A
condition that stops for ``grace_s`` starts afresh. Every other record passes untouched, so a
real failure (authentication, authorisation, a fatal join error) is shown at once.

TensorFlow's C++ logging is set by environment before TensorFlow is imported (the training CLI
sets ``TF_CPP_MIN_LOG_LEVEL``); :func:`quiet_tensorflow_warnings` drops the Python warnings its
converter gives on every export.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["TRANSIENT", "TransientFilter", "install_transient_filter", "quiet_tensorflow_warnings"]

# logger name -> message templates (the text a record's ``msg`` starts with, or holds for Faust's
# prefixed messages) that a rebalance, a first join or a short broker restart produce.
TRANSIENT: Final[dict[str, tuple[str, ...]]] = {
    "aiokafka.consumer.group_coordinator": (
        "Marking the coordinator dead",
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "Group Coordinator Request failed: %s",
        "Heartbeat failed for group %s because it is rebalancing",
        "Heartbeat failed for group %s: coordinator (node %s)",
        "Heartbeat send request failed: %s. Will retry.",
        "OffsetCommit failed for group %s due to group error (%s), will rejoin",
    ),
    "aiokafka.consumer.fetcher": ("Failed fetch messages from %s: %s",),
    "aiokafka.client": ("Unable connect to node with id %s: %s", 'Unable connect to "%s:%s": %s',
                        "Unable to update metadata from %s"),
    "aiokafka.producer.sender": ("Got error produce response",),
    "faust.transport.drivers.aiokafka": ("No active partitions for",),
}


@dataclass
class _Episode:
    first: float
    last: float
    shown: float | None = None
    held: int = 0


class TransientFilter(logging.Filter):
    """Holds back transient records of the kinds in ``kinds`` (see the module docstring).

    Args:
        kinds: logger name -> message templates.
        grace_s: how long a kind must keep recurring before it is shown, seconds.
        every_s: at most one line of a kind per this many seconds once shown.
        clock: monotonic seconds.
    """

    def __init__(self, kinds: dict[str, tuple[str, ...]] = TRANSIENT, grace_s: float = 30.0, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.kinds, self.grace_s, self.every_s, self.clock = kinds, grace_s, every_s, clock
        self._episodes: dict[tuple[str, str], _Episode] = {}

    def _kind(self, record: logging.LogRecord) -> str | None:
        text = str(record.msg)
        return next((t for t in self.kinds.get(record.name, ()) if text.startswith(t) or t in text), None)

    def filter(self, record: logging.LogRecord) -> bool:
        template = self._kind(record)
        if template is None:
            return True
        now, key = self.clock(), (record.name, template)
        episode = self._episodes.get(key)
        if episode is None or now - episode.last > self.grace_s:
            episode = self._episodes[key] = _Episode(now, now)
        episode.last = now
        if now - episode.first < self.grace_s or (episode.shown is not None and now - episode.shown < self.every_s):
            episode.held += 1
            return False
        # Persisting: one line, saying how long it has lasted and how many like it were held back.
        record.msg = f"{record.msg} (recurring for {now - episode.first:.0f} s; {episode.held} like it held back)"
        episode.shown, episode.held = now, 0
        return True


def install_transient_filter(grace_s: float = 30.0, every_s: float = 60.0) -> TransientFilter:
    """Attach one :class:`TransientFilter` to every logger named in :data:`TRANSIENT`; returns it."""
    found = TransientFilter(TRANSIENT, grace_s, every_s)
    for name in TRANSIENT:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, TransientFilter)]:
            logger.removeFilter(old)
        logger.addFilter(found)
    return found


def quiet_tensorflow_warnings() -> None:
    """Drop the Python warnings the TFLite converter gives on every export (nothing an operator can act on)."""
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
