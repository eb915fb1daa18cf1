"""``streamedge train ...`` end to end on tiny settings, through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.signing import generate_keypair, load_public_key
from streamedge.registry import ModelRegistry
from streamedge.training.config import ForecasterConfig
from tests.training.helpers import write_seasonal_csv, write_ts


def test_train_forecaster_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_seasonal_csv(tmp_path / "plant.csv")
    out = tmp_path / "fc"
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    generate_keypair(private, public)
    registry = tmp_path / "registry"
    code = main(["train", "forecaster", "--data", str(data), "--column", "load", "--horizon", "4", "--season", "8",
                 "--window", "16", "--epochs", "3", "--units", "8", "--seed", "1", "--out", str(out), "--no-progress",
                 "--model", "lstm",
                 "--register", str(registry), "--signing-key", str(private)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "selected variant:" in printed and "baseline seasonal_naive" in printed
    assert "registered plant-lstm version 1" in printed
    stored = ModelRegistry(registry).verify("plant-lstm", 1, load_public_key(public))
    assert stored.sha256 == read_manifest(out).sha256
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "forecast"
    manifest = read_manifest(out)
    assert manifest.name == "plant-lstm"
    assert manifest.features == ["load"]
    assert manifest.input_shape == [-1, 16, 1] and manifest.output_shape == [-1, 4]
    assert manifest.hyperparameters["seed"] == 1
    assert manifest.hyperparameters["per_series_scaling"] is False  # auto, one series: off, and recorded


def test_train_classifier_cli_model_flags_and_small_data_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    train = write_ts(tmp_path / "toy_TRAIN.ts", per_class=6)
    test = write_ts(tmp_path / "toy_TEST.ts", per_class=4, seed=1)
    monkeypatch.setenv("STREAMEDGE_TRAIN_FEATURES", "84")
    out = tmp_path / "clf"
    code = main(["train", "classifier", "--train", str(train), "--test", str(test), "--out", str(out),
                 "--model", "minirocket", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "95 % interval" in printed and "warning: leave-one-out over the training set" in printed
    manifest = read_manifest(out)
    assert manifest.name == "toy-minirocket"
    assert manifest.hyperparameters["model"] == "minirocket" and manifest.hyperparameters["features"] == 84


def test_train_classifier_cli_reports_bad_data_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_ts(tmp_path / "x_TRAIN.ts", per_class=2)
    test = write_ts(tmp_path / "x_TEST.ts", per_class=2)
    code = main(["train", "classifier", "--train", str(train), "--test", str(test), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamedge: error: too few training series per class")
    assert "\n" not in err


def test_train_help_lists_the_contract_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "forecaster", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--column", "--id-column", "--horizon", "--season", "--out", "--window", "--epochs",
                 "--seed", "STREAMEDGE_TRAIN_EPOCHS"):
        assert flag in text


def test_train_forecaster_per_series_scaling_flag_is_recorded_for_retraining(tmp_path: Path) -> None:
    data = write_seasonal_csv(tmp_path / "plant.csv")
    out = tmp_path / "fc"
    # One series of one scale: auto would leave scaling off; "on" forces it, and the manifest says so.
    code = main(["train", "forecaster", "--data", str(data), "--column", "load", "--horizon", "4", "--season", "8",
                 "--window", "16", "--epochs", "2", "--units", "4", "--out", str(out), "--no-progress",
                 "--per-series-scaling", "on"])
    assert code == 0
    manifest = read_manifest(out)
    assert manifest.hyperparameters["per_series_scaling"] is True
    assert json.loads((out / "metrics.json").read_text())["scaling"]["per_series"] is True
    assert manifest.normalisation["mean"] == [0.0]  # the scale-only normalisation of per-series scaling
    # a retrain rebuilds its configuration from the hyperparameters (training.retrain), decision included
    config = ForecasterConfig(**{k: v for k, v in manifest.hyperparameters.items() if k != "model"})
    assert config.per_series_scaling is True
    assert ForecasterConfig(window=16, horizon=4, season=8).per_series_scaling is None  # older manifests: decide
    with pytest.raises(SystemExit):
        main(["train", "forecaster", "--data", str(data), "--horizon", "4", "--season", "8", "--out", str(out),
              "--per-series-scaling", "maybe"])
