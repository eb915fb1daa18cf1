"""Train the conditional time-series GAN (Wasserstein loss with gradient penalty) and export it.

Why WGAN-GP and not TimeGAN: TimeGAN trains an embedder, a recovery network, a supervisor, a
generator and a discriminator in three phases (about 50,000 iterations in the paper), far past
a few CPU minutes. A Wasserstein critic with a gradient penalty (Gulrajani et al. 2017) gives a
loss that tracks sample quality, needs no balancing tricks between two players, and trained
stably here in a few thousand steps; the generator is convolutional, so it converts to TFLite
with builtin ops only.

Output folder: ``generator.tflite`` + ``generator.json`` (:mod:`streamedge.contracts.generator`,
what ``streamedge simulate --generator`` samples from), ``gan_config.json``, ``checkpoints/``
(generator and critic weights every ``checkpoint_every`` steps; a rerun with the same folder
resumes from the newest), and ``history.json`` (losses per step).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.generator import GENERATOR_FILE, GeneratorSpec, write_generator_spec
from streamedge.contracts.manifest import file_sha256
from streamedge.training.errors import DataError, ExportError
from streamedge.training.gan_data import GanData
from streamedge.training.gan_models import build_critic, build_generator

__all__ = ["GanConfig", "TrainedGan", "export_generator", "sample", "train_gan"]

# Parity gate: the TFLite generator against Keras on the same inputs, in [0, 1] units.
_PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GanConfig:
    """Hyperparameters, saved beside the model.

    Attributes:
        noise_dim: noise channels per time step.
        hidden: convolution width (the critic goes to twice this).
        steps: generator updates; the critic takes ``n_critic`` updates per generator update.
        n_critic: critic updates per generator update (5 in the WGAN-GP paper).
        batch_size: windows per update.
        gp_weight: gradient penalty weight (10 in the paper).
        learning_rate: Adam, beta1 0.5, beta2 0.9, both networks.
        checkpoint_every: steps between checkpoints.
        seed: seeds weights, noise and batch order.
    """

    noise_dim: int = 8
    hidden: int = 32
    steps: int = 1500
    n_critic: int = 5
    batch_size: int = 64
    gp_weight: float = 10.0
    learning_rate: float = 5e-4
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("noise_dim", "hidden", "steps", "n_critic", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.learning_rate < 1 or not 0 <= self.gp_weight < 1e6:
            raise ValueError("learning_rate must be in (0, 1) and gp_weight in [0, 1e6)")


@dataclass
class TrainedGan:
    """A trained generator and what scaling it learned.

    Attributes:
        generator: the Keras generator (contract of :mod:`streamedge.training.gan_models`).
        minimum, maximum: ``(n_features,)`` float64 scaling bounds of the training data.
        data: the training windows.
        history: ``critic_loss``, ``generator_loss``, ``gradient_penalty`` per logged step.
        config: the hyperparameters.
    """

    generator: Any
    minimum: npt.NDArray[np.float64]
    maximum: npt.NDArray[np.float64]
    data: GanData
    history: dict[str, list[float]]
    config: GanConfig


def _bounds(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    low = x.min(axis=(0, 1)).astype(np.float64)
    high = x.max(axis=(0, 1)).astype(np.float64)
    flat = high - low < 1e-9
    return low, np.where(flat, low + 1.0, high)


def train_gan(data: GanData, config: GanConfig, folder: Path | None = None, progress: bool = True) -> TrainedGan:
    """Train on ``data`` (``x`` in the data's units; scaled to [0, 1] per feature here).

    With ``folder``, weights are checkpointed into ``folder/checkpoints`` and a run resumes
    from them. Returns the trained generator.

    Raises:
        DataError: fewer than two windows or non-finite values.
    """
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from streamedge.training.models import seed_everything

    if len(data.x) < 2 or not np.isfinite(data.x).all():
        raise DataError(f"the GAN needs at least 2 finite windows, got {len(data.x)}")
    seed_everything(config.seed)
    _, window, n_features = data.x.shape
    n_classes = len(data.classes)
    low, high = _bounds(data.x)
    scaled = ((data.x - low) / (high - low)).astype(np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[data.labels]
    generator = build_generator(window, n_features, config.noise_dim, n_classes, config.hidden)
    critic = build_critic(window, n_features, n_classes, config.hidden)
    g_opt = keras.optimizers.Adam(config.learning_rate, beta_1=0.5, beta_2=0.9)
    c_opt = keras.optimizers.Adam(config.learning_rate, beta_1=0.5, beta_2=0.9)
    start = _restore(folder, generator, critic)

    def _tiled(cls: Any) -> Any:
        return tf.repeat(cls[:, tf.newaxis, :], window, axis=1)

    def _fake(cls: Any, size: Any) -> Any:
        noise = tf.random.normal((size, window, config.noise_dim))
        flat = generator(tf.concat([noise, _tiled(cls)], axis=2), training=True)
        return tf.reshape(flat, (size, window, n_features))

    def _critic_step(real: Any, cls: Any) -> tuple[Any, Any]:
        size = tf.shape(real)[0]
        with tf.GradientTape() as tape:
            fake = _fake(cls, size)
            eps = tf.random.uniform((size, 1, 1))
            mixed = eps * real + (1 - eps) * fake
            with tf.GradientTape() as inner:
                inner.watch(mixed)
                mixed_score = critic(tf.concat([mixed, _tiled(cls)], axis=2), training=True)
            grads = inner.gradient(mixed_score, mixed)
            norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2]) + 1e-12)
            penalty = tf.reduce_mean(tf.square(norms - 1.0))
            wasserstein = tf.reduce_mean(critic(tf.concat([fake, _tiled(cls)], axis=2), training=True)) - \
                tf.reduce_mean(critic(tf.concat([real, _tiled(cls)], axis=2), training=True))
            loss = wasserstein + config.gp_weight * penalty
        c_opt.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables,
                                  strict=True))
        return wasserstein, penalty

    def _generator_step(cls: Any) -> Any:
        with tf.GradientTape() as tape:
            fake = _fake(cls, tf.shape(cls)[0])
            loss = -tf.reduce_mean(critic(tf.concat([fake, _tiled(cls)], axis=2), training=True))
        g_opt.apply_gradients(zip(tape.gradient(loss, generator.trainable_variables), generator.trainable_variables,
                                  strict=True))
        return loss

    critic_step, generator_step = tf.function(_critic_step), tf.function(_generator_step)
    rng = np.random.default_rng(config.seed)
    batch = min(config.batch_size, len(scaled))
    history: dict[str, list[float]] = {"step": [], "critic_loss": [], "gradient_penalty": [], "generator_loss": []}
    log_every = max(1, config.steps // 100)
    bar = tqdm(range(start, config.steps), desc="gan", unit="step", disable=not progress, initial=start,
               total=config.steps)
    for step in bar:
        for _ in range(config.n_critic):
            pick = rng.integers(0, len(scaled), batch)
            wasserstein, penalty = critic_step(tf.constant(scaled[pick]), tf.constant(onehot[pick]))
        g_loss = generator_step(tf.constant(onehot[rng.integers(0, len(scaled), batch)]))
        if step % log_every == 0 or step == config.steps - 1:
            history["step"].append(step)
            history["critic_loss"].append(float(wasserstein))
            history["gradient_penalty"].append(float(penalty))
            history["generator_loss"].append(float(g_loss))
            bar.set_postfix(w=f"{float(wasserstein):.3f}")
        if folder is not None and ((step + 1) % config.checkpoint_every == 0 or step == config.steps - 1):
            _checkpoint(folder, generator, critic, step + 1)
    return TrainedGan(generator, low, high, data, history, config)


def _restore(folder: Path | None, generator: Any, critic: Any) -> int:
    """Load the newest checkpoint in ``folder/checkpoints``; returns its step (0 when none)."""
    if folder is None:
        return 0
    state = Path(folder) / "checkpoints" / "state.json"
    if not state.is_file():
        return 0
    try:
        step = int(json.loads(state.read_text())["step"])
        generator.load_weights(str(state.parent / "generator.weights.h5"))
        critic.load_weights(str(state.parent / "critic.weights.h5"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot resume from {state.parent}: {exc}") from exc
    return step


def _checkpoint(folder: Path, generator: Any, critic: Any, step: int) -> None:
    path = Path(folder) / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    generator.save_weights(str(path / "generator.weights.h5"))
    critic.save_weights(str(path / "critic.weights.h5"))
    (path / "state.json").write_text(json.dumps({"step": step}))


def sample(trained: TrainedGan, labels: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.float32]:
    """Keras samples, one per label: ``(len(labels), window, n_features)`` float32 in the data's units."""
    spec = _spec(trained, "0" * 64)
    noise = np.random.default_rng(seed).standard_normal((len(labels), spec.window, spec.noise_dim)).astype(np.float32)
    out = np.asarray(trained.generator.predict(spec.model_input(noise, labels), batch_size=256, verbose=0))
    return spec.denormalise(out).astype(np.float32)


def _spec(trained: TrainedGan, sha256: str) -> GeneratorSpec:
    _, window, n_features = trained.data.x.shape
    return GeneratorSpec(window=int(window), n_features=int(n_features), noise_dim=trained.config.noise_dim,
                         classes=list(trained.data.classes), features=list(trained.data.features),
                         minimum=[float(v) for v in trained.minimum], maximum=[float(v) for v in trained.maximum],
                         sha256=sha256)


def export_generator(trained: TrainedGan, folder: Path) -> dict[str, Any]:
    """Write ``generator.tflite`` (float32), ``generator.json`` and ``gan_config.json`` into
    ``folder`` after the parity gate: TFLite and Keras outputs on 256 inputs differ by at most
    1e-4 (in [0, 1] units). Returns the parity figures.

    Raises:
        ExportError: conversion failed or the parity gate refused the model.
    """
    from streamedge.contracts.runner import TFLiteRunner
    from streamedge.training.export import convert

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = _spec(trained, "0" * 64)
    rng = np.random.default_rng(trained.config.seed + 1)
    labels = rng.integers(0, probe.n_classes, 256)
    inputs = probe.model_input(rng.standard_normal((256, probe.window, probe.noise_dim)).astype(np.float32), labels)
    model_path = folder / GENERATOR_FILE
    model_path.write_bytes(convert(trained.generator, "float32", inputs[:8]))
    keras_out = np.asarray(trained.generator.predict(inputs, verbose=0))
    tflite_out = TFLiteRunner(model_path).run(inputs)
    max_abs = float(np.max(np.abs(keras_out - tflite_out)))
    if not max_abs <= _PARITY_TOLERANCE:
        model_path.unlink()
        raise ExportError(f"generator parity refused: TFLite differs from Keras by {max_abs:.3g} "
                          f"(tolerance {_PARITY_TOLERANCE})")
    write_generator_spec(_spec(trained, file_sha256(model_path)), folder)
    (folder / "gan_config.json").write_text(json.dumps(asdict(trained.config), indent=2))
    (folder / "history.json").write_text(json.dumps(trained.history))
    return {"max_abs_diff": max_abs, "tolerance": _PARITY_TOLERANCE, "windows": 256, "parity": "passed",
            "size_bytes": model_path.stat().st_size}
