"""The model manifest: the JSON document beside every exported ``.tflite`` file.

Trainer, stream processor and edge agent read and write it only through this module.
A model folder holds ``model.tflite`` (the name is ``manifest.model_file``) and
``manifest.json``. The manifest pins the model file by sha256 and is itself signed
(Ed25519, see :mod:`streamedge.contracts.signing`), so a verified manifest vouches for the model.

Shapes use ``-1`` for the batch dimension: a forecaster takes ``(-1, window, n_features)``
float32 and returns ``(-1, horizon * n_features)``; a classifier returns ``(-1, n_classes)``
probabilities. ``normalisation`` holds per-feature ``mean`` and ``std`` learned on training
data only; runners feed normalised windows and callers de-normalise forecasts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from streamedge.contracts.untrusted import MAX_DEPTH, check_depth, load_json
from streamedge.errors import ManifestError, VerificationError

__all__ = [
    "MANIFEST_FILE",
    "Quantization",
    "Task",
    "ModelManifest",
    "file_sha256",
    "read_manifest",
    "read_verified_model",
    "verify_model_file",
    "write_manifest",
]

MANIFEST_FILE: Final = "manifest.json"
SCHEMA_VERSION: Final = 1
Task = Literal["forecast", "classify"]
Quantization = Literal["float32", "float16", "dynamic", "int8"]
_TASKS: Final = get_args(Task)
_QUANTIZATIONS: Final = get_args(Quantization)
_DTYPES: Final = ("float32", "int8", "uint8")
# A manifest file is read whole; a model-update message (1 MiB) carries one, so none is larger.
MAX_MANIFEST_BYTES: Final = 1024 * 1024
# Free-form fields sit two levels down in a model-update message (update > manifest > field).
_FREE_FORM_DEPTH: Final = MAX_DEPTH - 2


@dataclass(frozen=True)
class ModelManifest:
    """Everything a consumer must know to run, trust and monitor one model version.

    Attributes:
        name: model family name, e.g. ``"airline-lstm"``.
        version: positive integer, increasing per name.
        task: ``"forecast"`` or ``"classify"``.
        input_shape: ``[-1, window, n_features]``.
        input_dtype: dtype of the model's input tensor (``"int8"`` for full-int8 models; the
            runner quantises float32 windows itself).
        output_shape: ``[-1, horizon * n_features]`` or ``[-1, n_classes]``.
        window: input window length in readings.
        horizon: forecast steps (0 for classifiers).
        features: feature names, one per channel.
        normalisation: ``{"mean": [...], "std": [...]}``, one entry per feature.
        class_labels: classifier labels in output order (empty for forecasters).
        quantization: how the ``.tflite`` was converted.
        model_file: file name of the model beside the manifest.
        sha256: hex sha256 of the model file.
        metrics: evaluation figures, Keras and TFLite side by side (free-form JSON object).
        reference_stats: training-data statistics for drift checks (free-form JSON object).
        validation_error: forecast error on the validation split (e.g. ``{"mae": ..,
            "residual_std": ..}``, original units) used to set anomaly bands.
        runtimes: per edge runtime, ``"ok"`` or the load error, so no device discovers it.
        runtime_variants: per runtime (``ai_edge_litert``, ``tflite_runtime``), the variant that
            runtime should run when it is not the default file: ``{"model_file", "sha256",
            "quantization", "input_dtype"}``, the file beside the manifest (see
            :meth:`for_runtime`). Empty in manifests written before it existed, which load and
            verify as they did: an empty field is left out of the signing payload.
        hyperparameters: the frozen training config, as saved by the trainer.
        created_at: ISO-8601 UTC time of export.
        signature: base64 Ed25519 signature of :meth:`signing_payload`, or ``None``.
    """

    name: str
    version: int
    task: Task
    input_shape: list[int]
    input_dtype: str
    output_shape: list[int]
    window: int
    horizon: int
    features: list[str]
    normalisation: dict[str, list[float]]
    quantization: Quantization
    model_file: str
    sha256: str
    class_labels: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reference_stats: dict[str, Any] = field(default_factory=dict)
    validation_error: dict[str, float] = field(default_factory=dict)
    runtimes: dict[str, str] = field(default_factory=dict)
    runtime_variants: dict[str, dict[str, str]] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    signature: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_features(self) -> int:
        """Number of input channels."""
        return len(self.features)

    def residual_std(self) -> float | None:
        """Validation residual standard deviation (original units) for anomaly bands, or None.

        ``validation_error.residual_std`` when saved, else ``rmse``, else ``mae * sqrt(pi / 2)``
        (the standard deviation of zero-mean normal residuals with that mean absolute error).
        Always positive and finite when not None (validated on construction).
        """
        error = self.validation_error
        if "residual_std" in error:
            return float(error["residual_std"])
        if "rmse" in error:
            return float(error["rmse"])
        if "mae" in error:
            return float(error["mae"]) * math.sqrt(math.pi / 2)
        return None

    def for_runtime(self, runtime: str) -> ModelManifest:
        """The manifest as ``runtime`` should run it: its own variant's file, sha256,
        quantisation and input dtype when ``runtime_variants`` names one, else this manifest.

        The view is not signed (its ``signature`` is None); it stands for the signed manifest
        whose ``runtime_variants`` entry pins the variant's sha256.
        """
        variant = self.runtime_variants.get(runtime)
        if variant is None:
            return self
        return self.replace(signature=None, runtime_variants={}, **variant)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)

    def to_json(self) -> bytes:
        """Pretty JSON with sorted keys, as written to ``manifest.json``."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    def signing_payload(self) -> bytes:
        """Canonical bytes that the signature covers: every field except ``signature``."""
        body = self.to_dict()
        body.pop("signature")
        if not body["runtime_variants"]:
            body.pop("runtime_variants")  # manifests signed before the field existed still verify
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    def replace(self, **changes: Any) -> ModelManifest:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Any) -> ModelManifest:
        """Build from parsed JSON; raises :class:`ManifestError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(data.keys() - names)
        if unknown:
            raise ManifestError(f"manifest has unknown field(s): {', '.join(unknown)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ManifestError(f"manifest lacks field(s): {', '.join(missing)}")
        try:
            return cls(**data)
        except (TypeError, OverflowError, RecursionError) as exc:
            raise ManifestError(f"manifest is malformed: {type(exc).__name__}: {exc}") from exc


def _validate(m: ModelManifest) -> None:
    _require(isinstance(m.name, str) and bool(m.name), f"name must be a non-empty string, got {m.name!r}")
    _require(_is_int(m.version) and m.version >= 1, f"version must be a positive integer, got {m.version!r}")
    _require(m.task in _TASKS, f"task must be one of {_TASKS}, got {m.task!r}")
    _require(m.quantization in _QUANTIZATIONS, f"quantization must be one of {_QUANTIZATIONS}, got {m.quantization!r}")
    _require(m.input_dtype in _DTYPES, f"input_dtype must be one of {_DTYPES}, got {m.input_dtype!r}")
    _require(_is_int(m.window) and m.window >= 1, f"window must be a positive integer, got {m.window!r}")
    _require(_is_int(m.horizon) and m.horizon >= 0, f"horizon must be a non-negative integer, got {m.horizon!r}")
    _require(isinstance(m.features, list) and len(m.features) >= 1 and all(isinstance(f, str) for f in m.features),
             "features must be a non-empty list of names")
    expected_in = [-1, m.window, len(m.features)]
    _require(m.input_shape == expected_in, f"input_shape {m.input_shape} does not match [-1, window, n_features] = {expected_in}")
    _require(isinstance(m.output_shape, list) and len(m.output_shape) == 2 and m.output_shape[0] == -1
             and _is_int(m.output_shape[1]) and m.output_shape[1] >= 1, f"output_shape must be [-1, n], got {m.output_shape}")
    if m.task == "forecast":
        _require(m.horizon >= 1, "a forecaster needs horizon >= 1")
        _require(m.output_shape[1] == m.horizon * len(m.features),
                 f"output_shape {m.output_shape} does not match [-1, horizon * n_features]")
    else:
        _require(len(m.class_labels) >= 2, "a classifier needs at least two class_labels")
        _require(m.output_shape[1] == len(m.class_labels),
                 f"output_shape {m.output_shape} does not match [-1, n_classes={len(m.class_labels)}]")
    _require(isinstance(m.normalisation, dict) and set(m.normalisation) == {"mean", "std"},
             "normalisation must hold exactly 'mean' and 'std'")
    for key in ("mean", "std"):
        stats = m.normalisation[key]
        _require(isinstance(stats, list) and len(stats) == len(m.features)
                 and all(_is_number(v) and math.isfinite(v) for v in stats),
                 f"normalisation.{key} must hold one finite number per feature")
    _require(all(v > 0 for v in m.normalisation["std"]), "normalisation.std must be positive")
    _require(isinstance(m.model_file, str) and bool(m.model_file) and "/" not in m.model_file and m.model_file not in (".", ".."),
             f"model_file must be a plain file name, got {m.model_file!r}")
    _require(isinstance(m.validation_error, dict)
             and all(_is_number(v) and math.isfinite(v) and v > 0 for v in m.validation_error.values()),
             f"validation_error values must be positive finite numbers, got {m.validation_error!r}")
    _require(isinstance(m.sha256, str) and len(m.sha256) == 64 and all(c in "0123456789abcdef" for c in m.sha256),
             "sha256 must be 64 lowercase hex digits")
    _require(isinstance(m.class_labels, list) and all(isinstance(c, str) for c in m.class_labels),
             "class_labels must be a list of names")
    for name in ("metrics", "reference_stats", "hyperparameters", "runtimes"):
        _require(isinstance(getattr(m, name), dict), f"{name} must be a JSON object")
        check_depth(getattr(m, name), f"manifest {name}", _FREE_FORM_DEPTH)
    _check_runtime_variants(m)
    _require(isinstance(m.created_at, str), "created_at must be a string")
    _require(m.signature is None or isinstance(m.signature, str), "signature must be a base64 string or null")
    _require(_is_int(m.schema_version), f"schema_version must be an integer, got {m.schema_version!r}")


_VARIANT_KEYS: Final = frozenset({"model_file", "sha256", "quantization", "input_dtype"})


def _check_runtime_variants(m: ModelManifest) -> None:
    _require(isinstance(m.runtime_variants, dict), "runtime_variants must be a JSON object")
    for runtime, variant in m.runtime_variants.items():
        where = f"runtime_variants.{runtime}"
        _require(isinstance(variant, dict) and set(variant) == _VARIANT_KEYS,
                 f"{where} must hold exactly {sorted(_VARIANT_KEYS)}")
        file, sha = variant["model_file"], variant["sha256"]
        _require(isinstance(file, str) and bool(file) and "/" not in file and file not in (".", "..", MANIFEST_FILE),
                 f"{where}.model_file must be a plain file name, got {file!r}")
        _require(isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
                 f"{where}.sha256 must be 64 lowercase hex digits")
        _require(variant["quantization"] in _QUANTIZATIONS, f"{where}.quantization must be one of {_QUANTIZATIONS}")
        _require(variant["input_dtype"] in _DTYPES, f"{where}.input_dtype must be one of {_DTYPES}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A JSON number that converts to a float (a 400-digit integer does not: it is refused, not raised)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: ModelManifest, folder: Path) -> Path:
    """Write ``manifest.json`` into ``folder`` atomically (temp file, then rename)."""
    target = folder / MANIFEST_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_bytes(manifest.to_json())
    tmp.replace(target)
    return target


def read_manifest(folder: Path) -> ModelManifest:
    """Read and validate ``folder/manifest.json`` (at most 1 MiB, bounded depth); raises :class:`ManifestError`."""
    path = folder / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as exc:
        raise ManifestError(f"no manifest at {path}") from exc
    except OSError as exc:
        raise ManifestError(f"{path} cannot be read: {exc}") from exc
    return ModelManifest.from_dict(load_json(raw, str(path), MAX_MANIFEST_BYTES))


def verify_model_file(manifest: ModelManifest, folder: Path) -> Path:
    """Check that the model file beside the manifest exists and matches ``manifest.sha256``.

    Returns:
        The model file's path.

    Raises:
        VerificationError: the file is missing or its sha256 differs.
    """
    path = folder / manifest.model_file
    if not path.is_file():
        raise VerificationError(f"model file {path} is missing")
    actual = file_sha256(path)
    if actual != manifest.sha256:
        raise VerificationError(f"sha256 of {path} is {actual[:16]}..., manifest says {manifest.sha256[:16]}...")
    return path


def read_verified_model(manifest: ModelManifest, folder: Path) -> bytes:
    """The model file's bytes, read once and checked against ``manifest.sha256``.

    Load these bytes into the interpreter (not the path again), so what runs is what was hashed.

    Raises:
        VerificationError: the file is missing or its sha256 differs.
    """
    path = folder / manifest.model_file
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"model file {path} cannot be read: {exc}") from exc
    actual = hashlib.sha256(content).hexdigest()
    if actual != manifest.sha256:
        raise VerificationError(f"sha256 of {path} is {actual[:16]}..., manifest says {manifest.sha256[:16]}...")
    return content
