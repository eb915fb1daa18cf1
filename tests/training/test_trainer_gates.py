"""``train_classifier`` and ``train_forecaster`` hand their real parity gate to the export.

The gate tests (``test_parity_gates.py``) call ``export_variants`` directly; here a whole trainer
runs, and its int8 variant is made to really lose: it is converted from the trained model with
seeded noise added to every weight (the other variants from the trained model itself). The
trainer's gate must refuse that variant with its reason and ship another one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import streamedge.training.artifacts as artifacts
from streamedge.training.classify import train_classifier
from streamedge.training.config import ClassifierConfig
from streamedge.training.forecast import default_config, train_forecaster
from tests.training.helpers import write_seasonal_csv, write_ts


def _int8_from_a_noisy_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 variant is converted from the model with N(0, 1) noise on its weights, restored afterwards."""
    real = artifacts.convert

    def convert(model: Any, variant: str, representative: npt.NDArray[np.float32], per_channel: bool = True) -> bytes:
        if variant != "int8":
            return real(model, variant, representative, per_channel)
        trained = model.get_weights()
        rng = np.random.default_rng(0)
        model.set_weights([w + rng.standard_normal(w.shape).astype(w.dtype) for w in trained])
        try:
            return real(model, variant, representative, per_channel)
        finally:
            model.set_weights(trained)

    monkeypatch.setattr(artifacts, "convert", convert)


def test_train_classifier_refuses_an_int8_variant_that_loses_accuracy(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _int8_from_a_noisy_copy(monkeypatch)
    train = write_ts(tmp_path / "toy_TRAIN.ts", per_class=6)
    test = write_ts(tmp_path / "toy_TEST.ts", per_class=10, seed=1)
    metrics = train_classifier(train, test, tmp_path / "out", ClassifierConfig(features=84), progress=False)
    assert metrics["keras"]["accuracy"] - metrics["tflite"]["int8"]["accuracy"] > 1.0  # the variant really loses
    int8 = metrics["tflite"]["int8"]
    assert int8["parity"] == "refused" and int8["reason"].startswith("accuracy drops"), int8["reason"]
    assert metrics["tflite"]["float32"]["parity"] == "passed"
    assert metrics["selected_variant"] != "int8" and "int8" in metrics["refused_variants"]


def test_train_forecaster_refuses_an_int8_variant_whose_error_grows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _int8_from_a_noisy_copy(monkeypatch)
    data = write_seasonal_csv(tmp_path / "load.csv", length=120, season=8)
    config = default_config(horizon=4, season=8, epochs=1, model="linear")
    metrics = train_forecaster(data, tmp_path / "out", config, columns=["load"], progress=False)
    assert metrics["tflite"]["int8"]["mae"] > 1.05 * metrics["keras"]["mae"]  # the variant really loses
    int8 = metrics["tflite"]["int8"]
    assert int8["parity"] == "refused" and int8["reason"].startswith(("MAE grows", "MASE grows")), int8["reason"]
    assert metrics["tflite"]["float32"]["parity"] == "passed"
    assert metrics["selected_variant"] != "int8" and "int8" in metrics["refused_variants"]
