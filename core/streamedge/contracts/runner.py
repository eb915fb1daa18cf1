"""One small wrapper around a TFLite interpreter, used by edge agents and stream workers alike.

Runtimes, tried in this order for ``runtime="auto"``: ``ai_edge_litert`` (the maintained
successor of tflite-runtime; 2-16x faster on x86 in our measurements and numpy-2 ready),
``tflite_runtime`` (2.14, for devices that only have it; needs numpy<2), and ``tensorflow``
(``tf.lite``, only where TensorFlow is installed anyway, e.g. the trainer).

Contract: :meth:`TFLiteRunner.run` takes float32 windows ``(batch, window, n_features)``,
already normalised, and returns float32 ``(batch, n_outputs)``. Full-int8 models are
quantised and de-quantised here with the tensor's own scale and zero point, so callers
never see integer tensors.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from streamedge.contracts.manifest import ModelManifest, read_verified_model
from streamedge.errors import RunnerError

__all__ = ["RUNTIMES", "Runtime", "TFLiteRunner", "available_runtimes", "load_interpreter_class", "resolve_runtime",
           "runtime_model", "smoke_failure"]

_LOG = logging.getLogger(__name__)

Runtime = Literal["ai_edge_litert", "tflite_runtime", "tensorflow"]
RUNTIMES: Final[tuple[Runtime, ...]] = get_args(Runtime)
# runtime -> (module to import, attribute path of its Interpreter class)
_MODULES: Final[dict[str, tuple[str, str]]] = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite_runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}
FloatArray = npt.NDArray[np.float32]


def load_interpreter_class(runtime: Runtime) -> Callable[..., Any]:
    """Import one runtime's ``Interpreter`` class; ImportError carries the install hint."""
    if runtime not in _MODULES:
        raise ValueError(f"unknown TFLite runtime {runtime!r}; choose one of {RUNTIMES}")
    module_name, attribute = _MODULES[runtime]
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"TFLite runtime {runtime!r} is not installed: pip install ai-edge-litert "
            "(streamedge-edge brings it) or 'streamedge-edge[tflite]' (tflite-runtime 2.14)"
        ) from exc
    for part in attribute.split("."):
        found = getattr(found, part)
    interpreter: Callable[..., Any] = found
    return interpreter


def available_runtimes() -> list[Runtime]:
    """Runtimes importable in this environment, in preference order (TensorFlow last)."""
    found: list[Runtime] = []
    for runtime in RUNTIMES:
        if importlib.util.find_spec(_MODULES[runtime][0].split(".")[0]) is not None:
            found.append(runtime)
    return found


def _pick_runtime(runtime: Runtime | Literal["auto"]) -> tuple[Runtime, Callable[..., Any]]:
    if runtime != "auto":
        return runtime, load_interpreter_class(runtime)
    for candidate in available_runtimes():
        try:
            return candidate, load_interpreter_class(candidate)
        except ImportError:
            continue
    raise ImportError("no TFLite runtime is installed: pip install streamedge-edge (it brings ai-edge-litert)")


def resolve_runtime(runtime: Runtime | Literal["auto"]) -> Runtime:
    """The runtime that ``runtime`` means here: itself, or for ``"auto"`` the first that imports."""
    return _pick_runtime(runtime)[0]


def runtime_model(manifest: ModelManifest, model_path: Path, content: bytes | None,
                  runtime: Runtime | Literal["auto"]) -> tuple[Runtime, ModelManifest, Path, bytes | None]:
    """The model this process's runtime should run: the variant the manifest names for it, else the default.

    Args:
        manifest: the verified (signed) manifest.
        model_path: its default model file; the runtime's variant sits beside it.
        content: the default file's verified bytes, or None.
        runtime: the runtime asked for (``"auto"`` is resolved first).

    Returns:
        ``(runtime, manifest, path, bytes)``: for a runtime with its own variant, the manifest
        view of :meth:`ModelManifest.for_runtime` and that file's bytes, checked against the
        sha256 the signed manifest pins; else the arguments as given. A folder that lacks the
        variant's file (a model fetched with its default file only) runs the default file.

    Raises:
        VerificationError: the variant's file is there but its sha256 differs.
    """
    resolved = resolve_runtime(runtime)
    chosen = manifest.for_runtime(resolved)
    variant_path = model_path.parent / chosen.model_file
    if chosen is manifest or not variant_path.is_file():
        if chosen is not manifest:
            _LOG.warning("%s v%d: no %s beside the manifest for %s; running the default %s", manifest.name,
                         manifest.version, chosen.model_file, resolved, manifest.model_file)
        return resolved, manifest, model_path, content
    return resolved, chosen, variant_path, read_verified_model(chosen, model_path.parent)


class TFLiteRunner:
    """Runs one ``.tflite`` model on single windows or batches.

    Args:
        model_path: the ``.tflite`` file.
        manifest: when given, the model's input/output shapes are checked against it
            (mismatch raises :class:`RunnerError`) and inputs are checked on every call.
        runtime: which interpreter to use, or ``"auto"``.
        num_threads: interpreter threads; 1 suits micro-batches of small models.
        model_content: the model's bytes, already verified by the caller; when given they are
            loaded instead of reading ``model_path`` again (which then only names the model).
    """

    def __init__(
        self,
        model_path: Path,
        manifest: ModelManifest | None = None,
        runtime: Runtime | Literal["auto"] = "auto",
        num_threads: int = 1,
        model_content: bytes | None = None,
    ) -> None:
        self.runtime, interpreter_class = _pick_runtime(runtime)
        self.model_path = Path(model_path)
        source: dict[str, Any] = ({"model_content": model_content} if model_content is not None
                                  else {"model_path": str(self.model_path)})
        try:
            self._interpreter = interpreter_class(**source, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"{self.runtime} cannot load {self.model_path}: {exc}") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise RunnerError(f"{self.model_path}: expected one input and one output tensor")
        self._input, self._output = inputs[0], outputs[0]
        signature = [int(d) for d in self._input["shape_signature"]]
        if len(signature) != 3:
            raise RunnerError(f"{self.model_path}: input must be (batch, window, features), got {signature}")
        self.window, self.n_features = signature[1], signature[2]
        self.n_outputs = int(self._output["shape_signature"][-1])
        self._dynamic_batch = signature[0] == -1
        self._batch = int(self._input["shape"][0])
        self._in_quant = self._quant_params(self._input)
        self._out_quant = self._quant_params(self._output)
        self.manifest = manifest
        if manifest is not None:
            self._check_manifest(manifest)

    @staticmethod
    def _quant_params(detail: dict[str, Any]) -> tuple[float, int] | None:
        if np.dtype(detail["dtype"]) not in (np.int8, np.uint8):
            return None
        scale, zero_point = detail["quantization"]
        return float(scale), int(zero_point)

    def _check_manifest(self, manifest: ModelManifest) -> None:
        if [self.window, self.n_features] != manifest.input_shape[1:]:
            raise RunnerError(
                f"{self.model_path}: input (window, features) = ({self.window}, {self.n_features}) "
                f"but manifest says {tuple(manifest.input_shape[1:])}"
            )
        if self.n_outputs != manifest.output_shape[1]:
            raise RunnerError(f"{self.model_path}: {self.n_outputs} outputs but manifest says {manifest.output_shape[1]}")

    @property
    def input_dtype(self) -> str:
        """The model's own input dtype name (``float32`` or ``int8``)."""
        return str(np.dtype(self._input["dtype"]))

    def run(self, windows: npt.ArrayLike) -> FloatArray:
        """Run a batch: ``(batch, window, n_features)`` float32 in, ``(batch, n_outputs)`` out.

        Raises:
            RunnerError: the array's shape does not fit the model.
        """
        batch = np.asarray(windows, dtype=np.float32)
        if batch.ndim != 3 or batch.shape[1:] != (self.window, self.n_features):
            raise RunnerError(
                f"input shape {batch.shape} does not fit ({'batch'}, {self.window}, {self.n_features})"
            )
        if batch.shape[0] == 0:
            return np.empty((0, self.n_outputs), dtype=np.float32)
        if not self._dynamic_batch and batch.shape[0] != self._batch:
            # A fixed-batch model: run full chunks, the last one zero-padded (its padding rows dropped).
            chunks = []
            for start in range(0, len(batch), self._batch):
                chunk = batch[start : start + self._batch]
                padding = np.zeros((self._batch - len(chunk), *chunk.shape[1:]), dtype=np.float32)
                chunks.append(self.run(np.concatenate([chunk, padding]))[: len(chunk)])
            return np.concatenate(chunks)
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input["index"], self._quantize(batch))
        self._interpreter.invoke()
        return self._dequantize(self._interpreter.get_tensor(self._output["index"]))

    def run_one(self, window: npt.ArrayLike) -> FloatArray:
        """Run one window ``(window, n_features)``; returns ``(n_outputs,)`` float32."""
        result: FloatArray = self.run(np.asarray(window, dtype=np.float32)[np.newaxis])[0]
        return result

    def _quantize(self, batch: FloatArray) -> npt.NDArray[Any]:
        if self._in_quant is None:
            return batch
        scale, zero_point = self._in_quant
        info = np.iinfo(self._input["dtype"])
        quantized = np.round(batch / scale) + zero_point
        clipped: npt.NDArray[Any] = np.clip(quantized, info.min, info.max).astype(self._input["dtype"])
        return clipped

    def _dequantize(self, output: npt.NDArray[Any]) -> FloatArray:
        if self._out_quant is None:
            return np.array(output, dtype=np.float32)
        scale, zero_point = self._out_quant
        return ((output.astype(np.float32) - zero_point) * scale).astype(np.float32)


def smoke_failure(out: npt.NDArray[Any], classifier: bool, atol: float) -> str | None:
    """Why a new model's smoke outputs fail, or None when they pass (the rule edge and stream share).

    Args:
        out: outputs, one row per window (any trailing shape): first the window at the training
            mean, then the recent live windows.
        classifier: rows must also be probabilities summing to 1 within ``atol``.

    The output must be finite on the training mean and on at least one recent window, not on
    every one: a source's extreme values (1e300 is a valid reading) overflow any float32 model,
    the serving one too, and must not refuse every later version while that source sends them.
    """
    finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if not finite[0]:
        return "output not finite on the training mean"
    if len(out) > 1 and not finite[1:].any():
        return f"output not finite on any of {len(out) - 1} recent windows"
    if classifier and not np.allclose(out[finite].sum(axis=1), 1.0, atol=atol):
        return "classifier outputs are not probabilities"
    return None
