"""One evaluation of a trained GAN: scores, and the report pictures and page when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamedge.training.gan import TrainedGan, sample
from streamedge.training.gan_metrics import discriminative_score, predictive_score, scale_like
from streamedge.training.gan_report import plot_losses, plot_pca, plot_samples, plot_tsne, write_gan_index

__all__ = ["evaluate_gan", "write_gan_report"]


def evaluate_gan(trained: TrainedGan, seed: int, disc_iterations: int = 2000,
                 pred_iterations: int = 5000) -> dict[str, float]:
    """Scores of one trained GAN against its own training windows.

    Windows are in the paper's units (see :func:`_paper_units`). Synthetic windows are drawn
    with the real class frequencies, as many as there are real
    ones. Returns ``discriminative``, ``predictive`` (train on synthetic, MAE on the held-out
    real 20%) and ``predictive_real`` (the same predictor trained on the real 80%: the bar a
    perfect generator would reach). Iterations: mini-batches of the post-hoc networks
    (defaults: the paper's).
    """
    real = trained.data.x
    rng = np.random.default_rng(seed)
    synthetic = sample(trained, trained.data.labels[rng.permutation(len(real))], seed)
    real_s, synth_s = _paper_units(real, synthetic)
    order = rng.permutation(len(real_s))
    cut = max(1, int(0.8 * len(real_s)))
    real_train, real_test = real_s[order[:cut]], real_s[order[cut:]] if cut < len(real_s) else real_s[order[:1]]
    return {
        "discriminative": discriminative_score(real_s, synth_s, seed, disc_iterations),
        "predictive": predictive_score(synth_s, real_test, seed, pred_iterations),
        "predictive_real": predictive_score(real_train, real_test, seed, pred_iterations),
    }


def _paper_units(real: np.ndarray[Any, Any], synthetic: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """Windows as the paper scores them: real data sets min-max scaled with the real bounds; data
    already within [0, 1] (the sines, whose values span about [0.5, 1]) as they are. Rescaling the
    sines to [0, 1] doubled every MAE (train-on-real 0.183 against the paper's 0.094)."""
    if real.min() >= 0.0 and real.max() <= 1.0:
        return [real.astype(np.float32), synthetic.astype(np.float32)]
    return scale_like(real, synthetic)


def write_gan_report(trained: TrainedGan, folder: Path, title: str, metrics: dict[str, Any], seed: int = 0) -> Path:
    """PCA and t-SNE pictures, sample windows and loss curves into ``folder``, and ``index.html``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = trained.data.labels
    synthetic = sample(trained, labels, seed)
    real_s, synth_s = scale_like(trained.data.x, synthetic)
    images = [
        plot_pca(real_s, synth_s, folder / "pca.png", title),
        plot_tsne(real_s, synth_s, folder / "tsne.png", title, seed),
        plot_samples(trained.data.x, labels, synthetic, labels, trained.data.classes, folder / "samples.png"),
        plot_losses(trained.history, folder / "losses.png"),
    ]
    return write_gan_index(folder, title, metrics, images)
