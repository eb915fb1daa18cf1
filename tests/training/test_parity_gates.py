"""Each parity gate refuses, through the real export path, a variant that really loses; a variant within bounds passes.

The models are one Dense layer with set weights, so what full-integer quantisation does to them is
known exactly: int8 inputs calibrated on [-10, 10] have a step of about 0.08, so an input of
magnitude 0.01 becomes exactly 0 (zero is always exact), and an input of 0 stays 0. The float32,
float16 and dynamic variants compute the Keras outputs. How many test windows sit at 0.01 decides
how much int8 loses, and each test puts that loss just over (refused) or at (passes) a gate's bound.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from streamedge.training.artifacts import export_variants, write_output
from streamedge.training.export import MAX_ACCURACY_DROP, MAX_MAE_GROWTH, Gate, accuracy_gate, error_gate
from streamedge.training.metrics import classification_metrics, forecast_metrics

_TINY = 0.01  # below half an int8 step: int8 reads it as 0
# int8 calibration range [-10, 10]
_REPRESENTATIVE = np.linspace(-10, 10, 64, dtype=np.float32).reshape(-1, 1, 1)


def _linear_model(weights: list[float]) -> Any:
    """``(n, 1, 1)`` -> ``x * weights`` (no bias)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((1, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(len(weights), use_bias=False)])
    model.layers[-1].set_weights([np.array([weights], dtype=np.float32)])
    return model


def _export(tmp_path: Path, model: Any, test_x: npt.NDArray[np.float32], task: str,
            score: Any, gate_for: Any) -> dict[str, Any]:
    """Keras metrics, then export_variants with the task's real gate, then write_output: metrics.json."""
    keras_metrics = score(np.asarray(model.predict(test_x, verbose=0)))
    gate: Gate = gate_for(keras_metrics)
    out = tmp_path / "out"
    results, _, keras_ms = export_variants(model, out / "variants", _REPRESENTATIVE, test_x, score, gate,
                                           progress=False)
    n_out = int(model.outputs[0].shape[-1])
    write_output(out, name=f"gate-{task}", task=task, results=results, keras_metrics=keras_metrics,
                 keras_ms=keras_ms, extra_metrics={},
                 manifest_fields={"input_shape": [-1, 1, 1], "output_shape": [-1, n_out], "window": 1,
                                  "horizon": 1 if task == "forecast" else 0, "features": ["value"],
                                  "normalisation": {"mean": [0.0], "std": [1.0]},
                                  "class_labels": ["pos", "neg"] if task == "classify" else []})
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def _classify(tmp_path: Path, tiny_negatives: int) -> dict[str, Any]:
    """200 windows, labels 0 (x = 5) and 1 (x = -5, or -0.01 for ``tiny_negatives`` of them).

    Logits ``[x, -x]``: Keras gets all 200 right; int8 sees the tiny ones as 0, a tie that argmax
    gives to class 0, so it loses ``tiny_negatives / 2`` accuracy points.
    """
    x = np.array([5.0] * 100 + [-_TINY] * tiny_negatives + [-5.0] * (100 - tiny_negatives), np.float32)
    labels = np.array([0] * 100 + [1] * 100)

    def score(outputs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return classification_metrics(labels, np.argmax(outputs, axis=1), 2)

    return _export(tmp_path, _linear_model([1.0, -1.0]), x.reshape(-1, 1, 1), "classify", score, accuracy_gate)


def _forecast(tmp_path: Path, zero_actual: float, tiny_scale: float) -> dict[str, Any]:
    """20 one-step forecasts of the identity: 10 series at x = 0 whose actual is ``zero_actual`` (Keras and
    int8 both miss it by that much, MASE scale 1) and 10 at x = 0.01 whose actual is 0.01 (Keras exact,
    int8 off by 0.01, MASE scale ``tiny_scale``). int8 adds 0.01 to half the errors."""
    x = np.array([0.0] * 10 + [_TINY] * 10, np.float32).reshape(-1, 1, 1)
    actual = np.array([zero_actual] * 10 + [_TINY] * 10).reshape(-1, 1, 1)
    scale = np.array([1.0] * 10 + [tiny_scale] * 10).reshape(-1, 1, 1)

    def score(outputs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return forecast_metrics(actual, np.asarray(outputs, np.float64).reshape(-1, 1, 1), scale)

    return _export(tmp_path, _linear_model([1.0]), x, "forecast", score, error_gate)


def _refused(metrics: dict[str, Any]) -> dict[str, str]:
    return {v: r["reason"] for v, r in metrics["tflite"].items() if r["parity"] == "refused"}


def test_int8_losing_two_accuracy_points_is_refused_and_not_shipped(tmp_path: Path) -> None:
    metrics = _classify(tmp_path, tiny_negatives=4)
    assert metrics["keras"]["accuracy"] == 100.0 and metrics["tflite"]["int8"]["accuracy"] == 98.0
    assert MAX_ACCURACY_DROP < 2.0
    reason = f"accuracy drops 2.00 points (> {MAX_ACCURACY_DROP})"
    assert _refused(metrics) == {"int8": reason}
    assert metrics["refused_variants"] == {"int8": reason}
    assert metrics["selected_variant"] != "int8"


def test_int8_losing_exactly_the_allowed_point_passes(tmp_path: Path) -> None:
    metrics = _classify(tmp_path, tiny_negatives=2)
    assert metrics["tflite"]["int8"]["accuracy"] == 100.0 - MAX_ACCURACY_DROP
    assert _refused(metrics) == {} and metrics["refused_variants"] == {}
    assert metrics["tflite"]["int8"]["reason"] == ""


def test_int8_whose_mae_grows_ten_percent_is_refused_for_its_mae(tmp_path: Path) -> None:
    # MAE 0.05 -> 0.055 (+10 %); MASE 0.05 -> 0.05005 (+0.1 %, the tiny series' scale is 100).
    metrics = _forecast(tmp_path, zero_actual=0.1, tiny_scale=100.0)
    keras, int8 = metrics["keras"], metrics["tflite"]["int8"]
    assert int8["mae"] / keras["mae"] - 1 == pytest.approx(0.10, abs=0.002) and MAX_MAE_GROWTH < 0.10
    assert int8["mase"] / keras["mase"] - 1 < MAX_MAE_GROWTH
    assert _refused(metrics) == {"int8": f"MAE grows 10.0% over Keras (> {MAX_MAE_GROWTH * 100:.0f}%)"}
    assert metrics["selected_variant"] != "int8"


def test_int8_whose_mase_doubles_is_refused_for_its_mase_though_its_mae_barely_moves(tmp_path: Path) -> None:
    # MAE 0.5 -> 0.505 (+1 %); MASE 0.5 -> 1.0 (+100 %: the tiny series' scale is 0.01).
    metrics = _forecast(tmp_path, zero_actual=1.0, tiny_scale=0.01)
    keras, int8 = metrics["keras"], metrics["tflite"]["int8"]
    assert int8["mae"] / keras["mae"] - 1 < MAX_MAE_GROWTH
    assert _refused(metrics) == {"int8": f"MASE grows 100.0% over Keras (> {MAX_MAE_GROWTH * 100:.0f}%)"}
    assert metrics["refused_variants"] == {"int8": metrics["tflite"]["int8"]["reason"]}
    assert metrics["selected_variant"] != "int8"


def test_int8_within_both_error_bounds_passes(tmp_path: Path) -> None:
    # MAE and MASE both 0.5 -> 0.505 (+1 %).
    metrics = _forecast(tmp_path, zero_actual=1.0, tiny_scale=1.0)
    assert metrics["tflite"]["int8"]["mae"] > metrics["keras"]["mae"]  # int8 does lose, within bounds
    assert _refused(metrics) == {} and metrics["refused_variants"] == {}


@pytest.mark.parametrize(("keras", "variant", "refused"), [
    ({"mae": 0.0, "mase": 0.0}, {"mae": 0.001, "mase": 0.0}, "MAE 0.001 against Keras' 0"),
    ({"mae": 0.0, "mase": 0.0}, {"mae": 0.0, "mase": 0.0}, ""),
])
def test_error_gate_against_a_perfect_keras_model(keras: dict[str, float], variant: dict[str, float],
                                                  refused: str) -> None:
    assert error_gate(keras)(variant) == refused


@pytest.mark.parametrize(("growth", "refused"), [(0.04, False), (0.06, True)])
def test_error_gate_holds_its_five_percent_bound(growth: float, refused: bool) -> None:
    """The bound itself, not a value built from the constant: +4 % ships, +6 % is refused (MAE and MASE)."""
    keras = {"mae": 1.0, "mase": 1.0}
    assert bool(error_gate(keras)({"mae": 1.0 + growth, "mase": 1.0})) is refused
    assert bool(error_gate(keras)({"mae": 1.0, "mase": 1.0 + growth})) is refused


_NAN, _INF = float("nan"), float("inf")


def test_error_gate_refuses_a_variant_forecasting_nan_whose_mae_and_mase_are_nan() -> None:
    """A broken quantisation forecasting NaN scores NaN errors; NaN compares false with every bound."""
    actual = np.array([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])
    keras = forecast_metrics(actual, actual + 0.5, 1.0)
    broken = forecast_metrics(actual, np.full_like(actual, np.nan), 1.0)
    assert np.isnan(float(broken["mae"])), broken  # what the export path scores for NaN outputs
    assert error_gate(keras)(broken) == "the variant's MAE is nan (not a finite number)"


@pytest.mark.parametrize(("keras", "variant", "reason"), [
    ({"mae": 1.0, "mase": 1.0}, {"mae": 1.0, "mase": _NAN}, "the variant's MASE is nan (not a finite number)"),
    ({"mae": 1.0, "mase": 1.0}, {"mae": _INF, "mase": 1.0}, "the variant's MAE is inf (not a finite number)"),
    ({"mae": _NAN, "mase": 1.0}, {"mae": 1.0, "mase": 1.0}, "Keras' MAE is nan (not a finite number)"),
])
def test_error_gate_refuses_non_finite_errors_the_variants_or_keras(keras: dict[str, float],
                                                                    variant: dict[str, float], reason: str) -> None:
    assert error_gate(keras)(variant) == reason


@pytest.mark.parametrize(("keras", "variant", "reason"), [
    (100.0, _NAN, "the variant's ACCURACY is nan (not a finite number)"),
    (_NAN, 100.0, "Keras' ACCURACY is nan (not a finite number)"),
])
def test_accuracy_gate_refuses_a_non_finite_accuracy_the_variants_or_keras(keras: float, variant: float,
                                                                           reason: str) -> None:
    assert accuracy_gate({"accuracy": keras})({"accuracy": variant}) == reason


def test_a_refused_variant_is_never_a_runtimes_pick_even_when_smallest_and_fastest(tmp_path: Path) -> None:
    from streamedge.training.export import VariantResult, select_variant

    def result(variant: str, size: int, ms: float, passed: bool) -> VariantResult:
        return VariantResult(variant, tmp_path / f"{variant}.tflite", size, latency_ms_p50=ms,
                             runtimes={"ai_edge_litert": "ok", "tflite_runtime": "ok"},
                             runtime_latency_ms_p50={"ai_edge_litert": ms, "tflite_runtime": ms}, passed=passed)

    results = [result("float32", 4000, 1.0, True), result("int8", 1000, 0.5, False)]
    for runtime in (None, "ai_edge_litert", "tflite_runtime"):
        assert select_variant(results, runtime)[0] == "float32"
