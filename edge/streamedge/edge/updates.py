"""Learning of new model versions from the compacted model-updates topic.

A background thread follows the topic (from the beginning when the agent starts: compaction
keeps the latest update per model, so a device that was off still learns the current version;
after a reconnect it resumes from the next offset it has not handled), ignores other models,
and for each message of its model:

1. parses it (:func:`~streamedge.contracts.model_update.parse_model_update`: any bytes give an
   update or a counted ``malformed`` refusal; the key must be the model name);
2. verifies both signatures (:func:`~streamedge.contracts.model_update.verify_update`), then
   asks the agent's :class:`~streamedge.contracts.promotion.PromotionLedger` whether the record
   is newer than the highest one accepted (a replayed, older record is ``stale``);
3. asks the record which version this device must serve (a staged promotion targets a device
   group or a canary share, :meth:`~streamedge.contracts.promotion.PromotionRecord.serving_version`);
   a device outside the target fetches nothing and is told to stay on (or return to) the
   record's fleet version;
4. fetches the model (inline, ``file://`` or ``http(s)://``; sha256 checked before anything is
   installed); a failed fetch is tried again with doubling backoff (2 s to 5 min,
   :class:`~streamedge.contracts.download.FetchRetries`) until it succeeds or a newer record
   supersedes it.

While it follows the topic, the thread also checks the accepted record's signed ``expires``
(:meth:`UpdateWatcher.check_expiry`, every :data:`EXPIRY_CHECK_S`): past it with nothing newer,
an update may be withheld from this device (a blocked topic, a stalled broker path); it is logged
and counted once per record as ``model_updates_total{outcome="expired"}``, and the device keeps
serving the version it has.

The outcome is handed to the agent's thread, which runs the shape check and the smoke test,
swaps, and only then accepts the record. A refused message never deletes or changes anything:
only a version folder this very update installed may be removed when it is refused later.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamedge.contracts.download import FetchRetries
from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.model_update import FetchOptions, ModelUpdate, fetch_model, parse_model_update, verify_update
from streamedge.contracts.promotion import PromotionLedger, StaleUpdateError
from streamedge.errors import ManifestError, VerificationError

__all__ = ["EXPIRY_CHECK_S", "FetchedUpdate", "UpdateWatcher"]

_LOG = logging.getLogger(__name__)
# A record's ttl is hours to days; a minute's lateness in noticing it is nothing, a file read a poll is waste.
EXPIRY_CHECK_S = 60.0


@dataclass(frozen=True)
class FetchedUpdate:
    """A verified, fresh announcement of our model: installed at ``folder``, or refused with ``error``.

    Attributes:
        update: the verified update (both signatures valid, record newer than the ledger's).
        folder: the installed version folder, or None when the fetch failed.
        error: ``"<reason>: <detail>"`` when refused before the agent's checks.
        installed: whether this update installed ``folder`` (only then may a refusal remove it).
        stay: the record targets other devices: serve its fleet version, fetch nothing.
    """

    update: ModelUpdate
    folder: Path | None
    error: str | None = None
    installed: bool = False
    stay: bool = False


class UpdateWatcher:
    """Follows the model-updates topic for one model name.

    Args:
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        topic: the model-updates topic (one partition, compacted).
        model_name: the model this device serves.
        models_root: where verified versions are installed.
        public_key: the trusted Ed25519 key.
        ledger: the agent's promotion ledger (read here, written by the agent).
        timeout_s: bound on one Kafka call.
        fetch: size cap, bearer token and TLS trust for ``http(s)://`` models.
        on_refused: called with a reason (``malformed``, ``verification``, ``stale``) for each
            message refused before it reaches the agent, and with ``expired`` once per accepted
            record found past its expiry.
        device_id, group: this device, for records that target a group or a canary share.
    """

    def __init__(self, kafka_config: dict[str, Any], topic: str, model_name: str, models_root: Path,
                 public_key: TrustAnchor, ledger: PromotionLedger, timeout_s: float = 5.0,
                 fetch: FetchOptions | None = None, on_refused: Callable[[str], None] | None = None,
                 device_id: str = "", group: str = "") -> None:
        self._device = device_id
        self._group = group
        self._config = kafka_config
        self._topic = topic
        self._name = model_name
        self._root = models_root
        self._key = public_key
        self._ledger = ledger
        self._timeout_s = timeout_s
        self._fetch = fetch or FetchOptions()
        self._on_refused = on_refused or (lambda reason: None)
        self._position: int | None = None
        self._expired_sequence: int | None = None
        self.fetched: queue.Queue[FetchedUpdate] = queue.Queue(maxsize=16)
        self.retries = FetchRetries()
        self.stop_event = threading.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to return (within about ``timeout_s``)."""
        self.stop_event.set()

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        ms = int(self._timeout_s * 1000)
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                 bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 5000) * 2, **self._config)
        partition = TopicPartition(self._topic, 0)
        consumer.assign([partition])
        if self._position is None:
            consumer.seek_to_beginning(partition)
        else:
            consumer.seek(partition, self._position)
        return consumer

    def run(self) -> None:
        """Follow the topic until :meth:`stop`; Kafka errors reconnect, other errors propagate.

        Meant to run under a supervisor (:class:`streamedge.edge.supervisor.Supervised`) that
        restarts it with backoff; the position handled so far survives the restart.
        """
        from kafka.errors import KafkaError

        consumer: Any = None
        next_expiry_check = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    if consumer is None:
                        consumer = self._consumer()
                    batches = consumer.poll(timeout_ms=500)
                except (KafkaError, OSError) as exc:
                    _LOG.debug("model-updates consumer failed, retrying: %s", exc)
                    if consumer is not None:
                        consumer.close(timeout_ms=int(self._timeout_s * 1000))
                    consumer = None
                    self.stop_event.wait(2.0)
                    continue
                for records in batches.values():
                    for record in records:
                        # Moved past before it is judged: a message that makes ``handle`` raise
                        # costs one restart of this loop, never every later update.
                        self._position = record.offset + 1
                        self.handle(record.key, record.value)
                for key, value in self.retries.due(time.monotonic()):
                    self.handle(key, value)
                if time.monotonic() >= next_expiry_check:
                    next_expiry_check = time.monotonic() + EXPIRY_CHECK_S
                    self.check_expiry(time.time())
        finally:
            if consumer is not None:
                consumer.close(timeout_ms=int(self._timeout_s * 1000))

    def check_expiry(self, now: float) -> bool:
        """Whether the accepted record of our model is past its signed expiry (reported once per record).

        Nothing else happens: the device keeps serving; a newer record ends the report.
        """
        record = self._ledger.get(self._name)
        if record is None or not record.expired(now):
            return False
        if record.sequence != self._expired_sequence:
            self._expired_sequence = record.sequence
            self._refuse("expired", f"promotion #{record.sequence} of {self._name} (v{record.version}) expired at "
                                    f"{record.expires:.0f} and nothing newer arrived: an update may be withheld; "
                                    f"still serving")
        return True

    def handle(self, key: bytes | None, value: bytes | None) -> None:
        """Judge one message; hand a verified, fresh update of our model to the agent.

        The key is checked before the value is decoded. Never raises: an error no rule foresaw
        refuses this message only (counted as ``malformed``) and the thread goes on.
        """
        if key != self._name.encode():
            return
        try:
            self._judge(key, value)
        except Exception as exc:  # the last line of defence: one hostile message costs itself only
            self._refuse("malformed", f"model update ignored: {type(exc).__name__}: {str(exc)[:200]}")

    def _judge(self, key: bytes, value: bytes | None) -> None:
        try:
            update = parse_model_update(value, key)
        except ManifestError as exc:
            self._refuse("malformed", f"malformed model update ignored: {exc}")
            return
        try:
            record = verify_update(update, self._key)
            if self._ledger.freshness(record) == "current":
                return
        except StaleUpdateError as exc:
            self._refuse("stale", str(exc))
            return
        except (VerificationError, ManifestError) as exc:
            self._refuse("verification", f"unverified model update ignored: {exc}")
            return
        if record.serving_version(self._device, self._group) != update.version:
            self.retries.forget(self._name)
            self._put(FetchedUpdate(update, None, stay=True))
            return
        try:
            folder, installed = fetch_model(update, self._root, self._key, self._fetch)
        except (VerificationError, ManifestError, OSError) as exc:
            pause = self.retries.failed(self._name, key, value, time.monotonic())
            _LOG.warning("fetch of %s v%d failed, next try in %.0f s: %s", self._name, update.version, pause, exc)
            self._put(FetchedUpdate(update, None, f"verification: {exc}"))
            return
        self.retries.forget(self._name)
        self._put(FetchedUpdate(update, folder, installed=installed))

    def _refuse(self, reason: str, detail: str) -> None:
        _LOG.warning("%s", detail, extra={"reason": reason, "model": self._name})
        self._on_refused(reason)

    def _put(self, item: FetchedUpdate) -> None:
        while not self.stop_event.is_set():
            try:
                self.fetched.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
