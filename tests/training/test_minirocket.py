"""MiniRocket as a Keras graph: the features are the PPVs a plain numpy MiniRocket computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamedge.training.minirocket import _STEEPNESS, KERNEL_LENGTH, MiniRocketPlan, build_minirocket, plan_minirocket


def _series(n: int = 6, length: int = 40, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 6 * np.pi, length)
    return (np.sin(t)[None, :, None] * rng.uniform(0.5, 2, (n, 1, channels))
            + 0.3 * rng.standard_normal((n, length, channels))).astype(np.float32)


def _reference_features(plan: MiniRocketPlan, x: np.ndarray, steepness: float | None) -> np.ndarray:
    """PPV per (dilation, padding branch, kernel, bias) written out with loops, in the model's order.

    ``steepness=None``: MiniRocket's hard ``conv > bias``; else the graph's ``clip(steepness * (conv - bias), 0, 1)``.
    """
    import itertools

    twos = list(itertools.combinations(range(KERNEL_LENGTH), 3))
    out = []
    for series in x:
        row: list[float] = []
        for d, dilation in enumerate(plan.dilations):
            for padded in (True, False):
                for k in (k for k in range(len(twos)) if ((d + k) % 2 == 0) == padded):
                    weights = np.full(KERNEL_LENGTH, -1.0)
                    weights[list(twos[k])] = 2.0
                    summed = series @ plan.channel_masks[d, k]
                    half = (KERNEL_LENGTH - 1) // 2 * dilation
                    padded_input = np.pad(summed, (half, half))
                    conv = np.array([sum(weights[j] * padded_input[i + j * dilation] for j in range(KERNEL_LENGTH))
                                     for i in range(len(summed))])
                    if not padded:
                        conv = conv[half:len(conv) - half]
                    for bias in plan.biases[d][k]:
                        step = conv > bias if steepness is None else np.clip(steepness * (conv - bias), 0, 1)
                        row.append(float(np.mean(step)))
        out.append(row)
    return np.array(out)


def test_keras_features_are_the_minirocket_ppvs() -> None:
    x = _series()
    plan = plan_minirocket(x, n_features=300, seed=4)
    assert plan.n_features == 84 * sum(plan.features_per_kernel) <= 300
    assert plan.dilations[0] == 1 and (KERNEL_LENGTH - 1) * plan.dilations[-1] < x.shape[1]
    got = np.asarray(build_minirocket(plan, 2).predict(x, verbose=0))
    expected = _reference_features(plan, x, _STEEPNESS)
    assert got.shape == expected.shape == (len(x), plan.n_features)
    np.testing.assert_allclose(got, expected, atol=1e-3)  # float32 sums against float64
    # Against MiniRocket's hard threshold only outputs within 1/steepness above a bias differ.
    hard = _reference_features(plan, x, None)
    assert np.mean(np.isclose(got, hard, atol=1e-4)) > 0.95


def test_plan_repeats_for_a_seed_and_changes_with_it() -> None:
    x = _series(channels=3)
    a, b, c = plan_minirocket(x, 168, 1), plan_minirocket(x, 168, 1), plan_minirocket(x, 168, 2)
    assert all(np.array_equal(p, q) for p, q in zip(a.biases, b.biases, strict=True))
    assert np.array_equal(a.channel_masks, b.channel_masks)
    assert not all(np.array_equal(p, q) for p, q in zip(a.biases, c.biases, strict=True))
    assert np.all(a.channel_masks.sum(axis=2) >= 1)


def test_int8_export_loads_when_convolution_outputs_span_a_wide_range(tmp_path: Path) -> None:
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.training.export import convert
    from streamedge.training.ridge import fit_ridge

    # White noise over 6 channels: convolution outputs span more than 32 units, which at a step
    # slope of 1000 put the depthwise op's int8 gain past XNNPACK's limit and the model failed to load.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 100, 6)).astype(np.float32)
    labels = np.arange(20) % 2
    plan = plan_minirocket(x, 84, 0)
    head = fit_ridge(np.asarray(build_minirocket(plan, 2).predict(x, verbose=0)), labels, 2)
    model = build_minirocket(plan, 2, head)
    expected = np.asarray(model.predict(x, verbose=0))
    path = tmp_path / "int8.tflite"
    path.write_bytes(convert(model, "int8", x, per_channel=False))
    got = TFLiteRunner(path, runtime="ai_edge_litert").run(x)
    assert np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)) >= 0.9
