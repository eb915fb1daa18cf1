"""Rolling test origins, and the window and origins that fit a short history.

With ``origins = N`` the last ``N * horizon`` readings of a series are its test set, cut into
``N`` consecutive blocks. Origin ``k`` (0 the oldest) forecasts block ``k`` from the ``window``
readings just before it; the model is trained once, on the history before block 0, and never
refitted (the "fixed-parameter" rolling origin of Tashman, 2000). One test window ranks models
badly (seasonal naive's MASE on a quarterly series moved from 0.548 to 0.756 between
neighbouring windows, issue 26); every figure is reported per origin, with the mean and spread.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.training.config import ForecasterConfig
from streamedge.training.metrics import forecast_metrics

__all__ = ["MIN_TRAINING_WINDOWS", "fit_to_history", "origin_split", "per_origin", "shortest_fit", "training_windows"]

# A shortened default window must still leave the longest series this many training windows.
MIN_TRAINING_WINDOWS: Final = 16


def origin_split(series: list[npt.NDArray[np.float32]], window: int, horizon: int, origins: int
                 ) -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Histories, test contexts and test targets of every series over ``origins`` rolling origins.

    Returns:
        ``(histories, contexts (origins * S, window, F), actual (origins * S, horizon, F))``,
        origin-major: row ``k * S + s`` is series ``s`` at origin ``k``.
    """
    test = origins * horizon
    histories = [s[:-test] for s in series]
    contexts, actual = [], []
    for k in range(origins):
        for s in series:
            end = len(s) - test + k * horizon
            contexts.append(s[end - window:end])
            actual.append(s[end:end + horizon])
    return histories, np.stack(contexts).astype(np.float32), np.stack(actual).astype(np.float32)


def per_origin(actual: npt.ArrayLike, predicted: npt.ArrayLike, scale: npt.ArrayLike, origins: int
               ) -> dict[str, Any]:
    """MASE and MAE at each origin, with their mean and standard deviation over the origins.

    ``actual``/``predicted`` are origin-major (:func:`origin_split`); ``scale`` is per series ``(S, 1, F)``.
    """
    a, p = np.asarray(actual, np.float64), np.asarray(predicted, np.float64)
    n = len(a) // origins
    blocks = [forecast_metrics(a[k * n:(k + 1) * n], p[k * n:(k + 1) * n], scale) for k in range(origins)]
    mase = [b["mase"] for b in blocks]
    mae = [b["mae"] for b in blocks]
    return {"mase": mase, "mase_mean": float(np.mean(mase)), "mase_std": float(np.std(mase)),
            "mae": mae, "mae_mean": float(np.mean(mae)), "mae_std": float(np.std(mae))}


def training_windows(history: int, config: ForecasterConfig) -> int:
    """Training windows a history of ``history`` readings gives (``forecast._windows``' split)."""
    n = history - config.window - config.horizon + 1
    if n <= 0:
        return 0
    n_val = max(1, round(config.val_fraction * n))
    return max(0, n - n_val - (config.horizon - 1))


def _shorter(config: ForecasterConfig, window: int) -> ForecasterConfig:
    """``config`` with a shorter window; the seasonal-lag input gives way to the classic one when it no longer fits."""
    if config.recent and config.recent + config.season > window:
        return dataclasses.replace(config, window=window, recent=0, base_diffs=0, correction_scales=(0.0, 1.0))
    return dataclasses.replace(config, window=window)


def fit_to_history(lengths: list[int], config: ForecasterConfig) -> tuple[ForecasterConfig, list[str]]:
    """The default window and origins, shortened until the longest series gives enough training windows.

    Kept as they are when the longest series gives ``MIN_TRAINING_WINDOWS`` training windows;
    else the window shrinks first (to ``season + 1`` at least), then the origins (to 1). A
    history too short even then is left to :func:`training.forecast.train_forecaster`, which
    says why.

    Returns:
        ``(config, warnings)``: the warnings say what was shortened.
    """
    longest = max(lengths)
    for origins in range(config.origins, 0, -1):
        history = longest - origins * config.horizon
        for window in range(config.window, config.season, -1):
            enough = training_windows(history, _shorter(config, window)) >= MIN_TRAINING_WINDOWS
            if history - window > config.season and enough:
                fitted = _shorter(dataclasses.replace(config, origins=origins), window)
                notes = []
                if window != config.window:
                    notes.append(f"window shortened from {config.window} to {window} readings to fit a history of "
                                 f"{history} (longest series {longest}, {origins} test origin(s) of {config.horizon})")
                if origins != config.origins:
                    notes.append(f"test origins cut from {config.origins} to {origins}: the history is too short "
                                 "for more")
                return fitted, notes
    return config, []


def shortest_fit(config: ForecasterConfig) -> int:
    """The fewest readings a series needs for :func:`fit_to_history` to fit anything: window
    ``season + 1``, one test origin and ``MIN_TRAINING_WINDOWS`` training windows."""
    window = config.season + 1
    shortest = _shorter(dataclasses.replace(config, origins=1), window)
    length = window + 2 * config.horizon
    while training_windows(length - config.horizon, shortest) < MIN_TRAINING_WINDOWS \
            or length - config.horizon - window <= config.season:
        length += 1
    return length
