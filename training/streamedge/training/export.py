"""TFLite export of every variant, evaluation with the shared runner, parity gates, selection.

Variants: ``float32``; ``float16`` (weights stored as float16); ``dynamic`` (int8 weights,
float activations; per-channel dense quantisation disabled because tflite-runtime 2.14 refuses
the FULLY_CONNECTED version 12 it otherwise emits); ``int8`` (full integer, int8 input and
output, calibrated on representative training windows).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.timing import time_calls
from streamedge.training.errors import ExportError

__all__ = [
    "EDGE_RUNTIMES",
    "MAX_ACCURACY_DROP",
    "MAX_MAE_GROWTH",
    "VARIANTS",
    "Gate",
    "VariantResult",
    "accuracy_gate",
    "check_runtimes",
    "convert",
    "error_gate",
    "keras_latency_ms",
    "runner_latency_ms",
    "select_variant",
]

VARIANTS: Final = ("float32", "float16", "dynamic", "int8")
EDGE_RUNTIMES: Final = ("tflite_runtime", "ai_edge_litert")
_PROBE_TIMEOUT_S: Final = 120
# Within this factor of the fastest passing variant, the smaller file wins.
_LATENCY_SLACK: Final = 1.5
# Parity gates: a classifier variant may lose at most this many accuracy points against Keras...
MAX_ACCURACY_DROP: Final = 1.0
# ...and a forecaster variant's MAE and its MASE may each grow at most this fraction over Keras'. MASE
# too: in a global model the MAE is the largest series' error and would hide the small ones'.
MAX_MAE_GROWTH: Final = 0.05

# Variant metrics -> "" when the variant passes, else the refusal reason.
Gate = Callable[[dict[str, Any]], str]


def _non_finite(key: str, metrics: dict[str, Any], keras_metrics: dict[str, Any]) -> str:
    """The refusal reason when the variant's or Keras' ``key`` is NaN or infinite, else ""."""
    for whose, value in (("the variant's", float(metrics[key])), ("Keras'", float(keras_metrics[key]))):
        if not math.isfinite(value):
            return f"{whose} {key.upper()} is {value} (not a finite number)"
    return ""


def accuracy_gate(keras_metrics: dict[str, Any]) -> Gate:
    """The classifier gate: refuse a variant whose accuracy (percent) is more than
    :data:`MAX_ACCURACY_DROP` points below ``keras_metrics["accuracy"]``, or when either accuracy
    is not a finite number (every comparison with NaN is false: it would pass)."""

    def gate(metrics: dict[str, Any]) -> str:
        if reason := _non_finite("accuracy", metrics, keras_metrics):
            return reason
        drop = float(keras_metrics["accuracy"]) - float(metrics["accuracy"])
        return f"accuracy drops {drop:.2f} points (> {MAX_ACCURACY_DROP})" if drop > MAX_ACCURACY_DROP else ""

    return gate


def error_gate(keras_metrics: dict[str, Any]) -> Gate:
    """The forecaster gate: refuse a variant whose MAE, or else MASE, grows more than
    :data:`MAX_MAE_GROWTH` over Keras' (any growth when Keras' is 0); the reason names the first.
    A MAE or MASE that is not a finite number, the variant's or Keras', refuses the variant."""

    def gate(metrics: dict[str, Any]) -> str:
        for key in ("mae", "mase"):
            if reason := _non_finite(key, metrics, keras_metrics):
                return reason
            ours, keras = float(metrics[key]), float(keras_metrics[key])
            if ours > keras * (1 + MAX_MAE_GROWTH):
                if not keras:
                    return f"{key.upper()} {ours:.3g} against Keras' 0"
                return f"{key.upper()} grows {(ours / keras - 1) * 100:.1f}% over Keras (> {MAX_MAE_GROWTH * 100:.0f}%)"
        return ""

    return gate


@dataclass
class VariantResult:
    """One exported variant and what was measured about it."""

    variant: str
    path: Path
    size_bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    latency_ms_p50: float = float("nan")
    runtimes: dict[str, str] = field(default_factory=dict)
    runtime_latency_ms_p50: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``tflite.<variant>`` object of ``metrics.json``."""
        return {
            **self.metrics,
            "size_bytes": self.size_bytes,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p50_by_runtime": self.runtime_latency_ms_p50,
            "runtimes": self.runtimes,
            "parity": "passed" if self.passed else "refused",
            "reason": self.reason,
        }


def convert(model: Any, variant: str, representative: npt.NDArray[np.float32], per_channel: bool = True) -> bytes:
    """Convert a Keras model to TFLite bytes.

    Args:
        model: a built Keras 3 model with input ``(batch, window, features)``.
        variant: one of :data:`VARIANTS`.
        representative: ``(n, window, features)`` normalised training windows (int8 calibration).
        per_channel: int8 weights with one scale per output channel (the converter's default).
            ``False`` stores one scale per tensor: for MiniRocket's 10,000 one-weight channels the
            per-channel scales and zero points made the int8 file larger than float32, and its
            int8 guards (exact kernel weights, the head's bias correction) assume one scale per
            tensor (:mod:`training.minirocket`).

    Raises:
        ExportError: unknown variant or the converter failed.
    """
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    elif variant == "int8":
        samples = np.asarray(representative, dtype=np.float32)

        def _dataset() -> Any:
            for sample in samples:
                yield [sample[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = not per_channel
    try:
        # The Keras exporter prints its SavedModel signature to stdout; keep the CLI output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            data: bytes = converter.convert()
    except Exception as exc:  # the converter raises many unrelated types
        raise ExportError(f"TFLite conversion of {model.name} to {variant} failed: {exc}") from exc
    return data


def check_runtimes(model_path: Path) -> tuple[dict[str, str], dict[str, float]]:
    """Load and run ``model_path`` under each edge runtime, each in its own child process.

    Returns:
        ``({runtime: "ok" or the error}, {runtime: single-window p50 latency in ms})``.
    """
    statuses: dict[str, str] = {}
    latencies: dict[str, float] = {}
    for runtime in EDGE_RUNTIMES:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "streamedge.training._probe", runtime, str(model_path)],
                capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired:
            statuses[runtime] = f"timed out after {_PROBE_TIMEOUT_S} s"
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            statuses[runtime] = f"exit {done.returncode}: {tail[:200]}"
            continue
        result = json.loads(lines[-1])
        statuses[runtime] = str(result["status"])
        if "latency_ms_p50" in result:
            latencies[runtime] = float(result["latency_ms_p50"])
    return statuses, latencies


def _p50_ms(call: Callable[[], object], runs: int) -> float:
    return float(np.median(time_calls(call, runs)) * 1e3)


def runner_latency_ms(runner: Any, window: npt.NDArray[np.float32], runs: int = 200) -> float:
    """Median single-window latency of a :class:`TFLiteRunner` in this process (ms)."""
    return _p50_ms(lambda: runner.run_one(window), runs)


def keras_latency_ms(model: Any, window: npt.NDArray[np.float32], runs: int = 100) -> float:
    """Median single-window latency of the Keras model under ``tf.function`` (ms)."""
    import tensorflow as tf

    compiled = tf.function(lambda x: model(x, training=False))
    tensor = tf.constant(window[np.newaxis])
    return _p50_ms(lambda: compiled(tensor).numpy(), runs)


def select_variant(results: list[VariantResult], runtime: str | None = None) -> tuple[str, str]:
    """Pick the variant to ship from measurements.

    Among variants that passed the parity gate and load under every edge runtime, take the
    fastest's latency as reference; of those within 1.5x of it, the smallest file wins.
    With ``runtime``, the same rule for that runtime alone: variants that load under it, timed
    under it (its single-window p50 from :func:`check_runtimes`). An int8 file can be the
    smallest and fast enough under ai-edge-litert yet several times slower than float32 under
    tflite-runtime, so each runtime gets its own pick (the manifest's ``runtime_variants``).

    Returns:
        ``(variant, why)``; float32 with a warning note when nothing qualifies.
    """
    def latency(r: VariantResult) -> float:
        return r.latency_ms_p50 if runtime is None else r.runtime_latency_ms_p50[runtime]

    if runtime is None:
        eligible = [r for r in results if r.passed and all(s == "ok" for s in r.runtimes.values())]
        where = f"load under {list(EDGE_RUNTIMES)}"
    else:
        eligible = [r for r in results if r.passed and r.runtimes.get(runtime) == "ok"
                    and runtime in r.runtime_latency_ms_p50]
        where = f"load under {runtime} (timed there)"
    if not eligible:
        return "float32", f"no variant passed the parity gate and {where}; float32 kept"
    fastest = min(latency(r) for r in eligible)
    near = [r for r in eligible if latency(r) <= fastest * _LATENCY_SLACK]
    best = min(near, key=lambda r: (r.size_bytes, latency(r)))
    return best.variant, (
        f"smallest file among variants that passed parity, {where} and run within "
        f"{_LATENCY_SLACK}x of the fastest ({fastest:.3f} ms)"
    )
