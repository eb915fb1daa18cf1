"""The conditional time-series GAN's networks: a generator and a Wasserstein critic (Keras 3).

Both are convolutional over time. The generator sees per-step noise with the class one-hot
repeated at every step, ``(batch, window, noise_dim + n_classes)``; a dense path over the whole
window gives every step a shared latent code (the window's "shape"), and a stack of dilated
causal-free convolutions (dilations 1, 2, 4, 8: a receptive field of 61 steps) adds local
structure. It returns ``(batch, window * n_features)`` in [0, 1] (sigmoid), the layout of
:mod:`streamedge.contracts.generator`. Only builtin TFLite ops are used, so it converts as is.

The critic sees ``(batch, window, n_features + n_classes)`` (the one-hot again at every step)
and returns one unbounded score per window; it has no batch normalisation, which the gradient
penalty forbids (the penalty is per sample).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_critic", "build_generator"]

_DILATIONS = (1, 2, 4, 8)


def build_generator(window: int, n_features: int, noise_dim: int, n_classes: int, hidden: int) -> Any:
    """The generator: ``(batch, window, noise_dim + n_classes)`` -> ``(batch, window * n_features)``."""
    import keras
    from keras import layers

    inputs = keras.Input((window, noise_dim + n_classes), name="noise_and_class")
    shared = layers.Dense(hidden, activation="relu")(layers.Flatten()(inputs))
    shared = layers.RepeatVector(window)(shared)
    x = layers.Concatenate()([inputs, shared])
    for dilation in _DILATIONS:
        x = layers.Conv1D(hidden, 5, padding="same", dilation_rate=dilation)(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv1D(n_features, 1, activation="sigmoid")(x)
    outputs = layers.Reshape((window * n_features,), name="window_values")(x)
    return keras.Model(inputs, outputs, name="gan_generator")


def build_critic(window: int, n_features: int, n_classes: int, hidden: int) -> Any:
    """The critic: ``(batch, window, n_features + n_classes)`` -> ``(batch, 1)`` scores."""
    import keras
    from keras import layers

    inputs = keras.Input((window, n_features + n_classes), name="window_and_class")
    x = inputs
    for width in (hidden, 2 * hidden, 2 * hidden):
        x = layers.Conv1D(width, 5, strides=2 if window >= 16 else 1, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(1, name="score")(x)
    return keras.Model(inputs, outputs, name="gan_critic")
