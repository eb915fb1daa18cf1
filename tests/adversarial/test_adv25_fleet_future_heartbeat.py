"""Issue 25: the heartbeat exporter makes the fleet visible, ``heartbeat_age_seconds{device}``
the time since the device was last heard from (alerts on a stale device use it).

One heartbeat stamped ahead of the clock (a device booting with a wrong clock before NTP, or a
single forged message: heartbeats are unauthenticated here) pins the device's age at 0: its later,
truthful heartbeats are discarded as "late" and, once it falls silent, it still looks alive.
"""

from __future__ import annotations

import json

from streamedge.monitor.fleet import FleetCollector, FleetState


def _beat(ts: float) -> bytes:
    return json.dumps({"type": "heartbeat", "device_id": "gw-1", "model": "m", "version": 1, "ts": ts}).encode()


def test_a_future_stamped_heartbeat_does_not_keep_a_silent_device_fresh() -> None:
    now = [1_800_000_000.0]
    state = FleetState()
    state.observe(_beat(now[0] + 30 * 86400))  # one heartbeat a month ahead (clock not yet synced)
    state.observe(_beat(now[0]))  # then a truthful one; then the device dies
    now[0] += 3600.0  # an hour of silence
    ages = {m.name: [s.value for s in m.samples] for m in FleetCollector(state, lambda: now[0]).collect()}
    assert ages["streamedge_fleet_heartbeat_age_seconds"][0] >= 3600.0, ages
