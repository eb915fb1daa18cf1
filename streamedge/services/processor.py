"""The pipeline of one micro-batch, with no Kafka in sight: bytes in, messages to produce out.

For a batch of readings-topic messages (in consumption order) :meth:`Processor.process`:

1. validates each message (:func:`~streamedge.contracts.reading.parse_reading`, device allow-list,
   stream route, feature count, per-key ordering) and dead-letters the bad ones with a reason;
2. appends good readings to their key's window and collects every full window per model;
3. runs each model once on all its windows of the batch (one TFLite invoke per model);
4. walks the readings in order again: scores each reading against the one-step forecast made at
   the previous reading of its key (anomaly rule below), then emits its forecast and, every
   ``classify_stride`` readings, its classification.

Anomaly rule: reading ``seq`` is anomalous for forecaster ``m`` when ``m`` forecast it from the
window ending at ``seq - 1`` and ``|actual - forecast| > anomaly_k * residual_std`` for any
feature, ``residual_std`` being the model's validation residual standard deviation (manifest
``validation_error``). A gap in ``seq`` skips the scoring (the forecast was for a lost reading).
The first ``window - 1`` readings of a key fill its window and produce no result.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.reading import Reading, Rejection, parse_reading
from streamedge.errors import StreamedgeError
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import LoadedModel, ModelSet
from streamedge.services.monitor import ModelMonitor
from streamedge.services.records import Output, Source, dead_letter, dead_letter_key, result
from streamedge.services.settings import StreamSettings
from streamedge.services.shadow import ShadowSet
from streamedge.services.windows import KeyState, PendingForecast, WindowStore

__all__ = ["Processor"]


@dataclass
class _Job:
    reading: Reading
    source: Source
    state: KeyState
    models: list[str]
    payload: bytes | None
    windows: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    shadow: dict[str, list[Any]] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)


class Processor:
    """Validation, windows, micro-batched inference, scoring and result encoding.

    Args:
        settings: the worker settings.
        models: the active models (shared with the hot-reload follower).
        metrics: where to count.
        clock: wall clock, seconds since the epoch.
    """

    def __init__(self, settings: StreamSettings, models: ModelSet, metrics: StreamMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics
        self.clock = clock
        self.store = WindowStore(models.max_window(), settings.idle_ttl_s, settings.max_keys)
        self.monitors: dict[str, ModelMonitor] = {}
        # Fixed at construction: a lookup per reading, no entry per stream name a device invents.
        self._routes = {stream: list(names) for stream, names in settings.routes.items()}
        self._default_route = self._routes.get("*", [])
        self._label_cache: dict[str, tuple[Any, Any]] = {}
        self.shadows: ShadowSet | None = None
        for _name, model in models.items():
            self._watch(model)

    def _watch(self, model: LoadedModel) -> None:
        s = self.settings
        self.monitors[model.name] = ModelMonitor(model.manifest, s.mae_window, s.drift_window, s.mae_factor,
                                                 s.drift_z, s.retrain_min_interval_s)
        self.metrics.model_loaded(model.name, model.version)

    def install(self, model: LoadedModel) -> None:
        """Smoke-test ``model`` on recent windows and make it active (between batches).

        Raises:
            ModelRejectedError: the old version keeps serving.
        """
        self.models.swap(model, self.recent_windows(model.window, self.settings.smoke_windows))
        self.store.resize(self.models.max_window())
        self._watch(model)

    def recent_windows(self, length: int, count: int) -> list[npt.NDArray[np.float32]]:
        """Up to ``count`` windows of ``length`` from the most recently seen keys."""
        found: list[npt.NDArray[np.float32]] = []
        for state in self.store.recent():
            window = state.window(length)
            if window is not None:
                found.append(window)
                if len(found) >= count:
                    break
        return found

    def _routed(self, stream: str) -> list[str]:
        return self._routes.get(stream, self._default_route)

    def _admit(self, payload: bytes | None, source: Source) -> _Job | tuple[str, str]:
        parsed = parse_reading(payload)
        if isinstance(parsed, Rejection):
            return parsed.reason, parsed.detail
        if self.settings.devices and not any(fnmatch.fnmatchcase(parsed.device_id, p) for p in self.settings.devices):
            return "unknown_device", f"device {parsed.device_id!r} is not in the allow-list"
        names = self._routed(parsed.stream)
        if not names:
            return "unknown_stream", f"no model is routed to stream {parsed.stream!r}"
        for name in names:
            model = self.models.get(name)
            if model is None:
                return "model_unavailable", f"model {name!r} routed to {parsed.stream!r} is not loaded"
            if model.manifest.n_features != len(parsed.values):
                return ("wrong_feature_count",
                        f"{len(parsed.values)} values but {name} takes {model.manifest.n_features} features")
        state = self.store.accept(parsed, source.timestamp, source.partition)
        if isinstance(state, str):
            return state, f"seq {parsed.seq} ts {parsed.ts} after seq {self._last(parsed.key)}"
        return _Job(parsed, source, state, names, payload)

    def _last(self, key: str) -> str:
        state = self.store.get(key)
        return f"{state.last_seq} ts {state.last_ts}" if state is not None else "none"

    def process(self, batch: Sequence[tuple[bytes | None, Source]], emit: bool = True) -> list[Output]:
        """Run one micro-batch; returns the messages to produce, in order.

        Args:
            batch: ``(payload, source)`` pairs in consumption order.
            emit: False while rebuilding state: windows, pending forecasts and monitors are
                updated, nothing is returned or counted.
        """
        now = self.clock()
        outputs: list[Output] = []
        jobs: list[_Job] = []
        evicted = self.store.evicted
        for payload, source in batch:
            admitted = self._admit(payload, source)
            if isinstance(admitted, _Job):
                self._collect_windows(admitted)
                jobs.append(admitted)
            elif emit:
                reason, detail = admitted
                outputs.append(self._dead_letter(payload, source, reason, detail, now))
        if emit:
            self.metrics.readings.inc(len(batch))
        self._infer(jobs, emit)
        for job in jobs:
            self._emit(job, now, outputs, emit)
        expired = self.store.expire()
        if emit:
            self.metrics.keys_dropped.labels("idle").inc(expired)
            self.metrics.keys_dropped.labels("capacity").inc(self.store.evicted - evicted)
            self.metrics.active_keys.set(len(self.store))
        return outputs

    def _dead_letter(self, payload: bytes | None, source: Source, reason: str, detail: str, now: float) -> Output:
        self.metrics.dead_letters.labels(reason).inc()
        value = dead_letter(payload, source, reason, detail, now, self.settings.dead_letter_max_bytes)
        return Output("dead_letters", dead_letter_key(source.key), value)

    def _collect_windows(self, job: _Job) -> None:
        seq = job.reading.seq
        by_length: dict[int, npt.NDArray[np.float32] | None] = {}
        for name in job.models:
            model = self.models.get(name)
            if model is None:
                continue
            if model.manifest.task == "classify" and seq % self.settings.classify_stride != 0:
                continue
            if model.window not in by_length:
                by_length[model.window] = job.state.window(model.window)
            window = by_length[model.window]
            if window is not None:
                job.windows[name] = window

    def _infer(self, jobs: list[_Job], emit: bool) -> None:
        for name, model in self.models.items():
            picked = [job for job in jobs if name in job.windows]
            if not picked:
                continue
            batch = np.stack([job.windows[name] for job in picked])
            start = time.perf_counter()
            try:
                out = model.predict(batch)
            except (StreamedgeError, ValueError, RuntimeError) as exc:
                # A model that cannot run these windows must not stop the stream: the readings
                # stay in their windows and go to the dead-letter topic with the reason.
                for job in picked:
                    job.failures[name] = ("inference_error", f"{name} v{model.version}: {exc}"[:300])
                continue
            if emit:
                self.metrics.inference_seconds.labels(name).observe(time.perf_counter() - start)
                self.metrics.batch_size.labels(name).observe(len(picked))
            if self.shadows is not None and name in self.shadows:
                rows = self.shadows.run(name, batch, out)
                for job, shadow_row in zip(picked, rows or [], strict=False):
                    job.shadow[name] = shadow_row
            finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1).tolist()
            # One conversion per batch: the per-reading code below works on plain floats.
            for job, row, ok in zip(picked, out.tolist(), finite, strict=True):
                if ok:
                    job.outputs[name] = row
                else:
                    job.failures[name] = ("non_finite_output", f"{name} v{model.version} gave NaN or infinity")

    def _emit(self, job: _Job, now: float, outputs: list[Output], emit: bool) -> None:
        reading, key = job.reading, job.reading.key.encode()
        if job.failures and emit:
            reason, detail = next(iter(job.failures.values()))
            outputs.append(self._dead_letter(job.payload, job.source, reason, detail, now))
        for name in job.models:
            model = self.models.get(name)
            if model is None:
                continue
            monitor = self.monitors[name]
            if emit:  # replayed readings (state rebuild) were already seen by the monitors once
                monitor.add_input(reading.values)
            if model.manifest.task == "forecast":
                self._score(job, model, monitor, now, outputs, emit)
                if self.shadows is not None and name in self.shadows:
                    self.shadows.observe(name, job.state, reading, job.shadow.get(name))
                steps = job.outputs.get(name)
                if steps is None:
                    continue
                job.state.pending[name] = PendingForecast(reading.seq, name, model.version, tuple(steps[0]))
                if emit:
                    body = {"horizon": model.manifest.horizon, "features": model.manifest.features,
                            "forecast": steps}
                    value = result("forecast", reading, job.source, name, model.version, body, now)
                    outputs.append(Output("forecasts", key, value, reading.ts))
            else:
                probs = job.outputs.get(name)
                if probs is None or not emit:
                    continue
                labels = model.manifest.class_labels
                best = max(range(len(probs)), key=probs.__getitem__)
                body = {"label": labels[best], "probability": probs[best],
                        "probabilities": dict(zip(labels, probs, strict=True)),
                        "window": model.window}
                value = result("classification", reading, job.source, name, model.version, body, now)
                outputs.append(Output("classifications", key, value, reading.ts))

    def _score(self, job: _Job, model: LoadedModel, monitor: ModelMonitor, now: float, outputs: list[Output],
               emit: bool) -> None:
        pending = job.state.pending.pop(model.name, None)
        if pending is None or pending.seq != job.reading.seq - 1:
            return
        # Plain floats: a handful of features is far cheaper than numpy on tiny arrays.
        actual = job.reading.values
        residual = [a - f for a, f in zip(actual, pending.values, strict=True)]
        worst = max(abs(r) for r in residual)
        if not math.isfinite(worst):
            return  # values near the float limit overflow the difference: nothing to score
        if not emit:
            return
        monitor.add_error(sum(abs(r) for r in residual) / len(residual))
        children = self._children(model.name)
        mae = monitor.mae
        if mae is not None:
            children[0].set(mae)
        residual_std = model.residual_std()
        band = self.settings.anomaly_k * residual_std
        if worst <= band:
            return
        children[1].inc()
        body = {"actual": list(actual), "forecast": list(pending.values), "residual": residual,
                "score": worst / residual_std, "threshold": band, "k": self.settings.anomaly_k,
                "residual_std": residual_std, "forecast_seq": pending.seq, "features": model.manifest.features}
        value = result("anomaly", job.reading, job.source, model.name, pending.version, body, now)
        outputs.append(Output("anomalies", job.reading.key.encode(), value, job.reading.ts))

    def _children(self, name: str) -> tuple[Any, Any]:
        children = self._label_cache.get(name)
        if children is None:
            children = (self.metrics.forecast_mae.labels(name), self.metrics.anomalies.labels(name))
            self._label_cache[name] = children
        return children

    def retrain_requests(self) -> list[Output]:
        """Retrain requests due now (rate-limited per model), with the drift gauge updated."""
        now = self.clock()
        found: list[Output] = []
        for name, monitor in self.monitors.items():
            z = monitor.drift_z_score()
            if z is not None:
                self.metrics.input_drift.labels(name).set(z)
            request = monitor.check(now)
            if request is not None:
                self.metrics.retrain_requests.labels(name, request["trigger"]).inc()
                found.append(Output("retrain_requests", name.encode(), ModelMonitor.encode(request)))
        return found
