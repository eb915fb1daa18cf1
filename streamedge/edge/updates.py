"""Learning of new model versions from the compacted model-updates topic.

A background thread follows the topic (from the beginning: compaction keeps the latest update
per model, so a device that was off still learns the current version), ignores other models,
and fetches each announced version with :func:`streamedge.contracts.model_update.fetch_model`
(signature, sha256 and manifest equality checked before anything is installed). The outcome
(installed folder, or the refusal) is handed to the agent's thread, which runs the shape check
and the smoke test and swaps; the watcher never touches the serving model.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streamedge.contracts.model_update import ModelUpdate, fetch_model, parse_model_update
from streamedge.errors import ManifestError, VerificationError

__all__ = ["FetchedUpdate", "UpdateWatcher"]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedUpdate:
    """An announced version of our model: installed at ``folder``, or refused with ``error``."""

    update: ModelUpdate
    folder: Path | None
    error: str | None = None


class UpdateWatcher:
    """Follows the model-updates topic for one model name.

    Args:
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        topic: the model-updates topic (one partition, compacted).
        model_name: the model this device serves.
        models_root: where verified versions are installed.
        public_key: the trusted Ed25519 key.
        timeout_s: bound on one Kafka call.
    """

    def __init__(self, kafka_config: dict[str, Any], topic: str, model_name: str, models_root: Path,
                 public_key: Ed25519PublicKey, timeout_s: float = 5.0) -> None:
        self._config = kafka_config
        self._topic = topic
        self._name = model_name
        self._root = models_root
        self._key = public_key
        self._timeout_s = timeout_s
        self.fetched: queue.Queue[FetchedUpdate] = queue.Queue(maxsize=16)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-updates", daemon=True)

    def start(self) -> None:
        """Start following the topic."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within about ``timeout_s``)."""
        self._stop.set()
        self._thread.join(timeout=self._timeout_s * 2)

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        ms = int(self._timeout_s * 1000)
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                 bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 5000) * 2, **self._config)
        partition = TopicPartition(self._topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        return consumer

    def _loop(self) -> None:
        from kafka.errors import KafkaError

        consumer: Any = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                batches = consumer.poll(timeout_ms=500)
            except (KafkaError, OSError) as exc:
                _LOG.debug("model-updates consumer failed, retrying: %s", exc)
                if consumer is not None:
                    consumer.close(timeout_ms=int(self._timeout_s * 1000))
                consumer = None
                self._stop.wait(2.0)
                continue
            for records in batches.values():
                for record in records:
                    self._handle(record.key, record.value)
        if consumer is not None:
            consumer.close(timeout_ms=int(self._timeout_s * 1000))

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None and key != self._name.encode():
            return
        try:
            update = parse_model_update(value)
        except ManifestError as exc:
            _LOG.warning("malformed model update ignored: %s", exc, extra={"reason": "malformed"})
            return
        if update.name != self._name:
            return
        try:
            folder = fetch_model(update, self._root, self._key)
        except (VerificationError, ManifestError, OSError) as exc:
            self._put(FetchedUpdate(update, None, f"verification: {exc}"))
            return
        self._put(FetchedUpdate(update, folder))

    def _put(self, item: FetchedUpdate) -> None:
        while not self._stop.is_set():
            try:
                self.fetched.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
