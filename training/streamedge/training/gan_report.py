"""The GAN's HTML report: PCA and t-SNE of real vs synthetic, sample windows per class, loss curves."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.training.gan_metrics import pca_projection, tsne_projection

__all__ = ["plot_losses", "plot_pca", "plot_samples", "plot_tsne", "write_gan_index"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pca(real: npt.NDArray[np.float32], synthetic: npt.NDArray[np.float32], path: Path, title: str) -> Path:
    """Real and synthetic windows on the first two principal components of the real ones."""
    real_2d, synth_2d = pca_projection(real, synthetic)
    return _scatter(real_2d, synth_2d, path, f"PCA: {title}", ("PC 1", "PC 2"))


def plot_tsne(real: npt.NDArray[np.float32], synthetic: npt.NDArray[np.float32], path: Path, title: str,
              seed: int = 0) -> Path:
    """Real and synthetic windows embedded together by t-SNE (overlapping clouds: alike)."""
    real_2d, synth_2d = tsne_projection(real, synthetic, seed)
    return _scatter(real_2d, synth_2d, path, f"t-SNE: {title}", ("t-SNE 1", "t-SNE 2"))


def _scatter(real_2d: npt.NDArray[np.float64], synth_2d: npt.NDArray[np.float64], path: Path, title: str,
             labels: tuple[str, str]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(real_2d[:, 0], real_2d[:, 1], s=6, alpha=0.4, label="real", color="tab:red")
    ax.scatter(synth_2d[:, 0], synth_2d[:, 1], s=6, alpha=0.4, label="synthetic", color="tab:blue")
    ax.set(title=title, xlabel=labels[0], ylabel=labels[1])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_samples(real: npt.NDArray[np.float32], real_labels: npt.NDArray[np.int64],
                 synthetic: npt.NDArray[np.float32], synth_labels: npt.NDArray[np.int64], classes: list[str],
                 path: Path, per_class: int = 3) -> Path:
    """A row per class (at most 6): real windows left, synthetic right, first feature."""
    plt = _pyplot()
    shown = list(range(min(len(classes), 6)))
    fig, axes = plt.subplots(len(shown), 2, figsize=(9, 2.2 * len(shown)), squeeze=False)
    for row, cls in enumerate(shown):
        for col, (windows, labels, name) in enumerate(((real, real_labels, "real"),
                                                      (synthetic, synth_labels, "synthetic"))):
            ax = axes[row][col]
            for window in windows[labels == cls][:per_class]:
                ax.plot(window[:, 0], linewidth=1)
            ax.set_title(f"{name}, class {classes[cls]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_losses(history: dict[str, list[float]], path: Path) -> Path:
    """Critic (Wasserstein estimate), generator loss and gradient penalty per step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("critic_loss", "generator_loss", "gradient_penalty"):
        ax.plot(history["step"], history[key], label=key)
    ax.set(xlabel="generator step", title="WGAN-GP losses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_gan_index(folder: Path, title: str, metrics: dict[str, Any], images: list[Path]) -> Path:
    """``index.html``: the scores, every picture and ``metrics.json`` in full."""
    figures = "".join(f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"></figure>' for p in images)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in metrics.get("scores", {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Discriminative score: |accuracy - 0.5| of a GRU telling real from synthetic (0 is best).
Predictive score: MAE on real windows of a GRU one-step predictor trained on synthetic ones.</p>
<table>{rows}</table>
{figures}
<h2>metrics.json</h2><pre>{html.escape(json.dumps(metrics, indent=1)[:20000])}</pre>
</body></html>
"""
    path = Path(folder) / "index.html"
    path.write_text(page)
    return path
