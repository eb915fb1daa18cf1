"""The canary watcher: roll a staged model version back when its devices do worse than the fleet.

Edge agents send a heartbeat to the edge-telemetry topic every ``heartbeat_interval_s`` with the
version they serve and their live error (``error.mae``: the mean absolute one-step forecast
error over their last ``error_window`` scored readings of that version, ``error.count``: readings
scored since the version began serving). The watcher keeps each device's latest heartbeat and,
while the registry has a staged promotion out (:meth:`streamedge.registry.ModelRegistry.canary`),
compares two cohorts:

- **canary**: devices reporting the staged version, ``count >= min_samples``;
- **fleet**: devices reporting the record's fleet version, ``count >= min_samples``.

Once each cohort has ``min_devices`` devices, the canary is judged worse when
``median canary MAE > median fleet MAE * (1 + margin)``. The median, not the mean: heartbeats
are unauthenticated, so one device (or one spoofed heartbeat) with a wild error must not decide
either way; a cohort's median moves only when half its devices do. An ``error.mae`` that is not
a finite number >= 0 (a huge integer overflows a float; ``1e999`` and ``NaN`` are refused with the
whole heartbeat by the parse rule) counts as no error (logged at debug, counted in
:attr:`FleetView.invalid_errors`).

On ``rollback`` the watcher issues a signed rollback of exactly the record it judged
(:meth:`~streamedge.registry.ModelRegistry.rollback_canary` with ``expect_sequence``: a new,
higher record that puts every device on the fleet version); when a newer promotion replaced
that record meanwhile, it logs and judges the new record instead. It then publishes the rollback,
retrying with backoff; when every try fails it raises :class:`CanaryError` telling the operator to
re-announce the record (``streamedge models announce NAME``), since the registry has already
ended the canary. Heartbeats older than ``stale_after_s`` (watcher clock, so device clocks do
not matter) are left out and forgotten. Defaults: ``margin`` 0.25 (25 % worse), ``min_samples``
50, ``min_devices`` 1, ``stale_after_s`` 120 (four default heartbeat periods).

Metrics (on the registry given, names prefixed ``streamedge_fleet_``): ``devices{model,version}``
devices by the version they serve (bounded: only the watched model, and a version the registry
does not hold for it is counted as ``other``, ``none`` before any model),
``forecast_mae{model,cohort}`` (the cohort's median) with cohort ``canary`` or ``fleet``, and
``canary_rollbacks_total{model}``.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamedge.contracts.identity import Enrolment
from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionRecord
from streamedge.contracts.reading import is_valid_id
from streamedge.contracts.untrusted import load_json
from streamedge.errors import StreamedgeError
from streamedge.registry import ModelRegistry, RegistryError

__all__ = ["CanaryError", "CanaryPolicy", "CanaryVerdict", "CanaryWatcher", "DeviceReport", "FleetMetrics",
           "FleetView", "judge"]

_log = logging.getLogger(__name__)
Decision = Literal["none", "wait", "healthy", "rollback"]
# Pauses between publish tries of a rollback (seconds): about half a minute in all, enough for a
# broker restart or a leader election, short enough that an operator hears of a lasting outage.
_PUBLISH_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
# Reconnect pauses of the telemetry consumer: doubling from 1 s, at most 30 s.
_RECONNECT_FIRST_S, _RECONNECT_MAX_S = 1.0, 30.0
_MAX_HEARTBEAT_BYTES = 64 * 1024


class CanaryError(StreamedgeError, RuntimeError):
    """The watcher cannot go on: Kafka refuses it for good, or a rollback could not be published."""


@dataclass(frozen=True)
class CanaryPolicy:
    """When a canary counts as worse.

    Attributes:
        margin: relative margin; worse when canary MAE > fleet MAE * (1 + margin).
        min_samples: scored readings a device needs on its version before its MAE counts.
        min_devices: devices each cohort needs before any judgement.
        stale_after_s: heartbeats older than this (seconds, watcher clock) are ignored.
    """

    margin: float = 0.25
    min_samples: int = 50
    min_devices: int = 1
    stale_after_s: float = 120.0

    def __post_init__(self) -> None:
        if not (self.margin >= 0 and self.min_samples >= 1 and self.min_devices >= 1 and self.stale_after_s > 0):
            raise ValueError(f"invalid canary policy {self}")


@dataclass(frozen=True)
class DeviceReport:
    """One device's latest heartbeat for a model.

    Attributes:
        device_id, model, version: who serves what (version None: no model yet).
        mae: its live error (same units as the readings), or None before any scored reading.
        count: readings scored since that version began serving on the device.
        seen: when the watcher received it (``time.monotonic()`` seconds).
    """

    device_id: str
    model: str
    version: int | None
    mae: float | None
    count: int
    seen: float


@dataclass(frozen=True)
class CanaryVerdict:
    """The watcher's judgement of one staged promotion.

    Attributes:
        decision: ``none`` (no staged promotion), ``wait`` (too few samples), ``healthy`` or ``rollback``.
        canary_mae, fleet_mae: median MAE per cohort (None when the cohort is empty).
        canary_devices, fleet_devices: devices in each cohort with enough samples.
    """

    decision: Decision
    canary_mae: float | None = None
    fleet_mae: float | None = None
    canary_devices: int = 0
    fleet_devices: int = 0

    def __str__(self) -> str:
        return (f"{self.decision}: canary MAE {_fmt(self.canary_mae)} on {self.canary_devices} device(s), "
                f"fleet MAE {_fmt(self.fleet_mae)} on {self.fleet_devices}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def judge(reports: Iterable[DeviceReport], record: PromotionRecord | None, policy: CanaryPolicy) -> CanaryVerdict:
    """Compare the staged version's devices with the fleet's (pure: no clock, no I/O).

    Args:
        reports: fresh device reports of ``record.model`` (stale ones already left out).
        record: the model's latest promotion record; a whole-fleet record gives ``none``.
        policy: margin and sample thresholds.
    """
    if record is None or not record.partial:
        return CanaryVerdict("none")
    canary: list[float] = []
    fleet: list[float] = []
    for report in reports:
        if report.model != record.model or report.mae is None or report.count < policy.min_samples:
            continue
        if report.version == record.version:
            canary.append(report.mae)
        elif report.version == record.fleet_serving:
            fleet.append(report.mae)
    canary_mae = statistics.median(canary) if canary else None
    fleet_mae = statistics.median(fleet) if fleet else None
    if canary_mae is None or fleet_mae is None or min(len(canary), len(fleet)) < policy.min_devices:
        return CanaryVerdict("wait", canary_mae, fleet_mae, len(canary), len(fleet))
    worse = canary_mae > fleet_mae * (1.0 + policy.margin)
    return CanaryVerdict("rollback" if worse else "healthy", canary_mae, fleet_mae, len(canary), len(fleet))


class FleetView:
    """The latest heartbeat per device of one model, from raw telemetry messages (thread-safe).

    Args:
        model: the watched model; heartbeats of other models are not kept.
        stale_after_s: a device whose latest heartbeat is older than this (seconds) is forgotten.
        max_devices: devices kept at most; a new one beyond it first drops the stale ones, then
            the one heard from longest ago. Without enrolment heartbeats are not authenticated,
            so neither their number nor their device ids (checked like a reading's) may grow
            memory without bound.
        enrolment: when given, only heartbeats of enrolled devices signed with their own key
            (:mod:`streamedge.contracts.identity`) count, each with a signed ``ts`` within
            ``stale_after_s`` of ``wall_clock`` (so a heartbeat replayed after the watcher
            restarted, its ``seq`` memory empty, is refused) and a ``seq`` above the device's
            last one (a replayed heartbeat is ignored); the others are counted in
            :attr:`unauthenticated`.
    """

    def __init__(self, model: str, stale_after_s: float, max_devices: int = 100_000,
                 enrolment: Enrolment | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.enrolment = enrolment
        self.wall_clock = wall_clock
        self.unauthenticated = 0
        self._last_seq: dict[str, int] = {}
        self.stale_after_s = stale_after_s
        self.max_devices = max_devices
        self.invalid_errors = 0
        self._latest: dict[str, DeviceReport] = {}
        self._lock = threading.Lock()

    def observe(self, value: bytes | None, now: float) -> DeviceReport | None:
        """Record a heartbeat of the model; anything else (or malformed bytes) is ignored and gives None."""
        try:
            body = load_json(value, "heartbeat", _MAX_HEARTBEAT_BYTES) if value else None
            if not isinstance(body, dict) or body.get("type") != "heartbeat":
                return None
            device, model = body.get("device_id"), body.get("model")
            if not is_valid_id(device) or model != self.model:
                return None
            if self.enrolment is not None and not self._authentic(body, device):
                return None
            error = body.get("error") or {}
            version, count = body.get("version"), error.get("count", 0)
            report = DeviceReport(device, model,
                                  version if isinstance(version, int) and not isinstance(version, bool) else None,
                                  self._mae(error.get("mae"), device),
                                  int(count) if isinstance(count, int) else 0, now)
        except (StreamedgeError, ValueError, TypeError, KeyError, AttributeError):
            return None
        with self._lock:
            self._latest.pop(device, None)  # re-inserted last: the dict runs oldest to newest heard
            if len(self._latest) >= self.max_devices:
                self._forget_stale(now)
                while len(self._latest) >= self.max_devices:
                    del self._latest[next(iter(self._latest))]
            self._latest[device] = report
        return report

    def _authentic(self, body: dict[str, Any], device: str) -> bool:
        """Signed by the enrolled device itself, recently (its signed ``ts``), with a sequence number it has not used."""
        seq, ts = body.get("seq"), body.get("ts")
        fresh = (isinstance(ts, int | float) and not isinstance(ts, bool)
                 and abs(self.wall_clock() - ts) <= self.stale_after_s)
        if (self.enrolment is None or not self.enrolment.verify_event(body) or not fresh or isinstance(seq, bool)
                or not isinstance(seq, int) or seq <= self._last_seq.get(device, -1)):
            self.unauthenticated += 1
            return False
        with self._lock:
            self._last_seq[device] = seq
        return True

    def _mae(self, value: Any, device: str) -> float | None:
        """A finite MAE >= 0, else None (counted when a value was there but unusable)."""
        if value is None:
            return None
        try:
            mae = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        except (OverflowError, ValueError, TypeError):
            mae = math.nan
        if math.isfinite(mae) and mae >= 0:
            return mae
        self.invalid_errors += 1
        _log.debug("heartbeat of %s from %.80r: error.mae %.40r is no finite MAE >= 0, ignored",
                   self.model, device, value)
        return None

    def reports(self, now: float) -> list[DeviceReport]:
        """Fresh reports (received within ``stale_after_s`` of ``now``); older ones are dropped for good."""
        with self._lock:
            self._forget_stale(now)
            return list(self._latest.values())

    def _forget_stale(self, now: float) -> None:
        for device in [d for d, r in self._latest.items() if now - r.seen > self.stale_after_s]:
            del self._latest[device]


class FleetMetrics:
    """The watcher's metrics on ``registry`` (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.devices = Gauge("streamedge_fleet_devices", "Devices by the model version they serve",
                             ["model", "version"], registry=registry)
        self.mae = Gauge("streamedge_fleet_forecast_mae", "Median live MAE of a cohort's devices",
                         ["model", "cohort"], registry=registry)
        self.rollbacks = Counter("streamedge_fleet_canary_rollbacks", "Staged promotions rolled back",
                                 ["model"], registry=registry)
        self._versions: dict[str, set[str]] = {}

    def update(self, model: str, reports: list[DeviceReport], verdict: CanaryVerdict,
               known: Iterable[int] | None = None) -> None:
        """Set the gauges for ``model`` from its fresh reports and the latest verdict.

        Args:
            known: the registry's versions of ``model``; any other reported version (heartbeats
                are untrusted) is counted as ``other``, so the label set stays bounded. None:
                every version is its own label (tests).
        """
        versions = set(known) if known is not None else None
        counts: dict[str, int] = {}
        for report in reports:
            if report.version is None:
                label = "none"
            elif versions is None or report.version in versions:
                label = str(report.version)
            else:
                label = "other"
            counts[label] = counts.get(label, 0) + 1
        for gone in self._versions.get(model, set()) - counts.keys():
            self.devices.remove(model, gone)
        for label, count in counts.items():
            self.devices.labels(model=model, version=label).set(count)
        self._versions[model] = set(counts)
        for cohort, value in (("canary", verdict.canary_mae), ("fleet", verdict.fleet_mae)):
            self.mae.labels(model=model, cohort=cohort).set(float("nan") if value is None else value)


class CanaryWatcher:
    """Watches one model's staged promotion and rolls it back when its devices do worse.

    Args:
        registry: the registry that issued the promotion (its records say what is staged).
        name: the model to watch.
        signing_key: signs the rollback record.
        publish: sends the rollback update (e.g. to the model-updates topic) and returns once acknowledged.
        policy: when a canary counts as worse.
        metrics: where to export the fleet gauges, or None.
        base_url, inline: how the rollback announces the model (see ``ModelRegistry.announcement``).
        clock: monotonic seconds (tests may pass their own).
        publish_backoff_s: pauses between publish tries of a rollback (one more try than pauses).
        sleep: how those pauses are waited (tests may pass their own).
        enrolment: count only heartbeats signed by enrolled devices (see :class:`FleetView`); None
            trusts every heartbeat's device id (no device identity).
    """

    def __init__(self, registry: ModelRegistry, name: str, signing_key: Ed25519PrivateKey,
                 publish: Callable[[ModelUpdate], None], policy: CanaryPolicy | None = None,
                 metrics: FleetMetrics | None = None, base_url: str | None = None, inline: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 publish_backoff_s: tuple[float, ...] = _PUBLISH_BACKOFF_S,
                 sleep: Callable[[float], None] = time.sleep, enrolment: Enrolment | None = None) -> None:
        self.registry = registry
        self.name = name
        self.signing_key = signing_key
        self.publish = publish
        self.policy = policy or CanaryPolicy()
        self.metrics = metrics
        self.base_url = base_url
        self.inline = inline
        self.clock = clock
        self.publish_backoff_s = publish_backoff_s
        self.sleep = sleep
        self.view = FleetView(name, self.policy.stale_after_s, enrolment=enrolment)
        self.last_verdict = CanaryVerdict("none")

    def observe(self, value: bytes | None) -> None:
        """Take one telemetry message (heartbeats of the model count, everything else is ignored)."""
        self.view.observe(value, self.clock())

    def check(self) -> ModelUpdate | None:
        """Judge the staged promotion now; roll it back (signed, published) when worse.

        Returns:
            The published rollback update, or None when nothing was rolled back.

        Raises:
            CanaryError: the rollback was issued but every publish try failed.
        """
        # A newer promotion may replace the judged record between the judgement and the rollback:
        # then judge that one (twice at most here; the next check goes on if it changes again).
        for _ in range(2):
            reports = self.view.reports(self.clock())
            record = self.registry.record(self.name)
            verdict = judge(reports, record if self.registry.canary(self.name) else None, self.policy)
            self.last_verdict = verdict
            if self.metrics is not None:
                self.metrics.update(self.name, reports, verdict, self.registry.versions(self.name))
            if verdict.decision != "rollback" or record is None:
                return None
            try:
                update = self.registry.rollback_canary(self.name, self.signing_key, base_url=self.base_url,
                                                       inline=self.inline, expect_sequence=record.sequence)
            except RegistryError as exc:  # ended or replaced meanwhile (promoted, rolled back by hand)
                _log.info("canary %s #%d not rolled back, judging again: %s", self.name, record.sequence, exc)
                continue
            self._publish(update)
            if self.metrics is not None:
                self.metrics.rollbacks.labels(model=self.name).inc()
            _log.warning("canary %s v%d (%s) rolled back to v%d: %s", self.name, record.version, record.target,
                         update.version, verdict)
            return update
        return None

    def _publish(self, update: ModelUpdate) -> None:
        """Publish the rollback, retrying with backoff; the registry has already ended the canary."""
        for attempt, pause in enumerate((*self.publish_backoff_s, None), start=1):
            try:
                self.publish(update)
                return
            except Exception as exc:  # any publish failure: the record must still reach the devices
                if pause is None:
                    sequence = update.promotion.sequence if update.promotion else "-"
                    raise CanaryError(
                        f"rollback record #{sequence} of {self.name} (v{update.version}) is in the registry but "
                        f"was not published after {attempt} tries ({type(exc).__name__}: {exc}); re-announce it "
                        f"with 'streamedge models announce {self.name}'") from exc
                _log.warning("publish of the %s rollback failed (try %d), again in %.0f s: %s",
                             self.name, attempt, pause, exc)
                self.sleep(pause)

    def run(self, kafka_config: dict[str, Any], topic: str, stop: threading.Event, *,
            until_rollback: bool = True, from_beginning: bool = False, check_every_s: float = 0.5,
            ready: threading.Event | None = None) -> ModelUpdate | None:
        """Follow ``topic`` (every partition, from its end unless ``from_beginning``) until ``stop``.

        A Kafka error (broker down, connection lost) closes the consumer and reconnects after a
        pause (1 s, doubling up to 30 s), resuming where it left off. Kafka refusing the watcher
        for good (authentication, authorisation, configuration) raises :class:`CanaryError`.

        Args:
            kafka_config: ``KafkaSettings.kafka_python_config()``.
            topic: the edge-telemetry topic.
            stop: set to return.
            until_rollback: return as soon as a rollback was published.
            check_every_s: how often the canary is judged.
            ready: set once the consumer is first positioned (heartbeats after that are seen).

        Returns:
            The last rollback published, or None.

        Raises:
            CanaryError: Kafka refuses the watcher, or a rollback could not be published.
        """
        from kafka.errors import AuthorizationError, KafkaConfigurationError, KafkaError, SaslAuthenticationFailedError

        consumer: Any = None
        positions: dict[Any, int] = {}
        rolled_back: ModelUpdate | None = None
        pause = _RECONNECT_FIRST_S
        last_check = 0.0
        connected = False
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        # After a reconnect, partitions not read yet start at their end: replayed
                        # heartbeats would count as fresh.
                        consumer = self._consumer(kafka_config, topic, stop, positions,
                                                  from_beginning and not connected)
                        if consumer is None:  # stopped before the topic had partitions
                            break
                        connected = True
                        if ready is not None:
                            ready.set()
                    batches = consumer.poll(timeout_ms=int(check_every_s * 1000))
                except (AuthorizationError, SaslAuthenticationFailedError, KafkaConfigurationError) as exc:
                    raise CanaryError(f"Kafka refuses the watcher on {topic}: {type(exc).__name__}: {exc}") from exc
                except (KafkaError, OSError) as exc:
                    _log.warning("telemetry consumer of %s failed, reconnecting in %.0f s: %s", topic, pause, exc)
                    if consumer is not None:
                        _close(consumer)
                    consumer = None
                    stop.wait(pause)
                    pause = min(pause * 2, _RECONNECT_MAX_S)
                    continue
                pause = _RECONNECT_FIRST_S
                for tp, records in batches.items():
                    for message in records:
                        self.observe(message.value)
                        positions[tp] = message.offset + 1
                if self.clock() - last_check >= check_every_s:
                    last_check = self.clock()
                    update = self.check()
                    if update is not None:
                        rolled_back = update
                        if until_rollback:
                            return update
        finally:
            if consumer is not None:
                _close(consumer)
        return rolled_back

    @staticmethod
    def _consumer(kafka_config: dict[str, Any], topic: str, stop: threading.Event, positions: dict[Any, int],
                  from_beginning: bool) -> Any:
        """A consumer on every partition of ``topic``: at ``positions`` where known, else the start/end."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(**kafka_config, group_id=None, enable_auto_commit=False)
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and not stop.wait(0.2):
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                _close(consumer)
                return None
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp not in positions]
            if fresh:
                (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*fresh)
            for tp in tps:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                consumer.position(tp)  # resolve the offsets now, so ``ready`` means positioned
        except BaseException:
            _close(consumer)
            raise
        return consumer


def _close(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception as exc:  # closing a broken consumer must not hide why it broke
        _log.debug("closing the telemetry consumer failed: %s", exc)
