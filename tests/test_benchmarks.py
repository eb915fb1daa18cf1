"""The benchmarks run end to end at toy sizes and write the figures their docs promise.

Figures are never asserted against targets here (timings belong to the benchmark runs, not to
tests); these check that the runners work and their JSON has the contracted shape.
"""

from __future__ import annotations

import ast
import json
import re
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


def test_rate_ratios_are_per_alternated_round_with_their_median_and_spread() -> None:
    """Round i of the pipeline over round i of the ceiling, not one median over another: 2 over 4 and
    6 over 3 are ratios 0.5 and 2.0, while the medians' ratio would read 1.0 (4 / 4) with no spread."""
    from streamedge.benchmarks.stream_rate import _ratios

    blocks = {"1": {"messages_per_s": 4.0, "runs_messages_per_s": [2.0, 4.0, 6.0]},
              "256": {"readings_per_s": 900.0, "runs_readings_per_s": [900.0, 1000.0, 800.0]}}
    ceilings = {"faust_passthrough": {"1": {"messages_per_s": 4.0, "runs_messages_per_s": [4.0, 4.0, 3.0]},
                                      "256": {"readings_per_s": 1000.0, "runs_readings_per_s": [1000.0, 1000.0, 1000.0]}}}
    ratios = _ratios(blocks, ceilings, "256")
    name = "block_1_pipeline_over_faust_passthrough"
    assert ratios[name] == 1.0 and ratios[f"{name}_runs"] == [0.5, 1.0, 2.0] and ratios[f"{name}_spread"] == [0.5, 2.0]
    name = "block_256_pipeline_over_faust_passthrough"
    assert ratios[name] == 0.9 and ratios[f"{name}_spread"] == [0.8, 1.0]


_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "streamedge" / "benchmarks"


def _pipeline_models() -> set[str]:
    match = re.search(r"routes = json\.dumps\((\{.*?\})\)", (_BENCH / "stream.py").read_text())
    assert match, "the pipeline's routes were not found"
    return {m for models in ast.literal_eval(match.group(1)).values() for m in models}


def test_the_naive_keras_floor_serves_every_model_the_pipeline_serves() -> None:
    """The pipeline/naive ratio divides like work: a floor running fewer models would flatter the pipeline less."""
    naive = (_BENCH / "stream_naive.py").read_text()
    assert {m for m in _pipeline_models() if f'"{m}"' in naive} == _pipeline_models()


def test_the_naive_floor_states_its_transport_when_it_differs_from_the_pipelines() -> None:
    """The floor talks to Kafka through kafka-python, the pipeline through Faust/aiokafka: its docstring says so."""
    tree = ast.parse((_BENCH / "stream_naive.py").read_text())
    roots = {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    roots |= {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    if "kafka" in roots:
        doc = " ".join((ast.get_docstring(tree) or "").split())
        assert "Transport differs from the pipeline's: kafka-python" in doc and "aiokafka" in doc


_SPREAD = re.compile(r"spread|per run|per pair|\d[\d.]*\s*-\s*\d[\d.]*x|\d[\d.]*x? to \d[\d.]*x")


def test_every_bold_readme_ratio_prints_its_spread_or_says_none_was_measured() -> None:
    """Each bold ``**N x**`` ratio carries a spread (or says plainly that one run gave it) before the next bold figure."""
    text = (_BENCH.parents[2] / "README.md").read_text()
    found = list(re.finditer(r"\*\*([\d.,]+)x\*\*", text))
    assert found, "no bold ratios found"
    ends = [m.start() for m in found[1:]] + [len(text)]
    bare = [m.group(1) for m, end in zip(found, ends, strict=True) if not _SPREAD.search(text[m.end():min(end, m.end() + 300)])]
    assert bare == []
