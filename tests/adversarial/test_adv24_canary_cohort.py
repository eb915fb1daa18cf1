"""Attack 4: one enrolled device votes in the canary cohort it is not in, and forces a rollback.

With enrolment, a heartbeat counts only when signed by the device it names, but the watcher then
puts the device in whichever cohort its heartbeat *claims* (the version it says it serves). The
promotion record decides each device's cohort (``serving_version``: a stable bucket of the device
id), and the watcher does not check the claim against it. One compromised fleet device, signing
with its own key, reports the canary version with a bad error: the canary median doubles and the
healthy canary is rolled back (reporting the fleet version from a canary device suppresses one the
same way).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from streamedge.contracts.identity import enrol, load_enrolment, sign_event
from streamedge.contracts.promotion import PromotionRecord
from streamedge.contracts.rollout import canary_bucket
from streamedge.services.canary import CanaryPolicy, FleetView, judge

MODEL = "m"


def _ids(canary: bool, count: int) -> list[str]:
    found = [f"dev-{i}" for i in range(1000) if (canary_bucket(MODEL, f"dev-{i}") < 50) == canary]
    return found[:count]


def test_a_fleet_device_claiming_the_canary_version_does_not_vote_in_the_canary_cohort(tmp_path: Path) -> None:
    (canary,), (fleet, liar) = _ids(True, 1), _ids(False, 2)
    keys = {device: enrol(tmp_path / "enrolment", device) for device in (canary, fleet, liar)}
    record = PromotionRecord(MODEL, 2, "promote", 2, time.time(), "a" * 64, target="canary:50", fleet_version=1,
                             fleet_sha256="b" * 64)
    assert record.serving_version(liar) == 1  # the record puts it on the fleet version
    view = FleetView(MODEL, 120.0, enrolment=load_enrolment(tmp_path / "enrolment"))
    now = time.time()

    def heartbeat(device: str, version: int, mae: float) -> bytes:
        body = {"type": "heartbeat", "device_id": device, "model": MODEL, "seq": 1, "ts": now, "version": version,
                "error": {"mae": mae, "count": 500}}
        return json.dumps(sign_event(body, keys[device])).encode()  # each signed with its own key

    for message in (heartbeat(canary, 2, 1.0), heartbeat(fleet, 1, 1.0), heartbeat(liar, 2, 50.0)):
        assert view.observe(message, 0.0) is not None
    verdict = judge(view.reports(0.0), record, CanaryPolicy())
    assert verdict.decision == "healthy", f"one fleet device claiming the canary version: {verdict}"
