"""Property tests for windowing and normalisation (pure numpy)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamedge.training.windowing import Normaliser, count_windows, make_windows

_shapes = st.tuples(
    st.integers(min_value=0, max_value=80),  # length
    st.integers(min_value=1, max_value=3),  # features
    st.integers(min_value=1, max_value=20),  # window
    st.integers(min_value=0, max_value=10),  # horizon
    st.integers(min_value=1, max_value=5),  # stride
)


@settings(max_examples=200, deadline=None)
@given(_shapes)
def test_window_count_and_shapes(shape: tuple[int, int, int, int, int]) -> None:
    length, features, window, horizon, stride = shape
    series = np.arange(length * features, dtype=np.float32).reshape(length, features)
    x, y = make_windows(series, window, horizon, stride)
    expected = max(0, (length - window - horizon) // stride + 1) if length >= window + horizon else 0
    assert count_windows(length, window, horizon, stride) == expected
    assert x.shape == (expected, window, features)
    assert y.shape == (expected, horizon, features)


@settings(max_examples=200, deadline=None)
@given(_shapes)
def test_targets_follow_inputs_without_overlap_and_in_time_order(shape: tuple[int, int, int, int, int]) -> None:
    length, _, window, horizon, stride = shape
    # Values equal their time index, so each element says where it came from.
    x, y = make_windows(np.arange(length, dtype=np.float32), window, horizon, stride)
    for i in range(len(x)):
        start = i * stride
        np.testing.assert_array_equal(x[i, :, 0], np.arange(start, start + window))
        np.testing.assert_array_equal(y[i, :, 0], np.arange(start + window, start + window + horizon))
        if horizon:
            assert y[i, 0, 0] > x[i, -1, 0]  # no target inside its own input window
            assert not set(y[i, :, 0].tolist()) & set(x[i, :, 0].tolist())
    if len(x) > 1:
        assert np.all(np.diff(x[:, 0, 0]) == stride)  # time order kept


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=4), st.integers(min_value=2, max_value=60), st.integers(min_value=0, max_value=9))
def test_normaliser_round_trip_and_train_only_statistics(features: int, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    train = rng.normal(5.0, 3.0, size=(length, features))
    test = rng.normal(50.0, 1.0, size=(7, features))
    norm = Normaliser.fit(train)
    np.testing.assert_allclose(norm.mean, train.mean(axis=0))
    np.testing.assert_allclose(norm.inverse(norm.transform(test)), test, rtol=1e-4, atol=1e-3)
    assert norm.to_manifest()["mean"] == [float(v) for v in train.mean(axis=0)]


def test_constant_feature_gets_unit_std() -> None:
    norm = Normaliser.fit(np.full((10, 2), 3.0))
    assert norm.std.tolist() == [1.0, 1.0]
    assert np.all(norm.transform(np.full((2, 2), 3.0)) == 0)

