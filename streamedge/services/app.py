"""The Faust app: readings in, micro-batched inference, results and dead letters out, /metrics.

At-least-once: the agent reads micro-batches with ``stream.take_events(batch_size,
within=batch_wait_s)``. Each event is held (an extra reference) until the broker acknowledged
every message its batch produced; only then is its final ack given, which makes its offset
committable (Faust commits up to the first offset not yet acked, per partition). Up to
``_MAX_INFLIGHT`` batches await acknowledgement while the next one is processed. A crash replays
every uncommitted reading; results carry idempotency keys so consumers drop the duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamedge.contracts.signing import load_public_key
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.errors import ModelRejectedError
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, active_version_dir, load_model
from streamedge.services.processor import Processor
from streamedge.services.rebuild import replay_before
from streamedge.services.records import Output, Source
from streamedge.services.settings import StreamSettings
from streamedge.services.shadow import ShadowSet
from streamedge.services.updates import ModelFollower, catch_up

__all__ = ["StreamWorker"]

_log = logging.getLogger(__name__)
# How often a timer checks the error/drift monitors and publishes due retrain requests, seconds.
_MONITOR_EVERY_S = 5.0
# Batches whose results may be awaiting broker acknowledgement at once (bounds memory).
_MAX_INFLIGHT = 4
_PRODUCER_BATCH_BYTES = 512 * 1024


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
        self.follower = ModelFollower(self.processor, settings.model_dir, self.public_key, settings.runtime)
        self._update_offsets: dict[int, int] | None = None
        self._rebuilt: set[int] = set()
        self._assigned: set[int] = set()
        # Highest offset per partition whose results were produced (or that a rebuild covered).
        self._done: dict[int, int] = {}
        self._inflight: deque[asyncio.Future[None]] = deque()
        self._topics = {name: getattr(self.layout, name) for name in
                        ("forecasts", "anomalies", "classifications", "dead_letters", "retrain_requests")}

    def _load_local(self) -> None:
        for name in self.settings.model_names():
            folder = active_version_dir(self.settings.model_dir, name)
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
        """Apply the model-updates topic as it is now, then insist every routed model is loaded.

        Raises:
            ConfigError: a routed model is neither installed locally nor announced.
        """
        if self.settings.follow_updates:
            self._update_offsets = catch_up(self.follower, self.kafka, self.layout.model_updates)
        missing = [name for name in self.settings.model_names() if name not in self.models]
        if missing:
            raise ConfigError(f"routed model(s) not available in {self.settings.model_dir} nor on "
                              f"{self.layout.model_updates}: {', '.join(missing)}")
        self.processor.store.resize(self.models.max_window())

    def create_app(self) -> Any:
        """The Faust app with the readings agent, the model follower task and ``/metrics``."""
        import faust

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.app_id,
            broker=self.kafka.faust_broker_url(),
            broker_credentials=self.kafka.faust_credentials(),
            store="memory://",
            datadir=str(Path(s.data_dir) / s.app_id),
            web_enabled=True,
            web_bind=s.web_host,
            web_port=s.web_port,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.session_timeout_s / 5,
            producer_acks=-1,
            # A micro-batch produces its results in one burst; 16 KiB batches (the default) made
            # that burst wait on several broker round trips per partition.
            producer_max_batch_size=_PRODUCER_BATCH_BYTES,
            autodiscover=False,
        )
        readings = app.topic(self.layout.readings, key_serializer="raw", value_serializer="raw")

        async def process_readings(stream: Any) -> None:
            async for events in stream.take_events(s.batch_size, within=s.batch_wait_s):
                await self._handle(app, events)

        app.agent(readings, name="readings")(process_readings)

        async def check_monitors() -> None:
            # On a timer, not per batch: drift must be noticed even when the readings stop.
            requests = self.processor.retrain_requests()
            for output in requests:
                await app.producer.send_and_wait(self._topics[output.topic], output.key, output.value, None, None, None)
            if requests:
                self.metrics.results.labels("retrain_requests").inc(len(requests))

        app.timer(interval=_MONITOR_EVERY_S, name="check_monitors")(check_monitors)

        async def follow_models() -> None:
            if s.follow_updates:
                await self.follower.follow(self.kafka, self.layout.model_updates, self._update_offsets)

        app.task(follow_models)

        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        app.page("/metrics")(metrics_page)

        async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self._forget(args[0] if args else kwargs.get("revoked", ()), owned=False)

        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self._forget(args[0] if args else kwargs.get("assigned", ()), owned=True)

        app.on_partitions_revoked.connect(on_revoked)
        app.on_partitions_assigned.connect(on_assigned)
        return app

    def _forget(self, tps: Any, owned: bool) -> None:
        """Drop the state of ``tps`` (revoked, or assigned anew: rebuilt at its first event)."""
        for tp in tps:
            if tp.topic != self.layout.readings:
                continue
            dropped = self.processor.store.drop_partition(tp.partition)
            self.metrics.keys_dropped.labels("revoked").inc(dropped)
            # A partition this worker no longer reads has no lag of its own to report.
            self.metrics.forget_partition(tp.partition)
            self._rebuilt.discard(tp.partition)
            self._done.pop(tp.partition, None)
            if owned:
                self._assigned.add(tp.partition)
            else:
                self._assigned.discard(tp.partition)

    async def _rebuild(self, partition: int, upto: int, first_ts: float) -> None:
        count = 0
        async for chunk in replay_before(self.kafka, self.layout.readings, partition, upto,
                                         first_ts - self.settings.idle_ttl_s, self.settings.rebuild_max_messages):
            self.processor.process(chunk, emit=False)
            count += len(chunk)
        self.metrics.rebuilt_readings.inc(count)
        self._rebuilt.add(partition)
        self._done[partition] = upto - 1
        _log.info("partition %d: rebuilt windows from %d readings before offset %d", partition, count, upto)

    async def _handle(self, app: Any, events: list[Any]) -> None:
        batch: list[tuple[bytes | None, Source]] = []
        for event in events:
            message = event.message
            if message.partition not in self._assigned:
                # Buffered before a rebalance took the partition away: its new owner replays it
                # from the committed offset, with state rebuilt to match.
                continue
            batch.append((message.value, Source(message.topic, message.partition, message.offset,
                                                message.timestamp, message.key)))
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
        # Hold every event of the batch: ``take_events`` acks them when this body returns, but
        # the final ack (which makes an offset committable) waits until the broker acknowledged
        # every message the batch produced. Batches overlap: the next one is processed while
        # this one's acknowledgements are on their way.
        for event in events:
            event.message.incref()
        pending = [await app.producer.send(self._topics[o.topic], o.key, o.value, None, None, None)
                   for o in outputs]
        for _, source in batch:
            self._done[source.partition] = source.offset
        self._inflight.append(asyncio.ensure_future(self._settle(app, events, pending, batch, outputs)))
        while len(self._inflight) > _MAX_INFLIGHT or (self._inflight and self._inflight[0].done()):
            await self._inflight.popleft()

    async def _settle(self, app: Any, events: list[Any], pending: list[Any],
                      batch: list[tuple[bytes | None, Source]], outputs: list[Output]) -> None:
        # A failed send raises here and crashes the agent: its events stay unacked, so their
        # offsets are never committed and the readings are processed again after the restart.
        if pending:
            await asyncio.gather(*pending)
        for event in events:
            event.ack()
        self._record(app, batch, outputs)

    def _record(self, app: Any, batch: list[tuple[bytes | None, Source]], outputs: list[Output]) -> None:
        done = time.time()
        counts: dict[str, int] = {}
        observe = self.metrics.end_to_end_seconds.observe
        for output in outputs:
            counts[output.topic] = counts.get(output.topic, 0) + 1
            if output.event_ts is not None:
                observe(max(0.0, done - output.event_ts))
        for kind, n in counts.items():
            self.metrics.results.labels(kind).inc(n)
        last: dict[int, int] = {}
        for _, source in batch:
            last[source.partition] = source.offset
        from faust.types import TP

        for partition, offset in last.items():
            highwater = app.consumer.highwater(TP(self.layout.readings, partition))
            if highwater is not None:
                self.metrics.consumer_lag.labels(str(partition)).set(max(0, highwater - offset - 1))
