"""Hot model reload: follow the compacted model-updates topic, verify, load beside, swap.

Every worker reads the whole model-updates topic itself (no consumer group: each worker must
see every update). For an update of a routed model whose version differs from the active one
(a rollback names a lower version), it fetches the artefact with
:func:`streamedge.contracts.model_update.fetch_model` (signature + sha256 + manifest equality),
loads it beside the active version, and :meth:`services.processor.Processor.install` smoke-tests
it on recent windows and swaps it in. The processor runs batches synchronously, so a swap always
falls between two batches. Any failure is logged and counted
(``streamedge_stream_model_reloads_total{outcome="rejected"}``); the old version keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streamedge.contracts.model_update import ModelUpdate, fetch_model, parse_model_update
from streamedge.errors import StreamedgeError
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.errors import ModelRejectedError
from streamedge.services.models import LoadedModel, load_model
from streamedge.services.processor import Processor

__all__ = ["ModelFollower", "catch_up"]

_log = logging.getLogger(__name__)


class ModelFollower:
    """Applies model updates to a processor.

    Args:
        processor: the processor whose models are swapped.
        model_dir: where fetched versions are installed (``<name>/<version>/``).
        public_key: the trusted signing key.
        runtime: TFLite runtime name.
    """

    def __init__(self, processor: Processor, model_dir: Path, public_key: Ed25519PublicKey,
                 runtime: str = "auto") -> None:
        self.processor = processor
        self.model_dir = model_dir
        self.public_key = public_key
        self.runtime = runtime
        self.routed = set(processor.settings.model_names())

    def handle(self, payload: bytes | None) -> str:
        """Apply one update message; returns ``ignored``, ``current``, ``loaded`` or ``rejected``."""
        update = self._relevant(payload)
        if isinstance(update, str):
            return update
        try:
            loaded = self._load(update)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        return self._swap(update, loaded)

    async def handle_async(self, payload: bytes | None) -> str:
        """:meth:`handle` for the event loop: fetch, verify and load in a thread, swap on the loop."""
        update = self._relevant(payload)
        if isinstance(update, str):
            return update
        try:
            loaded = await asyncio.to_thread(self._load, update)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        return self._swap(update, loaded)

    def _relevant(self, payload: bytes | None) -> ModelUpdate | str:
        """The update to apply, or the outcome when there is nothing to do."""
        try:
            update = parse_model_update(payload)
        except StreamedgeError as exc:
            _log.error("model update rejected: %s", exc)
            self.processor.metrics.model_rejected("unparsable")
            return "rejected"
        if update.name not in self.routed:
            return "ignored"
        active = self.processor.models.get(update.name)
        if active is not None and active.version == update.version:
            return "current"
        return update

    def _load(self, update: ModelUpdate) -> LoadedModel:
        """Fetch (copy, signature, sha256) and load the announced version; touches disk only."""
        try:
            folder = fetch_model(update, self.model_dir, self.public_key)
        except (StreamedgeError, OSError) as exc:
            raise ModelRejectedError(f"fetch of {update.name} v{update.version} failed: {exc}") from exc
        return load_model(folder, self.public_key, self.runtime)

    def _swap(self, update: ModelUpdate, loaded: LoadedModel) -> str:
        """Smoke-test and swap in a loaded version (between batches: the loop runs one thing at a time)."""
        try:
            self.processor.install(loaded)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        _log.info("%s v%d is now active (%s)", update.name, update.version, update.action)
        return "loaded"

    def _rejected(self, update: ModelUpdate, exc: ModelRejectedError) -> str:
        active = self.processor.models.get(update.name)
        _log.error("%s v%d rejected, v%s keeps serving: %s", update.name, update.version,
                   active.version if active else "-", exc)
        self.processor.metrics.model_rejected(update.name)
        return "rejected"

    async def follow(self, kafka: KafkaSettings, topic: str, start: dict[int, int] | None = None,
                     poll_s: float = 0.5) -> None:
        """Apply updates from ``topic`` until cancelled, from ``start`` offsets (default: the beginning)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**kafka.aiokafka_config(), enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or {0}
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if start and tp.partition in start:
                    consumer.seek(tp, start[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            while True:
                batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=int(poll_s * 1000))
                for messages in batches.values():
                    for message in messages:
                        await self.handle_async(message.value)
        finally:
            await consumer.stop()


def catch_up(follower: ModelFollower, kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Apply every update already on ``topic`` (blocking); returns the next offset per partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        latest: dict[str, bytes | None] = {}
        deadline = time.monotonic() + timeout_s
        for tp in tps:
            while consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise ModelRejectedError(f"could not read {topic} to its end within {timeout_s:.0f} s")
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        latest[record.key.decode() if record.key else ""] = record.value
        for value in latest.values():
            follower.handle(value)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        consumer.close()
