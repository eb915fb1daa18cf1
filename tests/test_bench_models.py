"""``streamedge bench models`` at toy size: the protocol's JSON, the cache of finished runs, mean ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamedge.benchmarks.models import mean_ranks
from streamedge.benchmarks.run_cache import file_digest
from streamedge.cli.main import main
from tests.training.helpers import write_ts


def test_mean_ranks_share_ties_and_skip_missing_figures() -> None:
    ranks = mean_ranks({"a": {"x": 90.0, "y": 90.0, "z": 80.0}, "b": {"x": 70.0, "z": 75.0}})
    assert ranks == {"x": pytest.approx((1.5 + 2) / 2), "y": 1.5, "z": pytest.approx((3 + 1) / 2)}


def test_bench_models_applies_the_protocol_and_reuses_a_run_only_under_the_same_features_and_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, seed in (("toyA", 1), ("toyB", 5)):
        write_ts(data / f"{name}_TRAIN.ts", per_class=8, seed=seed)
        write_ts(data / f"{name}_TEST.ts", per_class=5, seed=seed + 1)
    out = tmp_path / "models.json"
    argv = ["bench", "models", "--out", str(out), "--candidates", "minirocket:1", "--selection", "toyA",
            "--unseen", "toyB", "--data-dir", str(data), "--work-dir", str(tmp_path / "work"), "--features", "84"]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["protocol"]["selection"] == ["toyA"] and figures["protocol"]["unseen"] == ["toyB"]
    assert figures["choice"]["chosen"] == "minirocket"
    assert [(r["dataset"], r["role"]) for r in figures["rows"]] == [("toyA", "selection"), ("toyB", "unseen")]
    row = figures["rows"][1]
    assert 0 <= row["keras_mean"] <= 100 and row["int8_bytes"] > 0 and row["int8_latency_ms"] > 0
    assert row["published"] == {} and figures["unseen"]["mean_gap_to_published_fcn"]["minirocket"] is None
    cached = tmp_path / "work" / "minirocket" / "toyB" / "seed0" / "bench_run.json"
    before = cached.stat().st_mtime_ns
    assert main(argv) == 0
    assert cached.stat().st_mtime_ns == before
    assert json.loads(out.read_text())["rows"] == figures["rows"]
    # Another --features changes the result: the cached run is stale and trained again, not reported.
    assert main([*argv[:-1], "168"]) == 0
    stored = json.loads(cached.read_text())
    assert stored["cache_key"]["inputs"]["config"]["features"] == 168
    assert cached.stat().st_mtime_ns != before
    # Other data under the same file names (the same folders) changes the result: trained again, not reported.
    write_ts(data / "toyB_TEST.ts", per_class=6, seed=9)
    retrained = cached.stat().st_mtime_ns
    assert main([*argv[:-1], "168"]) == 0
    assert cached.stat().st_mtime_ns != retrained
    test_file = str((data / "toyB_TEST.ts").resolve())
    assert json.loads(cached.read_text())["cache_key"]["data"][test_file] == file_digest(data / "toyB_TEST.ts")
