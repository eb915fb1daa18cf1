"""Shadow mode: run a candidate version beside the active one and export the comparison.

A candidate sees exactly the windows the active version sees, in the same micro-batch, and never
produces a result. Per model it exports (gauges, labels ``model``):

- ``streamedge_stream_shadow_version``: the candidate's version;
- forecasters: ``streamedge_stream_shadow_forecast_mae`` (the candidate's rolling one-step MAE,
  comparable to ``streamedge_stream_forecast_mae``) and ``streamedge_stream_shadow_forecast_diff``
  (mean |candidate - active| of the first forecast step in the last batch);
- classifiers: ``streamedge_stream_shadow_agreement`` (share of windows in the last batch where
  both versions pick the same label).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamedge.contracts.reading import Reading
from streamedge.errors import StreamedgeError
from streamedge.services.models import LoadedModel
from streamedge.services.windows import KeyState, PendingForecast

__all__ = ["ShadowSet"]

_log = logging.getLogger(__name__)
_SUFFIX = "#shadow"


class ShadowSet:
    """Candidates keyed by the active model's name.

    Args:
        registry: where the shadow gauges are registered.
        mae_window: scored readings in the candidate's rolling MAE.
    """

    def __init__(self, registry: CollectorRegistry, mae_window: int) -> None:
        p = "streamedge_stream_shadow"
        self._candidates: dict[str, LoadedModel] = {}
        self._errors: dict[str, deque[float]] = {}
        self._mae_window = mae_window
        self._failed_batches: dict[str, int] = {}
        self.version = Gauge(f"{p}_version", "Version running in shadow beside the active one", ["model"],
                             registry=registry)
        self.mae = Gauge(f"{p}_forecast_mae", "Rolling one-step MAE of the shadow candidate", ["model"],
                         registry=registry)
        self.diff = Gauge(f"{p}_forecast_diff", "Mean |candidate - active| first forecast step, last batch",
                          ["model"], registry=registry)
        self.agreement = Gauge(f"{p}_agreement", "Share of windows with the same label, last batch", ["model"],
                               registry=registry)
        self.failures = Counter(f"{p}_failures", "Batches the shadow candidate could not score", ["model"],
                                registry=registry)

    def __contains__(self, name: object) -> bool:
        return name in self._candidates

    def add(self, candidate: LoadedModel, active: LoadedModel | None = None) -> None:
        """Run ``candidate`` in shadow of the active model of the same name.

        Raises:
            ValueError: ``candidate`` takes other windows or gives other outputs than ``active``.
        """
        if active is not None and (candidate.manifest.input_shape != active.manifest.input_shape
                                   or candidate.manifest.output_shape != active.manifest.output_shape):
            raise ValueError(f"shape {candidate.manifest.input_shape} -> {candidate.manifest.output_shape} differs from "
                             f"the active {active.manifest.input_shape} -> {active.manifest.output_shape}")
        self._candidates[candidate.name] = candidate
        self.failures.labels(candidate.name)
        self._errors[candidate.name] = deque(maxlen=self._mae_window)
        self.version.labels(candidate.name).set(candidate.version)

    def run(self, name: str, windows: npt.NDArray[np.float32], active: npt.NDArray[np.float32]) -> list[Any] | None:
        """Run the candidate on the active model's batch; returns its rows (plain lists) or None."""
        candidate = self._candidates[name]
        try:
            out = candidate.predict(windows)
        except (StreamedgeError, ValueError, RuntimeError) as exc:
            self._failed(name, str(exc))
            return None
        if out.shape != active.shape or not np.all(np.isfinite(out)):
            self._failed(name, f"output shape {out.shape} or values unusable")
            return None
        if candidate.manifest.task == "forecast":
            self.diff.labels(name).set(float(np.abs(out[:, 0] - active[:, 0]).mean()))
        else:
            self.agreement.labels(name).set(float((out.argmax(axis=1) == active.argmax(axis=1)).mean()))
        rows: list[Any] = out.tolist()
        return rows

    def _failed(self, name: str, detail: str) -> None:
        self.failures.labels(name).inc()
        seen = self._failed_batches[name] = self._failed_batches.get(name, 0) + 1
        if seen <= 3 or seen % 1000 == 0:  # log the first few, then rarely: the counter has them all
            _log.warning("shadow candidate %s could not score a batch (%d so far): %s", name, seen, detail)

    def observe(self, name: str, state: KeyState, reading: Reading, steps: list[Any] | None) -> None:
        """Score the candidate's previous one-step forecast for this key, then keep its new one."""
        key = name + _SUFFIX
        pending = state.pending.pop(key, None)
        if pending is not None and pending.seq == reading.seq - 1:
            errors = self._errors[name]
            errors.append(sum(abs(a - f) for a, f in zip(reading.values, pending.values, strict=True))
                          / len(reading.values))
            self.mae.labels(name).set(sum(errors) / len(errors))
        if steps is not None:
            state.pending[key] = PendingForecast(reading.seq, name, self._candidates[name].version, tuple(steps[0]))
