"""A ridge classifier in numpy, its penalty chosen by exact leave-one-out error (one SVD).

The head of :mod:`training.minirocket`. Classes are one-vs-rest targets in {-1, +1}; features
are standardised on the training set; the intercept is the mean target. For each penalty
``alpha`` the leave-one-out residuals come in closed form from the hat matrix
``H = U diag(s^2 / (s^2 + alpha)) U^T`` of the centred features ``X = U S V^T``:
``e_i = (y_i - yhat_i) / (1 - H_ii)``. The penalty with the smallest summed squared residual wins
(ties: the larger penalty). Cost ``O(n^2 p)`` for ``n`` series and ``p`` features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ALPHAS", "RidgeHead", "fit_ridge"]

# MiniRocket's grid (Dempster et al. 2021): ten penalties from 1e-3 to 1e3.
ALPHAS: Final = tuple(float(a) for a in np.logspace(-3, 3, 10))
# Features whose training std is below this are scaled as if it were this: a near-constant PPV
# feature would otherwise get a weight thousands of times larger than the rest, and the int8
# export quantises the whole head's weights on one scale.
_MIN_SCALE: Final = 0.01


@dataclass(frozen=True)
class RidgeHead:
    """A fitted ridge classifier on standardised features.

    Attributes:
        mean: ``(p,)`` training feature means.
        scale: ``(p,)`` training feature stds (floored).
        weights: ``(p, n_classes)`` on standardised features.
        intercept: ``(n_classes,)``.
        alpha: the chosen penalty.
        loo_accuracy: leave-one-out accuracy on the training set at ``alpha`` (percent).
        loo_errors: ``{alpha: summed squared leave-one-out residual}`` for every penalty tried.
    """

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    alpha: float
    loo_accuracy: float
    loo_errors: dict[float, float]

    def scores(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``(n, p)`` raw features -> ``(n, n_classes)`` ridge scores."""
        return np.asarray(((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.intercept)

    def folded(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Dense-layer ``(kernel (p, n_classes), bias (n_classes,))`` on raw features, same scores."""
        kernel = self.weights / self.scale[:, np.newaxis]
        bias = self.intercept - self.mean @ kernel
        return kernel.astype(np.float32), bias.astype(np.float32)


def fit_ridge(features: npt.ArrayLike, labels: npt.NDArray[np.int64], n_classes: int,
              alphas: tuple[float, ...] = ALPHAS) -> RidgeHead:
    """Fit on ``(n, p)`` features and ``(n,)`` labels in ``[0, n_classes)``; choose alpha by LOO.

    Raises:
        ValueError: fewer than 2 series, or shapes that disagree.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != labels.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need (n >= 2, p) features and n labels, got {x.shape} and {labels.shape}")
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), _MIN_SCALE)
    z = (x - mean) / scale
    targets = -np.ones((len(labels), n_classes))
    targets[np.arange(len(labels)), labels] = 1.0
    intercept = targets.mean(axis=0)
    centred = targets - intercept
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    # Drop the null directions (centring leaves at least one: the constant vector, which is the
    # unpenalised intercept's and must not count towards the penalised leverage).
    rank = s > s.max(initial=0.0) * max(z.shape) * np.finfo(np.float64).eps
    u, s, vt = u[:, rank], s[rank], vt[rank]
    projected = u.T @ centred
    best: tuple[float, float, npt.NDArray[np.float64]] | None = None
    errors: dict[float, float] = {}
    for alpha in sorted(alphas, reverse=True):
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink[:, np.newaxis] * projected)
        # 1 - H_ii, summed from small terms: with more features than series H_ii is near 1.
        outside = 1.0 - 1.0 / len(labels) - np.einsum("ij,ij->i", u, u)
        free = np.einsum("ij,j,ij->i", u, alpha / (s**2 + alpha), u) + np.maximum(outside, 0.0)
        residuals = (centred - fitted) / np.maximum(free, 1e-12)[:, np.newaxis]
        error = float(np.sum(residuals**2))
        errors[alpha] = error
        if best is None or error < best[0]:
            best = (error, alpha, targets - residuals)
    assert best is not None
    _, alpha, loo_scores = best
    weights = vt.T @ ((s / (s**2 + alpha))[:, np.newaxis] * projected)
    loo_accuracy = 100.0 * float(np.mean(np.argmax(loo_scores, axis=1) == labels))
    return RidgeHead(mean=mean, scale=scale, weights=weights, intercept=intercept, alpha=alpha,
                     loo_accuracy=loo_accuracy, loo_errors=dict(sorted(errors.items())))
