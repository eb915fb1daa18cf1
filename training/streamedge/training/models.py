"""Keras model builders and the shared fit loop (TensorFlow is imported inside functions).

Forecaster output layout: ``(batch, horizon * n_features)``, step-major (index
``h * n_features + f``), normalised units, as the manifest's ``output_shape`` says.
"""

from __future__ import annotations

import random
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.training.config import ClassifierConfig, ForecasterConfig
from streamedge.training.seasonal_lags import SeasonalLagLayout

__all__ = ["SCALE_FLOOR", "best_epoch", "build_classifier", "build_forecaster", "fit", "forecast_loss",
           "scale_correction", "seed_everything"]

# Per-series scaling: a window whose mean absolute step is below this (normalised units) is flat.
SCALE_FLOOR: Final = 1e-12


def forecast_loss(config: ForecasterConfig) -> str:
    """The forecaster's training loss: MAE for the seasonal-lag input and under per-series scaling, else MSE.

    Measured (docs/training.md): on ``taylor``'s held-out weeks MAE beat MSE for the seasonal-lag
    model (mean MASE over three weeks 0.876 against 1.006), where a few holiday-shifted windows
    dominate a squared loss; with per-series scaling the weighted MAE is the training windows'
    MASE (M1 yearly 3.35 against 4.82). For the classic input on the short-season series MAE was
    no better than MSE (worse on Airline, elec_equip and lynx over three seeds), so MSE stays.
    """
    return "mae" if config.recent or config.per_series_scaling else "mse"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow (via Keras) and make TensorFlow's ops deterministic, so runs repeat.

    Seeds alone are not enough: multi-threaded CPU kernels (convolution gradients, reductions)
    sum in a varying order, and two fits with one seed in one process drifted apart.
    """
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_classifier(length: int, n_channels: int, n_classes: int, config: ClassifierConfig) -> Any:
    """FCN: conv blocks (Conv1D, batch norm, ReLU), global average pooling, softmax.

    Input ``(batch, length, n_channels)`` float32, output ``(batch, n_classes)`` probabilities.
    """
    import keras
    from keras import layers

    inputs = keras.Input((length, n_channels), name="window")
    x = inputs
    for filters, kernel in zip(config.filters, config.kernels, strict=True):
        x = layers.Conv1D(filters, kernel, padding="same")(x)
        # Momentum 0.9, not Keras' 0.99: a UCR training set is a few mini-batches per epoch, and
        # slow moving statistics leave inference-mode outputs at chance for ~100 epochs.
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="fcn_classifier")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_forecaster(n_features: int, config: ForecasterConfig, unroll: bool = True,
                     batch_size: int | None = None) -> Any:
    """Unrolled LSTM that corrects the seasonal-naive forecast (seasonal-lag mode when ``config.recent``),
    or with ``config.model == "linear"`` a linear map of the window (:func:`_linear_forecast`).

    ``LSTM(unroll=True)`` converts to builtin TFLite ops with a dynamic batch (Keras 3's
    while-loop LSTM needs Flex ops). Input ``(batch, window, n_features)``, output
    ``(batch, horizon * n_features)``, both normalised. The correction layer starts at zero,
    so before training the model *is* seasonal naive. ``unroll=False`` and a fixed
    ``batch_size`` exist only for :mod:`training.lstm_conversions`, which compares the ways out.

    ``config.per_series_scaling`` (``True``; ``None`` counts as off, as :func:`training.forecast.train_forecaster`
    decides it before building): each window is scaled by its own statistics inside the graph (see
    :func:`_window_statistics`) and the forecast scaled back, so series of any scale share one
    model and the file still maps a window to a forecast in the manifest's units.
    """
    import keras
    from keras import layers, ops

    window, per_series_scaling = config.window, bool(config.per_series_scaling)
    inputs = keras.Input((window, n_features), batch_size=batch_size, name="window")
    if per_series_scaling:
        level, scale = _window_statistics(inputs, window)
        # 1 / scale as rsqrt(scale^2): a full-int8 DIV aborts when its quantised denominator
        # rounds to zero (a small series beside large ones), RSQRT does not.
        scaled = ops.multiply(ops.subtract(inputs, level), ops.rsqrt(ops.square(scale)))
    else:
        scaled = inputs
    builders = {"linear": _linear_forecast, "lstm": _seasonal_lag_forecast if config.recent else _classic_forecast}
    build = builders[config.model]
    forecast = build(scaled, n_features, config, unroll)
    if per_series_scaling:
        steps = layers.Reshape((config.horizon, n_features))(forecast)
        forecast = layers.Flatten(name="unscaled_forecast")(ops.add(ops.multiply(steps, scale), level))
    model = keras.Model(inputs, forecast, name=f"{config.model}_forecaster")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=forecast_loss(config))
    return model


def scale_correction(model: Any, factor: float) -> None:
    """Multiply the forecaster's correction head (kernel and bias) by ``factor``; 0 leaves the base alone.

    The head is linear and added to the base, so the forecast becomes ``base + factor * correction``.
    """
    dense = model.get_layer("correction")
    dense.set_weights([np.asarray(w * np.float32(factor), np.float32) for w in dense.get_weights()])


def _window_statistics(inputs: Any, window: int) -> tuple[Any, Any]:
    """Per-window level and scale, ``(batch, 1, n_features)`` each: the last reading, and the mean
    absolute step ``mean |x[t] - x[t-1]|`` over the window, floored at ``SCALE_FLOOR``.

    The scaled window ``(x - level) / scale`` is bounded by ``window - 1`` in absolute value (no
    reading is further from the last than the sum of the steps between them), whatever the scale
    of the series; a constant window scales to zeros.
    """
    from keras import layers, ops

    level = layers.Cropping1D((window - 1, 0), name="window_level")(inputs)
    steps = layers.Subtract()([layers.Cropping1D((1, 0))(inputs), layers.Cropping1D((0, 1))(inputs)])
    scale = ops.maximum(ops.mean(ops.abs(steps), axis=1, keepdims=True), SCALE_FLOOR)
    return level, scale


def _classic_forecast(inputs: Any, n_features: int, config: ForecasterConfig, unroll: bool) -> Any:
    """LSTM over the last ``window - season`` readings and their seasonal differences, plus seasonal naive."""
    from keras import layers

    season, horizon = config.season, config.horizon
    recent = layers.Cropping1D((season, 0))(inputs)
    lagged = layers.Cropping1D((0, season))(inputs)
    seasonal_diff = layers.Subtract()([recent, lagged])
    features = layers.Concatenate(axis=-1)([recent, seasonal_diff])
    hidden = layers.LSTM(config.units, unroll=unroll)(features)
    correction = layers.Dense(horizon * n_features, kernel_initializer="zeros", name="correction")(hidden)
    return layers.Add(name="forecast")([_seasonal_naive(inputs, config), correction])


def _seasonal_naive(inputs: Any, config: ForecasterConfig) -> Any:
    """The window's last season repeated over the horizon, flattened step-major."""
    from keras import layers

    window, season, horizon = config.window, config.season, config.horizon
    last_season = layers.Cropping1D((window - season, 0))(inputs)
    repeats = -(-horizon // season)
    tiled = last_season if repeats == 1 else layers.Concatenate(axis=1)([last_season] * repeats)
    naive = layers.Cropping1D((0, repeats * season - horizon))(tiled) if repeats * season > horizon else tiled
    return layers.Flatten()(naive)


def _linear_forecast(inputs: Any, n_features: int, config: ForecasterConfig, unroll: bool) -> Any:
    """A linear map of the whole window (the NLinear/DLinear family of Zeng et al., AAAI 2023).

    As NLinear, the window is taken relative to its last reading, so a level shift moves the
    forecast with it; one dense layer maps those ``window * n_features`` values to the
    ``horizon * n_features`` outputs, added to seasonal naive. Seasonal naive is itself linear
    in the window, so the whole forecast is one linear function of the window; the dense layer
    (``correction``, zero-initialised) starts the model at seasonal naive, and
    :func:`scale_correction` with 0 returns it there. ``unroll`` is unused (no recurrence).
    """
    from keras import layers, ops

    level = layers.Cropping1D((config.window - 1, 0), name="window_last")(inputs)
    centred = layers.Flatten()(ops.subtract(inputs, level))
    correction = layers.Dense(config.horizon * n_features, kernel_initializer="zeros", name="correction")(centred)
    return layers.Add(name="forecast")([_seasonal_naive(inputs, config), correction])


def _seasonal_lag_forecast(inputs: Any, n_features: int, config: ForecasterConfig, unroll: bool) -> Any:
    """The long-season variant: LSTM over the ``recent`` readings, added to lag block 1 (seasonal naive).

    Crops the slices :func:`training.seasonal_lags.seasonal_lag_inputs` describes. The dense head
    reads the LSTM state only: feeding it the changes ``lag m - lag 1`` as well (the first version)
    scored worse on every held-out ``taylor`` week (docs/training.md).
    """
    from keras import layers

    layout = SeasonalLagLayout(config.window, config.season, config.horizon, config.recent)
    w, r, s, h = layout.window, layout.recent, layout.season, layout.horizon
    recent = layers.Cropping1D((w - r, 0), name="recent")(inputs)
    partner = layers.Cropping1D((w - r - s, s), name="recent_season_back")(inputs)
    features = layers.Concatenate(axis=-1)([recent, layers.Subtract()([recent, partner])])
    hidden = layers.LSTM(config.units, unroll=unroll)(features)
    start = layout.lag_start(1)
    base = layers.Cropping1D((start, w - start - h), name="lag1")(inputs)
    if config.base_diffs:
        base = _add_mean_seasonal_difference(inputs, base, layout, config.base_diffs)
    correction = layers.Dense(h * n_features, kernel_initializer="zeros", name="correction")(hidden)
    return layers.Add(name="forecast")([layers.Flatten()(base), correction])


def _add_mean_seasonal_difference(inputs: Any, lag1: Any, layout: SeasonalLagLayout, diffs: int) -> Any:
    """``lag1`` plus the mean of the window's last ``diffs`` seasonal differences, broadcast over the horizon.

    Summed oldest first with ``Add`` layers, then multiplied by ``1 / diffs``: the order of
    :func:`training.seasonal_lags.seasonal_lag_base`, so the untrained model equals it bit for bit.
    """
    from keras import layers, ops

    w, s = layout.window, layout.season
    changes = [layers.Subtract()([layers.Cropping1D((w - 1 - j, j))(inputs),
                                  layers.Cropping1D((w - 1 - j - s, j + s))(inputs)])
               for j in range(diffs - 1, -1, -1)]
    total = changes[0]
    for change in changes[1:]:
        total = layers.Add()([total, change])
    if diffs > 1:
        total = ops.multiply(total, np.float32(1.0 / diffs))
    return ops.add(lag1, total)


def fit(
    model: Any,
    train: tuple[npt.NDArray[Any], ...],
    val: tuple[npt.NDArray[Any], ...] | None,
    epochs: int,
    batch_size: int,
    patience: int,
    progress: bool = True,
    reduce_lr: bool = False,
    min_epochs: int = 0,
) -> dict[str, list[float]]:
    """Fit with early stopping on validation loss (best weights restored); returns the history.

    ``train`` and ``val`` are ``(x, y)`` or ``(x, y, sample_weight)``. Early stopping only watches
    epochs after ``min_epochs``; ``reduce_lr`` halves the learning rate on loss plateaus (as FCN
    does). With ``val=None`` the model trains for exactly ``epochs`` epochs (the refit on all
    training data) and plateaus are judged on training loss.
    """
    import keras
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc=f"training {model.name}", unit="epoch", disable=not progress, leave=False)

    class _Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            bar.update(1)
            if logs:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss")})

    x, y, weight = _unpack(train)
    monitor = "val_loss" if val is not None else "loss"
    callbacks: list[Any] = [_Progress()]
    if val is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                                       start_from_epoch=min(min_epochs, max(0, epochs - 1))))
    if reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                           patience=max(5, patience // 3), min_lr=1e-5))
    try:
        history = model.fit(x, y, sample_weight=weight, validation_data=val, epochs=epochs,
                            batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    finally:
        bar.close()
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _unpack(data: tuple[npt.NDArray[Any], ...]) -> tuple[Any, Any, Any]:
    """``(x, y)`` or ``(x, y, weight)`` as ``(x, y, weight or None)``."""
    return data[0], data[1], data[2] if len(data) > 2 else None


def best_epoch(history: dict[str, list[float]], min_epochs: int = 0) -> int:
    """1-based epoch with the lowest validation loss at or after ``min_epochs`` (what early stopping kept)."""
    losses = history["val_loss"]
    start = min(min_epochs, len(losses) - 1)
    return start + int(np.argmin(losses[start:])) + 1
