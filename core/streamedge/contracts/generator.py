"""The synthetic-data generator artefact: a TFLite generator and the JSON spec beside it.

A generator folder holds ``generator.tflite`` and ``generator.json``. The trainer
(``streamedge train gan``) writes it; the load generator (``streamedge simulate --generator``)
reads it with the shared TFLite runner only, so sampling needs no TensorFlow.

Model contract: input ``(batch, window, noise_dim + n_classes)`` float32, i.e. standard normal
noise per time step with the class one-hot repeated at every step; output
``(batch, window * n_features)`` float32 in [0, 1] (min-max scaled, row-major over time then
feature). De-normalise with :meth:`GeneratorSpec.denormalise`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamedge.contracts.manifest import file_sha256
from streamedge.errors import ManifestError, VerificationError

__all__ = ["GENERATOR_FILE", "SPEC_FILE", "GeneratorSpec", "read_generator_spec", "write_generator_spec"]

GENERATOR_FILE: Final = "generator.tflite"
SPEC_FILE: Final = "generator.json"
_MAX_DIM: Final = 4096


@dataclass(frozen=True)
class GeneratorSpec:
    """What a consumer needs to sample from a generator.

    Attributes:
        window: samples per generated window.
        n_features: channels per sample.
        noise_dim: noise channels per time step.
        classes: condition labels, in one-hot order (at least one).
        features: channel names, ``n_features`` of them.
        minimum, maximum: per-feature scaling bounds learned on the training data
            (``maximum > minimum``).
        sha256: of ``generator.tflite``.
    """

    window: int
    n_features: int
    noise_dim: int
    classes: list[str]
    features: list[str]
    minimum: list[float]
    maximum: list[float]
    sha256: str

    def __post_init__(self) -> None:
        for name in ("window", "n_features", "noise_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_DIM:
                raise ManifestError(f"generator spec: {name} must be an integer in [1, {_MAX_DIM}], got {value!r}")
        if not self.classes or not all(isinstance(c, str) for c in self.classes) or len(self.classes) > _MAX_DIM:
            raise ManifestError("generator spec: classes must be a non-empty list of strings")
        if len(self.features) != self.n_features or not all(isinstance(f, str) for f in self.features):
            raise ManifestError(f"generator spec: features must name {self.n_features} channels")
        for name in ("minimum", "maximum"):
            bounds = getattr(self, name)
            if (not isinstance(bounds, list) or len(bounds) != self.n_features
                    or not all(isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
                               for b in bounds)):
                raise ManifestError(f"generator spec: {name} must be {self.n_features} finite numbers")
        if not all(hi > lo for lo, hi in zip(self.minimum, self.maximum, strict=True)):
            raise ManifestError("generator spec: every maximum must exceed its minimum")
        if not isinstance(self.sha256, str) or len(self.sha256) != 64:
            raise ManifestError("generator spec: sha256 must be 64 hex characters")

    @property
    def n_classes(self) -> int:
        """Number of condition classes."""
        return len(self.classes)

    def model_input(self, noise: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Noise ``(batch, window, noise_dim)`` and class indices ``(batch,)`` -> the model's input
        ``(batch, window, noise_dim + n_classes)`` float32."""
        onehot = np.eye(self.n_classes, dtype=np.float32)[labels]
        tiled = np.repeat(onehot[:, np.newaxis, :], self.window, axis=1)
        return np.concatenate([noise.astype(np.float32), tiled], axis=2)

    def denormalise(self, output: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Model output ``(batch, window * n_features)`` -> ``(batch, window, n_features)`` float64
        in the data's units."""
        scaled = np.asarray(output, dtype=np.float64).reshape(-1, self.window, self.n_features)
        low = np.asarray(self.minimum, dtype=np.float64)
        result: npt.NDArray[np.float64] = scaled * (np.asarray(self.maximum, dtype=np.float64) - low) + low
        return result


def write_generator_spec(spec: GeneratorSpec, folder: Path) -> Path:
    """Write ``generator.json`` into ``folder``; returns its path."""
    path = Path(folder) / SPEC_FILE
    path.write_text(json.dumps(asdict(spec), indent=2))
    return path


def read_generator_spec(folder: Path) -> GeneratorSpec:
    """Read and check ``generator.json`` and the sha256 of ``generator.tflite`` in ``folder``.

    Raises:
        ManifestError: the spec is missing, not JSON or inconsistent.
        VerificationError: the model file is missing or its sha256 differs.
    """
    path = Path(folder) / SPEC_FILE
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read generator spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    try:
        spec = GeneratorSpec(**data)
    except TypeError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    model = Path(folder) / GENERATOR_FILE
    if not model.is_file():
        raise VerificationError(f"generator model {model} is missing")
    if file_sha256(model) != spec.sha256:
        raise VerificationError(f"{model}: sha256 differs from {path}")
    return spec
