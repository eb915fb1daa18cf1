"""Rolling forecast error and input drift per model; decides when to ask for a retrain.

Rules (thresholds in :class:`~services.settings.StreamSettings`):

- **error**: rolling one-step MAE over the last ``mae_window`` scored readings exceeds
  ``mae_factor * validation mae`` (from the manifest), once at least ``mae_window`` readings scored;
- **drift**: for any feature, ``|rolling mean - reference mean| / reference std`` over the last
  ``drift_window`` inputs exceeds ``drift_z`` (reference from the manifest's ``reference_stats``,
  else its normalisation statistics).

A request is emitted at most once per ``retrain_min_interval_s`` per model.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.manifest import ModelManifest

__all__ = ["ModelMonitor"]


@dataclass
class ModelMonitor:
    """Error and drift tracker of one model (any version; reset when the version changes)."""

    manifest: ModelManifest
    mae_window: int
    drift_window: int
    mae_factor: float
    drift_z: float
    min_interval_s: float
    _errors: deque[float] = field(init=False)
    # The last ``drift_window`` inputs as a ring of rows (order does not matter to a mean):
    # a block's samples are copied in one or two slices, not one tuple per sample.
    _inputs: npt.NDArray[np.float64] = field(init=False)
    _input_next: int = field(init=False, default=0)
    _input_count: int = field(init=False, default=0)
    _last_request: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self._errors = deque(maxlen=self.mae_window)
        self._inputs = np.zeros((self.drift_window, self.manifest.n_features))

    def add_error(self, abs_error: float) -> None:
        """One scored reading's mean absolute one-step error (original units, finite)."""
        self._errors.append(abs_error)

    def add_errors(self, errors: Sequence[float]) -> None:
        """Several scored readings' mean absolute one-step errors (finite), oldest first."""
        self._errors.extend(errors[len(errors) - min(self.mae_window, len(errors)):])

    def add_inputs(self, values: npt.NDArray[np.float64]) -> None:
        """Several readings' values, ``(n, n_features)``, oldest first."""
        kept = values[len(values) - min(self.drift_window, len(values)):]
        at, n = self._input_next, len(kept)
        head = min(n, self.drift_window - at)
        self._inputs[at:at + head] = kept[:head]
        self._inputs[:n - head] = kept[head:]
        self._input_next = (at + n) % self.drift_window
        self._input_count = min(self.drift_window, self._input_count + n)

    def add_input(self, values: tuple[float, ...]) -> None:
        """One reading's values as fed to the model."""
        self._inputs[self._input_next] = values
        self._input_next = (self._input_next + 1) % self.drift_window
        self._input_count = min(self.drift_window, self._input_count + 1)

    @property
    def mae(self) -> float | None:
        """Rolling MAE, or None before the first scored reading.

        Summed from the errors held each time it is read (exactly, :func:`math.fsum`): a running
        sum never forgot a huge error once it left the window (two errors near the float limit
        overflowed it to inf for good, one of 1e17 left a lasting rounding offset). The mean of
        finite errors is finite: a sum that overflows is taken over the errors scaled by the
        largest one.
        """
        if not self._errors:
            return None
        n = len(self._errors)
        try:
            return math.fsum(self._errors) / n
        except OverflowError:
            top = max(self._errors)
            return top * (math.fsum(e / top for e in self._errors) / n)

    def drift_z_score(self) -> float | None:
        """Largest per-feature drift z score, or None until ``drift_window`` inputs are seen."""
        if self._input_count < self.drift_window:
            return None
        mean, std = self._reference()
        rolling: npt.NDArray[np.float64] = self._inputs.mean(axis=0)
        if rolling.shape != mean.shape:
            return None
        return float(np.max(np.abs(rolling - mean) / np.maximum(std, 1e-12)))

    def _reference(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per-feature reference mean and std: the trainer's ``reference_stats`` layout
        (``{"features": {name: {"mean", "std", ...}}}``), a flat ``{"mean": [...], "std": [...]}``,
        else the normalisation statistics (also training-data statistics)."""
        ref = self.manifest.reference_stats
        per_feature = ref.get("features")
        if isinstance(per_feature, dict) and all(name in per_feature for name in self.manifest.features):
            mean = [per_feature[name]["mean"] for name in self.manifest.features]
            std = [per_feature[name]["std"] for name in self.manifest.features]
        else:
            mean = ref.get("mean", self.manifest.normalisation["mean"])
            std = ref.get("std", self.manifest.normalisation["std"])
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def check(self, now: float) -> dict[str, Any] | None:
        """A retrain request body if a rule fires and the rate limit allows, else None."""
        if now - self._last_request < self.min_interval_s:
            return None
        trigger: str | None = None
        detail: dict[str, Any] = {}
        baseline = self.manifest.validation_error.get("mae")
        mae = self.mae
        if mae is not None and baseline and len(self._errors) >= self.mae_window and mae > self.mae_factor * baseline:
            trigger = "error"
            detail = {"rolling_mae": mae, "validation_mae": baseline, "factor": self.mae_factor}
        else:
            z = self.drift_z_score()
            if z is not None and z > self.drift_z:
                trigger = "drift"
                # Inputs near the float limit overflow the rolling mean: report the largest
                # finite score, never Infinity (not JSON).
                detail = {"drift_z": min(z, sys.float_info.max), "threshold": self.drift_z}
        if trigger is None:
            return None
        self._last_request = now
        return {"model": self.manifest.name, "version": self.manifest.version, "trigger": trigger,
                "requested_at": now, **detail}

    @staticmethod
    def encode(request: dict[str, Any]) -> bytes:
        """A retrain request as the JSON value published on the retrain-requests topic."""
        return json.dumps(request, separators=(",", ":")).encode()
