"""The demo's report: one self-contained HTML page with the run's pictures (PNG, embedded).

Pictures: forecast vs actual with the anomalies marked, the confusion matrix of the streamed
classifications, the latency histogram, throughput over time, the drift score with the moments
of shift, alert, promotion and switch, and the edge buffer depth through the outage.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamedge.demo import data as demo_data

if TYPE_CHECKING:
    from streamedge.demo.run import _Run

__all__ = ["write_report"]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _forecast(run: _Run, errors: list[tuple[str, int, int, float, float]]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    anomalies = [a.body for a in run.collector.records(run.topics["anomalies"]) if isinstance(a.body, dict)]
    for ax, key in zip(axes, ("airport-2/passengers", f"airport-{demo_data.AIRPORTS + 1}/passengers"), strict=True):
        actual = [run.data.values[(key, j)] for j in range(144)]
        ax.plot(range(144), actual, color="black", lw=1.2, label="actual")
        for version, colour in ((1, "tab:blue"), (2, "tab:green")):
            rows = [(s + 1, f) for k, s, v, f, _ in errors if k == key and v == version]
            if rows:
                ax.plot(*zip(*rows, strict=True), color=colour, lw=1, label=f"one-step forecast v{version}")
        marks = [(int(b["seq"]), run.data.values.get((key, int(b["seq"])), np.nan)) for b in anomalies
                 if b.get("key") == key]
        if marks:
            ax.scatter(*zip(*marks, strict=True), color="red", zorder=3, label="anomaly")
        if key.startswith("airport-2"):
            ax.axvline(demo_data.SHIFT_AT, color="grey", ls="--", label="level shift")
        shifted = f" (replayed, shifted from month {demo_data.SHIFT_AT})"
        ax.set_title(key + (shifted if key.startswith("airport-2") else " (after the retrain)"))
        ax.set_ylabel("passengers")
        ax.legend(fontsize=7)
    axes[-1].set_xlabel("month")
    return fig


def _confusion(truth: dict[str, str], predicted: dict[str, str]) -> Any:
    import matplotlib.pyplot as plt

    classes = sorted(set(truth.values()) | set(predicted.values()))
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for device, label in predicted.items():
        if device in truth:
            matrix[classes.index(truth[device]), classes.index(label)] += 1
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("streamed label")
    ax.set_ylabel("true label")
    ax.set_title("ItalyPowerDemand, streamed")
    return fig


def _latency(latency_ms: npt.NDArray[np.float64]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(latency_ms, bins=50, color="tab:purple")
    for q in (50, 99):
        if latency_ms.size:
            ax.axvline(float(np.percentile(latency_ms, q)), color="black", ls=":", label=f"p{q}")
    ax.set_xlabel("send -> result read back (ms)")
    ax.set_ylabel("results")
    ax.legend()
    return fig


def _timeline(run: _Run) -> Any:
    import matplotlib.pyplot as plt

    samples, tl = run.view.samples, run.timeline
    t = [s.at for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
    axes[0].plot(t, [s.throughput for s in samples], color="tab:blue")
    axes[0].set_ylabel("results/s")
    axes[0].set_title("throughput")
    axes[1].plot(t, [s.drift_z for s in samples], color="tab:orange")
    axes[1].axhline(3.0, color="grey", ls=":", label="drift threshold")
    axes[1].set_ylabel("drift z (airline-lstm)")
    axes[1].set_title("drift score")
    axes[2].plot(t, [s.edge_buffer for s in samples], color="tab:red", label="buffered on the device")
    axes[2].plot(t, [s.edge_delivered for s in samples], color="tab:green", label="delivered to Kafka")
    axes[2].set_ylabel("edge results")
    axes[2].set_title("edge buffer through the outage")
    axes[2].set_xlabel("seconds since the stack started")
    origin = run.view.origin
    moments = {"shift": tl.shift, "alert": tl.alert, "promotion": tl.promotion, "switch": tl.serving}
    for name, moment in moments.items():
        if moment is not None:
            axes[1].axvline(moment - origin, ls="--", color="black", lw=0.8)
            axes[1].text(moment - origin, axes[1].get_ylim()[1] * 0.9, name, rotation=90, fontsize=7)
    for name, moment in (("cut", tl.link_cut), ("restored", tl.link_restored)):
        if moment is not None:
            axes[2].axvline(moment - origin, ls="--", color="black", lw=0.8)
            axes[2].text(moment - origin, 0, name, rotation=90, fontsize=7)
    axes[1].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    return fig


def write_report(run: _Run, errors: list[tuple[str, int, int, float, float]], latency_ms: npt.NDArray[np.float64],
                 truth: dict[str, str], predicted: dict[str, str]) -> str:
    """Write ``<workdir>/report.html``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    figures = [("Forecast vs actual, anomalies marked", _forecast(run, errors)),
               ("Confusion matrix of the streamed classifications", _confusion(truth, predicted)),
               ("Latency", _latency(latency_ms)),
               ("Throughput, drift signal with shift/alert/promotion/switch, edge buffer", _timeline(run))]
    sections = "\n".join(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{_png(fig)}'>"
                         for title, fig in figures)
    path = run.work / "report.html"
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>streamedge demo</title></head>"
                    f"<body style='font-family:sans-serif'><h1>streamedge demo: {html.escape(run.layout.prefix)}</h1>"
                    f"{sections}</body></html>")
    return str(path)
