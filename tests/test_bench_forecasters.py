"""``streamedge bench forecasters`` and ``bench anomalies`` at toy size (one tiny series each, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamedge.cli.main import main
from tests.training.test_short_series import write_long_csv


def test_bench_forecasters_scores_every_method_on_many_short_series(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # 10 series of 15-50 points, horizon 6: 2 too short for a test window, 2 too short for a training window
    write_long_csv(data / "m1_yearly.csv", (15, 17, 20, 22, 30, 35, 40, 45, 50, 50))
    out = tmp_path / "forecasters.json"
    argv = ["bench", "forecasters", "--out", str(out), "--series", "m1_yearly", "--data-dir", str(data),
            "--work-dir", str(tmp_path / "work"), "--epochs", "1"]
    assert main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert (row["series_in_file"], row["series_evaluated"], row["series_skipped"], row["series_test_only"]) == (10, 8, 2, 2)
    assert row["test_points"] == 8 * 6 and row["recent"] == 0 and row["window"] == 12
    assert any("2 of 10 series skipped" in w for w in row["warnings"])
    methods = row["methods"]
    for name in ("seasonal_naive", "AutoETS", "AutoTheta", "lstm_keras", "lstm_int8", "lstm_shipped"):
        assert np.isfinite(methods[name]["mase"]) and 0 <= methods[name]["smape"] <= 200, name
    # season 1: seasonal naive is the naive forecast, whose in-sample MAE is the MASE scale
    assert methods["seasonal_naive"]["mase"] > 0
    assert set(row["beats_seasonal_naive"]) == {"lstm_keras", "lstm_int8", "lstm_shipped"}
    # one origin: the benchmark's own scoring of the saved model equals what training measured
    assert methods["lstm_keras"]["mase"] == pytest.approx(row["first_origin_keras_mase_from_training"], rel=1e-4)
    assert methods["seasonal_naive"]["mase"] == pytest.approx(row["first_origin_naive_mase_from_training"], rel=1e-6)
    report = (tmp_path / "work" / "m1_yearly" / "seed0" / "report" / "index.html").read_text()
    assert "Beats seasonal naive" in report and "2 of 10 series skipped" in report


def test_bench_anomalies_scores_both_detectors_point_and_event_wise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(400)
    values = np.sin(2 * np.pi * t / 6) + 0.05 * rng.standard_normal(len(t))
    labels = np.zeros(len(t), dtype=int)
    for at in (260, 330):
        values[at] += 4.0
        labels[at] = 1
    data = tmp_path / "data"
    data.mkdir()
    (data / "yahoo.csv").write_text("data,label\n" + "\n".join(f"{v:.5f},{y}" for v, y in zip(values, labels, strict=True)))
    out = tmp_path / "anomalies.json"
    argv = ["bench", "anomalies", "--out", str(out), "--series", "yahoo", "--data-dir", str(data),
            "--work-dir", str(tmp_path / "work"), "--epochs", "1", "--k", "4", "--season", "6"]
    assert main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["train_end"] == 200 and row["test_readings"] == 200 and row["labelled_in_test"] == 2
    assert row["spec"]["season"] == 6 and row["window"] == 18
    zscore = row["detectors"]["rolling_zscore k=4"]
    assert zscore["event"]["events_found"] == 2 and zscore["point"]["recall"] == 1.0
    for name in ("detector k=4", "fixed_band (before) k=4"):
        scores = row["detectors"][name]
        assert scores["event"]["events"] == 2 and 0 <= scores["event"]["f1"] <= 1
        assert 0 <= scores["point"]["precision"] <= 1
    # A second run reuses the forecaster trained on the same history.
    assert main(argv) == 0
    assert json.loads(out.read_text())["rows"][0]["reused_forecaster"] is True


def test_anomaly_selection_ranks_every_grid_point_on_synthetic_series() -> None:
    from streamedge.benchmarks.anomaly_selection import GRID, select, synthetic_series

    values, labels, forecast, season = synthetic_series(0)
    assert len(values) == 3000 and np.isnan(forecast[:season]).all() and 0 < labels.sum() < 100
    result = select(range(1))
    f1 = [row["mean_event_f1"] for row in result["grid"]]
    assert len(f1) == len(GRID["span"]) * len(GRID["floor"]) * len(GRID["gap"]) and f1 == sorted(f1, reverse=True)
    assert result["chosen"] == result["grid"][0]


def test_bench_forecasters_recomputes_a_cached_run_under_other_origins_end_or_baselines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_long_csv(data / "m1_yearly.csv", (40, 45, 50, 50))
    out = tmp_path / "forecasters.json"
    argv = ["bench", "forecasters", "--out", str(out), "--series", "m1_yearly", "--data-dir", str(data),
            "--work-dir", str(tmp_path / "work"), "--epochs", "1", "--set", 'model="linear"']

    def row(*flags: str) -> dict[str, Any]:
        assert main([*argv, *flags]) == 0
        result: dict[str, Any] = json.loads(out.read_text())["rows"][0]
        return result

    first = row("--no-baselines")
    assert first["test_points"] == 4 * 6 and first["end_early"] == 0 and "AutoETS" not in first["methods"]
    cached = next((tmp_path / "work" / "m1_yearly").glob("*/bench_run.json"))
    before = cached.stat().st_mtime_ns
    assert row("--no-baselines") == first and cached.stat().st_mtime_ns == before  # same flags: reused
    # each flag below changes the result: a run cached under another value is stale, never reported
    assert row("--no-baselines", "--origins", "2")["test_points"] == 2 * 4 * 6
    assert row("--no-baselines", "--end-early", "3")["end_early"] == 3
    assert isinstance(row()["methods"]["AutoETS"], dict)
