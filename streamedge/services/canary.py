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
``mean canary MAE > mean fleet MAE * (1 + margin)``; the watcher then issues a signed rollback
(:meth:`~streamedge.registry.ModelRegistry.rollback_canary`: a new, higher record that puts every
device on the fleet version) and publishes it. Heartbeats older than ``stale_after_s`` (watcher
clock, so device clocks do not matter) are left out. Defaults: ``margin`` 0.25 (25 % worse),
``min_samples`` 50, ``min_devices`` 1, ``stale_after_s`` 120 (four default heartbeat periods).

Metrics (on the registry given, names prefixed ``streamedge_fleet_``): ``devices{model,version}``
devices by the version they serve (bounded: the versions of the watched model),
``forecast_mae{model,cohort}`` with cohort ``canary`` or ``fleet``, and
``canary_rollbacks_total{model}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamedge.contracts.model_update import ModelUpdate
from streamedge.contracts.promotion import PromotionRecord
from streamedge.registry import ModelRegistry, RegistryError

__all__ = ["CanaryPolicy", "CanaryVerdict", "CanaryWatcher", "DeviceReport", "FleetMetrics", "FleetView", "judge"]

_log = logging.getLogger(__name__)
Decision = Literal["none", "wait", "healthy", "rollback"]


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
        canary_mae, fleet_mae: mean MAE per cohort (None when the cohort is empty).
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
    canary_mae = sum(canary) / len(canary) if canary else None
    fleet_mae = sum(fleet) / len(fleet) if fleet else None
    if canary_mae is None or fleet_mae is None or min(len(canary), len(fleet)) < policy.min_devices:
        return CanaryVerdict("wait", canary_mae, fleet_mae, len(canary), len(fleet))
    worse = canary_mae > fleet_mae * (1.0 + policy.margin)
    return CanaryVerdict("rollback" if worse else "healthy", canary_mae, fleet_mae, len(canary), len(fleet))


class FleetView:
    """The latest heartbeat per device, from raw telemetry messages."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], DeviceReport] = {}

    def observe(self, value: bytes | None, now: float) -> DeviceReport | None:
        """Record a heartbeat; any other message (or malformed bytes) is ignored and gives None."""
        try:
            body = json.loads(value) if value else None
            if not isinstance(body, dict) or body.get("type") != "heartbeat":
                return None
            device, model = body.get("device_id"), body.get("model")
            if not isinstance(device, str) or not isinstance(model, str):
                return None
            error = body.get("error") or {}
            version, mae, count = body.get("version"), error.get("mae"), error.get("count", 0)
            report = DeviceReport(device, model,
                                  version if isinstance(version, int) and not isinstance(version, bool) else None,
                                  float(mae) if isinstance(mae, int | float) and mae == mae else None,
                                  int(count) if isinstance(count, int) else 0, now)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None
        self._latest[(report.model, report.device_id)] = report
        return report

    def reports(self, model: str, now: float, stale_after_s: float) -> list[DeviceReport]:
        """Fresh reports of ``model`` (received within ``stale_after_s`` of ``now``)."""
        return [r for (m, _), r in self._latest.items() if m == model and now - r.seen <= stale_after_s]


class FleetMetrics:
    """The watcher's metrics on ``registry`` (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.devices = Gauge("streamedge_fleet_devices", "Devices by the model version they serve",
                             ["model", "version"], registry=registry)
        self.mae = Gauge("streamedge_fleet_forecast_mae", "Mean live MAE of a cohort's devices",
                         ["model", "cohort"], registry=registry)
        self.rollbacks = Counter("streamedge_fleet_canary_rollbacks", "Staged promotions rolled back",
                                 ["model"], registry=registry)
        self._versions: dict[str, set[str]] = {}

    def update(self, model: str, reports: list[DeviceReport], verdict: CanaryVerdict) -> None:
        """Set the gauges for ``model`` from its fresh reports and the latest verdict."""
        counts: dict[str, int] = {}
        for report in reports:
            label = str(report.version) if report.version is not None else "none"
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
    """

    def __init__(self, registry: ModelRegistry, name: str, signing_key: Ed25519PrivateKey,
                 publish: Callable[[ModelUpdate], None], policy: CanaryPolicy | None = None,
                 metrics: FleetMetrics | None = None, base_url: str | None = None, inline: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.name = name
        self.signing_key = signing_key
        self.publish = publish
        self.policy = policy or CanaryPolicy()
        self.metrics = metrics
        self.base_url = base_url
        self.inline = inline
        self.clock = clock
        self.view = FleetView()
        self.last_verdict = CanaryVerdict("none")

    def observe(self, value: bytes | None) -> None:
        """Take one telemetry message (heartbeats count, everything else is ignored)."""
        self.view.observe(value, self.clock())

    def check(self) -> ModelUpdate | None:
        """Judge the staged promotion now; roll it back (signed, published) when worse.

        Returns:
            The published rollback update, or None when nothing was rolled back.
        """
        reports = self.view.reports(self.name, self.clock(), self.policy.stale_after_s)
        record = self.registry.record(self.name)
        verdict = judge(reports, record if self.registry.canary(self.name) else None, self.policy)
        self.last_verdict = verdict
        if self.metrics is not None:
            self.metrics.update(self.name, reports, verdict)
        if verdict.decision != "rollback" or record is None:
            return None
        try:
            update = self.registry.rollback_canary(self.name, self.signing_key, base_url=self.base_url,
                                                   inline=self.inline)
        except RegistryError as exc:  # ended meanwhile (promoted to all, or rolled back by hand)
            _log.info("canary of %s ended before the rollback: %s", self.name, exc)
            return None
        self.publish(update)
        if self.metrics is not None:
            self.metrics.rollbacks.labels(model=self.name).inc()
        _log.warning("canary %s v%d (%s) rolled back to v%d: %s", self.name, record.version, record.target,
                     update.version, verdict)
        return update

    def run(self, kafka_config: dict[str, Any], topic: str, stop: threading.Event, *,
            until_rollback: bool = True, from_beginning: bool = False, check_every_s: float = 0.5,
            ready: threading.Event | None = None) -> ModelUpdate | None:
        """Follow ``topic`` (every partition, from its end unless ``from_beginning``) until ``stop``.

        Args:
            kafka_config: ``KafkaSettings.kafka_python_config()``.
            topic: the edge-telemetry topic.
            stop: set to return.
            until_rollback: return as soon as a rollback was published.
            check_every_s: how often the canary is judged.
            ready: set once the consumer is positioned (heartbeats after that are seen).

        Returns:
            The last rollback published, or None.
        """
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(**kafka_config, group_id=None, enable_auto_commit=False)
        rolled_back: ModelUpdate | None = None
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and not stop.wait(0.2):
                partitions = consumer.partitions_for_topic(topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
            consumer.assign(tps)
            if from_beginning:
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve the offsets now, so ``ready`` means positioned
            if ready is not None:
                ready.set()
            last_check = 0.0
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=int(check_every_s * 1000)).values():
                    for message in records:
                        self.observe(message.value)
                if self.clock() - last_check >= check_every_s:
                    last_check = self.clock()
                    update = self.check()
                    if update is not None:
                        rolled_back = update
                        if until_rollback:
                            return update
        finally:
            consumer.close()
        return rolled_back
