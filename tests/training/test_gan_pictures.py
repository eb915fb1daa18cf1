"""The GAN report's projections: t-SNE separates unlike sets, mixes like ones, repeats for a seed."""

from __future__ import annotations

import numpy as np

from streamedge.training.gan_metrics import pca_projection, tsne_projection


def _windows(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    steps = np.linspace(0, 2 * np.pi, 24)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    series = level + 0.2 * np.sin(steps[None, :] + phase) + rng.normal(0, 0.02, (n, 24))
    return series[:, :, None].astype(np.float32)


def _neighbour_purity(real_2d: np.ndarray, synth_2d: np.ndarray) -> float:
    """Share of points whose nearest other point is from their own set (0.5: mixed, 1: apart)."""
    points = np.concatenate([real_2d, synth_2d])
    owner = np.r_[np.zeros(len(real_2d)), np.ones(len(synth_2d))]
    distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    np.fill_diagonal(distance, np.inf)
    return float(np.mean(owner[distance.argmin(axis=1)] == owner))


def test_tsne_separates_shifted_windows_and_mixes_alike_ones() -> None:
    rng = np.random.default_rng(0)
    real = _windows(rng, 80, 0.3)
    apart = tsne_projection(real, _windows(rng, 80, 0.7), seed=1)
    alike = tsne_projection(real, _windows(rng, 80, 0.3), seed=1)
    assert [a.shape for a in apart] == [(80, 2), (80, 2)]
    assert _neighbour_purity(*apart) > 0.95
    assert _neighbour_purity(*alike) < 0.75


def test_tsne_repeats_for_a_seed_and_caps_the_points() -> None:
    rng = np.random.default_rng(3)
    real, synthetic = _windows(rng, 150, 0.3), _windows(rng, 50, 0.4)
    first = tsne_projection(real, synthetic, seed=5, points=100)
    assert [a.shape for a in first] == [(100, 2), (50, 2)]
    second = tsne_projection(real, synthetic, seed=5, points=100)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_pca_projects_on_the_real_sets_axes() -> None:
    rng = np.random.default_rng(4)
    real = _windows(rng, 60, 0.3)
    real_2d, synth_2d = pca_projection(real, real.copy())
    np.testing.assert_allclose(real_2d, synth_2d)
    assert abs(float(real_2d.mean())) < 1e-9
