"""Generate the provisioned Grafana dashboards (``deploy/grafana/dashboards/*.json``) from one table.

Run ``python deploy/grafana/dashboards.py`` after editing a panel; ``tests/deploy`` fails when the
committed JSON differs from what this script writes, and evaluates every panel's query against a
Prometheus that scrapes a real stream worker and edge agent.

Metric names are the exported ones: counters end in ``_total``, histograms in ``_bucket/_sum/_count``
(see ``streamedge.services.metrics`` and ``streamedge.edge.metrics``). Edge series carry a ``device``
label added by the scrape config (one agent per target).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARDS", "Panel", "build", "main"]

_DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
_RI = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    """One panel: title, targets as ``(PromQL, legend)`` pairs, and its display.

    Attributes:
        title: panel title.
        targets: ``(expr, legend format)`` pairs; every expr must return data on a live system.
        unit: Grafana unit id (``s``, ``short``, ``ops``, ``percentunit``, ``dateTimeFromNow``...).
        kind: Grafana panel type (``timeseries``, ``stat``, ``table``).
        threshold: a red threshold line/colour at this value, if any.
        description: hover text.
        width: grid width (the grid is 24 wide).
    """

    title: str
    targets: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    threshold: float | None = None
    description: str = ""
    width: int = 12


def _q(quantile: float, metric: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket{selector}[{_RI}])))"


_M = '{model=~"$model"}'
_D = '{device=~"$device"}'

_STREAM = (
    Panel("Workers up", (('sum(up{job="streamedge-stream"})', "workers up"),), kind="stat", width=6,
          description="Stream worker targets answering scrapes"),
    Panel("Readings consumed", ((f"sum(rate(streamedge_stream_readings_consumed_total[{_RI}]))", "all workers"),
                                (f"sum by (instance) (rate(streamedge_stream_readings_consumed_total[{_RI}]))",
                                 "{{instance}}")), unit="ops", width=18),
    Panel("Results per kind", ((f"sum by (kind) (rate(streamedge_stream_results_total[{_RI}]))", "{{kind}}"),),
          unit="ops", description="Messages produced per output topic"),
    Panel("Dead letters by reason",
          ((f"sum by (reason) (rate(streamedge_stream_dead_letters_total[{_RI}]))", "{{reason}}"),), unit="ops",
          description="Readings sent to the dead-letter topic; fix and replay with streamedge stream replay-dlq"),
    Panel("Dead-letter share", ((f"sum(rate(streamedge_stream_dead_letters_total[{_RI}])) / "
                                 f"clamp_min(sum(rate(streamedge_stream_readings_consumed_total[{_RI}])), 1e-9)",
                                 "DLQ / readings"),), unit="percentunit", threshold=0.05),
    Panel("Inference latency p50 / p99 (per micro-batch)",
          ((_q(0.5, "streamedge_stream_inference_seconds", "model, le", _M), "p50 {{model}}"),
           (_q(0.99, "streamedge_stream_inference_seconds", "model, le", _M), "p99 {{model}}")), unit="s"),
    Panel("Micro-batch size",
          ((f"sum by (model) (rate(streamedge_stream_batch_size_windows_sum{_M}[{_RI}])) / "
            f"sum by (model) (rate(streamedge_stream_batch_size_windows_count{_M}[{_RI}]))", "mean {{model}}"),
           (_q(0.99, "streamedge_stream_batch_size_windows", "model, le", _M), "p99 {{model}}")),
          description="Windows per TFLite invoke"),
    Panel("End-to-end latency p50 / p99",
          ((_q(0.5, "streamedge_stream_end_to_end_seconds", "le"), "p50"),
           (_q(0.99, "streamedge_stream_end_to_end_seconds", "le"), "p99")), unit="s", threshold=0.1,
          description="Reading event time to acknowledged result (target: p99 < 100 ms)"),
    Panel("Model versions", ((f"max by (model) (streamedge_stream_model_version{_M})", "{{model}}"),), kind="stat",
          description="Active version per model (max over workers)"),
    Panel("Model reloads by outcome",
          ((f'sum by (model, outcome) (increase(streamedge_stream_model_reloads_total{_M}[1h]))',
            "{{model}} {{outcome}}"),), kind="table", description="Versions loaded or rejected in the last hour"),
    Panel("Forecast MAE vs validation band",
          ((f"max by (model) (streamedge_stream_forecast_mae{_M})", "rolling MAE {{model}}"),
           (f'sum by (model) (increase(streamedge_stream_retrain_requests_total{{model=~"$model", trigger="error"}}'
            f"[{_RI}]))", "above band: retrain requests {{model}}")),
          description="Rolling one-step MAE (original units). A retrain request with trigger=error marks the MAE "
                      "above mae_factor x the manifest's validation MAE"),
    Panel("Retrain requests by trigger",
          ((f"sum by (model, trigger) (increase(streamedge_stream_retrain_requests_total{_M}[1h]))",
            "{{model}} {{trigger}}"),), kind="table"),
    Panel("Input drift z", ((f"max by (model) (streamedge_stream_input_drift_z{_M})", "{{model}}"),), threshold=3.0,
          description="Largest |rolling input mean - reference mean| / reference std over features"),
    Panel("Anomalies", ((f"sum by (model) (rate(streamedge_stream_anomalies_total{_M}[{_RI}]))", "{{model}}"),),
          unit="ops"),
    Panel("Consumer lag", (("sum(max by (partition) (streamedge_stream_consumer_lag_messages))", "total"),
                           ("max by (partition) (streamedge_stream_consumer_lag_messages)", "partition {{partition}}")),
          description="Readings behind the high watermark, per readings partition"),
    Panel("Active keys", (("sum by (instance) (streamedge_stream_active_keys)", "{{instance}}"),
                          ("sum(streamedge_stream_active_keys)", "all workers")),
          description="Device/stream keys with window state"),
    Panel("Keys dropped", ((f"sum by (cause) (rate(streamedge_stream_keys_dropped_total[{_RI}]))", "{{cause}}"),),
          unit="ops"),
    Panel("Window rebuild after rebalance",
          (("sum by (instance) (increase(streamedge_stream_state_rebuild_readings_total[1h]))", "{{instance}}"),),
          description="Readings re-read to rebuild windows of newly assigned partitions (last hour)"),
)

_EDGE = (
    Panel("Agents up", (('sum(up{job="streamedge-edge"})', "scraped"),
                        (f"sum(streamedge_edge_broker_reachable{_D})", "broker reachable")), kind="stat", width=8),
    Panel("Broker reachable", ((f"max by (device) (streamedge_edge_broker_reachable{_D})", "{{device}}"),),
          kind="stat", width=8, description="1 while the device's last forward was acknowledged"),
    Panel("Last sync", ((f"max by (device) (streamedge_edge_last_sync_timestamp_seconds{_D}) * 1000", "{{device}}"),),
          unit="dateTimeFromNow", kind="stat", width=8),
    Panel("Inference latency p50 / p99 per device",
          ((_q(0.5, "streamedge_edge_inference_latency_seconds", "device, le", _D), "p50 {{device}}"),
           (_q(0.99, "streamedge_edge_inference_latency_seconds", "device, le", _D), "p99 {{device}}")), unit="s"),
    Panel("Results per device", ((f"sum by (device, task) (rate(streamedge_edge_results_total{_D}[{_RI}]))",
                                  "{{device}} {{task}}"),
                                 (f"sum by (device) (rate(streamedge_edge_forwarded_total{_D}[{_RI}]))",
                                  "{{device}} forwarded")), unit="ops"),
    Panel("Buffer depth", ((f"max by (device) (streamedge_edge_buffer_depth_rows{_D})", "{{device}} rows"),),
          description="Results waiting in the store-and-forward buffer"),
    Panel("Buffer oldest age", ((f"max by (device) (streamedge_edge_buffer_oldest_age_seconds{_D})", "{{device}}"),),
          unit="s", threshold=3600.0),
    Panel("Buffer bytes", ((f"max by (device) (streamedge_edge_buffer_bytes{_D})", "{{device}}"),), unit="bytes"),
    Panel("Dropped rows", ((f"sum by (device, reason) (increase(streamedge_edge_buffer_dropped_total{_D}[1h]))",
                            "{{device}} {{reason}}"),), kind="table",
          description="Rows dropped by the buffer's size or age bound in the last hour (never forwarded)"),
    Panel("Readings by outcome", ((f"sum by (device, outcome) (rate(streamedge_edge_readings_total{_D}[{_RI}]))",
                                   "{{device}} {{outcome}}"),), unit="ops"),
    Panel("Anomalies per device", ((f"sum by (device) (rate(streamedge_edge_anomalies_total{_D}[{_RI}]))",
                                    "{{device}}"),), unit="ops"),
    Panel("Model version per device", ((f"max by (device, model) (streamedge_edge_model_version{_D})",
                                        "{{device}} {{model}}"),), kind="table"),
    Panel("Versions by device", ((f'count_values by (model) ("version", streamedge_edge_model_version{_D})',
                                  "{{model}} v{{version}}"),), kind="timeseries", width=12,
          description="Devices serving each model version: a canary shows as a second version on a few devices "
                      "until it is promoted to all or rolled back (streamedge models watch-canary)"),
)


@dataclass(frozen=True)
class _Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    variable: tuple[str, str]  # (name, label_values(...) query)
    tags: tuple[str, ...] = field(default=("streamedge",))


DASHBOARDS = {
    "streamedge-stream.json": _Dashboard("streamedge-stream", "streamedge stream", _STREAM,
                                         ("model", "label_values(streamedge_stream_model_version, model)")),
    "streamedge-edge-fleet.json": _Dashboard("streamedge-edge-fleet", "streamedge edge fleet", _EDGE,
                                             ("device", "label_values(streamedge_edge_broker_reachable, device)")),
}


def _panel(index: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.threshold is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                {"color": "red", "value": panel.threshold}]}
        if panel.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    body: dict[str, Any] = {
        "id": index + 1, "type": panel.kind, "title": panel.title, "datasource": _DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": _DATASOURCE, "expr": expr, "legendFormat": legend,
                     "instant": panel.kind != "timeseries", "range": panel.kind == "timeseries",
                     "format": "table" if panel.kind == "table" else "time_series"}
                    for i, (expr, legend) in enumerate(panel.targets)],
    }
    if panel.description:
        body["description"] = panel.description
    if panel.kind == "timeseries":
        body["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                           "tooltip": {"mode": "multi", "sort": "desc"}}
    return body


def build(dashboard: _Dashboard) -> dict[str, Any]:
    """The dashboard JSON model (Grafana schema 39) of one dashboard."""
    panels: list[dict[str, Any]] = []
    x = y = 0
    for index, panel in enumerate(dashboard.panels):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(_panel(index, panel, x, y))
        x += panel.width
    name, query = dashboard.variable
    return {
        "uid": dashboard.uid, "title": dashboard.title, "tags": list(dashboard.tags), "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": name, "label": name, "type": "query", "datasource": _DATASOURCE,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": query, "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"}, "sort": 1,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }


def main(argv: list[str] | None = None) -> int:
    """Write every dashboard into ``deploy/grafana/dashboards`` (or the folder given)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    for filename, dashboard in DASHBOARDS.items():
        (out / filename).write_text(json.dumps(build(dashboard), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
