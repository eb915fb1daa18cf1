"""The Faust app: readings in, micro-batched inference, results and dead letters out, /metrics.

At-least-once: the agent reads micro-batches with ``stream.take_events(batch_size,
within=batch_wait_s)``. Each event is held (an extra reference, :mod:`services.delivery`) before
anything else happens to its batch, and released only when the broker acknowledged every message
the batch produced; failed sends are retried with backoff. What is committed is the worker's own
watermark per partition (:mod:`services.commits`): one past the longest run of consumed
messages whose outputs were all acknowledged, never Faust's scan of acked offsets. An exception
while processing a batch leaves its events held and stops the worker (exit status 1); so does a
batch undelivered for ``exit_after_s`` (:mod:`services.health`, ``/health``). A restart replays
every uncommitted reading; results carry idempotency keys so consumers drop the duplicates.

On a rebalance only newly assigned readings partitions are rebuilt (:mod:`services.rebuild`);
partitions kept across it keep their windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamedge.contracts.download import fetch_options
from streamedge.contracts.identity import message_auth
from streamedge.contracts.signing import load_public_key
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout, default_replication
from streamedge.services.commits import Ticket, Watermarks, watermark_app
from streamedge.services.delivery import Delivery
from streamedge.services.errors import ModelRejectedError
from streamedge.services.exactly_once import TransactionalBatches
from streamedge.services.health import Health
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, active_version_dir, load_model
from streamedge.services.processor import Processor
from streamedge.services.rebuild import ReplayProgress, replay_before
from streamedge.services.records import Output, Source
from streamedge.services.settings import StreamSettings
from streamedge.services.shadow import ShadowSet
from streamedge.services.updates import ModelFollower, catch_up

__all__ = ["StreamWorker", "highwater_or_none"]

_log = logging.getLogger(__name__)
# How often a timer checks the error/drift monitors and publishes due retrain requests, seconds.
_MONITOR_EVERY_S = 5.0
# How often the progress watchdog judges health, and how often committed lag is read (its own
# timer: a slow broker must not delay the health verdict).
_WATCH_EVERY_S = 1.0
_LAG_EVERY_S = 5.0
# Batches whose results may be awaiting broker acknowledgement at once (bounds memory).
_MAX_INFLIGHT = 4
_PRODUCER_BATCH_BYTES = 512 * 1024
# Longest wait, before a rebalance or a stop, for batches still awaiting the broker's
# acknowledgement (services.commits): well inside the group's rebalance timeout (60 s) and a
# container's usual stop grace period (30 s), long enough for a healthy broker's acknowledgement.
_WAIT_HELD_S = 5.0
# How long the producer retries one message before failing it to Delivery, which sends it again
# (Faust's default, 1,200 s, kept a write to a missing topic silent for 20 minutes and bounded a
# stop by that). 30 s: the producer client's own default order of magnitude.
_PRODUCER_REQUEST_TIMEOUT_S = 30.0
# "No periodic commit" for Faust, whose setting has no off value: a year, in seconds.
_NEVER_S = 365 * 24 * 3600.0


def highwater_or_none(consumer: Any, topic: str, partition: int) -> int | None:
    """``consumer``'s high watermark of ``topic``/``partition``, or None unless it holds it now.

    The worker's own record of its partitions runs ahead of and behind the consumer's (Faust
    reports a rebalance after several awaits; an acknowledgement can land after a revocation),
    and aiokafka's consumer, which runs in its own thread, asserts on a partition it does not hold.
    """
    from faust.types import TP

    try:
        highwater: int | None = consumer.highwater(TP(topic, partition))
    except AssertionError:  # "Partition is not assigned"
        return None
    return highwater


class StreamWorker:
    """Builds the processor, loads and follows models, and wires the Faust app.

    Args:
        settings: worker settings.
        kafka: Kafka client settings.
        registry: Prometheus registry served on ``/metrics`` (a fresh one by default).
    """

    def __init__(self, settings: StreamSettings, kafka: KafkaSettings,
                 registry: CollectorRegistry | None = None) -> None:
        if settings.public_key is None:
            raise ConfigError("the stream worker needs the trusted public key: set STREAMEDGE_STREAM_PUBLIC_KEY")
        if not settings.routes:
            raise ConfigError("no routes: set STREAMEDGE_STREAM_ROUTES, e.g. '{\"vibration\": [\"pump-lstm\"]}'")
        self.settings = settings
        self.kafka = kafka
        self.layout = TopicLayout(prefix=settings.topic_prefix)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = StreamMetrics(self.registry)
        self.public_key = load_public_key(settings.public_key)
        self.models = ModelSet()
        self._load_local()
        self.processor = Processor(settings, self.models, self.metrics)
        if settings.shadow:
            self.processor.shadows = self._load_shadows()
        fetch = fetch_options(settings.max_model_bytes, settings.registry_token_file, settings.registry_cafile, 10.0,
                              settings.registry_url)
        self.follower = ModelFollower(self.processor, settings.model_dir, self.public_key, settings.runtime, fetch)
        self._update_offsets: dict[int, int] | None = None
        self._rebuilt: set[int] = set()
        self._assigned: set[int] = set()
        # Highest offset per partition whose results were produced (or that a rebuild covered).
        self._done: dict[int, int] = {}
        self.health = Health(self.metrics, settings.unhealthy_after_s, settings.exit_after_s)
        self.delivery: Delivery | None = None
        self.watermarks = Watermarks()
        self._stopping = False
        self._crash_task: asyncio.Future[None] | None = None
        # Replicas of Faust's own topics (its leader-election topic): set by prepare().
        self._replicas = 1
        self._topics = {name: getattr(self.layout, name) for name in
                        ("forecasts", "anomalies", "classifications", "dead_letters", "retrain_requests")}

    def _load_local(self) -> None:
        for name in self.settings.model_names():
            folder = active_version_dir(self.settings.model_dir, name, self.public_key)
            if folder is None:
                continue
            try:
                model = load_model(folder, self.public_key, self.settings.runtime)
                self.models.swap(model)
            except ModelRejectedError as exc:
                _log.error("local %s not loaded: %s", folder, exc)

    def _load_shadows(self) -> ShadowSet:
        shadows = ShadowSet(self.registry, self.settings.mae_window)
        for name, version in self.settings.shadow.items():
            folder = self.settings.model_dir / name / str(version)
            try:
                shadows.add(load_model(folder, self.public_key, self.settings.runtime), self.models.get(name))
            except (ModelRejectedError, ValueError) as exc:
                raise ConfigError(f"shadow candidate {name} v{version}: {exc}") from exc
        return shadows

    def prepare(self) -> None:
        """Apply the model-updates topic as it is now, then insist every routed model is loaded,
        and size the replication of Faust's own topics to the cluster (3 with 3 brokers or more).

        Raises:
            ConfigError: a routed model is neither installed locally nor announced (with the
                reason its update was refused, e.g. a staged record whose fleet version is gone).
        """
        if self.settings.follow_updates:
            self._update_offsets = catch_up(self.follower, self.kafka, self.layout.model_updates)
        missing = [name for name in self.settings.model_names() if name not in self.models]
        if missing:
            why = self.follower.refusals
            raise ConfigError(f"routed model(s) not available in {self.settings.model_dir} nor on "
                              f"{self.layout.model_updates}: "
                              + ", ".join(f"{name} ({why[name]})" if name in why else name for name in missing))
        self.processor.store.resize(self.models.max_window())
        self._replicas = default_replication(self.kafka)

    def create_app(self) -> Any:
        """The Faust app with the readings agent, the model follower task and ``/metrics``."""
        import faust

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        at_least_once = s.processing_guarantee == "at_least_once"
        options: dict[str, Any] = dict(
            broker=self.kafka.faust_broker_url(),
            broker_credentials=self.kafka.faust_credentials(),
            store="memory://",
            datadir=str(Path(s.data_dir) / s.app_id),
            web_enabled=True,
            web_bind=s.web_host,
            web_port=s.web_port,
            consumer_auto_offset_reset="earliest",
            processing_guarantee=s.processing_guarantee,
            # Exactly-once commits after every batch itself (services.exactly_once): a periodic
            # commit could close a transaction holding results of readings not yet acked.
            broker_commit_interval=s.commit_interval_s if at_least_once else _NEVER_S,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.session_timeout_s / 5,
            consumer_metadata_max_age_ms=int(s.metadata_max_age_s * 1000),
            producer_acks=-1,
            producer_request_timeout=_PRODUCER_REQUEST_TIMEOUT_S,
            topic_replication_factor=self._replicas,
            # A micro-batch produces its results in one burst; 16 KiB batches (the default) made
            # that burst wait on several broker round trips per partition.
            producer_max_batch_size=_PRODUCER_BATCH_BYTES,
            autodiscover=False,
        )
        # At-least-once commits the worker's delivered watermark (services.commits); exactly-once
        # commits each batch in its transaction once every event of it was acked.
        app = (watermark_app(self.watermarks, s.app_id, grace_s=_WAIT_HELD_S, **options) if at_least_once
               else faust.App(s.app_id, **options))
        readings = app.topic(self.layout.readings, key_serializer="raw", value_serializer="raw")

        def send(topic: str, key: bytes | None, value: bytes) -> Any:
            # The producer's own coroutine, awaited by Delivery: no wrapper coroutine per message.
            return app.producer.send(topic, key, value, None, None, None)

        self.delivery = Delivery(send, self.metrics, _MAX_INFLIGHT)

        transactional = None
        if s.processing_guarantee == "exactly_once":
            transactional = TransactionalBatches(app, self.layout.readings, self._topics, self._process,
                                                 lambda processed: self._record(app, *processed))

        async def process_readings(stream: Any) -> None:
            async for events in stream.take_events(s.batch_size, within=s.batch_wait_s):
                if transactional is not None:
                    await transactional.handle(events)
                else:
                    await self._handle(app, events)

        app.agent(readings, name="readings")(process_readings)

        async def check_monitors() -> None:
            # On a timer, not per batch: drift must be noticed even when the readings stop.
            # Not tied to any offset: a request the broker refuses is logged, not fatal; the
            # monitor asks again once its rule fires after the rate-limit interval.
            for output in self.processor.retrain_requests():
                try:
                    await app.producer.send_and_wait(self._topics[output.topic], output.key, output.value,
                                                     None, None, None)
                except Exception as exc:  # any producer failure; the worker must keep streaming
                    _log.warning("retrain request for %s not published: %s: %s", output.key, type(exc).__name__, exc)
                    continue
                self.metrics.results.labels("retrain_requests").inc()

        app.timer(interval=_MONITOR_EVERY_S, name="check_monitors")(check_monitors)

        async def follow_models() -> None:
            if s.follow_updates:
                await self.follower.follow(self.kafka, self.layout.model_updates, self._update_offsets)

        app.task(follow_models)

        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        app.page("/metrics")(metrics_page)

        async def health_page(web: Any, request: Any) -> Any:
            status, body = self.health.report()
            return web.json(body, status=status)

        app.page("/health")(health_page)

        async def watch_progress() -> None:
            assert self.delivery is not None
            if self.health.update(self.delivery.oldest_age()) == "stuck":
                await self._stop(app, self.health.report()[1]["failure"])

        app.timer(interval=_WATCH_EVERY_S, name="watch_progress")(watch_progress)

        async def committed_lag() -> None:
            await self._committed_lag(app)

        app.timer(interval=_LAG_EVERY_S, name="committed_lag")(committed_lag)

        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.reassign(args[0] if args else kwargs.get("assigned", ()))

        # Faust announces the whole new assignment after every rebalance (eager protocol): what
        # was owned before and is still assigned keeps its state, whatever the revocation said.
        app.on_partitions_assigned.connect(on_assigned)
        return app

    def reassign(self, tps: Any) -> None:
        """Apply a new assignment (every ``TP`` now owned): drop the state of partitions no longer
        owned, and mark newly assigned ones for a rebuild at their first event; partitions kept
        across the rebalance keep their windows."""
        assigned = {tp.partition for tp in tps if tp.topic == self.layout.readings}
        for partition in (self._assigned - assigned) | (assigned - self._assigned):
            dropped = self.processor.store.drop_partition(partition)
            self.metrics.keys_dropped.labels("revoked").inc(dropped)
            # A partition this worker no longer reads has no lag of its own to report.
            self.metrics.forget_partition(partition)
            self._rebuilt.discard(partition)
            self._done.pop(partition, None)
            self.watermarks.forget((self.layout.readings, partition))
        self._assigned = assigned

    async def _stop(self, app: Any, reason: str) -> None:
        """Exit non-zero (Faust's crash path): a restart resumes from the committed offsets."""
        if self._stopping:
            return
        self._stopping = True
        if self.health.failure is None:
            self.health.fail(reason)
        _log.critical("stream worker stuck, exiting: %s", reason)
        await app.crash(RuntimeError(f"stream worker stuck: {reason}"))

    async def _committed_lag(self, app: Any) -> None:
        """Set ``committed_lag`` per owned partition: high watermark minus the group's committed offset."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition

        admin: AIOKafkaAdminClient | None = None
        try:
            # Built inside the try: its TLS context reads certificate files a rotation may be replacing.
            admin = AIOKafkaAdminClient(**self.kafka.aiokafka_config())
            await admin.start()
            committed = await admin.list_consumer_group_offsets(self.settings.app_id)
        except Exception as exc:  # a monitoring read: any failure leaves the gauge as it was
            _log.warning("committed offsets of group %s not read: %s: %s", self.settings.app_id,
                         type(exc).__name__, exc)
            return
        finally:
            if admin is not None:
                await admin.close()
        for partition in sorted(self._assigned):
            highwater = highwater_or_none(app.consumer, self.layout.readings, partition)
            if highwater is None:
                continue
            found = committed.get(TopicPartition(self.layout.readings, partition))
            offset = found.offset if found is not None and found.offset >= 0 else 0
            self.metrics.committed_lag.labels(str(partition)).set(max(0, highwater - offset))

    async def _rebuild(self, partition: int, upto: int, first_ts: float) -> None:
        count = 0
        keys: set[bytes | None] = set()
        progress = ReplayProgress()
        async for chunk in replay_before(self.kafka, self.layout.readings, partition, upto,
                                         first_ts - self.settings.idle_ttl_s, self.settings.rebuild_max_messages,
                                         progress):
            self.processor.process(chunk, emit=False)
            count += len(chunk)
            keys.update(source.key for _, source in chunk)
        self.metrics.rebuilt_readings.inc(count)
        self._rebuilt.add(partition)
        self._done[partition] = upto - 1
        if progress.truncated is not None:
            self.metrics.rebuild_truncated.labels(progress.truncated).inc()
            self.metrics.rebuild_truncated_keys.inc(len(keys))
            _log.warning("partition %d: PARTIAL rebuild (%s): %d message(s) before offset %d not replayed; "
                         "%d key(s) rebuilt from incomplete history, keys only in the missing part start empty",
                         partition, progress.truncated, progress.missing, upto, len(keys))
        else:
            _log.info("partition %d: rebuilt windows from %d readings before offset %d", partition, count, upto)

    async def _handle(self, app: Any, events: list[Any]) -> None:
        assert self.delivery is not None
        # Held before anything can fail: take_events acks the batch when this body ends, even by
        # an exception, and that ack alone must never make an offset committable.
        held = self.delivery.hold(events)
        ticket = self.watermarks.consumed((e.message.topic, e.message.partition, e.message.offset) for e in events)
        try:
            batch, outputs = await self._process(events)
        except Exception as exc:  # any failure: the batch stays held and the state is unknown
            _log.exception("processing a batch of %d readings failed", len(events))
            await self._stop(app, f"processing a batch failed: {type(exc).__name__}: {exc}"[:500])
            return
        except asyncio.CancelledError:
            # Cancelled mid-batch while the app goes on (seen when a broker dies during a rebuild):
            # the held batch would block every later rebalance, so exit and let a restart replay it.
            # A cancel because the app itself is stopping needs nothing: nothing past it commits.
            if not getattr(app, "should_stop", False):
                self._crash_task = asyncio.ensure_future(self._stop(app, "processing a batch was cancelled"))
            raise
        messages = [(self._topics[o.topic], o.key, o.value) for o in outputs]
        await self.delivery.deliver(held, messages, lambda: self._delivered(app, ticket, batch, outputs))

    def _delivered(self, app: Any, ticket: Ticket, batch: list[tuple[bytes | None, Source]],
                   outputs: list[Output]) -> None:
        self.watermarks.delivered(ticket)
        self._record(app, batch, outputs)

    async def _process(self, events: list[Any]) -> tuple[list[tuple[bytes | None, Source]], list[Output]]:
        batch: list[tuple[bytes | None, Source]] = []
        for event in events:
            message = event.message
            if message.partition not in self._assigned:
                # Buffered before a rebalance took the partition away: its new owner replays it
                # from the committed offset, with state rebuilt to match.
                continue
            batch.append((message.value, Source(message.topic, message.partition, message.offset,
                                                message.timestamp, message.key, message_auth(message.headers))))
        if self.processor.take_windows_dropped():
            # A model with a longer window was installed: every owned partition is rebuilt.
            self._rebuilt.clear()
        for payload_source in batch:
            source = payload_source[1]
            if source.partition not in self._rebuilt:
                await self._rebuild(source.partition, source.offset, source.timestamp)
        # Offsets at or below what this worker already answered come back after a rebalance
        # re-seek: they update state (a no-op when it holds them) but produce nothing again.
        replayed = [item for item in batch if item[1].offset <= self._done.get(item[1].partition, -1)]
        if replayed:
            batch = [item for item in batch if item[1].offset > self._done.get(item[1].partition, -1)]
            self.processor.process(replayed, emit=False)
            self.metrics.redelivered.inc(len(replayed))
        outputs = self.processor.process(batch)
        for _, source in batch:
            self._done[source.partition] = source.offset
        return batch, outputs

    def _record(self, app: Any, batch: list[tuple[bytes | None, Source]], outputs: list[Output]) -> None:
        done = time.time()
        counts: dict[str, int] = {}
        observe = self.metrics.end_to_end_seconds.observe
        for _, source in batch:
            observe(max(0.0, done - source.timestamp))
        newest = None
        for output in outputs:
            counts[output.topic] = counts.get(output.topic, 0) + 1
            if output.event_ts is not None and (newest is None or output.event_ts > newest):
                newest = output.event_ts
        if newest is not None:
            self.metrics.data_age_seconds.set(done - newest)
        for kind, n in counts.items():
            self.metrics.results.labels(kind).inc(n)
        last: dict[int, int] = {}
        for _, source in batch:
            last[source.partition] = source.offset
        for partition, offset in last.items():
            highwater = highwater_or_none(app.consumer, self.layout.readings, partition)
            if highwater is not None:
                self.metrics.consumer_lag.labels(str(partition)).set(max(0, highwater - offset - 1))
