"""The demo's summary: what was sent against what came back, the loop's timings, the checks.

Printed lines the test reads (each ``name: value``): ``lost: N`` and ``duplicates: N`` per
component, ``loop closed: yes|no``, ``edge: ... delivered once in order: yes|no``,
``report: <path>``, and finally ``demo checks: all held`` or ``demo checks: FAILED (...)``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamedge.demo import data as demo_data
from streamedge.demo.ledger import Tally, edge_order, edge_rows, latencies, one_step_errors, tally
from streamedge.demo.stack import scrape

if TYPE_CHECKING:
    from streamedge.demo.run import _Run

__all__ = ["Timeline", "summarise"]

# The retrainer's log line for a handled request, e.g.
# "retrain airline-lstm v1 (drift): promoted: v2 promoted: held-out MAE 37.23 vs 64.22".
_OUTCOME = re.compile(r"retrain airline-lstm v\d+ \(\w+\): (?P<outcome>\w+): (?P<detail>.*)$")


@dataclass
class Timeline:
    """Monotonic times of the run's moments (None: it did not happen)."""

    start: float = 0.0
    shift: float | None = None
    alert: float | None = None
    promotion: float | None = None
    serving: float | None = None
    link_cut: float | None = None
    link_restored: float | None = None
    buffered_peak: int = 0

    def since_shift(self, moment: float | None) -> str:
        """``"12.3 s"`` from the shift to ``moment``, or ``"-"``."""
        return "-" if moment is None or self.shift is None else f"{moment - self.shift:.1f} s"


def _mae(rows: list[tuple[str, int, int, float, float]]) -> float:
    return float(np.mean([abs(f - a) for *_, f, a in rows])) if rows else float("nan")


def _retrain_outcome(run: _Run) -> dict[str, str]:
    """The retrainer's logged outcome for the forecaster: ``outcome``, ``version`` and ``detail`` (``{}``: none)."""
    log = run.work / "retrainer.log"
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        found = _OUTCOME.search(line)
        if found:
            return found.groupdict()
    return {}


def summarise(run: _Run, offline: dict[str, Any]) -> int:
    """Print the summary, write the report; 0 when every check held, else 1."""
    from streamedge.demo.report import write_report

    records = {kind: run.collector.records(topic) for kind, topic in run.topics.items()}
    data, shift_at = run.data, demo_data.SHIFT_AT
    window = run.registry.manifest("airline-lstm", 1).window
    readings = [*data.steady, *data.drifted, *data.after]
    airports = sorted({r.key for r in readings if r.stream == "passengers"})
    forecast_ids = {f"forecast:airline-lstm:{key}:{seq}" for key in airports for seq in range(window - 1, 144)}
    class_ids = {f"classification:italy-power:{device}/power:23" for device in data.labels}
    tallies: list[Tally] = [
        tally("classifications", records["classifications"], class_ids),
        tally("forecasts", records["forecasts"], forecast_ids),
        tally("dead letters", records["dead_letters"], run.garbage),
    ]
    edge_unique, edge_dups, edge_in_order = edge_order(edge_rows(records["edge_results"]))
    tallies.append(Tally("edge results", run.edge_expected, min(edge_unique, run.edge_expected), edge_dups,
                         max(0, edge_unique - run.edge_expected)))
    labels = {str(a.body["device_id"]): str(a.body["label"]) for a in records["classifications"]
              if isinstance(a.body, dict)}
    correct = sum(1 for device, label in labels.items() if data.labels.get(device) == label)
    errors = one_step_errors(records["forecasts"], data.values)
    before = [e for e in errors if e[2] == 1 and e[1] + 1 < shift_at]
    during = [e for e in errors if e[2] == 1 and e[1] + 1 >= shift_at]
    after = [e for e in errors if e[2] >= 2]
    tl = run.timeline
    outcome = _retrain_outcome(run)
    lat = np.array(latencies([*records["classifications"], *records["forecasts"]], run.sent)) * 1000.0
    dead = Counter(str(a.body.get("reason")) for a in records["dead_letters"] if isinstance(a.body, dict))
    anomalies = records["anomalies"]
    spike = any(isinstance(a.body, dict) and a.body.get("key") == "airport-2/passengers"
                and a.body.get("seq") == demo_data.SPIKE_AT for a in anomalies)
    serving = scrape(run.config.web_port).get('streamedge_stream_model_version{model="airline-lstm"}', 0.0)
    requests = [a for a in records["retrain_requests"] if isinstance(a.body, dict) and a.body.get("model") == "airline-lstm"]
    loop_closed = tl.serving is not None and outcome.get("outcome") == "promoted" and _mae(after) < _mae(during)
    edge_ok = edge_unique == run.edge_expected and edge_in_order and tl.buffered_peak > 0
    report = write_report(run, errors, lat, data.labels, labels)

    print("\n== streamedge demo summary ==")
    print(f"readings sent: {len(readings)} (+ {run.garbage} garbage) to {run.layout.readings}")
    for t in tallies:
        print(t.line())
    lost = sum(t.lost for t in tallies)
    print(f"in all: lost: {lost}, duplicates: {sum(t.duplicates for t in tallies)}")
    print(f"classification: stream accuracy {100 * correct / max(1, len(data.labels)):.2f}% over {len(data.labels)} "
          f"meters (offline TFLite {offline['italy']['selected_variant']})")
    print(f"anomalies: {len(anomalies)}, injected spike airport-2#{demo_data.SPIKE_AT} flagged: {'yes' if spike else 'no'}")
    print(f"dead letters by reason: {dict(dead)}")
    if lat.size:
        print(f"latency send -> result read back: p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms")
    print(f"drift: level shift +{data.shift:.0f} passengers at month {shift_at}; drift->alert {tl.since_shift(tl.alert)}, "
          f"->promotion {tl.since_shift(tl.promotion)}, ->serving {tl.since_shift(tl.serving)}")
    print(f"retrain requests for airline-lstm: {len(requests)}; retrain outcome: {outcome.get('outcome', '-')} "
          f"({outcome.get('detail', '-')}); worker serves v{serving:.0f} without restart")
    print(f"one-step MAE (passengers): before {_mae(before):.1f} (v1, {len(before)}), during {_mae(during):.1f} "
          f"(v1 on the shifted level, {len(during)}), after {_mae(after):.1f} (v2, {len(after)})")
    print(f"loop closed: {'yes' if loop_closed else 'no'}")
    print(f"edge: link cut from the start, restored with {tl.buffered_peak} results buffered; {edge_unique}/"
          f"{run.edge_expected} delivered, {edge_dups} resent after a timed-out acknowledgement (dropped by seq); "
          f"delivered once in order: {'yes' if edge_ok else 'no'}")
    print(f"report: {report}")
    checks = {"lost 0": lost == 0, "loop closed": loop_closed, "edge": edge_ok, "spike flagged": spike,
              "dead letters = garbage": sum(dead.values()) == run.garbage}
    failed = [name for name, ok in checks.items() if not ok]
    print("demo checks: " + ("all held" if not failed else f"FAILED ({', '.join(failed)})"), flush=True)
    return 0 if not failed else 1
