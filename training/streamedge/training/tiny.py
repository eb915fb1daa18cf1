"""Tiny real models for tests and benchmarks of the edge agent and the stream processor.

Builds small Keras models on synthetic data, converts them to float32 TFLite and writes a
signed model folder (``model.tflite`` + ``manifest.json``), so other areas can test and measure
against a real ``.tflite`` in seconds. Real models come from :mod:`training.classify` and
:mod:`training.forecast`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamedge.contracts.manifest import ModelManifest, file_sha256, write_manifest
from streamedge.contracts.signing import generate_keypair, load_private_key, sign_manifest

__all__ = ["TINY_WINDOW", "TinyModels", "build_tiny_model", "build_tiny_models"]

TINY_WINDOW = 8
_HORIZON = 2
_CLASSES = ["calm", "shaky"]


@dataclass(frozen=True)
class TinyModels:
    """Signed tiny model folders and the key pair that signed them."""

    forecaster: Path
    classifier: Path
    signing_key: Path
    public_key: Path


def _series(n: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float32)
    series: npt.NDArray[np.float32] = (10.0 + 3.0 * np.sin(2 * np.pi * t / 16) + rng.normal(0, 0.2, n)).astype(np.float32)
    return series


def build_tiny_model(kind: Literal["forecaster", "classifier"], out_dir: Path, signing_key: Path,
                     name: str | None = None, seed: int = 0, keras_file: Path | None = None) -> Path:
    """Train, convert and sign one tiny model into ``out_dir``; returns ``out_dir``.

    The forecaster maps a window of 8 readings (1 feature) to the next 2; the classifier maps
    a window of 8 to ``calm`` (smooth sine) or ``shaky`` (sine plus strong noise). ``keras_file``:
    also save the trained Keras model there (outside the signed folder), for a baseline that
    runs the same model under Keras.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "forecaster":
        series = _series(600, seed)
        mean, std = float(series.mean()), float(series.std())
        z = (series - mean) / std
        n = len(z) - TINY_WINDOW - _HORIZON + 1
        x = np.stack([z[i : i + TINY_WINDOW] for i in range(n)])[..., None]
        y = np.stack([z[i + TINY_WINDOW : i + TINY_WINDOW + _HORIZON] for i in range(n)])
        model = tf.keras.Sequential([tf.keras.Input((TINY_WINDOW, 1)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(_HORIZON)])
        model.compile("adam", "mse")
        model.fit(x, y, epochs=30, batch_size=32, verbose=0)
        residual = (model.predict(x, verbose=0) - y) * std
        extra: dict[str, object] = {
            "horizon": _HORIZON, "output_shape": [-1, _HORIZON], "class_labels": [],
            "validation_error": {"mae": float(np.abs(residual).mean()), "residual_std": float(residual.std())},
        }
    else:
        rng = np.random.default_rng(seed)
        calm = np.stack([_series(TINY_WINDOW, seed + i) for i in range(200)])
        shaky = calm + rng.normal(0, 3.0, calm.shape).astype(np.float32)
        raw = np.concatenate([calm, shaky])
        mean, std = float(raw.mean()), float(raw.std())
        x = ((raw - mean) / std)[..., None]
        y = np.array([0] * len(calm) + [1] * len(shaky))
        model = tf.keras.Sequential([tf.keras.Input((TINY_WINDOW, 1)), tf.keras.layers.Conv1D(8, 3, activation="relu"),
                                     tf.keras.layers.GlobalAveragePooling1D(), tf.keras.layers.Dense(2, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=30, batch_size=32, verbose=0)
        extra = {"horizon": 0, "output_shape": [-1, len(_CLASSES)], "class_labels": list(_CLASSES), "validation_error": {}}
    if keras_file is not None:
        model.save(keras_file)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    model_path = out_dir / "model.tflite"
    model_path.write_bytes(converter.convert())
    manifest = ModelManifest(
        name=name or f"tiny-{kind}",
        version=1,
        task="forecast" if kind == "forecaster" else "classify",
        input_shape=[-1, TINY_WINDOW, 1],
        input_dtype="float32",
        window=TINY_WINDOW,
        features=["value"],
        normalisation={"mean": [mean], "std": [std]},
        quantization="float32",
        model_file=model_path.name,
        sha256=file_sha256(model_path),
        reference_stats={"mean": [mean], "std": [std]},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,  # type: ignore[arg-type]
    )
    write_manifest(sign_manifest(manifest, load_private_key(signing_key)), out_dir)
    return out_dir


def build_tiny_models(root: Path) -> TinyModels:
    """A key pair plus one tiny forecaster and one tiny classifier under ``root``."""
    signing_key, public_key = root / "keys" / "signing.pem", root / "keys" / "public.pem"
    generate_keypair(signing_key, public_key)
    return TinyModels(
        forecaster=build_tiny_model("forecaster", root / "forecaster", signing_key),
        classifier=build_tiny_model("classifier", root / "classifier", signing_key),
        signing_key=signing_key,
        public_key=public_key,
    )
