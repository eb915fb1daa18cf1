"""Hot model reload: follow the compacted model-updates topic, verify, load beside, swap.

Every worker reads the whole model-updates topic itself (no consumer group: each worker must
see every update). A message is acted on only when its key is the model name, both its
signatures verify (:func:`streamedge.contracts.model_update.verify_update`: the manifest and the
registry's promotion record) and its record is newer than the highest one this worker accepted
(:class:`~streamedge.contracts.promotion.PromotionLedger` under ``model_dir``, persisted): a
replayed older record is refused as ``stale``, a rollback is a newer record naming an older
version. The artefact is fetched with :func:`~streamedge.contracts.model_update.fetch_model`,
loaded beside the active version, and :meth:`services.processor.Processor.install`
smoke-tests it on recent windows and swaps it in; only then is the record accepted, so a
restarted worker loads exactly the version it last served (:func:`services.models.active_version_dir`).
The processor runs batches synchronously, so a swap always falls between two batches.
Workers serve the fleet: a staged record (a canary share or a device group, see
:mod:`streamedge.contracts.rollout`) keeps them on its ``fleet_version``; they accept it (so
the ledger's order holds) and load the fleet version from ``model_dir`` when they do not
serve it yet, never the canary. Any
message, however malformed, is logged and counted (``streamedge_stream_model_reloads_total
{outcome="rejected"}``; model label ``unparsable`` unless it names a routed model) and the old
version keeps serving: nothing a message says can stop the worker or its start-up catch-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streamedge.contracts.model_update import FetchOptions, ModelUpdate, fetch_model, parse_model_update, verify_update
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord
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
        model_dir: where fetched versions and the promotion ledger are kept (``<name>/<version>/``).
        public_key: the trusted signing key.
        runtime: TFLite runtime name.
        fetch: size cap, token and TLS trust for ``http(s)://`` artefacts.
    """

    def __init__(self, processor: Processor, model_dir: Path, public_key: Ed25519PublicKey,
                 runtime: str = "auto", fetch: FetchOptions | None = None) -> None:
        self.processor = processor
        self.model_dir = model_dir
        self.public_key = public_key
        self.runtime = runtime
        self.fetch = fetch or FetchOptions()
        self.ledger = PromotionLedger(model_dir)
        self.routed = set(processor.settings.model_names())

    def handle(self, key: bytes | None, payload: bytes | None) -> str:
        """Apply one update message; returns ``ignored``, ``current``, ``loaded`` or ``rejected``."""
        update = self._relevant(key, payload)
        if isinstance(update, str):
            return update
        try:
            loaded = self._load(update)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        return self._swap(update, loaded)

    async def handle_async(self, key: bytes | None, payload: bytes | None) -> str:
        """:meth:`handle` for the event loop: fetch, verify and load in a thread, swap on the loop."""
        update = self._relevant(key, payload)
        if isinstance(update, str):
            return update
        try:
            loaded = await asyncio.to_thread(self._load, update)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        return self._swap(update, loaded)

    def verified(self, key: bytes | None, payload: bytes | None) -> ModelUpdate | str:
        """The parsed update of a routed model with both signatures valid, or the outcome to report."""
        try:
            update = parse_model_update(payload, key)
        except StreamedgeError as exc:
            _log.error("model update rejected: %s", exc)
            self.processor.metrics.model_rejected("unparsable")
            return "rejected"
        if update.name not in self.routed:
            return "ignored"
        try:
            verify_update(update, self.public_key)
        except StreamedgeError as exc:
            return self._rejected(update, ModelRejectedError(str(exc)))
        return update

    def _relevant(self, key: bytes | None, payload: bytes | None) -> ModelUpdate | str:
        """The update to apply, or the outcome when there is nothing to do."""
        update = self.verified(key, payload)
        if isinstance(update, str):
            return update
        record = update.promotion
        if record is None:  # verify_update refuses an update without one
            return "rejected"
        try:
            self.ledger.freshness(record)
        except StreamedgeError as exc:
            return self._rejected(update, ModelRejectedError(str(exc)))
        active = self.processor.models.get(update.name)
        if active is not None and active.version == record.fleet_serving:
            self._accept(record)
            return "current"
        return update

    def _accept(self, record: PromotionRecord) -> None:
        try:
            self.ledger.accept(record)
        except OSError as exc:
            _log.error("promotion #%d of %s not persisted: %s", record.sequence, record.model, exc)

    def _load(self, update: ModelUpdate) -> LoadedModel:
        """Fetch (signature, sha256) and load the version to serve; touches disk only.

        For a staged record that is its fleet version, which must be in ``model_dir`` already
        with the record's ``fleet_sha256`` (the message carries only the staged version).
        """
        record = update.promotion
        if record is not None and record.partial:
            folder = self.model_dir / update.name / str(record.fleet_serving)
            if not folder.is_dir():
                raise ModelRejectedError(f"{update.name}: staged record #{record.sequence} keeps workers on "
                                         f"v{record.fleet_serving}, which is not in {self.model_dir}")
            try:
                loaded = load_model(folder, self.public_key, self.runtime)
            except StreamedgeError as exc:
                raise ModelRejectedError(f"fleet version v{record.fleet_serving} of {update.name}: {exc}") from exc
            if loaded.manifest.sha256 != record.fleet_sha256:
                raise ModelRejectedError(f"{folder} is not the v{record.fleet_serving} record #{record.sequence} names")
            return loaded
        try:
            folder, _ = fetch_model(update, self.model_dir, self.public_key, self.fetch)
        except (StreamedgeError, OSError) as exc:
            raise ModelRejectedError(f"fetch of {update.name} v{update.version} failed: {exc}") from exc
        return load_model(folder, self.public_key, self.runtime)

    def _swap(self, update: ModelUpdate, loaded: LoadedModel) -> str:
        """Smoke-test and swap in a loaded version (between batches: the loop runs one thing at a time)."""
        try:
            self.processor.install(loaded)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        if update.promotion is not None:
            self._accept(update.promotion)
        _log.info("%s v%d is now active (%s)", update.name, loaded.manifest.version, update.action)
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
                        await self.handle_async(message.key, message.value)
        finally:
            await consumer.stop()


def catch_up(follower: ModelFollower, kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Apply what is already on ``topic`` (blocking); returns the next offset per partition.

    Every message is parsed and verified; per routed model only the verified one with the
    highest promotion sequence is applied (so a forged or replayed message later in the log
    cannot shadow the real latest one, and only one version per model is loaded).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        latest: dict[str, tuple[int, bytes, bytes | None]] = {}
        deadline = time.monotonic() + timeout_s
        for tp in tps:
            while consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise ModelRejectedError(f"could not read {topic} to its end within {timeout_s:.0f} s")
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        update = follower.verified(record.key, record.value)
                        if isinstance(update, str) or update.promotion is None:
                            continue
                        held = latest.get(update.name)
                        if held is None or update.promotion.sequence > held[0]:
                            latest[update.name] = (update.promotion.sequence, record.key, record.value)
        for _, key, value in latest.values():
            follower.handle(key, value)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        consumer.close()
