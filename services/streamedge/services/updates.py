"""Hot model reload: follow the compacted model-updates topic, verify, load beside, swap.

Every worker reads the whole model-updates topic itself (no consumer group: each worker must
see every update). The key is checked before the value is decoded (a message under a key that
is no routed model is ``ignored`` as it is), and on the event loop decoding and verification run
in a thread, so junk on the topic never stalls forecasts. A message is acted on only when its key is the model name, both its
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
serve it yet, never the canary. A staged message carries only the canary's model, so at
start-up :func:`catch_up` first installs a missing fleet version from the newest whole-fleet
record of it still on the topic (before compaction removes it); without one, the staged
record is refused with that reason. Any
message, however malformed, is logged and counted (``streamedge_stream_model_reloads_total
{outcome="rejected"}``; model label ``unparsable`` unless it names a routed model) and the old
version keeps serving: nothing a message says can stop the worker or its start-up catch-up.
A fetch that fails (registry down, link cut) is tried again from :meth:`ModelFollower.follow`
with doubling backoff (:class:`~streamedge.contracts.download.FetchRetries`) until it succeeds
or a newer record supersedes it.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import time
from pathlib import Path
from typing import Any

from streamedge.contracts.download import FetchRetries
from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.model_update import FetchOptions, ModelUpdate, fetch_model, parse_model_update, verify_update
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord
from streamedge.errors import StreamedgeError
from streamedge.kafka.settings import KafkaSettings
from streamedge.services.errors import FetchFailedError, ModelRejectedError
from streamedge.services.models import LoadedModel, load_model
from streamedge.services.processor import Processor

__all__ = ["ModelFollower", "catch_up"]

_log = logging.getLogger(__name__)

# What a fetch can raise besides StreamedgeError on bytes from an untrusted server or file: OSError
# (refused, reset, timeout, TLS, unreadable file), http.client.HTTPException (a garbled status line,
# too many or too long headers, a short body) and ValueError (a Content-Length that is no number,
# undecodable text). Each refuses the update; none may stop the worker.
_FETCH_ERRORS = (StreamedgeError, OSError, http.client.HTTPException, ValueError)
_MAX_KEY = 256  # a model name's bytes at most


class ModelFollower:
    """Applies model updates to a processor.

    Args:
        processor: the processor whose models are swapped.
        model_dir: where fetched versions and the promotion ledger are kept (``<name>/<version>/``).
        public_key: the trusted signing key.
        runtime: TFLite runtime name.
        fetch: size cap, token and TLS trust for ``http(s)://`` artefacts.
    """

    def __init__(self, processor: Processor, model_dir: Path, public_key: TrustAnchor,
                 runtime: str = "auto", fetch: FetchOptions | None = None) -> None:
        self.processor = processor
        self.model_dir = model_dir
        self.public_key = public_key
        self.runtime = runtime
        self.fetch = fetch or FetchOptions()
        self.ledger = PromotionLedger(model_dir, public_key)
        self.routed = set(processor.settings.model_names())
        # Why the last update of a model was refused (one line), until one is applied.
        self.refusals: dict[str, str] = {}
        self.retries = FetchRetries()

    def handle(self, key: bytes | None, payload: bytes | None) -> str:
        """Apply one update message; returns ``ignored``, ``current``, ``loaded`` or ``rejected``.

        Never raises (short of cancellation): an error no rule foresaw refuses this message only.
        """
        try:
            return self._handle(key, payload)
        except Exception as exc:
            return self._failed(key, exc)

    async def handle_async(self, key: bytes | None, payload: bytes | None) -> str:
        """:meth:`handle` for the event loop: fetch, verify and load in a thread, swap on the loop."""
        try:
            return await self._handle_async(key, payload)
        except Exception as exc:
            return self._failed(key, exc)

    def _handle(self, key: bytes | None, payload: bytes | None) -> str:
        update = self._relevant(key, payload)
        if isinstance(update, str):
            return update
        try:
            loaded = self._load(update)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        return self._swap(update, loaded)

    async def _handle_async(self, key: bytes | None, payload: bytes | None) -> str:
        if not self.routes(key):
            return "ignored"
        # Decoding (up to 1 MiB) and two signature checks: in a thread, so the loop keeps forecasting.
        update = await asyncio.to_thread(self._relevant, key, payload)
        if isinstance(update, str):
            return update
        try:
            loaded = await asyncio.to_thread(self._load, update)
        except FetchFailedError as exc:
            self.retries.failed(update.name, update.key, payload, time.monotonic())
            return self._rejected(update, exc)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        self.retries.forget(update.name)
        return self._swap(update, loaded)

    def routes(self, key: bytes | None) -> bool:
        """Whether ``key`` names a routed model: checked before a byte of the value is decoded."""
        return key is not None and len(key) <= _MAX_KEY and key.decode("utf-8", "replace") in self.routed

    def verified(self, key: bytes | None, payload: bytes | None) -> ModelUpdate | str:
        """The parsed update of a routed model with both signatures valid, or the outcome to report.

        The key is checked first: a message under any other key is ``ignored`` undecoded.
        """
        if not self.routes(key):
            return "ignored"
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
            self.refusals.pop(update.name, None)
            return "current"
        return update

    def install_fleet_version(self, staged: PromotionRecord, source: ModelUpdate | None) -> bool:
        """Before applying the verified staged record ``staged``, make sure its fleet version is in ``model_dir``.

        Only the files are installed (fetched and verified like any update); no record is
        accepted and nothing is swapped, so the staged record alone decides what is served and
        nothing is downgraded.

        Args:
            staged: a verified record with a partial target.
            source: a verified whole-fleet update of ``staged.fleet_version`` with ``staged.fleet_sha256``
                (an earlier record of the topic), or None when none is left.

        Returns:
            Whether the fleet version is there (or already served); False after logging and
            counting the refusal.
        """
        name, version = staged.model, staged.fleet_serving
        active = self.processor.models.get(name)
        if (self.model_dir / name / str(version)).is_dir() or (active is not None and active.version == version):
            return True
        if source is None or source.promotion is None or source.promotion.partial \
                or (source.version, source.manifest.sha256) != (version, staged.fleet_sha256):
            reason = (f"staged record #{staged.sequence} keeps workers on v{version}, which is neither in "
                      f"{self.model_dir} nor announced by a whole-fleet record still on the topic (compacted "
                      f"away): install v{version} there, or end the staged promotion")
            _log.error("%s: %s", name, reason)
            self.refusals[name] = reason
            self.processor.metrics.model_rejected(name)
            return False
        try:
            fetch_model(source, self.model_dir, self.public_key, self.fetch)
        except _FETCH_ERRORS as exc:
            reason = (f"fleet version v{version} (record #{source.promotion.sequence}) not installed: "
                      f"{type(exc).__name__}: {exc}")
            _log.error("%s: %s", name, reason)
            self.refusals[name] = reason
            self.processor.metrics.model_rejected(name)
            return False
        _log.info("%s v%d installed from record #%d: the fleet version of staged record #%d", name, version,
                  source.promotion.sequence, staged.sequence)
        return True

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
        except _FETCH_ERRORS as exc:
            raise FetchFailedError(f"fetch of {update.name} v{update.version} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return load_model(folder, self.public_key, self.runtime)

    def _swap(self, update: ModelUpdate, loaded: LoadedModel) -> str:
        """Smoke-test and swap in a loaded version (between batches: the loop runs one thing at a time)."""
        try:
            self.processor.install(loaded)
        except ModelRejectedError as exc:
            return self._rejected(update, exc)
        if update.promotion is not None:
            self._accept(update.promotion)
        self.refusals.pop(update.name, None)
        _log.info("%s v%d is now active (%s)", update.name, loaded.manifest.version, update.action)
        return "loaded"

    def _failed(self, key: bytes | None, exc: Exception) -> str:
        """Log and count a message that failed in a way no rule foresaw; the old version keeps serving."""
        name = key.decode("utf-8", "replace") if key is not None else ""
        _log.error("model update under key %.80r failed, nothing changed: %s: %s", name, type(exc).__name__, exc,
                   exc_info=exc)
        if name in self.routed:
            self.refusals[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.processor.metrics.model_rejected(name)
        else:
            self.processor.metrics.model_rejected("unparsable")
        return "rejected"

    def _rejected(self, update: ModelUpdate, exc: ModelRejectedError) -> str:
        active = self.processor.models.get(update.name)
        _log.error("%s v%d rejected, v%s keeps serving: %s", update.name, update.version,
                   active.version if active else "-", exc)
        self.refusals[update.name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
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
                for key, value in self.retries.due(time.monotonic()):
                    await self.handle_async(key, value)
        finally:
            await consumer.stop()


def catch_up(follower: ModelFollower, kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """Apply what is already on ``topic`` (blocking); returns the next offset per partition.

    Every message is parsed and verified; per routed model only the verified one with the
    highest promotion sequence is applied (so a forged or replayed message later in the log
    cannot shadow the real latest one, and only one version per model is loaded). When that one
    is staged (its message carries the canary's model only) and the worker lacks its fleet
    version, the newest verified whole-fleet update of that version and sha256 still on the topic
    provides the files first (:meth:`ModelFollower.install_fleet_version`); the ledger still ends
    on the newest record.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        latest: dict[str, tuple[ModelUpdate, bytes, bytes | None]] = {}
        # Newest whole-fleet update per (model, version, sha256): a staged record's fleet version.
        fleet: dict[tuple[str, int, str], ModelUpdate] = {}
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
                        promotion = update.promotion
                        held = latest.get(update.name)
                        if held is None or promotion.sequence > _sequence(held[0]):
                            latest[update.name] = (update, record.key, record.value)
                        if not promotion.partial:
                            slot = (update.name, promotion.version, promotion.sha256)
                            if slot not in fleet or promotion.sequence > _sequence(fleet[slot]):
                                fleet[slot] = update
        for update, key, value in latest.values():
            staged = update.promotion
            if staged is not None and staged.partial:
                source = fleet.get((update.name, staged.fleet_serving, staged.fleet_sha256 or ""))
                try:
                    installed = follower.install_fleet_version(staged, source)
                except Exception as exc:  # this model's catch-up only: the worker still starts
                    follower._failed(key, exc)
                    continue
                if not installed:
                    continue
            follower.handle(key, value)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        consumer.close()


def _sequence(update: ModelUpdate) -> int:
    return update.promotion.sequence if update.promotion is not None else 0
