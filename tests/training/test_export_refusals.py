"""A variant the trainer's edge runtime cannot load is measured with TensorFlow's interpreter and refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import streamedge.training.artifacts as artifacts
from streamedge.errors import RunnerError
from streamedge.training.classify import train_classifier
from streamedge.training.config import ClassifierConfig
from tests.training.helpers import write_ts


def test_unloadable_variant_is_refused_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = artifacts.TFLiteRunner

    def runner(path: Path, runtime: str = "auto", **kwargs: Any) -> Any:
        if Path(path).name == "int8.tflite" and runtime == "ai_edge_litert":
            raise RunnerError(f"ai_edge_litert cannot load {path}: failed to prepare")
        return real(path, runtime=runtime, **kwargs)

    monkeypatch.setattr(artifacts, "TFLiteRunner", runner)
    train = write_ts(tmp_path / "toy_TRAIN.ts", per_class=6)
    test = write_ts(tmp_path / "toy_TEST.ts", per_class=4, seed=1)
    metrics = train_classifier(train, test, tmp_path / "out", ClassifierConfig(features=84), progress=False)
    int8 = metrics["tflite"]["int8"]
    assert int8["parity"] == "refused" and "cannot load" in int8["reason"]
    assert isinstance(int8["accuracy"], float)
    assert metrics["selected_variant"] != "int8" and "int8" in metrics["refused_variants"]
