"""Prometheus metrics of a stream worker, registered on a caller-given registry.

Names (all prefixed ``streamedge_stream_``); labels come from small fixed sets: ``model`` (the
routed model names), ``kind`` (``forecasts|anomalies|classifications|dead_letters|retrain_requests``),
``reason`` (rejection codes), ``partition`` (readings partitions), ``cause`` (fixed sets).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from streamedge.contracts.reading import REJECTION_REASONS

__all__ = ["REBUILD_TRUNCATIONS", "WORKER_REASONS", "StreamMetrics"]

# Latency buckets from 0.1 ms to 10 s: TFLite batches take well under a millisecond, end-to-end
# latency is dominated by batching wait and broker round trips (milliseconds to seconds).
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# Dead-letter reasons the worker adds to the reading contract's own.
WORKER_REASONS = ("key_mismatch", "implausible_ts", "implausible_seq",
                  "unknown_device", "unknown_stream", "wrong_feature_count", "duplicate", "out_of_order",
                  "model_unavailable", "non_finite_output", "inference_error", "unauthenticated")
REBUILD_TRUNCATIONS = ("message_cap", "empty_fetches")


class StreamMetrics:
    """Every metric of one worker.

    Args:
        registry: where to register (tests pass a fresh ``CollectorRegistry``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "streamedge_stream"
        self.readings = Counter(f"{p}_readings_consumed",
                                "Readings read from the readings topic (every sample of a block; a refused message is one)",
                                registry=registry)
        self.results = Counter(f"{p}_results", "Messages produced, by kind of output topic", ["kind"],
                               registry=registry)
        self.dead_letters = Counter(f"{p}_dead_letters", "Readings sent to the dead-letter topic, by reason",
                                    ["reason"], registry=registry)
        self.inference_seconds = Histogram(f"{p}_inference_seconds", "Duration of one micro-batch TFLite invoke",
                                           ["model"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram(f"{p}_batch_size_windows", "Windows per micro-batch invoke", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=registry)
        self.end_to_end_seconds = Histogram(f"{p}_end_to_end_seconds",
                                            "Reading's Kafka timestamp (broker append time, or the producer's "
                                            "send time) to its results acknowledged",
                                            buckets=_LATENCY_BUCKETS, registry=registry)
        # Apart from latency: backfilled history is old without the pipeline being slow, and a
        # device with a skewed clock is not a slow worker.
        self.data_age_seconds = Gauge(f"{p}_data_age_seconds",
                                      "Event time (ts) of the newest reading in the last batch with results, "
                                      "to those results acknowledged", registry=registry)
        self.model_version = Gauge(f"{p}_model_version", "Active version of each model", ["model"],
                                   registry=registry)
        self.model_reloads = Counter(f"{p}_model_reloads", "Model versions offered to the worker, by outcome",
                                     ["model", "outcome"], registry=registry)
        self.forecast_mae = Gauge(f"{p}_forecast_mae", "Rolling one-step forecast MAE (original units)",
                                  ["model"], registry=registry)
        self.anomalies = Counter(f"{p}_anomalies", "Anomaly events emitted", ["model"], registry=registry)
        self.input_drift = Gauge(f"{p}_input_drift_z", "Largest |rolling input mean - reference mean| / reference std",
                                 ["model"], registry=registry)
        self.retrain_requests = Counter(f"{p}_retrain_requests", "Retrain requests published", ["model", "trigger"],
                                        registry=registry)
        self.active_keys = Gauge(f"{p}_active_keys", "Keys with window state in this worker", registry=registry)
        self.keys_dropped = Counter(f"{p}_keys_dropped", "Keys dropped from state", ["cause"], registry=registry)
        self.window_rebuilds = Counter(f"{p}_window_rebuilds", "Times a model with a longer window emptied every "
                                       "key's window, to be rebuilt from the readings topic", ["model"],
                                       registry=registry)
        self.key_restarts = Counter(f"{p}_key_restarts", "Keys whose window started afresh: a seq counter reset "
                                    "or a confirmed seq jump", registry=registry)
        self.rebuilt_readings = Counter(f"{p}_state_rebuild_readings", "Readings re-read to rebuild windows",
                                        registry=registry)
        self.redelivered = Counter(f"{p}_redelivered", "Readings delivered again after a rebalance, already "
                                   "answered: state only, no result", registry=registry)
        self.consumer_lag = Gauge(f"{p}_consumer_lag_messages", "Readings behind the partition's high watermark",
                                  ["partition"], registry=registry)
        self.committed_lag = Gauge(f"{p}_committed_lag_messages",
                                   "High watermark minus the group's committed offset, per owned partition",
                                   ["partition"], registry=registry)
        self.oldest_unacked = Gauge(f"{p}_oldest_unacked_seconds",
                                    "Age of the oldest batch whose results the broker has not acknowledged "
                                    "(0 when none)", registry=registry)
        self.healthy = Gauge(f"{p}_healthy", "1 while the worker makes progress, 0 once it is stuck",
                             registry=registry)
        self.send_retries = Counter(f"{p}_send_retries", "Produce attempts that failed and were retried",
                                    registry=registry)
        self.rebuild_truncated = Counter(f"{p}_state_rebuild_truncated", "Partition rebuilds that stopped "
                                         "before the committed offset, by cause", ["cause"], registry=registry)
        self.rebuild_truncated_keys = Counter(f"{p}_state_rebuild_truncated_keys", "Keys rebuilt from an "
                                              "incomplete history (truncated rebuilds)", registry=registry)
        self.healthy.set(1)
        # CPU, memory and open files of the worker process (process_* series).
        ProcessCollector(registry=registry)
        for kind in ("forecasts", "anomalies", "classifications", "dead_letters", "retrain_requests"):
            self.results.labels(kind)
        for cause in ("idle", "capacity", "revoked"):
            self.keys_dropped.labels(cause)
        for reason in (*REJECTION_REASONS, *WORKER_REASONS):
            self.dead_letters.labels(reason)
        for cause in REBUILD_TRUNCATIONS:
            self.rebuild_truncated.labels(cause)

    def model_loaded(self, name: str, version: int) -> None:
        """Record that ``name`` v``version`` is now active."""
        self.model_version.labels(name).set(version)
        self.model_reloads.labels(name, "loaded").inc()
        self.model_reloads.labels(name, "rejected")
        self.anomalies.labels(name)
        self.window_rebuilds.labels(name)
        for trigger in ("error", "drift"):
            self.retrain_requests.labels(name, trigger)

    def forget_partition(self, partition: int) -> None:
        """Drop the lag series of a partition this worker no longer owns."""
        for gauge in (self.consumer_lag, self.committed_lag):
            try:
                gauge.remove(str(partition))
            except KeyError:
                continue

    def model_rejected(self, name: str) -> None:
        """Record that a version of ``name`` was rejected."""
        self.model_reloads.labels(name, "rejected").inc()
