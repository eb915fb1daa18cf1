"""Pure-numpy windowing and normalisation.

Off-by-one rules: for a series ``s`` of length ``T``, window ``i`` starts at ``i * stride``;
its input is ``s[start : start + window]`` and its target ``s[start + window : start + window
+ horizon]``, so a target never overlaps its own input and windows come out in time order.
There are ``(T - window - horizon) // stride + 1`` windows when ``T >= window + horizon``,
otherwise none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamedge.training.errors import DataError

__all__ = ["Normaliser", "count_windows", "make_windows", "partition_series"]

FloatArray = npt.NDArray[np.float32]
# A feature whose training std is below this is constant; dividing by it would blow up noise.
_MIN_STD = 1e-6


def count_windows(length: int, window: int, horizon: int, stride: int = 1) -> int:
    """Number of (input, target) pairs that fit in a series of ``length`` readings."""
    if window < 1 or horizon < 0 or stride < 1:
        raise ValueError(f"need window >= 1, horizon >= 0, stride >= 1; got {window}, {horizon}, {stride}")
    span = window + horizon
    return 0 if length < span else (length - span) // stride + 1


def make_windows(
    series: npt.ArrayLike, window: int, horizon: int, stride: int = 1
) -> tuple[FloatArray, FloatArray]:
    """Cut one series into input windows and their targets.

    Args:
        series: ``(T,)`` or ``(T, n_features)`` values in time order.
        window: input length in readings.
        horizon: target length in readings (0 gives empty targets).
        stride: step between window starts.

    Returns:
        ``x`` of shape ``(n, window, n_features)`` and ``y`` of shape ``(n, horizon, n_features)``,
        float32, ``n = count_windows(T, window, horizon, stride)``.
    """
    arr = np.asarray(series, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"series must be (T,) or (T, n_features), got shape {arr.shape}")
    n = count_windows(arr.shape[0], window, horizon, stride)
    features = arr.shape[1]
    if n == 0:
        return np.empty((0, window, features), np.float32), np.empty((0, horizon, features), np.float32)
    starts = np.arange(n) * stride
    x_index = starts[:, None] + np.arange(window)[None, :]
    y_index = starts[:, None] + window + np.arange(horizon)[None, :]
    return arr[x_index], arr[y_index]


def partition_series(
    lengths: list[int], window: int, horizon: int, season: int
) -> tuple[list[int], list[int], list[int]]:
    """Sort series by what their length allows: training and test, test only, or nothing.

    A series of ``T`` readings is held out on its last ``horizon`` points; its history
    (``T - horizon`` points) must be longer than ``season`` for the MASE scale.

    Args:
        lengths: readings per series.
        window: input length.
        horizon: forecast steps.
        season: season length.

    Returns:
        ``(trained, test_only, skipped)`` indices into ``lengths``: ``trained`` have at least
        ``window + 2 * horizon`` points (a training window plus the test), ``test_only`` at least
        ``window + horizon`` (the test window alone), ``skipped`` the rest or a history of at
        most ``season`` points.
    """
    trained: list[int] = []
    test_only: list[int] = []
    skipped: list[int] = []
    for i, length in enumerate(lengths):
        if length - horizon <= season or length < window + horizon:
            skipped.append(i)
        elif length < window + 2 * horizon:
            test_only.append(i)
        else:
            trained.append(i)
    return trained, test_only, skipped


@dataclass(frozen=True)
class Normaliser:
    """Per-feature z-score learned on training data only.

    Attributes:
        mean: ``(n_features,)`` float64 means.
        std: ``(n_features,)`` float64 standard deviations (floored at 1e-6).
    """

    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, data: npt.ArrayLike) -> Normaliser:
        """Learn statistics over every axis but the last (features)."""
        flat = _flat(data)
        std = flat.std(axis=0)
        return cls(mean=flat.mean(axis=0), std=np.where(std < _MIN_STD, 1.0, std))

    @classmethod
    def fit_scale(cls, data: npt.ArrayLike) -> Normaliser:
        """Scale only: mean 0 and the root mean square as ``std`` (1 where it is below 1e-6).

        For models that scale each window themselves (per-series scaling): dividing by one
        number keeps float32's relative precision for every series, where subtracting a mean
        set by the largest series would round the smallest away (M1: scales differ 10^8-fold).
        """
        flat = _flat(data)
        rms = np.sqrt(np.mean(flat**2, axis=0))
        return cls(mean=np.zeros(flat.shape[1]), std=np.where(rms < _MIN_STD, 1.0, rms))

    def transform(self, data: npt.ArrayLike) -> FloatArray:
        """``(x - mean) / std`` along the last axis, float32."""
        return ((np.asarray(data, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, data: npt.ArrayLike) -> FloatArray:
        """Back to original units along the last axis, float32."""
        return (np.asarray(data, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def to_manifest(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` as the manifest stores it."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


def _flat(data: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(n, n_features)`` float64 view of ``data`` over every axis but the last."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.size == 0:
        raise DataError("cannot learn normalisation statistics from no data")
    return arr.reshape(-1, arr.shape[-1])
