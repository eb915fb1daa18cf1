"""The benchmarks run end to end at toy sizes and write the figures their docs promise.

Figures are never asserted against targets here (timings belong to the benchmark runs, not to
tests); these check that the runners work and their JSON has the contracted shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels


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


def test_bench_predict_reports_the_childs_own_peak_rss(tmp_path: Path, tiny_models: TinyModels) -> None:
    """Before: wait4's ru_maxrss also counted this (TensorFlow-holding) test process, which the child
    was forked from, so a 75 MiB predict run was reported at several hundred MiB."""
    out = tmp_path / "predict.json"
    assert main(["bench", "predict", "--out", str(out), "--rows", "300", "--keys", "2",
                 "--model", str(tiny_models.forecaster)]) == 0
    figures = json.loads(out.read_text())
    assert figures["output_rows"] == 300 and figures["rows_per_s_printed"] > 0
    assert 10 < figures["peak_rss_mib"] < 200
