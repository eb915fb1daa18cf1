"""The ridge head: closed-form leave-one-out residuals against refitting without each series."""

from __future__ import annotations

import numpy as np
import pytest

from streamedge.training.ridge import fit_ridge


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 6)
    features = rng.standard_normal((18, 40)) + labels[:, np.newaxis] * rng.standard_normal(40) * 0.8
    return features, labels


def test_leave_one_out_errors_match_refits_without_each_series() -> None:
    features, labels = _data()
    for alpha in (0.01, 1.0, 100.0):
        head = fit_ridge(features, labels, 3, alphas=(alpha,))
        total = 0.0
        for i in range(len(labels)):
            keep = np.arange(len(labels)) != i
            # Refit on the other series with the same standardisation, as the closed form assumes.
            z = (features - head.mean) / head.scale
            zk = z[keep] - z[keep].mean(axis=0)
            targets = -np.ones((len(labels), 3))
            targets[np.arange(len(labels)), labels] = 1.0
            tk = targets[keep] - targets[keep].mean(axis=0)
            w = zk.T @ np.linalg.solve(zk @ zk.T + alpha * np.eye(len(zk)), tk)
            predicted = (z[i] - z[keep].mean(axis=0)) @ w + targets[keep].mean(axis=0)
            total += float(np.sum((targets[i] - predicted) ** 2))
        assert head.loo_errors[alpha] == pytest.approx(total, rel=1e-6)


def test_folded_dense_layer_gives_the_same_scores() -> None:
    features, labels = _data(1)
    head = fit_ridge(features, labels, 3)
    kernel, bias = head.folded()
    np.testing.assert_allclose(features @ kernel + bias, head.scores(features), rtol=1e-4, atol=1e-4)
    assert head.alpha in head.loo_errors and head.loo_errors[head.alpha] == min(head.loo_errors.values())


def test_separable_classes_are_learned_and_bad_shapes_refused() -> None:
    features, labels = _data(2)
    features[:, :30] += 3.0 * np.tile(np.eye(3)[labels], 10)
    head = fit_ridge(features, labels, 3)
    assert head.loo_accuracy == 100.0
    assert np.array_equal(np.argmax(head.scores(features), axis=1), labels)
    with pytest.raises(ValueError, match="features"):
        fit_ridge(features[:1], labels[:1], 3)
