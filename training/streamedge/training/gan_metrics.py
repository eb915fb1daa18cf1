"""How good synthetic windows are, measured the way Yoon et al. 2019 (TimeGAN) measure it.

- Discriminative score: a post-hoc recurrent classifier (one GRU layer) learns real vs
  synthetic on 80% of an equal mix and is scored on the other 20%; the score is
  ``|accuracy - 0.5|`` (0: indistinguishable).
- Predictive score: a recurrent one-step predictor trained on synthetic windows, its mean
  absolute error on real windows (lower is better). With several features it predicts the last
  feature at ``t + 1`` from the others up to ``t`` (TimeGAN's protocol); with one feature, the
  next value from the values so far.

Both take windows ``(n, window, n_features)`` already scaled to [0, 1] with the real data's
bounds, as in the paper, and train their post-hoc network for ``iterations`` mini-batches of 128
(the paper: 2,000 for the discriminative score, 5,000 for the predictive one), rounded up to
whole epochs. The GRU has ``max(2, n_features // 2)`` units (the paper: ``n_features // 2``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["discriminative_score", "pca_projection", "predictive_score", "scale_like", "tsne_projection"]

FloatArray = npt.NDArray[np.float32]
_BATCH = 128
# Points per set in the t-SNE picture (TimeGAN's pictures use 1,000): t-SNE is quadratic-ish.
_TSNE_POINTS = 1000


def _epochs(iterations: int, n: int) -> int:
    """Whole epochs covering ``iterations`` mini-batches of 128 over ``n`` samples."""
    if iterations < 1:
        raise ValueError(f"iterations must be positive, got {iterations}")
    return max(1, math.ceil(iterations / math.ceil(n / _BATCH)))


def scale_like(real: FloatArray, *others: FloatArray) -> list[FloatArray]:
    """Every array min-max scaled per feature with ``real``'s bounds (real first in the result)."""
    low = real.min(axis=(0, 1))
    span = np.maximum(real.max(axis=(0, 1)) - low, 1e-9)
    return [((a - low) / span).astype(np.float32) for a in (real, *others)]


def _gru(window: int, n_in: int, hidden: int, sequences: bool) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((window, n_in))
    x = layers.GRU(hidden, return_sequences=sequences)(inputs)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def discriminative_score(real: FloatArray, synthetic: FloatArray, seed: int, iterations: int = 2000) -> float:
    """``|accuracy - 0.5|`` of a GRU telling real from synthetic on a held-out 20%."""
    from streamedge.training.models import seed_everything

    seed_everything(seed)
    n = min(len(real), len(synthetic))
    rng = np.random.default_rng(seed)
    x = np.concatenate([real[rng.permutation(len(real))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]])
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    order = rng.permutation(2 * n)
    cut = int(0.8 * 2 * n)
    train, test = order[:cut], order[cut:]
    model = _gru(x.shape[1], x.shape[2], max(2, x.shape[2] // 2), sequences=False)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x[train], y[train], epochs=_epochs(iterations, len(train)), batch_size=_BATCH, verbose=0, shuffle=True)
    predicted = np.asarray(model.predict(x[test], batch_size=256, verbose=0))[:, 0] > 0.5
    accuracy = float(np.mean(predicted == (y[test] > 0.5)))
    return abs(accuracy - 0.5)


def _one_step(windows: FloatArray) -> tuple[FloatArray, FloatArray]:
    if windows.shape[2] == 1:
        return windows[:, :-1, :], windows[:, 1:, :]
    return windows[:, :-1, :-1], windows[:, 1:, -1:]


def predictive_score(train: FloatArray, real_test: FloatArray, seed: int, iterations: int = 5000) -> float:
    """MAE on ``real_test`` of a GRU one-step predictor fitted on ``train`` (synthetic for the
    score; real for the train-on-real reference)."""
    from streamedge.training.models import seed_everything

    seed_everything(seed)
    x, y = _one_step(train)
    model = _gru(x.shape[1], x.shape[2], max(2, train.shape[2] // 2), sequences=True)
    model.compile(optimizer="adam", loss="mae")
    model.fit(x, y, epochs=_epochs(iterations, len(x)), batch_size=_BATCH, verbose=0, shuffle=True)
    x_test, y_test = _one_step(real_test)
    predicted = np.asarray(model.predict(x_test, batch_size=256, verbose=0))
    return float(np.mean(np.abs(predicted - y_test)))


def pca_projection(real: FloatArray, synthetic: FloatArray) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Both sets on the first two principal components of ``real`` (windows averaged over
    features first, as in TimeGAN's pictures): two ``(n, 2)`` arrays."""
    flat_real = real.mean(axis=2).astype(np.float64)
    flat_synth = synthetic.mean(axis=2).astype(np.float64)
    centre = flat_real.mean(axis=0)
    _, _, vt = np.linalg.svd(flat_real - centre, full_matrices=False)
    axes = vt[:2].T
    return (flat_real - centre) @ axes, (flat_synth - centre) @ axes


def tsne_projection(real: FloatArray, synthetic: FloatArray, seed: int = 0,
                    points: int = _TSNE_POINTS) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Both sets embedded together by t-SNE (scikit-learn; windows averaged over features, as in
    TimeGAN's pictures; at most ``points`` windows of each, drawn with ``seed``): two ``(n, 2)``
    arrays.

    Raises:
        ImportError: scikit-learn is missing (it comes with the ``train`` extra).
    """
    try:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise ImportError("t-SNE needs scikit-learn: pip install streamedge-training") from exc
    rng = np.random.default_rng(seed)
    picked = [windows[np.sort(rng.permutation(len(windows))[:points])].mean(axis=2).astype(np.float64)
              for windows in (real, synthetic)]
    joint = np.concatenate(picked)
    perplexity = float(min(30, max(2, (len(joint) - 1) // 3)))
    # One thread: OpenMP threads spinning on a busy machine made a 160-point embedding 20x slower.
    with threadpool_limits(limits=1):
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(joint)
    return embedded[:len(picked[0])], embedded[len(picked[0]):]
