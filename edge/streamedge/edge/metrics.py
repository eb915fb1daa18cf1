"""Prometheus metrics of one edge agent, registered on the registry it is given.

Names (all prefixed ``streamedge_edge_``), label values from small fixed sets:

- ``readings_total{outcome}``: readings by outcome (``accepted`` or a rejection reason).
- ``results_total{task}``, ``anomalies_total``: results committed to the buffer.
- ``inference_latency_seconds``: histogram of one window's inference (normalise, run, de-normalise).
- ``buffer_depth_rows``, ``buffer_bytes``, ``buffer_oldest_age_seconds``: the store-and-forward buffer.
- ``buffer_dropped_total{reason}``: rows dropped by the bounds (``size`` or ``age``).
- ``forwarded_total``: rows the broker acknowledged.
- ``broker_reachable``: 1 while the last forward succeeded.
- ``last_sync_timestamp_seconds``: when the broker last acknowledged a forward.
- ``model_version{model}``: the active version (0 when none).
- ``model_updates_total{outcome}``: updates applied or refused, by reason (``malformed``,
  ``verification``, ``stale``, ``shape``, ``load``, ``smoke_test``, ``not_installed``), and
  ``expired``: the accepted record passed its signed expiry with nothing newer (once per record).
- ``buffer_write_errors_total``: buffer writes that failed (disk full, I/O error).
- ``intake_paused``: 1 while results wait for a buffer write and no reading is taken.
- ``thread_restarts_total{thread}``: crashed background loops restarted (``edge-forwarder``, ``edge-updates``).
- ``window_evictions_total``: windows evicted beyond ``max_keys`` (one-shot keys first).
- ``window_resets_total{reason}``: windows started afresh: ``shape`` (another feature count than
  the window held, or than the model takes), ``seq_reset`` (the key's seq counter restarted).
- ``buffer_lost_total{reason}``: buffers replaced by a fresh one: ``corrupt`` (renamed aside at
  start), ``deleted`` (gone or replaced while running; its open rows carried over).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["EdgeMetrics"]

# Single-window inference of small models takes 5 µs to a few ms on a Pi-class CPU.
_LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)


class EdgeMetrics:
    """The agent's metrics on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "streamedge_edge_"
        self.registry = registry
        self.readings = Counter(f"{p}readings", "Readings by outcome", ["outcome"], registry=registry)
        self.results = Counter(f"{p}results", "Results committed to the buffer", ["task"], registry=registry)
        self.anomalies = Counter(f"{p}anomalies", "Readings flagged as anomalies", registry=registry)
        self.latency = Histogram(f"{p}inference_latency_seconds", "Inference time of one window",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.buffer_depth = Gauge(f"{p}buffer_depth_rows", "Rows waiting in the buffer", registry=registry)
        self.buffer_bytes = Gauge(f"{p}buffer_bytes", "Payload bytes waiting in the buffer", registry=registry)
        self.buffer_age = Gauge(f"{p}buffer_oldest_age_seconds", "Age of the oldest buffered row", registry=registry)
        self.dropped = Counter(f"{p}buffer_dropped", "Rows dropped by the buffer bounds", ["reason"],
                               registry=registry)
        self.forwarded = Counter(f"{p}forwarded", "Rows acknowledged by the broker", registry=registry)
        self.reachable = Gauge(f"{p}broker_reachable", "1 while the broker acknowledges forwards", registry=registry)
        self.last_sync = Gauge(f"{p}last_sync_timestamp_seconds", "Last successful forward (unix s)",
                               registry=registry)
        self.model_version = Gauge(f"{p}model_version", "Active model version (0: none)", ["model"],
                                   registry=registry)
        self.updates = Counter(f"{p}model_updates", "Model updates by outcome", ["outcome"], registry=registry)
        self.buffer_write_errors = Counter(f"{p}buffer_write_errors", "Failed buffer writes (disk full, I/O)",
                                           registry=registry)
        self.intake_paused = Gauge(f"{p}intake_paused", "1 while intake waits for a buffer write",
                                   registry=registry)
        self.thread_restarts = Counter(f"{p}thread_restarts", "Crashed background threads restarted", ["thread"],
                                       registry=registry)
        self.window_evictions = Counter(f"{p}window_evictions", "Windows evicted beyond max_keys",
                                        registry=registry)
        self.window_resets = Counter(f"{p}window_resets", "Windows started afresh", ["reason"], registry=registry)
        self.buffer_lost = Counter(f"{p}buffer_lost", "Buffers replaced by a fresh one", ["reason"],
                                   registry=registry)
        for reason in ("shape", "seq_reset"):
            self.window_resets.labels(reason=reason)
        for reason in ("corrupt", "deleted"):
            self.buffer_lost.labels(reason=reason)
        for thread in ("edge-forwarder", "edge-updates"):
            self.thread_restarts.labels(thread=thread)
        for reason in ("size", "age"):
            self.dropped.labels(reason=reason)
        # Series a healthy agent may not touch for hours exist from the start, so panels show 0.
        self.updates.labels(outcome="applied")
        for task in ("forecast", "classification"):
            self.results.labels(task=task)
