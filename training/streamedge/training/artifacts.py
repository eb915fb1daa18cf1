"""Export every variant, measure it, gate it, and write the output folder.

Output folder layout (what ``streamedge models`` registers)::

    DIR/model.tflite        the selected variant
    DIR/model-<runtime>.tflite  a runtime's own pick, when it differs (manifest ``runtime_variants``)
    DIR/manifest.json       unsigned, version 1 (the registry assigns the real version and signs)
    DIR/variants/<v>.tflite every variant
    DIR/model.keras         the Keras model, for retraining and comparison
    DIR/metrics.json        Keras and TFLite metrics side by side
    DIR/report/             PNG plots and index.html
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from streamedge.contracts.manifest import ModelManifest, file_sha256, write_manifest
from streamedge.contracts.runner import TFLiteRunner, available_runtimes
from streamedge.errors import RunnerError
from streamedge.training.export import (
    EDGE_RUNTIMES,
    VARIANTS,
    VariantResult,
    check_runtimes,
    convert,
    keras_latency_ms,
    runner_latency_ms,
    select_variant,
)

__all__ = ["export_variants", "in_process_runtime", "reference_stats", "write_output"]

MODEL_FILE = "model.tflite"
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_HIST_BINS = 20


def reference_stats(values: npt.ArrayLike, features: list[str]) -> dict[str, Any]:
    """Training-data statistics per feature, original units, for drift monitoring.

    Args:
        values: ``(..., n_features)`` training readings.
        features: feature names.

    Returns:
        ``{"n": count, "features": {name: {"mean", "std", "min", "max", "quantiles": {q: v},
        "histogram": {"edges": [21 floats], "counts": [20 ints]}}}}``; the histogram spans the
        1 % to 99 % quantiles, values outside fall into the edge bins.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1, len(features))
    stats: dict[str, Any] = {}
    for i, name in enumerate(features):
        column = flat[:, i]
        qs = np.quantile(column, _QUANTILES)
        low, high = float(qs[0]), float(qs[-1])
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, _HIST_BINS + 1)
        counts, _ = np.histogram(np.clip(column, low, high), bins=edges)
        stats[name] = {
            "mean": float(column.mean()),
            "std": float(column.std()),
            "min": float(column.min()),
            "max": float(column.max()),
            "quantiles": {f"{q:g}": float(v) for q, v in zip(_QUANTILES, qs, strict=True)},
            "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        }
    return {"n": int(flat.shape[0]), "features": stats}


def in_process_runtime() -> str:
    """The TFLite runtime used inside the trainer: ai-edge-litert if installed, else TensorFlow's."""
    # ai-edge-litert is what edge devices run and it coexists with TensorFlow in one process.
    runtimes = available_runtimes()
    return "ai_edge_litert" if "ai_edge_litert" in runtimes else "tensorflow"


def export_variants(
    model: Any,
    folder: Path,
    representative: npt.NDArray[np.float32],
    test_x: npt.NDArray[np.float32],
    score: Callable[[npt.NDArray[np.float32]], dict[str, Any]],
    gate: Callable[[dict[str, Any]], str],
    progress: bool = True,
    per_channel: bool = True,
) -> tuple[list[VariantResult], dict[str, npt.NDArray[np.float32]], float]:
    """Convert, evaluate, time and load-check every variant.

    Args:
        model: the trained Keras model.
        folder: ``DIR/variants`` (created).
        representative: normalised training windows for int8 calibration.
        test_x: normalised test windows ``(n, window, features)``.
        score: raw model outputs ``(n, n_out)`` -> metrics dict.
        gate: variant metrics -> ``""`` if it passes, else the refusal reason.
        progress: show a progress bar.
        per_channel: int8 weight scales per output channel (see :func:`training.export.convert`).

    Returns:
        ``(results, outputs by variant, keras single-window latency ms)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    runtime = in_process_runtime()
    keras_ms = keras_latency_ms(model, test_x[0])
    results: list[VariantResult] = []
    outputs: dict[str, npt.NDArray[np.float32]] = {}
    for variant in tqdm(VARIANTS, desc="exporting TFLite variants", disable=not progress, leave=False):
        path = folder / f"{variant}.tflite"
        path.write_bytes(convert(model, variant, representative, per_channel))
        try:
            runner = TFLiteRunner(path, runtime=runtime)  # type: ignore[arg-type]
            load_error = ""
        except RunnerError as exc:
            # Still measured (with TensorFlow's interpreter) so the report shows what was lost,
            # but refused below: the edge runtime the trainer stands in for cannot load it.
            runner, load_error = TFLiteRunner(path, runtime="tensorflow"), str(exc)
        out = runner.run(test_x)
        outputs[variant] = out
        result = VariantResult(variant=variant, path=path, size_bytes=path.stat().st_size, metrics=score(out))
        result.latency_ms_p50 = runner_latency_ms(runner, test_x[0])
        result.runtimes, result.runtime_latency_ms_p50 = check_runtimes(path)
        result.reason = load_error or gate(result.metrics)
        result.passed = not result.reason
        if result.passed:
            broken = {k: v for k, v in result.runtimes.items() if v != "ok"}
            if broken:
                result.reason = f"loads, but not under {sorted(broken)}"
        results.append(result)
    return results, outputs, keras_ms


def _clean(value: Any) -> Any:
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _runtime_variants(out: Path, results: list[VariantResult], default: str
                      ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
    """Each edge runtime's own pick (:func:`select_variant` timed under it), copied beside the default.

    A runtime whose pick is the default variant needs no entry: it runs ``model.tflite``.

    Returns:
        ``(manifest runtime_variants, metrics.json runtime_selection)``.
    """
    variants: dict[str, dict[str, str]] = {}
    selection: dict[str, dict[str, Any]] = {}
    by_name = {r.variant: r for r in results}
    for runtime in EDGE_RUNTIMES:
        pick, why = select_variant(results, runtime)
        selection[runtime] = {"variant": pick, "reason": why,
                              "latency_ms_p50": by_name[pick].runtime_latency_ms_p50.get(runtime)}
        if pick == default:
            selection[runtime]["model_file"] = MODEL_FILE
            continue
        target = out / f"model-{runtime}.tflite"
        shutil.copyfile(by_name[pick].path, target)
        dtype = TFLiteRunner(target, runtime=in_process_runtime()).input_dtype  # type: ignore[arg-type]
        variants[runtime] = {"model_file": target.name, "sha256": file_sha256(target), "quantization": pick,
                             "input_dtype": dtype}
        selection[runtime]["model_file"] = target.name
    return variants, selection


def write_output(
    out: Path,
    *,
    name: str,
    task: str,
    results: list[VariantResult],
    keras_metrics: dict[str, Any],
    keras_ms: float,
    extra_metrics: dict[str, Any],
    manifest_fields: dict[str, Any],
    manifest_metrics: dict[str, Any] | None = None,
) -> tuple[ModelManifest, dict[str, Any]]:
    """Pick the variant, copy it to ``model.tflite``, write ``manifest.json`` and ``metrics.json``.

    Args:
        out: the output folder.
        name: model name.
        task: ``"forecast"`` or ``"classify"``.
        results: every exported variant.
        keras_metrics: the Keras model's test metrics.
        keras_ms: Keras single-window latency under ``tf.function``.
        extra_metrics: more top-level ``metrics.json`` entries (baselines, data report, history).
        manifest_fields: the remaining :class:`ModelManifest` fields (shapes, normalisation, ...).
        manifest_metrics: more entries for the manifest's ``metrics`` summary (which forecaster won).

    Returns:
        ``(manifest, metrics)``.
    """
    selected, why = select_variant(results)
    chosen = next(r for r in results if r.variant == selected)
    shutil.copyfile(chosen.path, out / MODEL_FILE)
    probe = TFLiteRunner(out / MODEL_FILE, runtime=in_process_runtime())  # type: ignore[arg-type]
    runtime_variants, runtime_selection = _runtime_variants(out, results, selected)
    metrics: dict[str, Any] = {
        "task": task,
        "keras": {**keras_metrics, "latency_ms_p50": keras_ms},
        "tflite": {r.variant: r.to_dict() for r in results},
        "latency_ratio_keras_over_tflite": {
            r.variant: keras_ms / r.latency_ms_p50 for r in results if r.latency_ms_p50 > 0
        },
        "selected_variant": selected,
        "selection_reason": why,
        "runtime_selection": runtime_selection,
        "refused_variants": {r.variant: r.reason for r in results if not r.passed},
        **extra_metrics,
    }
    metrics = _clean(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary_keys = ("accuracy", "f1_macro", "mae", "rmse", "mape", "mase")
    manifest = ModelManifest(
        name=name,
        version=1,
        task=task,  # type: ignore[arg-type]
        input_dtype=probe.input_dtype,
        quantization=selected,  # type: ignore[arg-type]
        model_file=MODEL_FILE,
        sha256=file_sha256(out / MODEL_FILE),
        metrics=_clean({
            "keras": {k: keras_metrics[k] for k in summary_keys if k in keras_metrics},
            "tflite": {k: chosen.metrics[k] for k in summary_keys if k in chosen.metrics},
            "selected_variant": selected,
            "size_bytes": chosen.size_bytes,
            "latency_ms_p50": chosen.latency_ms_p50,
            **(manifest_metrics or {}),
        }),
        runtimes=chosen.runtimes,
        runtime_variants=runtime_variants,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest_fields,
    )
    write_manifest(manifest, out)
    return manifest, metrics
