"""Parse rule / attack 4: one unsigned heartbeat with an integer ``ts`` too large for a float crashes
the heartbeat handlers.

docs/security.md: "Handlers (... FleetView.observe) never raise: an error no rule foresaw refuses
that message only". ``load_json`` refuses a float too large (``1e999``) but not an *integer* of a few
hundred digits; the watcher's freshness check (``wall_clock() - ts``) then raises OverflowError,
which ``observe`` does not catch, before the signature is even looked at. Anyone holding the shared
device credential writes one such heartbeat for an enrolled device id: ``watch-canary --enrolment``
(its consumer loop calls ``observe`` with no guard) dies, and no canary is judged or rolled back.
The fleet exporter's ``FleetState.observe`` raises the same way, without any enrolment.
"""

from __future__ import annotations

from pathlib import Path

from streamedge.contracts.identity import enrol, load_enrolment
from streamedge.monitor.fleet import FleetState
from streamedge.services.canary import FleetView

HOSTILE = (b'{"type":"heartbeat","device_id":"c1","model":"m","seq":1,"ts":1' + b"0" * 400 +
           b',"version":2,"error":{"mae":1.0,"count":500},"auth":"' + b"0" * 64 + b'"}')


def test_the_canary_watchers_view_refuses_an_unsigned_heartbeat_with_a_huge_integer_ts(tmp_path: Path) -> None:
    enrol(tmp_path / "enrolment", "c1")
    view = FleetView("m", 120.0, enrolment=load_enrolment(tmp_path / "enrolment"))
    assert view.observe(HOSTILE, 0.0) is None
    assert view.unauthenticated == 1


def test_the_fleet_exporter_refuses_a_heartbeat_with_a_huge_integer_ts() -> None:
    state = FleetState()
    state.observe(HOSTILE)  # must refuse (count it), not raise
