"""Per-key windows and one model's inference: forecast + anomaly flag, or classification.

Windows hold raw readings (original units); the predictor normalises with the manifest's
statistics, runs the TFLite model and de-normalises forecasts, so a model swap with new
statistics needs no state change. Memory is bounded: at most ``max_keys`` windows of at most
``history`` readings each; beyond that a key is evicted, one-shot keys first (:class:`WindowStore`).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamedge.contracts.anomaly import AnomalyDetector, DetectorState
from streamedge.contracts.manifest import ModelManifest
from streamedge.contracts.reading import Reading
from streamedge.contracts.runner import Runtime, TFLiteRunner, runtime_model
from streamedge.edge.errors import NonFiniteOutputError

__all__ = ["KeyState", "Predictor", "WindowStore"]

FloatArray = npt.NDArray[np.float32]


@dataclass
class KeyState:
    """What the agent remembers per key: recent raw values and the last one-step forecast.

    ``epoch`` counts the restarts of the key's ``seq`` counter this agent saw (0 before the
    first); ``(key, epoch, seq)`` names one reading for good. ``last_ts`` is the event time of
    the last reading appended.
    """

    values: deque[tuple[float, ...]]
    count: int = 0
    next_step: FloatArray | None = None
    forecast_version: int | None = None
    forecast_seq: int | None = None
    detector: DetectorState | None = None
    last_seq: int = -1
    last_ts: float = float("-inf")
    epoch: int = 0


class WindowStore:
    """Bounded per-key windows with fair admission.

    A key seen once waits in a *probation* segment; its second reading moves it to the
    *established* segment. Beyond ``max_keys`` the least recently seen probation key is evicted
    first, so a flood of one-shot ids (a broken gateway, a hostile sender) churns probation
    while the established streams keep their windows; an established key is evicted only when
    the newcomer is alone in probation (ordinary churn: least recently seen first). A stream
    that starts during a flood competes with it in probation until its second reading. Every
    eviction and window reset is reported through ``on_event`` (``"evicted"``, ``"shape"``,
    ``"seq_reset"``).

    A reading whose feature count differs from its key's window starts that window afresh
    (``"shape"``): a model of another width, or a sensor that changed, never mixes widths. A
    reading whose ``seq`` is not after the key's last one while its ``ts`` is later is a counter
    restart (a rebooted sensor, or the key's last ``seq`` was a stray huge one): the key's
    ``epoch`` goes up by one and the reading is taken (``"seq_reset"``). One that is not later in
    ``ts`` either is a duplicate or out of order, and refused.

    Args:
        history: readings kept per key (at least the model window).
        max_keys: keys kept.
        on_event: called with the event name for each eviction or reset.
    """

    def __init__(self, history: int, max_keys: int, on_event: Callable[[str], None] | None = None) -> None:
        self.history = history
        self.max_keys = max_keys
        self._probation: OrderedDict[str, KeyState] = OrderedDict()
        self._keys: OrderedDict[str, KeyState] = OrderedDict()
        self._on_event = on_event or (lambda event: None)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._keys) + len(self._probation)

    def add(self, reading: Reading) -> KeyState | None:
        """Append a reading to its key's window (evicting an old key if needed).

        Returns:
            The key's state, or None (nothing appended) when the reading is a duplicate or out
            of order: ``seq`` not after the key's last one and ``ts`` not after its last either.
        """
        state = self._keys.get(reading.key)
        if state is not None:
            self._keys.move_to_end(reading.key)
        else:
            state = self._probation.pop(reading.key, None)
            if state is not None:
                self._keys[reading.key] = state
        if state is not None and reading.seq <= state.last_seq:
            if reading.ts <= state.last_ts:
                return None
            state.epoch += 1
            state.next_step = None
            self._on_event("seq_reset")
        if state is None:
            state = KeyState(values=deque(maxlen=self.history))
            self._probation[reading.key] = state
        elif state.values and len(state.values[-1]) != len(reading.values):
            state.values.clear()
            state.next_step = None
            self._on_event("shape")
        self._evict()
        state.values.append(reading.values)
        state.count += 1
        state.last_seq = reading.seq
        state.last_ts = reading.ts
        return state

    def _evict(self) -> None:
        """Beyond ``max_keys``: the least recently seen probation key, unless the newcomer is the
        only one there; then the least recently seen established key."""
        while len(self) > self.max_keys:
            (self._probation if len(self._probation) > 1 or not self._keys else self._keys).popitem(last=False)
            self.evicted += 1
            self._on_event("evicted")

    def restore(self, key: str, values: list[tuple[float, ...]], last_seq: int, last_ts: float = float("-inf"),
                epoch: int = 0) -> None:
        """Put back a key's window saved before a restart (``values`` oldest first), as established."""
        state = KeyState(values=deque(values, maxlen=self.history), count=len(values), last_seq=last_seq,
                         last_ts=last_ts, epoch=epoch)
        self._probation.pop(key, None)
        self._keys[key] = state
        self._keys.move_to_end(key)
        self._evict()

    def state(self, key: str) -> KeyState | None:
        """The state of ``key``, or None."""
        return self._keys.get(key) or self._probation.get(key)

    def _states(self) -> list[KeyState]:
        """Every state, least recently seen first within each segment (probation first)."""
        return [*self._probation.values(), *self._keys.values()]

    def resize(self, history: int) -> None:
        """Keep ``history`` readings per key from now on (a model with a longer window arrived)."""
        if history == self.history:
            return
        self.history = history
        for state in self._states():
            state.values = deque(state.values, maxlen=history)

    def recent_windows(self, window: int, n_features: int, limit: int) -> FloatArray:
        """Up to ``limit`` recent full raw windows ``(n, window, n_features)`` float32, for smoke tests."""
        found = [
            np.asarray(list(state.values)[-window:], dtype=np.float32)
            for state in reversed(self._states())
            if len(state.values) >= window and len(state.values[-1]) == n_features
        ][:limit]
        if not found:
            return np.empty((0, window, n_features), dtype=np.float32)
        return np.stack(found)

    def feature_counts(self) -> set[int]:
        """Features per reading of the keys held (empty before any reading)."""
        return {len(state.values[-1]) for state in self._states() if state.values}


class Predictor:
    """One loaded, verified model, in the variant its manifest names for this runtime.

    Args:
        manifest: the model's verified manifest; the runner runs the variant it names for this
            runtime (:func:`~streamedge.contracts.runner.runtime_model`).
        model_path: its ``.tflite`` file.
        runtime: TFLite runtime for :class:`TFLiteRunner` (``"auto"`` prefers ai-edge-litert).
        anomaly_sigmas: the anomaly detector's warm-up threshold in validation residual standard
            deviations (:mod:`streamedge.contracts.anomaly`).
        content: the verified model bytes to load instead of reading ``model_path`` again.
    """

    def __init__(self, manifest: ModelManifest, model_path: Path, runtime: Runtime | Literal["auto"] = "auto",
                 anomaly_sigmas: float = 4.0, content: bytes | None = None) -> None:
        resolved, chosen, model_path, content = runtime_model(manifest, model_path, content, runtime)
        self.manifest = manifest
        self.runner = TFLiteRunner(model_path, chosen, runtime=resolved, model_content=content)
        self._mean = np.asarray(manifest.normalisation["mean"], dtype=np.float32)
        self._std = np.asarray(manifest.normalisation["std"], dtype=np.float32)
        self.detector = AnomalyDetector.from_manifest(manifest, anomaly_sigmas)

    @property
    def version(self) -> int:
        return self.manifest.version

    def normalise(self, raw: FloatArray) -> FloatArray:
        """``(..., n_features)`` raw values to model units."""
        return ((raw - self._mean) / self._std).astype(np.float32)

    def infer(self, raw_windows: FloatArray) -> FloatArray:
        """Raw windows ``(b, window, n_features)`` in; ``(b, n_outputs)`` float32 out (forecasts de-normalised)."""
        out = self.runner.run(self.normalise(raw_windows))
        if self.manifest.task == "forecast":
            shaped = out.reshape(len(out), self.manifest.horizon, self.manifest.n_features)
            return (shaped * self._std + self._mean).reshape(len(out), -1).astype(np.float32)
        return out

    def step(self, reading: Reading, state: KeyState) -> tuple[dict[str, Any] | None, float]:
        """Score one reading against the last forecast, and predict if the window is full.

        Returns:
            The result body (None when the window is not yet full) and the inference time in seconds.

        Raises:
            NonFiniteOutputError: the model returned NaN or infinity for this window.
        """
        m = self.manifest
        body: dict[str, Any] = {}
        # Score only against the forecast made for exactly this reading (no gap in seq, same model version).
        if (m.task == "forecast" and state.next_step is not None and state.forecast_version == m.version
                and state.forecast_seq == reading.seq):
            # float64: a float32 difference of two values near float32's limit overflows to inf,
            # which no JSON result can carry; both operands are finite, so this one is too.
            residual = np.asarray(reading.values, dtype=np.float64) - state.next_step.astype(np.float64)
            body["residual"] = [round(float(r), 6) for r in residual]
            body["anomaly"] = None
            if self.detector is not None:
                state.detector = self.detector.state_for(state.detector)
                verdict = self.detector.step(state.detector, residual.tolist())
                body.update(anomaly=verdict.alarm, anomaly_score=round(verdict.score, 6),
                            threshold=round(verdict.threshold, 6))
        if len(state.values) < m.window:
            return None, 0.0
        window = np.asarray(list(state.values)[-m.window:], dtype=np.float32)[np.newaxis]
        started = time.perf_counter()
        out = self.infer(window)[0]
        elapsed = time.perf_counter() - started
        if not np.all(np.isfinite(out)):
            state.next_step = None
            raise NonFiniteOutputError(f"{reading.key} seq {reading.seq}: model output is not finite")
        if m.task == "forecast":
            steps = out.reshape(m.horizon, m.n_features)
            state.next_step, state.forecast_version, state.forecast_seq = steps[0], m.version, reading.seq + 1
            body.update(type="forecast", forecast=[[round(float(v), 6) for v in row] for row in steps])
            body.setdefault("anomaly", None)
        else:
            best = int(np.argmax(out))
            body.update(type="classification", label=m.class_labels[best], probability=round(float(out[best]), 6),
                        probabilities=[round(float(p), 6) for p in out])
        return body, elapsed

