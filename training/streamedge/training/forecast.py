"""Train, evaluate and export an LSTM forecaster on one or many series (CSV/TSV tables).

Test points are the last ``horizon`` readings of every series; everything before is history,
split into training windows and (the latest windows of each series) validation windows for
early stopping. Training windows whose targets would overlap the first validation target
are left out, so validation never scores a target the model trained on.

Many short series (one global model): a series too short for a test window is skipped, one too
short for a training window is only tested; ``metrics.json -> data`` counts both and
``warnings`` says so (:func:`training.windowing.partition_series`). Only when no series can
give a training window does training fail.

Series of very different scales (a global model whose series' MASE scales differ more than
``MAX_SCALE_SPREAD``): per-series scaling. The model scales each window by its own statistics
inside the graph (:func:`training.models.build_forecaster`), the manifest's normalisation only
divides by one global scale (mean 0, so float32 keeps the small series' digits), and every
training window's error is weighted by one over its series' MASE scale: the loss is the
training windows' MASE. The runtime contract does not change: raw window in, raw forecast out.
"""

from __future__ import annotations

import dataclasses
import json
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
from streamedge.training.export import MAX_MAE_GROWTH, error_gate
from streamedge.training.forecast_origins import (
    MIN_TRAINING_WINDOWS,
    fit_to_history,
    origin_split,
    per_origin,
    shortest_fit,
)
from streamedge.training.metrics import forecast_metrics, seasonal_naive_forecast, seasonal_naive_scale
from streamedge.training.models import build_forecaster, fit, scale_correction, seed_everything
from streamedge.training.report import plot_forecasts, plot_learning_curves, write_index
from streamedge.training.seasonal_lags import BASE_DIFFS, CORRECTION_SCALES, default_recent
from streamedge.training.windowing import Normaliser, make_windows, partition_series

# Learned candidates of ``--model auto``, in the order they are trained.
CANDIDATES: Final = ("lstm", "linear")
# Test origins of ``streamedge train forecaster`` unless told otherwise (issue 26: at least 3).
DEFAULT_ORIGINS: Final = 3

__all__ = ["CANDIDATES", "DEFAULT_ORIGINS", "MAX_MAE_GROWTH", "MAX_SCALE_SPREAD", "choose_correction_scale",
           "default_config", "default_recent", "default_window", "seasonal_naive_verdict", "train_forecaster",
           "validation_error"]

_log = logging.getLogger(__name__)
_REPRESENTATIVE: Final = 200
# Int8 calibration margin beyond the history's range, as a share of that range.
_HEADROOM: Final = 0.25
# Series whose MASE scales differ more than this share one normalisation badly (M1: 10^8): above
# it a global model scales every window by its own statistics (per-series scaling).
MAX_SCALE_SPREAD: Final = 100.0
# Smallest validation error in the manifest, as a share of the mean feature std (see validation_error).
_MIN_ERROR: Final = 1e-6


def default_window(season: int, horizon: int, recent: int = 0) -> int:
    """Three seasons of input, at least two horizons and 8 readings.

    In seasonal-lag mode (``recent > 0``, long seasons): two seasons, so the head sees the
    forecast hours one and two seasons back (and at least ``recent + season``).
    """
    if recent:
        return max(2 * season, recent + season)
    return max(3 * season, 2 * horizon, 8)


def default_config(horizon: int, season: int, window: int | None = None, recent: int | None = None,
                   **fields: Any) -> ForecasterConfig:
    """The configuration ``streamedge train forecaster --horizon H --season M`` trains with.

    ``recent`` defaults to :func:`default_recent` and ``window`` to :func:`default_window`. With
    the seasonal-lag input (``recent > 0``) the base also adds the mean of the last
    ``BASE_DIFFS`` seasonal differences and the correction is scaled on validation by one of
    ``CORRECTION_SCALES`` (docs/training.md, "Long seasons"); the classic input keeps seasonal
    naive as its base and keeps the trained correction only where it beats the base on
    validation (scales 0 and 1), so what ships never loses to seasonal naive there. Both learned
    candidates are trained (``model="auto"``) and scored on ``DEFAULT_ORIGINS`` test origins.
    ``fields`` override any of it.
    """
    recent = default_recent(season, horizon) if recent is None else recent
    window = default_window(season, horizon, recent) if window is None else window
    lag_defaults: dict[str, Any] = ({"base_diffs": min(BASE_DIFFS, recent), "correction_scales": CORRECTION_SCALES}
                                    if recent else {"correction_scales": (0.0, 1.0)})
    return ForecasterConfig(**{"window": window, "horizon": horizon, "season": season, "recent": recent,
                               "model": "auto", "origins": DEFAULT_ORIGINS, **lag_defaults, **fields})


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
                f">= {naive_mase:.3f}; seasonal naive is at least as good here"
                for name, beats in verdict.items() if not beats]
    return verdict, warnings


def validation_error(residuals: npt.ArrayLike, feature_std: npt.ArrayLike) -> dict[str, float]:
    """The manifest's ``validation_error`` (original units): ``mae`` and ``residual_std`` of the
    validation residuals, each at least ``1e-6`` of the mean feature std.

    A constant series forecasts itself exactly (both 0), and the manifest needs positive spreads
    for the anomaly detector's scales; the floor makes any departure from the constant an alarm.
    """
    errors = np.asarray(residuals, dtype=np.float64)
    floor = _MIN_ERROR * float(np.mean(np.asarray(feature_std, dtype=np.float64)))
    return {"mae": max(float(np.mean(np.abs(errors))), floor), "residual_std": max(float(np.std(errors)), floor)}


def _too_short(data: SeriesData, config: ForecasterConfig, fitted: bool) -> str:
    """Why no series gives a training window, in the file's own lengths, and what would fit."""
    w, h, origins = config.window, config.horizon, config.origins
    need = w + (origins + 1) * h
    test = f"{h}" if origins == 1 else f"{origins} x {h}"
    why = f"needs at least {need} (one training window of {w + h} plus {test} held-out test points)"
    if len(data.series) == 1:
        text = f"series {data.ids[0]!r} has {len(data.series[0])} points; window {w} + horizon {h} {why}"
    else:
        text = f"none of the {len(data.series)} series has {need} points: window {w} + horizon {h} {why}"
    if fitted:
        return (f"{text}; no shorter window fits either: horizon {h} and season {config.season} need at least "
                f"{shortest_fit(config)} points (window {config.season + 1}, one test origin, "
                f"{MIN_TRAINING_WINDOWS} training windows): pass a shorter --horizon or --season")
    return f"{text}; use a shorter --window or fewer --origins"


def choose_correction_scale(model: Any, scales: tuple[float, ...], x_val: npt.NDArray[np.float32],
                            y_val: npt.NDArray[np.float32], weights: npt.NDArray[np.float32] | None = None
                            ) -> dict[str, Any]:
    """Scale the trained correction head by the factor of ``scales`` with the lowest validation MAE.

    The forecast is ``base + correction`` with a linear head, so ``base + f * correction`` for
    every factor ``f`` follows from two predictions: with the trained head and with the head
    at zero (the base). Ties go to the smaller factor; 0 ships the base alone (a fallback to
    seasonal naive, or to seasonal naive plus the recent seasonal change). ``weights`` weigh each
    window's error as in training (per-series scaling). Empty ``scales`` keeps the head as trained.

    Returns:
        ``{"scale", "candidates", "validation_mae"}`` (MAE per candidate and for the trained
        correction, factor 1, in normalised units).
    """
    if not scales:
        return {"scale": 1.0, "candidates": [], "validation_mae": {}}
    dense = model.get_layer("correction")
    trained_weights = dense.get_weights()
    trained = np.asarray(model.predict(x_val, verbose=0), np.float64)
    scale_correction(model, 0.0)
    base = np.asarray(model.predict(x_val, verbose=0), np.float64)
    dense.set_weights(trained_weights)
    w = np.ones(len(x_val)) if weights is None else np.asarray(weights, np.float64)
    target = np.asarray(y_val, np.float64).reshape(len(y_val), -1)
    # the trained correction (1) is always scored, a candidate or not, so the report shows what it was worth
    errors = {f: float(np.average(np.abs(base + f * (trained - base) - target).mean(axis=1), weights=w))
              for f in sorted(set(scales) | {1.0})}
    candidates = sorted(set(scales))
    best = min(candidates, key=lambda f: (errors[f], f))
    if best != 1.0:
        scale_correction(model, best)
    return {"scale": best, "candidates": candidates, "validation_mae": {str(f): e for f, e in errors.items()}}


def _weighted_mae(predicted: npt.ArrayLike, target: npt.ArrayLike, weights: npt.ArrayLike | None) -> float:
    """Mean absolute error per window (flattened), averaged with the windows' weights."""
    t = np.asarray(target, np.float64)
    t = t.reshape(len(t), -1)
    p = np.asarray(predicted, np.float64).reshape(len(t), -1)
    return float(np.average(np.abs(p - t).mean(axis=1), weights=weights))


def _choose_family(config: ForecasterConfig, n_features: int, train: tuple[npt.NDArray[np.float32], ...],
                   val: tuple[npt.NDArray[np.float32], ...], progress: bool
                   ) -> tuple[ForecasterConfig, Any, dict[str, list[float]], dict[str, Any], dict[str, Any]]:
    """Train each learned candidate; keep the one with the lowest validation MAE, never worse than seasonal naive.

    The validation windows are the latest windows of every training series: forecast origins one
    reading apart, after every training target. Each candidate's correction is first scaled on
    them (:func:`choose_correction_scale`; 0 leaves the base). When the kept model still loses
    to seasonal naive there and its base is seasonal naive (the classic input, the linear
    model), its correction is zeroed: the seasonal base ships, and the report says so. Ties go
    to the linear model (smaller, faster).

    Returns:
        ``(config with the model kept, model, history, correction, {"report", "warnings"})``.
    """
    x_val, y_val = val[0], val[1]
    weights = val[2] if len(val) > 2 else None
    naive_mae = _weighted_mae(seasonal_naive_forecast(x_val, config.horizon, config.season), y_val, weights)
    kinds = CANDIDATES if config.model == "auto" else (config.model,)
    fitted: dict[str, tuple[ForecasterConfig, Any, dict[str, list[float]], dict[str, Any], float]] = {}
    for kind in kinds:
        candidate = dataclasses.replace(config, model=kind)
        seed_everything(config.seed)
        model = build_forecaster(n_features, candidate)
        history = fit(model, train, val, candidate.epochs, min(candidate.batch_size, len(train[0])), candidate.patience,
                      progress)
        correction = choose_correction_scale(model, candidate.correction_scales, x_val, y_val, weights)
        fitted[kind] = (candidate, model, history, correction,
                        _weighted_mae(model.predict(x_val, verbose=0), y_val, weights))
    best = min(kinds, key=lambda k: (fitted[k][4], k != "linear"))
    chosen, model, history, correction, mae = fitted[best]
    warnings: list[str] = []
    if mae > naive_mae and (best == "linear" or not chosen.recent):
        scale_correction(model, 0.0)
        correction = {**correction, "scale": 0.0}
        mae = naive_mae
    elif mae > naive_mae:
        warnings.append(f"the {best} model loses to seasonal naive on validation (MAE {mae:.4g} > {naive_mae:.4g}, "
                        "normalised); its seasonal-lag base is not seasonal naive, so it cannot fall back to it")
    ships = "seasonal base" if correction["scale"] == 0.0 else best
    if ships == "seasonal base":
        why = (f"the {best} correction did not beat its base on validation, so the base ships "
               f"(the {best} model with its correction at 0)")
    else:
        why = f"lowest validation MAE of {list(kinds)}"
    for warning in warnings:
        _log.warning("%s", warning)
    _log.info("forecaster family: %s ships (%s)", ships, why)
    report = {
        "candidates": {k: {"validation_mae": v[4], "correction_scale": v[3]["scale"], "epochs_run": len(v[2]["loss"])}
                       for k, v in fitted.items()},
        "seasonal_naive_validation_mae": naive_mae, "validation_mae": mae, "validation_windows": len(x_val),
        "chosen": best, "ships": ships, "why": why,
    }
    return chosen, model, history, correction, {"report": report, "warnings": warnings}


def _scale_spread(scale: npt.NDArray[np.float64]) -> float:
    """Largest over smallest per-series MASE scale (1.0 for one series or zero scales)."""
    values = scale.reshape(len(scale), -1).max(axis=1)
    positive = values[values > 0]
    return float(positive.max() / positive.min()) if len(positive) > 1 else 1.0


def _windows(
    histories: list[npt.NDArray[np.float32]], config: ForecasterConfig, weights: list[float] | None = None
) -> tuple[npt.NDArray[np.float32], ...]:
    """Training and validation windows of every history, and each window's loss weight.

    ``weights`` (one per history, default 1) is repeated over that history's windows and the
    training weights rescaled to mean 1 (validation by the same factor).

    Returns:
        ``(x_train, y_train, x_val, y_val, w_train, w_val)``; ``y`` flattened step-major.
    """
    xs_train, ys_train, xs_val, ys_val, ws_train, ws_val = [], [], [], [], [], []
    for k, history in enumerate(histories):
        weight = 1.0 if weights is None else weights[k]
        x, y = make_windows(history, config.window, config.horizon)
        n_val = max(1, round(config.val_fraction * len(x)))
        n_train = len(x) - n_val - (config.horizon - 1)
        xs_val.append(x[-n_val:])
        ys_val.append(y[-n_val:])
        ws_val.append(np.full(n_val, weight))
        if n_train > 0:
            xs_train.append(x[:n_train])
            ys_train.append(y[:n_train])
            ws_train.append(np.full(n_train, weight))
    if not xs_train:
        raise DataError("too little history for both training and validation windows; "
                        f"use a shorter --window (now {config.window}) or more data")
    flat = [np.concatenate(a) for a in (xs_train, ys_train, xs_val, ys_val)]
    w_train, w_val = np.concatenate(ws_train), np.concatenate(ws_val)
    norm = float(w_train.mean())
    return (flat[0], flat[1].reshape(len(flat[1]), -1), flat[2], flat[3].reshape(len(flat[3]), -1),
            (w_train / norm).astype(np.float32), (w_val / norm).astype(np.float32))


def _series_weights(scale: npt.NDArray[np.float64], std: npt.NDArray[np.float64]) -> list[float]:
    """One over each series' MASE scale in normalised units (mean over features), floored.

    A constant history (scale 0) gets the weight of a series at a thousandth of the median scale.
    """
    per_series = (scale.reshape(len(scale), -1) / std.reshape(1, -1)).mean(axis=1)
    positive = per_series[per_series > 0]
    floor = 1e-3 * float(np.median(positive)) if len(positive) else 1.0
    return [1.0 / max(float(v), floor) for v in per_series]


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
    fit_window: bool = False,
) -> dict[str, Any]:
    """Load, train, test on the last ``origins * horizon`` points of each series, export every variant.

    Args:
        data_path: CSV/TSV file (wide, or long with ``id_column``), or already loaded series
            (e.g. from :func:`training.kafka_source.replay_topic`).
        out: output folder.
        config: hyperparameters (window, horizon, season, ...). ``config.per_series_scaling``
            ``None`` turns per-series scaling on when the series' MASE scales differ more than
            ``MAX_SCALE_SPREAD``; ``True``/``False`` force it. The manifest's hyperparameters
            record the decision taken.
        columns: feature columns; default every numeric column.
        id_column: series id column for long format (one global model across series).
        name: model name; default ``<file stem>-<model>`` (``forecaster`` for loaded series).
        progress: show progress bars.
        fit_window: the window and origins are defaults: shorten them to fit a short history
            (:func:`training.forecast_origins.fit_to_history`) instead of refusing it.

    Returns:
        The ``metrics.json`` content.

    Raises:
        DataError: unreadable data, or no series of at least ``window + (origins + 1) * horizon`` points.
    """
    data = data_path if isinstance(data_path, SeriesData) else load_table(data_path, columns, id_column)
    stem = "forecaster" if isinstance(data_path, SeriesData) else Path(data_path).stem
    warnings: list[str] = []
    if fit_window:
        config, warnings = fit_to_history([len(s) for s in data.series], config)
    w, h, season, origins = config.window, config.horizon, config.season, config.origins
    # the test blocks before the last count as history for partition_series' length rules
    extra_test = (origins - 1) * h
    trained, test_only, skipped = partition_series([len(s) - extra_test for s in data.series], w, h, season)
    if not trained:
        raise DataError(_too_short(data, config, fit_window))
    if skipped:
        warnings.append(f"{len(skipped)} of {len(data.series)} series skipped: fewer than {w + origins * h} points "
                        f"(window {w} + horizon {h}) or a history of at most season {season}")
    if test_only:
        warnings.append(f"{len(test_only)} of {len(data.series)} series only tested: fewer than {w + (origins + 1) * h} "
                        "points, too short for a training window")
    for warning in warnings:
        _log.warning("%s", warning)
    evaluated = sorted(trained + test_only)
    ids = [data.ids[i] for i in evaluated]
    histories, contexts, actual = origin_split([np.asarray(data.series[i], np.float32) for i in evaluated],
                                               w, h, origins)
    n_feat = len(data.features)
    scale = np.array([[[seasonal_naive_scale(hst[:, f], season) for f in range(n_feat)]] for hst in histories])
    scale_all = np.tile(scale, (origins, 1, 1))  # one row per test window, origin-major as contexts
    spread = _scale_spread(scale)
    scaled = spread > MAX_SCALE_SPREAD if config.per_series_scaling is None else config.per_series_scaling
    config = dataclasses.replace(config, per_series_scaling=bool(scaled))
    if scaled:
        _log.info("series scales (in-sample seasonal-naive MAE) differ %.0fx: per-series scaling", spread)
    elif spread > MAX_SCALE_SPREAD:
        warnings.append(f"series scales (in-sample seasonal-naive MAE) differ {spread:.0f}x; one normalisation "
                        "serves every series, so the smallest are forecast at the resolution of the largest: "
                        "train with per-series scaling, or train series of very different scales separately")
        _log.warning("%s", warnings[-1])
    trained_pos = [evaluated.index(i) for i in trained]
    normaliser = (Normaliser.fit_scale if scaled else Normaliser.fit)(np.concatenate(histories))
    weights = _series_weights(scale[trained_pos], normaliser.std) if scaled else None
    x_train, y_train, x_val, y_val, w_train, w_val = _windows(
        [normaliser.transform(data.series[i][:-origins * h]) for i in trained], config, weights)
    x_test = normaliser.transform(contexts)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    # Per-series scaling weighs each window by one over its series' scale: the loss is their MASE.
    train, val = ((x_train, y_train, w_train), (x_val, y_val, w_val)) if scaled else ((x_train, y_train), (x_val, y_val))
    config, model, history, correction, family = _choose_family(config, n_feat, train, val, progress)
    fit_seconds = time.perf_counter() - started
    warnings += family["warnings"]
    model.save(out / "model.keras")

    def denorm(outputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return normaliser.inverse(np.asarray(outputs).reshape(len(outputs), h, n_feat))

    def score(outputs: npt.NDArray[np.float32]) -> dict[str, Any]:
        return forecast_metrics(actual, denorm(outputs), scale_all)

    keras_out = np.asarray(model.predict(x_test, verbose=0))
    keras_metrics = score(keras_out)
    naive = seasonal_naive_forecast(contexts, h, season)
    baseline = forecast_metrics(actual, naive, scale_all)
    val_residuals = denorm(np.asarray(model.predict(x_val, verbose=0))) - denorm(y_val)

    representative = _representative(np.concatenate([x_train, x_val]), config.seed)
    results, outputs, keras_ms = export_variants(model, out / "variants", representative, x_test, score,
                                                 error_gate(keras_metrics),
                                                 progress)
    for r in results:
        if not r.passed:
            print(f"parity gate: variant {r.variant} refused: {r.reason}")
    beats, losses = seasonal_naive_verdict({"keras": keras_metrics, **{r.variant: r.metrics for r in results}},
                                           baseline["mase"])
    for warning in losses:
        _log.warning("%s", warning)
    origin_figures = {"count": origins, "keras": per_origin(actual, denorm(keras_out), scale, origins),
                      "seasonal_naive": per_origin(actual, naive, scale, origins)}
    manifest, metrics = write_output(
        out, name=name or f"{stem}-{config.model}", task="forecast", results=results,
        keras_metrics=keras_metrics, keras_ms=keras_ms,
        extra_metrics={
            "baselines": {"seasonal_naive": baseline},
            "beats_seasonal_naive": beats,
            "warnings": warnings + losses,
            "history": history,
            "epochs_run": len(history["loss"]),
            "correction": correction,
            "family": family["report"],
            "origins": origin_figures,
            "scaling": {"per_series": bool(scaled), "scale_spread": spread, "max_scale_spread": MAX_SCALE_SPREAD},
            "fit_seconds": fit_seconds,
            "data": {**data.report.to_dict(), "series": len(evaluated), "series_in_file": len(data.series),
                     "series_skipped": len(skipped), "series_test_only": len(test_only),
                     "skipped_ids": [data.ids[i] for i in skipped][:50],
                     "train_windows": len(x_train), "validation_windows": len(x_val),
                     "test_points": int(actual.size), "test_origins": origins, "window": w},
        },
        manifest_fields={
            "input_shape": [-1, w, n_feat], "output_shape": [-1, h * n_feat], "window": w, "horizon": h,
            "features": data.features, "normalisation": normaliser.to_manifest(),
            "reference_stats": reference_stats(np.concatenate(histories), data.features),
            "validation_error": validation_error(val_residuals, normaliser.std),
            # holds the scaling decision, so a retrain or a rebuild of the model makes the same one
            "hyperparameters": config.to_dict(),
        },
        manifest_metrics={"family": {k: family["report"][k] for k in ("chosen", "ships", "why")}},
    )
    report = out / "report"
    report.mkdir(exist_ok=True)
    selected = metrics["selected_variant"]
    metrics["origins"][f"tflite {selected}"] = per_origin(actual, denorm(outputs[selected]), scale, origins)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    last = slice(len(contexts) - len(evaluated), None)  # the plots show the latest origin
    shown = {"keras": denorm(keras_out)[last], "seasonal naive": naive.astype(np.float32)[last]}
    shown[f"tflite {selected}"] = denorm(outputs[selected])[last]
    if selected != "int8":
        shown["tflite int8"] = denorm(outputs["int8"])[last]
    images = [plot_learning_curves(history, report / "learning_curves.png"),
              plot_forecasts(contexts[last], actual[last], shown, ids, data.features, report / "forecast_vs_actual.png")]
    write_index(report, f"{manifest.name}: forecaster report", metrics, images)
    return metrics
