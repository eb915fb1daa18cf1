"""``streamedge bench gan`` at toy size: every data set gets runs, mean and spread, and TimeGAN's
published figures beside the sines (figures are not judged here; the long run reports them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamedge.benchmarks.gan import _load
from streamedge.cli.main import main


def test_bench_gan_writes_scores_with_spread(tmp_path: Path) -> None:
    out, reports = tmp_path / "gan.json", tmp_path / "reports"
    code = main(["bench", "gan", "--out", str(out), "--datasets", "sines", "--runs", "2",
                 "--steps", "3", "--sine-windows", "48", "--disc-iterations", "1", "--pred-iterations", "1", "--hidden", "8",
                 "--report-dir", str(reports), "--tstr", "ItalyPowerDemand", "--tstr-epochs", "1"])
    assert code == 0
    figures = json.loads(out.read_text())
    assert set(figures["datasets"]) == {"sines"}
    for name, data in figures["datasets"].items():
        assert [r["seed"] for r in data["runs"]] == [0, 1]
        for score in ("discriminative", "predictive", "predictive_real"):
            assert data[f"{score}_std"] >= 0 and data[f"{score}_mean"] >= 0
        assert 0 <= data["discriminative_mean"] <= 0.5
        assert (reports / name / "index.html").is_file() and (reports / name / "pca.png").is_file()
        assert (reports / name / "tsne.png").is_file()
    assert figures["datasets"]["sines"]["published"]["timegan_discriminative"] == 0.011
    tstr = figures["tstr"]["ItalyPowerDemand"]
    assert len(tstr["runs"]) == 2 and tstr["test_windows"] == 1029
    assert all(0 <= tstr[f"{k}_mean"] <= 1 for k in ("trtr", "tstr", "augmented"))


def test_real_sets_join_their_train_and_test_files() -> None:
    data = _load("ItalyPowerDemand", 0)
    assert data.x.shape == (67 + 1029, 24, 1) and data.classes == ["1", "2"]
    assert np.bincount(data.labels).tolist() == [547, 549]


def test_bench_gan_refuses_an_unknown_data_set(tmp_path: Path) -> None:
    assert main(["bench", "gan", "--out", str(tmp_path / "g.json"), "--datasets", "NoSuchSet", "--runs", "1"]) == 1
    assert main(["bench", "gan", "--out", str(tmp_path / "g.json"), "--datasets", "", "--tstr", "NoSuchSet"]) == 1
