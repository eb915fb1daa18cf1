"""Champion/challenger evaluation of forecasters on the newest, held-out part of replayed history.

The retrainer keeps the last ``holdout`` readings of every series out of the candidate's
training data. Both the active model (champion) and the candidate then forecast every
position whose ``horizon`` targets lie inside that tail, each with its own window length and
normalisation, through the same TFLite runner the stream workers use. The score is the MAE
over every target step and feature, in original units, so the two are comparable even when
their normalisation statistics differ.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamedge.contracts.manifest import ModelManifest
from streamedge.contracts.runner import TFLiteRunner
from streamedge.training.artifacts import in_process_runtime
from streamedge.training.data import SeriesData
from streamedge.training.errors import DataError

__all__ = ["holdout_mae", "holdout_size", "split_holdout", "tail"]


def tail(data: SeriesData, readings: int) -> SeriesData:
    """Keep the last ``readings`` points of every series (the "recent history").

    Args:
        data: replayed series, each ``(length_i, n_features)`` float32.
        readings: points kept per series (``>= 1``).

    Returns:
        A copy with shortened series; the ids, features and report are shared.
    """
    if readings < 1:
        raise ValueError(f"history must be at least 1 reading, got {readings}")
    return replace(data, series=[s[-readings:] for s in data.series])


def holdout_size(length: int, fraction: float, horizon: int) -> int:
    """Readings held out of a series of ``length``: ``round(fraction * length)``, at least ``2 * horizon``."""
    return max(round(fraction * length), 2 * horizon)


def split_holdout(data: SeriesData, fraction: float, horizon: int) -> tuple[SeriesData, list[int]]:
    """Cut the newest readings of every series off for the champion/challenger comparison.

    Args:
        data: replayed series.
        fraction: share of each series held out, in ``(0, 0.5)``.
        horizon: forecast steps (a series holds out at least ``2 * horizon`` readings).

    Returns:
        ``(training data without the tails, held-out length per series)``.
    """
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"holdout fraction must be in (0, 0.5), got {fraction}")
    sizes = [holdout_size(len(s), fraction, horizon) for s in data.series]
    kept = [s[:-n] for s, n in zip(data.series, sizes, strict=True)]
    return replace(data, series=kept), sizes


def _windows(
    series: list[npt.NDArray[np.float32]], sizes: list[int], window: int, horizon: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Every ``(window, target)`` pair whose targets start and end inside the held-out tail."""
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[npt.NDArray[np.float32]] = []
    for s, n in zip(series, sizes, strict=True):
        for start in range(max(len(s) - n, window), len(s) - horizon + 1):
            xs.append(s[start - window:start])
            ys.append(s[start:start + horizon])
    if not xs:
        raise DataError(f"no held-out forecast position for window {window} and horizon {horizon}; "
                        "replay more history")
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


def holdout_mae(folder: Path, manifest: ModelManifest, series: list[npt.NDArray[np.float32]],
                sizes: list[int]) -> float:
    """MAE of one forecaster on the held-out tails, original units.

    Args:
        folder: model folder holding ``manifest.model_file``.
        manifest: its manifest (window, horizon, normalisation, features).
        series: the full replayed series, each ``(length_i, n_features)`` float32.
        sizes: held-out readings per series (targets of every scored position lie in them).

    Returns:
        Mean absolute error over every scored position, step and feature.

    Raises:
        DataError: the model's features do not match the series, or nothing can be scored.
    """
    n_feat = len(manifest.features)
    if series and series[0].shape[1] != n_feat:
        raise DataError(f"{manifest.name} v{manifest.version} expects {n_feat} feature(s), "
                        f"the replayed stream has {series[0].shape[1]}")
    x, y = _windows(series, sizes, manifest.window, manifest.horizon)
    mean = np.asarray(manifest.normalisation["mean"], dtype=np.float32)
    std = np.asarray(manifest.normalisation["std"], dtype=np.float32)
    runner = TFLiteRunner(folder / manifest.model_file, manifest, runtime=in_process_runtime())  # type: ignore[arg-type]
    out = runner.run(((x - mean) / std).astype(np.float32))
    forecast = out.reshape(len(x), manifest.horizon, n_feat) * std + mean
    return float(np.mean(np.abs(forecast - y)))
