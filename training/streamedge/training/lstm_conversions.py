"""Measure the ways to get a Keras 3 LSTM into TFLite, on one trained forecaster.

Candidates (same weights): ``unrolled`` (``LSTM(unroll=True)``, dynamic batch: what the
trainer ships), ``while_fixed_batch`` (``unroll=False`` with a fixed batch of 1: a WHILE
loop), ``while_dynamic`` (``unroll=False``, default converter: expected to fail on
``TensorListReserve``) and ``select_tf_ops`` (Flex ops: converts, but no edge runtime runs it).
Each gets: conversion result, file size, load status per edge runtime, single-window p50
latency and the largest output difference from Keras on the given windows.
``tf-keras``' fused UNIDIRECTIONAL_SEQUENCE_LSTM is not measured: it needs the full
``tensorflow`` wheel, not ``tensorflow-cpu`` + Keras 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.runner import TFLiteRunner
from streamedge.training.artifacts import in_process_runtime
from streamedge.training.config import ForecasterConfig
from streamedge.training.export import check_runtimes, convert, runner_latency_ms
from streamedge.training.models import build_forecaster

__all__ = ["compare_conversions"]


def _select_tf_ops(model: Any) -> bytes:
    import contextlib
    import io

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with contextlib.redirect_stdout(io.StringIO()):
        data: bytes = converter.convert()
    return data


def compare_conversions(
    trained: Any, config: ForecasterConfig, n_features: int, windows: npt.NDArray[np.float32], folder: Path
) -> dict[str, dict[str, Any]]:
    """Convert ``trained`` (an unrolled forecaster) every way and measure each result.

    Args:
        trained: the trained Keras forecaster.
        config: its hyperparameters.
        n_features: input channels.
        windows: ``(n, window, n_features)`` normalised windows to compare outputs on.
        folder: where the candidate ``.tflite`` files go.

    Returns:
        candidate name -> ``{"converted", "size_bytes", "runtimes", "latency_ms_p50", "max_abs_diff"}``
        (or ``{"converted": False, "error": ...}``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected = np.asarray(trained.predict(windows, verbose=0))
    candidates: dict[str, tuple[Any, str]] = {
        "unrolled": (trained, "float32"),
        "unrolled_int8": (trained, "int8"),
        "while_fixed_batch": (build_forecaster(n_features, config, unroll=False, batch_size=1), "float32"),
        "while_dynamic": (build_forecaster(n_features, config, unroll=False), "float32"),
        "select_tf_ops": (build_forecaster(n_features, config, unroll=False), "select"),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (model, mode) in candidates.items():
        if model is not trained:
            model.set_weights(trained.get_weights())
        try:
            data = _select_tf_ops(model) if mode == "select" else convert(model, mode, windows)
        except Exception as exc:  # record why a route fails; that is the measurement
            results[name] = {"converted": False, "error": str(exc).strip().splitlines()[-1][:300]}
            continue
        path = folder / f"{name}.tflite"
        path.write_bytes(data)
        statuses, runtime_ms = check_runtimes(path)
        entry: dict[str, Any] = {"converted": True, "size_bytes": len(data), "runtimes": statuses,
                                 "latency_ms_p50_by_runtime": runtime_ms}
        try:
            runner = TFLiteRunner(path, runtime=in_process_runtime())  # type: ignore[arg-type]
            got = runner.run(windows)
            entry["max_abs_diff"] = float(np.max(np.abs(got - expected)))
            entry["latency_ms_p50"] = runner_latency_ms(runner, windows[0])
        except Exception as exc:  # e.g. Flex ops missing in this interpreter
            entry["run_error"] = str(exc).strip().splitlines()[-1][:300]
        results[name] = entry
    return results
