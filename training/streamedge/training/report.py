"""The training report: PNG plots (matplotlib, Agg backend) and one ``index.html`` showing them."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["plot_confusion", "plot_forecasts", "plot_learning_curves", "plot_penalty_path", "write_index"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Loss (and accuracy, if recorded) per epoch for training and validation."""
    plt = _pyplot()
    panels = [k for k in ("loss", "accuracy") if k in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        ax.plot(history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label=f"validation {key}")
        if f"refit_{key}" in history:
            ax.plot(history[f"refit_{key}"], label=f"refit on all training data, {key}", linestyle="--")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_penalty_path(history: dict[str, list[float]], path: Path) -> Path:
    """Leave-one-out error of the ridge head per penalty (``history["alpha"]``, ``history["loo_error"]``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogx(history["alpha"], history["loo_error"], marker="o")
    best = int(np.argmin(history["loo_error"]))
    ax.axvline(history["alpha"][best], color="grey", linestyle="--", label=f"chosen alpha {history['alpha'][best]:.3g}")
    ax.set_xlabel("ridge penalty alpha")
    ax.set_ylabel("summed squared leave-one-out residual")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    """Confusion matrix heat map; rows are true classes, columns predictions."""
    plt = _pyplot()
    arr = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(arr):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > arr.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_forecasts(
    context: npt.NDArray[Any],
    actual: npt.NDArray[Any],
    forecasts: dict[str, npt.NDArray[Any]],
    ids: list[str],
    features: list[str],
    path: Path,
    max_series: int = 4,
) -> Path:
    """Input window, actual test values and each forecast, original units.

    Args:
        context: ``(n_series, window, F)`` inputs.
        actual: ``(n_series, horizon, F)`` truth.
        forecasts: name -> ``(n_series, horizon, F)``.
    """
    plt = _pyplot()
    shown = min(max_series, context.shape[0])
    n_feat = min(3, context.shape[2])
    fig, axes = plt.subplots(shown, n_feat, figsize=(6 * n_feat, 3 * shown), squeeze=False)
    window, horizon = context.shape[1], actual.shape[1]
    past, future = np.arange(window), np.arange(window, window + horizon)
    for s in range(shown):
        for f in range(n_feat):
            ax = axes[s][f]
            ax.plot(past, context[s, :, f], color="grey", label="input window")
            ax.plot(future, actual[s, :, f], color="black", marker="o", ms=3, label="actual")
            for name, values in forecasts.items():
                ax.plot(future, values[s, :, f], marker=".", label=name)
            ax.set_title(f"{ids[s]} / {features[f]}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _verdict(metrics: dict[str, Any]) -> str:
    """Whether each model beats seasonal naive (forecasters), and every warning, as HTML paragraphs."""
    parts = []
    beats = metrics.get("beats_seasonal_naive")
    if beats:
        listed = ", ".join(f"{html.escape(k)}: {'yes' if v else '<b>no</b>'}" for k, v in beats.items())
        parts.append(f"<p>Beats seasonal naive (test MASE): {listed}</p>")
    parts += [f"<p><b>Warning:</b> {html.escape(str(w))}</p>" for w in metrics.get("warnings", [])]
    return "\n".join(parts)


def _table(metrics: dict[str, Any], keys: list[str]) -> str:
    rows = [("keras", metrics["keras"])]
    rows += [(f"tflite {v}", m) for v, m in metrics["tflite"].items()]
    rows += [(f"baseline {b}", m) for b, m in metrics.get("baselines", {}).items()]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["model", *keys])
    body = []
    for label, values in rows:
        cells = []
        for key in keys:
            value = values.get(key)
            text = f"{value:.4g}" if isinstance(value, int | float) else html.escape(str(value or ""))
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_index(folder: Path, title: str, metrics: dict[str, Any], images: list[Path]) -> Path:
    """One HTML page with the metric table, the selection and every plot."""
    if metrics["task"] == "classify":
        keys = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
    else:
        keys = ["mae", "rmse", "mape", "smape", "mase"]
    keys += ["size_bytes", "latency_ms_p50", "parity", "reason"]
    figures = "".join(f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"></figure>' for p in images)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Selected variant: <b>{html.escape(str(metrics["selected_variant"]))}</b>
({html.escape(str(metrics.get("selection_reason", "")))})</p>
{_verdict(metrics)}
{_table(metrics, keys)}
{figures}
<h2>metrics.json</h2><pre>{html.escape(json.dumps(metrics, indent=1)[:20000])}</pre>
</body></html>
"""
    path = folder / "index.html"
    path.write_text(page)
    return path
