"""Fleet metrics from edge heartbeats: the devices heard from, how long ago, and the model each serves.

Every edge agent publishes a heartbeat to the edge-telemetry topic (``type: heartbeat``, its
``device_id``, ``model`` name, model ``version`` and the ``ts`` it was sent, epoch seconds).
:class:`FleetState` keeps each device's latest one; :class:`FleetCollector` exposes them to
Prometheus at scrape time:

- ``streamedge_fleet_devices``: devices heard from (kept, at most ``max_devices``);
- ``streamedge_fleet_heartbeat_age_seconds{device}``: now minus the device's newest heartbeat ``ts``
  (a heartbeat stamped ahead of the exporter's clock when it is received counts as received then,
  so one future stamp, a device booting before NTP or a forged message, cannot keep a silent
  device fresh; an older one, forwarded late from the device's buffer, never makes the age smaller);
- ``streamedge_fleet_model_version{device, model}``: the version the device serves (no series
  while it serves none);
- ``streamedge_fleet_heartbeats_total``, ``streamedge_fleet_telemetry_rejected_total``: heartbeats
  taken, and telemetry messages that were no heartbeat anyone could read (other event types, such
  as ``model_update``, are neither).

Heartbeats are not authenticated here, so the device label is bounded on purpose: device ids are
checked like a reading's, and past ``max_devices`` the device heard from longest ago is dropped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamedge.contracts.reading import is_valid_id
from streamedge.contracts.untrusted import load_json

__all__ = ["DeviceHeartbeat", "FleetCollector", "FleetState"]

# A heartbeat is a few hundred bytes; anything far larger is not one.
_MAX_HEARTBEAT_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class DeviceHeartbeat:
    """One device's newest heartbeat: its model name and version (None: none served) and send time (epoch s,
    at most its receive time)."""

    device: str
    model: str | None
    version: int | None
    ts: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class FleetState:
    """The newest heartbeat per device, from raw telemetry messages (thread-safe).

    Args:
        max_devices: devices kept at most (the ``device`` label's cardinality).
        clock: epoch seconds now (``time.time``); a heartbeat's ``ts`` is capped at its receive time.
    """

    def __init__(self, max_devices: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        if max_devices < 1:
            raise ValueError(f"max_devices must be >= 1, not {max_devices}")
        self.max_devices = max_devices
        self.clock = clock
        self.heartbeats = 0
        self.rejected = 0
        self._latest: dict[str, DeviceHeartbeat] = {}
        self._lock = threading.Lock()

    def observe(self, value: bytes | None) -> DeviceHeartbeat | None:
        """Take one telemetry message; returns the heartbeat it held, else None (counted when unreadable)."""
        try:
            body = load_json(value, "heartbeat", _MAX_HEARTBEAT_BYTES) if value else None
            kind = body.get("type") if isinstance(body, dict) else None
            device = body.get("device_id") if isinstance(body, dict) else None
            ts = _number(body.get("ts")) if isinstance(body, dict) else None
        except Exception:  # an error no rule foresaw refuses (counts) this message only
            body = kind = device = ts = None
        if isinstance(kind, str) and kind != "heartbeat":
            return None  # another telemetry event (a model update, a lost buffer): not a heartbeat
        if not isinstance(body, dict) or kind is None or not is_valid_id(device) or ts is None:
            with self._lock:
                self.rejected += 1
            return None
        model, version = body.get("model"), body.get("version")
        beat = DeviceHeartbeat(str(device), model if isinstance(model, str) and model else None,
                               version if isinstance(version, int) and not isinstance(version, bool) else None,
                               min(ts, self.clock()))
        with self._lock:
            self.heartbeats += 1
            previous = self._latest.pop(beat.device, None)
            if previous is not None and previous.ts > beat.ts:  # a late, buffered heartbeat: keep the newer
                beat = previous
            while len(self._latest) >= self.max_devices:
                oldest = min(self._latest.values(), key=lambda b: b.ts)
                del self._latest[oldest.device]
            self._latest[beat.device] = beat
        return beat

    def devices(self) -> list[DeviceHeartbeat]:
        """Every device's newest heartbeat, sorted by device id."""
        with self._lock:
            return sorted(self._latest.values(), key=lambda b: b.device)


class FleetCollector(Collector):
    """Exposes a :class:`FleetState` as the ``streamedge_fleet_*`` metrics (see the module docstring).

    Args:
        state: the heartbeats.
        clock: epoch seconds now (``time.time``); the ages are taken at scrape time.
    """

    def __init__(self, state: FleetState, clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        beats, now = self.state.devices(), self.clock()
        devices = GaugeMetricFamily("streamedge_fleet_devices", "Edge devices heard from (heartbeats)")
        devices.add_metric([], len(beats))
        age = GaugeMetricFamily("streamedge_fleet_heartbeat_age_seconds",
                                "Seconds since the device's newest heartbeat was sent", labels=["device"])
        version = GaugeMetricFamily("streamedge_fleet_model_version", "Model version the device serves",
                                    labels=["device", "model"])
        for beat in beats:
            age.add_metric([beat.device], max(0.0, now - beat.ts))
            if beat.version is not None:
                version.add_metric([beat.device, beat.model or ""], beat.version)
        heartbeats = CounterMetricFamily("streamedge_fleet_heartbeats", "Heartbeats taken from the telemetry topic")
        heartbeats.add_metric([], self.state.heartbeats)
        rejected = CounterMetricFamily("streamedge_fleet_telemetry_rejected",
                                       "Telemetry messages that were no readable heartbeat")
        rejected.add_metric([], self.state.rejected)
        yield from (devices, age, version, heartbeats, rejected)
