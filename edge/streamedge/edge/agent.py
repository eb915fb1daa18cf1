"""The edge agent: source -> validate -> window -> TFLite -> durable buffer -> Kafka.

One thread does everything that touches the model and the windows (read a batch, infer,
commit the results to the buffer, apply model updates, heartbeats), so no locks guard the
serving path. The forwarder and the update watcher run in their own supervised threads
(restarted with backoff after a crash, counted in ``thread_restarts_total``) and only talk to
the agent through the buffer and a queue. Imports nothing heavier than the TFLite runtime,
numpy and kafka-python.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from streamedge.contracts.download import FetchOptions, fetch_options
from streamedge.contracts.identity import load_device_key, sign_event
from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest
from streamedge.contracts.promotion import PromotionLedger, PromotionRecord, StaleUpdateError
from streamedge.contracts.reading import Reading, ReadingBlock, Rejection, parse_message
from streamedge.contracts.runner import smoke_failure
from streamedge.edge.buffer import Outbox
from streamedge.edge.errors import ModelRejectedError, NonFiniteOutputError, OutboxError
from streamedge.edge.forwarder import Forwarder
from streamedge.edge.metrics import EdgeMetrics
from streamedge.edge.models import ModelStore
from streamedge.edge.predictor import KeyState, Predictor, WindowStore
from streamedge.edge.settings import EdgeSettings
from streamedge.edge.sources import Payload, Source
from streamedge.edge.supervisor import Supervised
from streamedge.edge.updates import FetchedUpdate, UpdateWatcher
from streamedge.errors import ManifestError, RunnerError, VerificationError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout

__all__ = ["EdgeAgent"]

_LOG = logging.getLogger(__name__)
_SMOKE_WINDOWS = 32
_LOG_EVERY = 1000  # after the first 10 rejections per reason, log one in this many
# Retry of a failed buffer commit (disk full): from 0.5 s doubling to 30 s, so a full disk costs
# a log line per attempt at most every 30 s instead of a crash loop.
_PENDING_BACKOFF_S = 0.5
_PENDING_BACKOFF_MAX_S = 30.0
_SEPARATORS = (",", ":")


def _readings(payloads: Sequence[Payload]) -> Iterator[Reading | Rejection]:
    """Each payload's readings in order: a reading block gives its samples, a bad payload (or a
    line the source already refused) one rejection."""
    for payload in payloads:
        parsed = payload if isinstance(payload, Rejection) else parse_message(payload)
        if isinstance(parsed, ReadingBlock):
            yield from (parsed.reading(index) for index in range(len(parsed)))
        else:
            yield parsed


@dataclass
class _Commit:
    """One buffer transaction: encoded result bodies (without ``device_id``, ``seq``, ``epoch``),
    their ``(type, anomaly)``, the windows they came from, and whether it ends its batch (the
    source is acknowledged after it)."""

    rows: list[bytes]
    kinds: list[tuple[str, bool]]
    windows: list[tuple[str, int, str]]
    last: bool


class EdgeAgent:
    """One device's agent.

    Args:
        settings: the agent's settings.
        kafka: how to reach Kafka (results, telemetry and model updates).
        layout: topic names.
        source: where readings come from.
        public_key: the trusted model-signing key.
        registry: where metrics are registered.
    """

    def __init__(self, settings: EdgeSettings, kafka: KafkaSettings, layout: TopicLayout, source: Source,
                 public_key: TrustAnchor, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.layout = layout
        self.source = source
        self.metrics = EdgeMetrics(registry)
        self.outbox = Outbox(settings.buffer_path, settings.buffer_max_bytes, settings.buffer_max_age_s,
                             settings.buffer_fsync, on_drop=self._on_drop)
        self.store = ModelStore(settings.model_dir, public_key)
        self.model_name = self.store.resolve_name(settings.model_name)
        self._events: dict[str, int] = {}
        self.windows = WindowStore(history=1, max_keys=settings.max_keys, on_event=self._on_window_event)
        self.predictor: Predictor | None = None
        self._kafka_config = kafka.kafka_python_config()
        # Results go in blocks of consecutive rows (docs/edge.md, "Forwarding in blocks");
        # telemetry stays one message per event, as the canary watcher reads it.
        self.forwarder = Forwarder(self.outbox, self._kafka_config, settings.kafka_timeout_s,
                                   block_rows=settings.forward_block_rows, block_bytes=settings.forward_block_bytes,
                                   block_topics=(layout.edge_results,), on_sent=self._on_sent,
                                   on_state=self.metrics.reachable.set, on_restart=self._on_restart)
        self.ledger = PromotionLedger(settings.model_dir, public_key)
        self.watcher: UpdateWatcher | None = None
        self._watcher_thread: Supervised | None = None
        if settings.model_updates:
            self.watcher = UpdateWatcher(self._kafka_config, layout.model_updates, self.model_name,
                                         settings.model_dir, public_key, self.ledger, settings.kafka_timeout_s,
                                         _fetch_options(settings), self._on_refused, settings.device_id,
                                         settings.group)
            self._watcher_thread = Supervised("edge-updates", self.watcher.run, self.watcher.stop_event,
                                              self._on_restart)
        self._latencies: deque[float] = deque(maxlen=1024)
        # Live error of the serving version: |reading - its one-step forecast|, reset on every swap.
        self._errors: deque[float] = deque(maxlen=settings.error_window)
        self._scored = 0
        # The readings of the batch being scored, and the transaction waiting to commit: while a
        # commit fails (disk full) intake stops until it goes through.
        self._backlog: Iterator[Reading | Rejection] | None = None
        self._pending: _Commit | None = None
        self._paused = False
        self._pending_backoff_s = _PENDING_BACKOFF_S
        self._rejections: dict[str, int] = {}
        self._last_heartbeat = 0.0
        self._device_key = load_device_key(settings.device_key_file) if settings.device_key_file else None
        self._last_check = 0.0
        self._load_active()
        self._restore_windows()
        if self.outbox.lost is not None:
            self._buffer_lost(*self.outbox.lost)

    # ---- model lifecycle -------------------------------------------------------------------

    def _load_active(self) -> None:
        """Serve ``current`` (verified); fall back to ``previous``; else wait for an update."""
        for version in (self.store.active_version(self.model_name), self.store.previous_version(self.model_name)):
            if version is None:
                continue
            try:
                self._serve(self._predictor(*self.store.load(self.model_name, version)))
                if version != self.store.active_version(self.model_name):
                    self.store.activate(self.model_name, version)
                return
            except (ManifestError, VerificationError, RunnerError, LookupError) as exc:
                _LOG.error("model %s v%s refused: %s", self.model_name, version, exc,
                           extra={"model": self.model_name, "version": version, "reason": str(exc)})
        _LOG.warning("no verified model %s under %s: waiting for a model update",
                     self.model_name, self.settings.model_dir)

    def _restore_windows(self) -> None:
        """Reload the windows saved with the last committed results (see :class:`Outbox`).

        A window whose width is not the one the serving model (or ``n_features``) takes starts
        afresh, counted under ``window_resets_total{reason="shape"}``; its key keeps its last
        ``seq``, so replayed readings are still recognised.
        """
        restored = 0
        expected = self._expected_features()
        for key, last_seq, state in self.outbox.load_windows(self.settings.max_keys):
            try:
                saved = json.loads(state)
                # A window saved before ts was kept: no seq restart is recognised until the key's
                # seq moves on (a replay is never taken for one).
                saved = {"values": saved, "ts": float("inf")} if isinstance(saved, list) else saved
                values = [tuple(float(v) for v in row) for row in saved["values"]]
                last_ts, epoch = float(saved["ts"]), int(saved.get("epoch", 0))
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                _LOG.warning("saved window of %s unreadable, starting it afresh: %s", key, exc)
                continue
            widths = {len(row) for row in values}
            if values and (len(widths) > 1 or (expected is not None and widths != {expected})):
                self._on_window_event("shape")
                values = []
            self.windows.restore(key, values, last_seq, last_ts, epoch)
            restored += 1
        if restored:
            _LOG.info("restored %d windows from the buffer", restored, extra={"keys": restored})

    def _serve(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._errors.clear()
        self._scored = 0
        self.windows.resize(max(predictor.manifest.window, self.windows.history))
        self.metrics.model_version.labels(model=self.model_name).set(predictor.version)
        _LOG.info("serving %s v%d (%s, %s)", self.model_name, predictor.version, predictor.manifest.task,
                  predictor.runner.runtime, extra={"model": self.model_name, "version": predictor.version})

    def _expected_features(self) -> int | None:
        """Features per reading, from the setting or the serving model; None while neither says.

        Without either, readings of every width are held (each key its own window) rather than
        letting whichever key came last decide: one hostile reading would otherwise lock out the
        device's real keys and every correct model after them.
        """
        if self.settings.n_features:
            return self.settings.n_features
        if self.predictor is not None:
            return self.predictor.manifest.n_features
        return None

    def _candidate(self, fetched: FetchedUpdate) -> Predictor:
        """Load, shape-check and smoke-test the version an update names; raises ModelRejectedError.

        For a record that targets other devices (``fetched.stay``) that is the record's fleet
        version, which must already be installed here and match the record's ``fleet_sha256``.
        """
        record = fetched.update.promotion
        if fetched.stay and record is not None:
            version, sha256 = record.fleet_serving, record.fleet_sha256
            if version not in self.store.versions(self.model_name):
                raise ModelRejectedError("not_installed", f"fleet version v{version} is not installed here")
        else:
            if fetched.error is not None or fetched.folder is None:
                raise ModelRejectedError("verification", fetched.error or "not installed")
            version, sha256 = fetched.update.version, None
        try:
            manifest, path, content = self.store.load(self.model_name, version)
        except (ManifestError, VerificationError, LookupError) as exc:
            raise ModelRejectedError("verification", str(exc)) from exc
        if sha256 is not None and manifest.sha256 != sha256:
            raise ModelRejectedError("verification", f"installed v{version} is not the one the record names")
        expected = self._expected_features()
        if expected is not None and manifest.n_features != expected:
            raise ModelRejectedError(
                "shape", f"v{version} takes {manifest.n_features} features per reading, the source sends {expected}"
            )
        held = self.windows.feature_counts()
        if expected is None and held and manifest.n_features not in held:
            raise ModelRejectedError(
                "shape", f"v{version} takes {manifest.n_features} features per reading, the sources send {sorted(held)}"
            )
        try:
            candidate = self._predictor(manifest, path, content)
        except (RunnerError, ValueError, ImportError) as exc:
            raise ModelRejectedError("load", str(exc)) from exc
        self._smoke_test(candidate)
        return candidate

    def _smoke_test(self, candidate: Predictor) -> None:
        """Run the candidate on its training mean and the recent windows; raises ModelRejectedError.

        The outputs are judged by :func:`~streamedge.contracts.runner.smoke_failure`.
        """
        m = candidate.manifest
        mean = np.tile(np.asarray(m.normalisation["mean"], dtype=np.float32), (1, m.window, 1))
        recent = self.windows.recent_windows(m.window, m.n_features, _SMOKE_WINDOWS)
        try:
            out = candidate.infer(np.concatenate([mean, recent]))
        except (RunnerError, ValueError) as exc:
            raise ModelRejectedError("smoke_test", f"inference failed: {exc}") from exc
        if out.shape != (1 + len(recent), m.output_shape[1]):
            raise ModelRejectedError("smoke_test", f"output {out.shape} is not (n, {m.output_shape[1]})")
        failure = smoke_failure(out, m.task == "classify", atol=0.05)
        if failure is not None:
            raise ModelRejectedError("smoke_test", failure)

    def apply_update(self, fetched: FetchedUpdate) -> bool:
        """Swap to a fetched version if it passes every check; else keep serving and report why.

        The update's promotion record is checked against the ledger once more (the watcher may
        have queued an older record behind a newer one) and accepted only after the swap. A
        record that targets other devices keeps this one on (or returns it to) the fleet version.
        """
        record = fetched.update.promotion
        version = record.fleet_serving if fetched.stay and record is not None else fetched.update.version
        try:
            if record is None:
                raise ModelRejectedError("verification", "no promotion record")
            try:
                self.ledger.freshness(record)
            except StaleUpdateError as exc:
                raise ModelRejectedError("stale", str(exc)) from exc
            if self.predictor is not None and self.predictor.version == version:
                self._remember(record)
                return False
            candidate = self._candidate(fetched)
            try:
                self.store.activate(self.model_name, version)
            except (OSError, ManifestError, VerificationError) as exc:  # disk full, read-only, rotted
                raise ModelRejectedError("activate", f"switching to v{version} failed: {exc}") from exc
        except ModelRejectedError as exc:
            self.metrics.updates.labels(outcome=exc.reason).inc()
            if fetched.installed and not fetched.stay:
                self.store.discard(self.model_name, version)
            serving = self.predictor.version if self.predictor else None
            _LOG.error("model update %s v%d refused (%s): %s; still serving v%s", self.model_name, version,
                       exc.reason, exc.detail, serving,
                       extra={"model": self.model_name, "version": version, "reason": exc.reason})
            self._telemetry({"type": "model_update", "status": "refused", "version": version,
                             "reason": exc.reason, "detail": exc.detail, "serving": serving})
            return False
        self._serve(candidate)
        self._remember(record)
        self.metrics.updates.labels(outcome="applied").inc()
        self._telemetry({"type": "model_update", "status": "applied", "version": version,
                         "action": fetched.update.action, "target": record.target if record else None})
        return True

    def _remember(self, record: PromotionRecord) -> None:
        """Persist an applied record; a failed write is logged (the topic re-delivers the record at start)."""
        try:
            self.ledger.accept(record)
        except OSError as exc:
            self.metrics.buffer_write_errors.inc()
            _LOG.error("promotion #%d of %s not persisted: %s", record.sequence, record.model, exc,
                       extra={"reason": "ledger_write"})

    def _follow_local_swap(self) -> None:
        """Pick up a ``streamedge edge rollback`` done while the agent runs."""
        active = self.store.active_version(self.model_name)
        if active is None or (self.predictor is not None and self.predictor.version == active):
            return
        try:
            self._serve(self._predictor(*self.store.load(self.model_name, active)))
        except (ManifestError, VerificationError, RunnerError, LookupError) as exc:
            _LOG.error("local switch to v%d refused: %s", active, exc, extra={"reason": str(exc)})

    def _predictor(self, manifest: ModelManifest, path: Path, content: bytes) -> Predictor:
        return Predictor(manifest, path, runtime=self.settings.runtime, anomaly_sigmas=self.settings.anomaly_sigmas,
                         content=content)

    # ---- the serving path -------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> None:
        self.metrics.readings.labels(outcome=reason).inc()
        seen = self._rejections[reason] = self._rejections.get(reason, 0) + 1
        if seen <= 10 or seen % _LOG_EVERY == 0:
            _LOG.warning("reading rejected (%s): %s", reason, detail,
                         extra={"reason": reason, "detail": detail, "rejected": seen})

    def process(self, payloads: Sequence[Payload]) -> int:
        """Validate, window and score a batch, and commit its results to the buffer.

        The results go in transactions of at most ``batch_max_samples`` results and
        ``batch_max_bytes`` bytes, each with the windows of the keys it changed; the source is
        acknowledged after the last one, also when the batch gave no result (its windows are
        saved all the same). A transaction the buffer refuses (disk full) stays pending with
        the rest of the batch, and intake stops (see :meth:`run`).

        Returns:
            Results committed (acknowledged).
        """
        readings = _readings(payloads)
        self._backlog = readings if self._backlog is None else itertools.chain(self._backlog, readings)
        return self._work()

    def _work(self) -> int:
        """Commit the backlog's transactions in order; stops at one the buffer refuses."""
        committed = 0
        while self._backlog is not None:
            if self._pending is None:
                self._pending = self._next_commit(self._backlog)
            pending = self._pending
            if not self._commit_results(pending):
                return committed
            committed += len(pending.rows)
            if pending.last:
                self._backlog = None
        return committed

    def _next_commit(self, readings: Iterator[Reading | Rejection]) -> _Commit:
        """Score readings until one transaction's bounds are reached or the batch ends."""
        rows: list[bytes] = []
        kinds: list[tuple[str, bool]] = []
        touched: dict[str, KeyState] = {}
        size = 0
        expected = self._expected_features()
        for parsed in readings:
            if isinstance(parsed, Rejection):
                self._reject(parsed.reason, parsed.detail)
                continue
            if expected is not None and len(parsed.values) != expected:
                self._reject("feature_count", f"{parsed.key} sent {len(parsed.values)} values, expected {expected}")
                continue
            state = self.windows.add(parsed)
            if state is None:
                self._reject("out_of_order", f"{parsed.key} seq {parsed.seq} is not after the last seq seen")
                continue
            touched[parsed.key] = state
            self.metrics.readings.labels(outcome="accepted").inc()
            body = self._score(parsed, state)
            if body is None:
                continue
            try:
                encoded = json.dumps(body, separators=_SEPARATORS, allow_nan=False).encode()
            except ValueError as exc:
                self._reject("non_finite_output", f"{parsed.key} seq {parsed.seq}: {exc}")
                continue
            rows.append(encoded)
            kinds.append((str(body["type"]), bool(body.get("anomaly"))))
            size += len(encoded)
            if len(rows) >= self.settings.batch_max_samples or size >= self.settings.batch_max_bytes:
                return _Commit(rows, kinds, _saved(touched), last=False)
        return _Commit(rows, kinds, _saved(touched), last=True)

    def _score(self, reading: Reading, state: KeyState) -> dict[str, Any] | None:
        predictor = self.predictor
        if predictor is None:
            return None
        emit = state.count % self.settings.stride == 0
        if predictor.manifest.task == "classify" and not emit:
            return None
        try:
            body, elapsed = predictor.step(reading, state)
        except NonFiniteOutputError as exc:
            self._reject("non_finite_output", str(exc))
            return None
        if body is None:
            return None
        self.metrics.latency.observe(elapsed)
        self._latencies.append(elapsed)
        if body.get("residual"):
            residual = body["residual"]  # a few plain floats per reading: no numpy call on this path
            self._errors.append(sum(abs(r) for r in residual) / len(residual))
            self._scored += 1
        if not emit and not body.get("anomaly"):
            return None
        # After a restart of the key's seq counter the same seq names another reading: the
        # key's epoch tells them apart (epoch 0 keeps the stream worker's key format).
        seq = f"{reading.seq}" if state.epoch == 0 else f"{reading.seq}@{state.epoch}"
        return {"key": reading.key, "source_seq": reading.seq, "stream_epoch": state.epoch, "ts": reading.ts,
                "model": self.model_name, "version": predictor.version,
                "idempotency_key": f"{body['type']}:{self.model_name}:{reading.key}:{seq}", **body}

    def _commit_results(self, pending: _Commit) -> bool:
        """Commit one transaction's results and windows; after a batch's last one, acknowledge the source.

        Each row is the single result :func:`~streamedge.contracts.results.encode_result` writes
        for ``{"epoch": <buffer epoch>, **body}``, spliced from the body's bytes. On a buffer
        write error the transaction stays pending.

        Returns:
            True when committed; False when the buffer refused it (intake stops, see :meth:`run`).
        """
        topic, key = self.layout.edge_results, self.settings.device_id.encode()
        head = b'{"device_id":' + json.dumps(self.settings.device_id).encode() + b',"seq":'

        def build(first: int) -> list[tuple[str, bytes | None, bytes]]:
            # One outbox row per result; the forwarder packs consecutive rows into result blocks.
            epoch = b',"epoch":"' + self.outbox.epoch.encode() + b'",'
            return [(topic, key, b"".join((head, str(first + i).encode(), epoch, row[1:])))
                    for i, row in enumerate(pending.rows)]

        try:
            if pending.rows or pending.windows:
                self.outbox.append(build, len(pending.rows), windows=pending.windows,
                                   keep_windows=self.settings.max_keys)
        except OutboxError as exc:
            self.metrics.buffer_write_errors.inc()
            if not self._paused:
                _LOG.error("buffer write failed, intake stopped until it succeeds (disk full?): %s", exc,
                           extra={"reason": "buffer_write", "pending": len(pending.rows)})
            self._paused = True
            self.metrics.intake_paused.set(1)
            return False
        if self._paused:
            _LOG.info("buffer writable again: %d pending results committed, intake resumed", len(pending.rows))
        self._paused = False
        self._pending = None
        self._pending_backoff_s = _PENDING_BACKOFF_S
        self.metrics.intake_paused.set(0)
        if pending.last:
            self.source.commit()
        if pending.rows:
            self.forwarder.wake()
        for task, anomaly in pending.kinds:
            self.metrics.results.labels(task=task).inc()
            if anomaly:
                self.metrics.anomalies.inc()
        return True

    # ---- telemetry and housekeeping -------------------------------------------------------------

    def _telemetry(self, event: dict[str, Any]) -> None:
        device = self.settings.device_id
        topic = self.layout.edge_telemetry

        def build(first: int) -> list[tuple[str, bytes | None, bytes]]:
            body = {"device_id": device, "seq": first, "ts": time.time(), "model": self.model_name, **event}
            if self._device_key is not None:  # binds the event (its seq included) to this device
                body = sign_event(body, self._device_key)
            return [(topic, device.encode(), json.dumps(body, separators=(",", ":")).encode())]

        try:
            self.outbox.append(build, 1, counter="telemetry_seq")
        except OutboxError as exc:  # telemetry is best effort; results are what must not be lost
            self.metrics.buffer_write_errors.inc()
            _LOG.warning("telemetry event not buffered: %s", exc, extra={"reason": "buffer_write"})
            return
        self.forwarder.wake()

    def heartbeat(self) -> None:
        """Publish (through the buffer) the device's state and a latency summary."""
        stats = self.outbox.stats()
        latencies = np.asarray(self._latencies, dtype=np.float64) * 1000.0
        self._latencies.clear()
        summary = ({"count": len(latencies), "p50_ms": round(float(np.percentile(latencies, 50)), 4),
                    "p99_ms": round(float(np.percentile(latencies, 99)), 4),
                    "max_ms": round(float(latencies.max()), 4)} if len(latencies) else {"count": 0})
        self._telemetry({
            "type": "heartbeat", "version": self.predictor.version if self.predictor else None,
            "runtime": self.predictor.runner.runtime if self.predictor else None,
            "buffer_depth": stats.depth, "buffer_oldest_age_s": round(stats.oldest_age_s, 3),
            "buffer_dropped": stats.dropped, "broker_reachable": self.forwarder.reachable,
            "keys": len(self.windows), "latency": summary, "group": self.settings.group or None,
            "error": {"mae": round(float(np.mean(self._errors)), 6) if self._errors else None,
                      "count": self._scored, "window": len(self._errors)},
        })

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.watcher is not None:
            while not self.watcher.fetched.empty():
                self.apply_update(self.watcher.fetched.get_nowait())
        if now - self._last_check >= 1.0:
            self._last_check = now
            self._follow_local_swap()
            try:
                if self.outbox.recover():
                    self._buffer_lost("deleted", self.outbox.path)
                self.outbox.expire()
            except OutboxError as exc:
                self.metrics.buffer_write_errors.inc()
                _LOG.warning("buffer expiry deferred: %s", exc, extra={"reason": "buffer_write"})
            stats = self.outbox.stats()
            self.metrics.buffer_depth.set(stats.depth)
            self.metrics.buffer_bytes.set(stats.bytes)
            self.metrics.buffer_age.set(stats.oldest_age_s)
        if now - self._last_heartbeat >= self.settings.heartbeat_interval_s:
            self._last_heartbeat = now
            self.heartbeat()

    def _on_window_event(self, event: str) -> None:
        """Count a window eviction or reset (see :class:`WindowStore`); log the first few of each."""
        if event == "evicted":
            self.metrics.window_evictions.inc()
        else:
            self.metrics.window_resets.labels(reason=event).inc()
        seen = self._events[event] = self._events.get(event, 0) + 1
        if seen <= 10 or seen % _LOG_EVERY == 0:
            _LOG.warning("window %s (%d so far)", "evicted" if event == "evicted" else f"reset ({event})", seen,
                         extra={"reason": event, "count": seen})

    def _buffer_lost(self, reason: str, path: Path) -> None:
        """Count and alert a buffer replaced by a fresh one (``corrupt`` or ``deleted``)."""
        self.metrics.buffer_lost.labels(reason=reason).inc()
        self._telemetry({"type": "buffer_lost", "reason": reason, "file": path.name, "epoch": self.outbox.epoch})

    def _on_drop(self, reason: str, count: int) -> None:
        self.metrics.dropped.labels(reason=reason).inc(count)
        _LOG.warning("buffer full or stale: dropped %d oldest rows (%s)", count, reason,
                     extra={"reason": reason, "dropped": count})

    def _on_restart(self, thread: str) -> None:
        self.metrics.thread_restarts.labels(thread=thread).inc()

    def _on_refused(self, reason: str) -> None:
        self.metrics.updates.labels(outcome=reason).inc()

    def _on_sent(self, count: int, when: float) -> None:
        self.metrics.forwarded.inc(count)
        self.metrics.last_sync.set(when)

    def run(self, stop: threading.Event | None = None) -> bool:
        """Serve until the source ends or ``stop`` is set; returns whether the buffer was emptied.

        When the source ends, the buffer is forwarded for up to ``drain_timeout_s`` first. On
        ``stop`` the readings the source already took in and cannot read again (a pipe's queued
        lines) are scored and committed first, for up to ``drain_timeout_s``. While results cannot be written to the buffer
        (disk full) no reading is taken from the source and none is acknowledged: the pending
        results are retried with backoff, and ``intake_paused`` is 1.
        """
        stop = stop or threading.Event()
        self.forwarder.start()
        if self._watcher_thread is not None:
            self._watcher_thread.start()
        exhausted = False
        try:
            while not stop.is_set():
                if self._backlog is not None:
                    self._work()
                    if self._backlog is not None:
                        stop.wait(self._pending_backoff_s)
                        self._pending_backoff_s = min(self._pending_backoff_s * 2, _PENDING_BACKOFF_MAX_S)
                        self._housekeeping()
                        continue
                payloads = self.source.read(self.settings.batch_size, timeout=0.2)
                if payloads is None:
                    exhausted = True
                    break
                if payloads:
                    self.process(payloads)
                self._housekeeping()
            if not exhausted:
                self._drain()
            self.heartbeat()
        finally:
            self.source.close()
            if self.watcher is not None and self._watcher_thread is not None:
                self.watcher.stop()
                self._watcher_thread.join(timeout=self.settings.kafka_timeout_s * 2)
            drained = self.forwarder.stop(self.settings.drain_timeout_s if exhausted else 0.0)
            stats = self.outbox.stats()
            self.outbox.close()
            _LOG.info("stopped (%s): %d rows left in the buffer for the next start", "source ended" if exhausted
                      else "stop requested", stats.depth, extra={"buffer_depth": stats.depth, "drained": drained})
        return drained


    def _drain(self) -> None:
        """Score and commit what the source took in and cannot read again, before stopping;
        for up to ``drain_timeout_s`` (a stop must not wait on a long file's read-ahead)."""
        drained = 0
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while self._backlog is None and time.monotonic() < deadline:
            payloads = self.source.drain(self.settings.batch_size)
            if not payloads:
                break
            drained += len(payloads)
            self.process(payloads)
        if drained:
            _LOG.info("stopping: %d queued payloads scored first", drained, extra={"drained": drained})
        if self._backlog is not None:
            _LOG.error("stopping with a batch not committed (buffer unwritable): its readings are lost",
                       extra={"reason": "buffer_write"})


def _saved(touched: dict[str, KeyState]) -> list[tuple[str, int, str]]:
    """``(key, last_seq, state_json)`` of the windows to save: values, last ``ts`` and ``epoch``."""
    return [(key, st.last_seq, json.dumps({"values": [list(v) for v in st.values], "ts": st.last_ts,
                                           "epoch": st.epoch}, separators=_SEPARATORS))
            for key, st in touched.items()]


def _fetch_options(settings: EdgeSettings) -> FetchOptions:
    """How this device downloads models: size cap, bearer token (read from its file), TLS trust."""
    return fetch_options(settings.max_model_bytes, settings.registry_token_file, settings.registry_cafile,
                         settings.kafka_timeout_s * 2, settings.registry_url)
