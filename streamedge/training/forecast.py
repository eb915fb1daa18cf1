"""Train, evaluate and export an LSTM forecaster on one or many series (CSV/TSV tables).

Test points are the last ``horizon`` readings of every series; everything before is history,
split into training windows and (the latest windows of each series) validation windows for
early stopping. Training windows whose targets would overlap the first validation target
are left out, so validation never scores a target the model trained on.

Many short series (one global model): a series too short for a test window is skipped, one too
short for a training window is only tested; ``metrics.json -> data`` counts both and
``warnings`` says so (:func:`training.windowing.partition_series`). Only when no series can
give a training window does training fail.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.training.artifacts import export_variants, reference_stats, write_output
from streamedge.training.config import ForecasterConfig
from streamedge.training.data import SeriesData, load_table
from streamedge.training.errors import DataError
from streamedge.training.metrics import forecast_metrics, seasonal_naive_forecast, seasonal_naive_scale
from streamedge.training.models import build_forecaster, fit, seed_everything
from streamedge.training.report import plot_forecasts, plot_learning_curves, write_index
from streamedge.training.seasonal_lags import default_recent
from streamedge.training.windowing import Normaliser, make_windows, partition_series, split_series

__all__ = ["MAX_MAE_GROWTH", "default_recent", "default_window", "seasonal_naive_verdict", "train_forecaster"]

_log = logging.getLogger(__name__)
_REPRESENTATIVE: Final = 200
# Int8 calibration margin beyond the history's range, as a share of that range.
_HEADROOM: Final = 0.25
# Series whose MASE scales differ more than this share one normalisation badly (M1: 10^8).
_MAX_SCALE_SPREAD: Final = 100.0
# The parity gate: a TFLite variant's MAE may exceed the Keras MAE by at most 5 %.
MAX_MAE_GROWTH: Final = 0.05


def default_window(season: int, horizon: int, recent: int = 0) -> int:
    """Three seasons of input, at least two horizons and 8 readings.

    In seasonal-lag mode (``recent > 0``, long seasons): two seasons, so the head sees the
    forecast hours one and two seasons back (and at least ``recent + season``).
    """
    if recent:
        return max(2 * season, recent + season)
    return max(3 * season, 2 * horizon, 8)


def seasonal_naive_verdict(metrics: dict[str, dict[str, Any]], naive_mase: float) -> tuple[dict[str, bool], list[str]]:
    """Which models beat seasonal naive in MASE on the test set, and a warning for each that does not.

    Args:
        metrics: model name (``keras``, a TFLite variant) -> its test metrics with ``mase``.
        naive_mase: the seasonal-naive forecast's test MASE.

    Returns:
        ``({name: mase < naive_mase}, warnings)``.
    """
    verdict = {name: bool(m["mase"] < naive_mase) for name, m in metrics.items()}
    warnings = [f"{name} does not beat seasonal naive on the test set: MASE {metrics[name]['mase']:.3f} "
                f">= {naive_mase:.3f}; seasonal naive is the better forecast here"
                for name, beats in verdict.items() if not beats]
    return verdict, warnings


def _scale_spread(scale: npt.NDArray[np.float64]) -> float:
    """Largest over smallest per-series MASE scale (1.0 for one series or zero scales)."""
    values = scale.reshape(len(scale), -1).max(axis=1)
    positive = values[values > 0]
    return float(positive.max() / positive.min()) if len(positive) > 1 else 1.0


def _windows(
    histories: list[npt.NDArray[np.float32]], config: ForecasterConfig
) -> tuple[npt.NDArray[np.float32], ...]:
    xs_train, ys_train, xs_val, ys_val = [], [], [], []
    for history in histories:
        x, y = make_windows(history, config.window, config.horizon)
        n_val = max(1, round(config.val_fraction * len(x)))
        n_train = len(x) - n_val - (config.horizon - 1)
        xs_val.append(x[-n_val:])
        ys_val.append(y[-n_val:])
        if n_train > 0:
            xs_train.append(x[:n_train])
            ys_train.append(y[:n_train])
    if not xs_train:
        raise DataError("too little history for both training and validation windows; "
                        f"use a shorter --window (now {config.window}) or more data")
    flat = [np.concatenate(a) for a in (xs_train, ys_train, xs_val, ys_val)]
    return flat[0], flat[1].reshape(len(flat[1]), -1), flat[2], flat[3].reshape(len(flat[3]), -1)


def _representative(windows: npt.NDArray[np.float32], seed: int) -> npt.NDArray[np.float32]:
    """Int8 calibration windows: history windows plus copies shifted up and down.

    Trending series leave the training range at test time (the newest readings are the
    highest); calibrating on history alone would clip the int8 input and output ranges there.
    The shifted copies give ``_HEADROOM`` of the history's range as margin on both sides.
    """
    rng = np.random.default_rng(seed)
    picked = windows[rng.permutation(len(windows))[: _REPRESENTATIVE // 3]]
    margin = _HEADROOM * float(windows.max() - windows.min())
    calibration: npt.NDArray[np.float32] = np.concatenate([picked, picked + margin, picked - margin]).astype(np.float32)
    return calibration


def train_forecaster(
    data_path: Path | SeriesData,
    out: Path,
    config: ForecasterConfig,
    columns: list[str] | None = None,
    id_column: str | None = None,
    name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load, train, test once on the last ``horizon`` points of each series, export every variant.

    Args:
        data_path: CSV/TSV file (wide, or long with ``id_column``), or already loaded series
            (e.g. from :func:`training.kafka_source.replay_topic`).
        out: output folder.
        config: hyperparameters (window, horizon, season, ...).
        columns: feature columns; default every numeric column.
        id_column: series id column for long format (one global model across series).
        name: model name; default ``<file stem>-lstm`` (``forecaster`` for loaded series).
        progress: show progress bars.

    Returns:
        The ``metrics.json`` content.

    Raises:
        DataError: unreadable data, or no series of at least ``window + 2 * horizon`` points.
    """
    data = data_path if isinstance(data_path, SeriesData) else load_table(data_path, columns, id_column)
    stem = "forecaster" if isinstance(data_path, SeriesData) else Path(data_path).stem
    w, h, season = config.window, config.horizon, config.season
    trained, test_only, skipped = partition_series([len(s) for s in data.series], w, h, season)
    if not trained:
        first = data.series[0]
        if len(data.series) == 1:
            if len(first) > season + h:
                split_series(first, h, w, f"series {data.ids[0]!r}")  # raises: names the shortfall
            raise DataError(f"series {data.ids[0]!r}: {len(first) - h} history points cannot give a "
                            f"seasonal-naive scale for season {season}")
        raise DataError(f"none of the {len(data.series)} series has the {w + 2 * h} points that window {w} + "
                        f"horizon {h} need for a training window and the held-out test")
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} of {len(data.series)} series skipped: fewer than {w + h} points "
                        f"(window {w} + horizon {h}) or a history of at most season {season}")
    if test_only:
        warnings.append(f"{len(test_only)} of {len(data.series)} series only tested: fewer than {w + 2 * h} "
                        "points, too short for a training window")
    for warning in warnings:
        _log.warning("%s", warning)
    evaluated = sorted(trained + test_only)
    ids = [data.ids[i] for i in evaluated]
    splits = [(np.asarray(data.series[i], np.float32)[:-h], np.asarray(data.series[i], np.float32)[-(w + h):])
              for i in evaluated]
    histories = [hist for hist, _ in splits]
    normaliser = Normaliser.fit(np.concatenate(histories))
    x_train, y_train, x_val, y_val = _windows([normaliser.transform(data.series[i][:-h]) for i in trained], config)
    contexts = np.stack([ctx[:w] for _, ctx in splits])
    actual = np.stack([ctx[w:] for _, ctx in splits])
    x_test = normaliser.transform(contexts)
    n_feat = len(data.features)
    scale = np.array([[[seasonal_naive_scale(hst[:, f], season) for f in range(n_feat)]] for hst in histories])
    spread = _scale_spread(scale)
    if spread > _MAX_SCALE_SPREAD:
        warnings.append(f"series scales (in-sample seasonal-naive MAE) differ {spread:.0f}x; one normalisation "
                        "serves every series, so the smallest are forecast at the resolution of the largest: "
                        "train series of very different scales separately, or rescale them first")
        _log.warning("%s", warnings[-1])
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(config.seed)
    model = build_forecaster(n_feat, config)
    started = time.perf_counter()
    history = fit(model, (x_train, y_train), (x_val, y_val), config.epochs, min(config.batch_size, len(x_train)),
                  config.patience, progress)
    fit_seconds = time.perf_counter() - started
    model.save(out / "model.keras")

    def denorm(outputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return normaliser.inverse(np.asarray(outputs).reshape(len(outputs), h, n_feat))

    def score(outputs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return forecast_metrics(actual, denorm(outputs), scale)

    keras_out = np.asarray(model.predict(x_test, verbose=0))
    keras_metrics = score(keras_out)
    naive = seasonal_naive_forecast(contexts, h, season)
    baseline = forecast_metrics(actual, naive, scale)
    val_residuals = denorm(np.asarray(model.predict(x_val, verbose=0))) - denorm(y_val)

    def gate(metrics: dict[str, Any]) -> str:
        limit = keras_metrics["mae"] * (1 + MAX_MAE_GROWTH)
        if metrics["mae"] > limit:
            growth = (metrics["mae"] / keras_metrics["mae"] - 1) * 100
            return f"MAE grows {growth:.1f}% over Keras (> {MAX_MAE_GROWTH * 100:.0f}%)"
        return ""

    representative = _representative(np.concatenate([x_train, x_val]), config.seed)
    results, outputs, keras_ms = export_variants(model, out / "variants", representative, x_test, score, gate,
                                                 progress)
    for r in results:
        if not r.passed:
            print(f"parity gate: variant {r.variant} refused: {r.reason}")
    beats, losses = seasonal_naive_verdict({"keras": keras_metrics, **{r.variant: r.metrics for r in results}},
                                           baseline["mase"])
    for warning in losses:
        _log.warning("%s", warning)
    manifest, metrics = write_output(
        out, name=name or f"{stem}-lstm", task="forecast", results=results,
        keras_metrics=keras_metrics, keras_ms=keras_ms,
        extra_metrics={
            "baselines": {"seasonal_naive": baseline},
            "beats_seasonal_naive": beats,
            "warnings": warnings + losses,
            "history": history,
            "epochs_run": len(history["loss"]),
            "fit_seconds": fit_seconds,
            "data": {**data.report.to_dict(), "series": len(evaluated), "series_in_file": len(data.series),
                     "series_skipped": len(skipped), "series_test_only": len(test_only),
                     "skipped_ids": [data.ids[i] for i in skipped][:50],
                     "train_windows": len(x_train), "validation_windows": len(x_val),
                     "test_points": int(actual.size)},
        },
        manifest_fields={
            "input_shape": [-1, w, n_feat], "output_shape": [-1, h * n_feat], "window": w, "horizon": h,
            "features": data.features, "normalisation": normaliser.to_manifest(),
            "reference_stats": reference_stats(np.concatenate(histories), data.features),
            "validation_error": {"mae": float(np.mean(np.abs(val_residuals))),
                                 "residual_std": float(np.std(val_residuals))},
            "hyperparameters": {"model": "lstm", **config.to_dict()},
        },
    )
    report = out / "report"
    report.mkdir(exist_ok=True)
    selected = metrics["selected_variant"]
    shown = {"keras": denorm(keras_out), "seasonal naive": naive.astype(np.float32)}
    shown[f"tflite {selected}"] = denorm(outputs[selected])
    if selected != "int8":
        shown["tflite int8"] = denorm(outputs["int8"])
    images = [plot_learning_curves(history, report / "learning_curves.png"),
              plot_forecasts(contexts, actual, shown, ids, data.features, report / "forecast_vs_actual.png")]
    write_index(report, f"{manifest.name}: forecaster report", metrics, images)
    return metrics
