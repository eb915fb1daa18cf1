"""The live view: one sample per second of the running stack, drawn in the terminal.

Each second a :class:`Sample` is taken (results read back, latencies, dead letters by reason, the
worker's model versions and drift score, the edge buffer depth, the current phase) and kept for the
report. On a terminal it is drawn as a table with rich; otherwise one plain line per
``plain_every_s`` seconds is printed (logs and tests read those).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamedge.demo.collect import Collector
from streamedge.demo.ledger import edge_rows, latencies
from streamedge.demo.stack import scrape

__all__ = ["LiveView", "Sample"]

_RESULT_KINDS = ("classifications", "forecasts", "anomalies")


@dataclass(frozen=True)
class Sample:
    """The stack at one moment; ``at`` is seconds since the view started."""

    at: float
    phase: str
    results: int
    throughput: float
    p50_ms: float
    p99_ms: float
    anomalies: int
    dead_letters: dict[str, int]
    versions: dict[str, int]
    drift_z: float
    edge_buffer: int
    edge_delivered: int
    link_up: bool


@dataclass
class LiveView:
    """Samples and draws the stack until :meth:`stop`.

    Args:
        collector: what came back.
        topics: topic name by kind (``classifications``, ``forecasts``, ``anomalies``,
            ``dead_letters``, ``edge_results``).
        sent: monotonic send time of every reading by ``(key, seq)``.
        worker_port, edge_port: the ``/metrics`` ports.
        drift_model: the model whose drift score is shown.
        link_up: whether the edge link is up now.
        plain_every_s: period of the plain lines when not on a terminal.
    """

    collector: Collector
    topics: dict[str, str]
    sent: dict[tuple[str, int], float]
    worker_port: int
    edge_port: int
    drift_model: str
    link_up: Callable[[], bool]
    plain_every_s: float = 5.0
    phase: str = "starting"
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    origin: float = field(default_factory=time.monotonic)

    def start(self) -> LiveView:
        """Start sampling and drawing in a background thread; sample times count from now."""
        self.origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="demo-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)

    def sample(self) -> Sample:
        """The stack now (also appended to :attr:`samples`)."""
        records = {kind: self.collector.records(topic) for kind, topic in self.topics.items()}
        results = [a for kind in _RESULT_KINDS for a in records[kind]]
        now = time.monotonic()
        recent = sum(1 for a in results if a.at > now - 1.0)
        lat = np.array(latencies(results, self.sent) or [0.0]) * 1000.0
        worker, edge = scrape(self.worker_port), scrape(self.edge_port)
        versions = {k.split('model="')[1].split('"')[0]: int(v) for k, v in worker.items()
                    if k.startswith("streamedge_stream_model_version{")}
        sample = Sample(
            at=now - self.origin, phase=self.phase, results=len(results), throughput=float(recent),
            p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
            anomalies=len(records["anomalies"]),
            dead_letters=dict(Counter(str(a.body.get("reason")) for a in records["dead_letters"]
                                      if isinstance(a.body, dict))),
            versions=versions,
            drift_z=worker.get(f'streamedge_stream_input_drift_z{{model="{self.drift_model}"}}', 0.0),
            edge_buffer=int(_first(edge, "streamedge_edge_buffer_depth_rows")),
            edge_delivered=len(edge_rows(records["edge_results"])), link_up=self.link_up())
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        if sys.stdout.isatty():
            self._run_rich()
            return
        last_line = float("-inf")
        while not self._stop.wait(1.0):
            sample = self.sample()
            if sample.at - last_line >= self.plain_every_s:
                last_line = sample.at
                print(_line(sample), flush=True)

    def _run_rich(self) -> None:
        from rich.live import Live

        with Live(_table(self.sample()), refresh_per_second=2, transient=False) as live:
            while not self._stop.wait(1.0):
                live.update(_table(self.sample()))


def _first(samples: dict[str, float], name: str) -> float:
    """The first series named ``name`` (any labels), else 0."""
    return next((v for k, v in samples.items() if k == name or k.startswith(name + "{")), 0.0)


def _line(s: Sample) -> str:
    return (f"[{s.at:6.1f}s] {s.phase:<10} results {s.results} ({s.throughput:.0f}/s) p50 {s.p50_ms:.0f} ms "
            f"p99 {s.p99_ms:.0f} ms anomalies {s.anomalies} dead {sum(s.dead_letters.values())} "
            f"versions {s.versions} drift z {s.drift_z:.2f} edge buffer {s.edge_buffer} "
            f"delivered {s.edge_delivered} link {'up' if s.link_up else 'CUT'}")


def _table(s: Sample) -> Any:
    from rich.table import Table

    table = Table(title=f"streamedge demo: {s.phase}  ({s.at:.0f} s)", show_header=False, min_width=60)
    rows = [("throughput", f"{s.throughput:.0f} results/s ({s.results} in all)"),
            ("latency p50 / p99", f"{s.p50_ms:.0f} ms / {s.p99_ms:.0f} ms"),
            ("anomalies", str(s.anomalies)),
            ("dead letters", ", ".join(f"{k}: {v}" for k, v in sorted(s.dead_letters.items())) or "0"),
            ("model versions", ", ".join(f"{k} v{v}" for k, v in sorted(s.versions.items())) or "-"),
            ("drift score (z)", f"{s.drift_z:.2f}"),
            ("edge link", "up" if s.link_up else "[red]CUT[/red]"),
            ("edge buffer / delivered", f"{s.edge_buffer} rows / {s.edge_delivered}")]
    for name, value in rows:
        table.add_row(name, value)
    return table
