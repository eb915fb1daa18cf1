"""The benchmarks run end to end at toy sizes and write the figures their docs promise.

Figures are never asserted against targets here (timings belong to the benchmark runs, not to
tests); these check that the runners work and their JSON has the contracted shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamedge.cli.main import main
from streamedge.kafka.settings import KafkaSettings


def test_bench_stream_writes_contracted_figures(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    code = main(["bench", "stream", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", "bench-smoke.", "--messages", "600", "--keys", "10", "--batch-sizes", "64",
                 "--extra-strides", "", "--latency-seconds", "1", "--naive-messages", "5", "--active-keys", "50",
                 "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    for run in ("passthrough", "pipeline", "naive_keras"):
        assert {"throughput_per_s", "p50_ms", "p99_ms", "rss_mb"} <= figures[run].keys()
        assert figures[run]["throughput_per_s"] > 0 and figures[run]["rss_mb"] > 0
    assert figures["ratios"]["pipeline_over_passthrough"] > 0
    assert figures["ratios"]["pipeline_over_naive"] > 0


def test_bench_edge_writes_contracted_figures(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    code = main(["bench", "edge", "--out", str(out), "--runs", "20", "--process-runs", "1", "--readings", "200",
                 "--no-fresh-venv", "--work-dir", str(tmp_path / "work")])
    assert code == 0
    figures = json.loads(out.read_text())
    ratios = figures["ratios"]
    for key in ("rss_tf_over_edge", "cold_start_tf_over_edge", "cnn_int8_latency_keras_over_tflite",
                "cnn_small_int8_latency_keras_over_tflite"):
        assert ratios[key] > 0, key
    assert set(figures["runtimes"]) == {"ai_edge_litert", "tflite_runtime"}
    assert figures["process"]["edge_agent"]["results"] == figures["process"]["tensorflow"]["results"] > 0
