"""Keras model builders and the shared fit loop (TensorFlow is imported inside functions).

Forecaster output layout: ``(batch, horizon * n_features)``, step-major (index
``h * n_features + f``), normalised units, as the manifest's ``output_shape`` says.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.training.config import ClassifierConfig, ForecasterConfig
from streamedge.training.seasonal_lags import SeasonalLagLayout

__all__ = ["best_epoch", "build_classifier", "build_forecaster", "fit", "seed_everything"]


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
    """Unrolled LSTM that corrects the seasonal-naive forecast (seasonal-lag mode when ``config.recent``).

    ``LSTM(unroll=True)`` converts to builtin TFLite ops with a dynamic batch (Keras 3's
    while-loop LSTM needs Flex ops). Input ``(batch, window, n_features)``, output
    ``(batch, horizon * n_features)``, both normalised. ``unroll=False`` and a fixed
    ``batch_size`` exist only for :mod:`training.lstm_conversions`, which compares the ways out.
    """
    import keras
    from keras import layers

    window, season, horizon = config.window, config.season, config.horizon
    inputs = keras.Input((window, n_features), batch_size=batch_size, name="window")
    if config.recent:
        return _seasonal_lag_forecaster(inputs, n_features, config, unroll)
    recent = layers.Cropping1D((season, 0))(inputs)
    lagged = layers.Cropping1D((0, season))(inputs)
    seasonal_diff = layers.Subtract()([recent, lagged])
    features = layers.Concatenate(axis=-1)([recent, seasonal_diff])
    hidden = layers.LSTM(config.units, unroll=unroll)(features)
    correction = layers.Dense(horizon * n_features, name="correction")(hidden)
    last_season = layers.Cropping1D((window - season, 0))(inputs)
    repeats = -(-horizon // season)
    tiled = last_season if repeats == 1 else layers.Concatenate(axis=1)([last_season] * repeats)
    naive = layers.Cropping1D((0, repeats * season - horizon))(tiled) if repeats * season > horizon else tiled
    outputs = layers.Add(name="forecast")([layers.Flatten()(naive), correction])
    model = keras.Model(inputs, outputs, name="lstm_forecaster")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    return model


def _seasonal_lag_forecaster(inputs: Any, n_features: int, config: ForecasterConfig, unroll: bool) -> Any:
    """The long-season variant: LSTM over ``recent`` readings, head over the seasonal lag blocks.

    Crops exactly the slices :func:`training.seasonal_lags.seasonal_lag_inputs` describes; the
    forecast is lag block 1 (seasonal naive) plus a dense correction of the LSTM state and the
    differences between every further lag block and lag block 1.
    """
    import keras
    from keras import layers

    layout = SeasonalLagLayout(config.window, config.season, config.horizon, config.recent)
    w, r, s, h = layout.window, layout.recent, layout.season, layout.horizon
    recent = layers.Cropping1D((w - r, 0), name="recent")(inputs)
    partner = layers.Cropping1D((w - r - s, s), name="recent_season_back")(inputs)
    features = layers.Concatenate(axis=-1)([recent, layers.Subtract()([recent, partner])])
    hidden = layers.LSTM(config.units, unroll=unroll)(features)
    lags = [layers.Flatten()(layers.Cropping1D((layout.lag_start(m), w - layout.lag_start(m) - h), name=f"lag{m}")(inputs))
            for m in range(1, layout.lags + 1)]
    # The head reads only differences (recent state, lag m - lag 1), never levels, so that it
    # stays valid when the level drifts; zero-initialised, training starts at seasonal naive.
    changes = [layers.Subtract()([lag, lags[0]]) for lag in lags[1:]]
    head_in = layers.Concatenate()([hidden, *changes]) if changes else hidden
    correction = layers.Dense(h * n_features, kernel_initializer="zeros", name="correction")(head_in)
    outputs = layers.Add(name="forecast")([lags[0], correction])
    model = keras.Model(inputs, outputs, name="lstm_forecaster")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    return model


def fit(
    model: Any,
    train: tuple[npt.NDArray[Any], npt.NDArray[Any]],
    val: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None,
    epochs: int,
    batch_size: int,
    patience: int,
    progress: bool = True,
    reduce_lr: bool = False,
    min_epochs: int = 0,
) -> dict[str, list[float]]:
    """Fit with early stopping on validation loss (best weights restored); returns the history.

    Early stopping only watches epochs after ``min_epochs``; ``reduce_lr`` halves the learning
    rate on loss plateaus (as FCN does). With ``val=None`` the model trains for exactly
    ``epochs`` epochs (the refit on all training data) and plateaus are judged on training loss.
    """
    import keras
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc=f"training {model.name}", unit="epoch", disable=not progress, leave=False)

    class _Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            bar.update(1)
            if logs:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss")})

    monitor = "val_loss" if val is not None else "loss"
    callbacks: list[Any] = [_Progress()]
    if val is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                                       start_from_epoch=min(min_epochs, max(0, epochs - 1))))
    if reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                           patience=max(5, patience // 3), min_lr=1e-5))
    try:
        history = model.fit(train[0], train[1], validation_data=val, epochs=epochs, batch_size=batch_size,
                            shuffle=True, verbose=0, callbacks=callbacks)
    finally:
        bar.close()
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def best_epoch(history: dict[str, list[float]], min_epochs: int = 0) -> int:
    """1-based epoch with the lowest validation loss at or after ``min_epochs`` (what early stopping kept)."""
    losses = history["val_loss"]
    start = min(min_epochs, len(losses) - 1)
    return start + int(np.argmin(losses[start:])) + 1
