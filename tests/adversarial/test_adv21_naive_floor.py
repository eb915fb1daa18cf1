"""Issue 21: the naive Keras floor of ``bench stream`` must isolate one effect (a Keras call per
reading instead of TFLite on micro-batches). The pipeline it is divided by routes every reading to
the forecaster *and* the classifier over Faust/aiokafka; a floor that runs only the forecaster over
kafka-python mixes workload and transport into the headline pipeline/naive ratio."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "streamedge" / "benchmarks"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def _pipeline_models() -> set[str]:
    text = (BENCH / "stream.py").read_text()
    match = re.search(r'routes = json\.dumps\((\{.*?\})\)', text)
    assert match, "the pipeline's routes were not found"
    routes = ast.literal_eval(match.group(1))
    return {m for models in routes.values() for m in models}


def test_naive_floor_serves_every_model_the_pipeline_serves() -> None:
    naive = (BENCH / "stream_naive.py").read_text()
    served = {m for m in _pipeline_models() if f'"{m}' in naive}
    assert served == _pipeline_models(), (
        f"pipeline serves {sorted(_pipeline_models())}, the naive floor only {sorted(served)}")


def test_naive_floor_uses_the_pipelines_transport() -> None:
    roots = _imported_roots(BENCH / "stream_naive.py")
    assert "kafka" not in roots, "the naive floor talks to Kafka through kafka-python, the pipeline through aiokafka"
