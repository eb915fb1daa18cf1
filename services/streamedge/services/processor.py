"""The pipeline of one micro-batch, with no Kafka in sight: bytes in, messages to produce out.

Every message is a reading block (a single reading is a block of one). For a batch of
readings-topic messages (in consumption order) :meth:`Processor.process`:

1. validates each message (:func:`~streamedge.contracts.reading.parse_message`, its Kafka key
   equal to the payload's ``<device_id>/<stream>``, device allow-list, stream route, feature
   count, per-key ordering) and dead-letters a bad one whole,
   with the reason and the first offending sample;
2. appends each good block to its key's window (:class:`~services.windows.WindowStore`) and cuts
   every full window of the block as numpy views: every sample for a forecaster, every sample
   whose ``seq % classify_stride == 0`` for a classifier, or with ``cycle`` set one window per
   machine cycle that ends in the block (:mod:`streamedge.contracts.cycles`);
3. runs each model once on all its windows of the batch, from every key (one TFLite invoke per
   model; steps 2 and 3 are :mod:`services.inference`);
4. scores each block against its one-step forecasts in array operations (anomaly rule below) and
   encodes the results: a single reading gets the per-reading results (one message per reading
   and model, :func:`~services.records.result`); a block gets one message per block and model
   (:mod:`services.block_results`: forecasts as an array, anomalies as the sample
   indexes and values that broke the band, classifications of the strided samples).

Anomaly rule: sample ``seq`` is scored for forecaster ``m`` when ``m`` forecast it from the
window ending at ``seq - 1``; its residual goes through the key's anomaly detector
(:mod:`streamedge.contracts.anomaly`, the one the edge agent and ``streamedge predict`` run:
smoothed per-feature errors against a dynamic threshold, one alarm per event, ``anomaly_k`` its
warm-up threshold), and an alarm is an anomaly result. A gap in ``seq`` skips the scoring (the
forecast was for a lost reading). The detector's state lives with the key's window.
The first ``window - 1`` samples of a key fill its window and produce no result.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.anomaly import AnomalyDetector, DetectorConfig
from streamedge.contracts.cycles import CycleCutter
from streamedge.contracts.identity import load_enrolment
from streamedge.contracts.reading import Reading, Rejection, parse_message
from streamedge.services.block_results import (
    RESULT_MAX_BYTES,
    anomaly_messages,
    classification_messages,
    forecast_messages,
)
from streamedge.services.inference import Job, Refusal, collect_windows, infer
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import LoadedModel, ModelSet
from streamedge.services.monitor import ModelMonitor
from streamedge.services.records import Output, Source, dead_letter, dead_letter_key, result
from streamedge.services.settings import StreamSettings
from streamedge.services.shadow import ShadowSet
from streamedge.services.windows import PendingForecast, WindowStore

__all__ = ["Processor"]

# Longest Kafka key quoted in a key_mismatch detail (a valid one is at most 257 bytes).
_KEY_SHOWN = 257


def _key_detail(key: bytes | None, wanted: str) -> str:
    """Why the Kafka ``key`` of a message is not its payload's ``wanted`` key."""
    if key is None:
        return f"the message has no key; its payload's key is {wanted!r}"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"the key ({len(key)} bytes) is not UTF-8; its payload's key is {wanted!r}"
    if len(key) > _KEY_SHOWN:
        return f"the key ({len(key)} bytes) is not its payload's key {wanted!r}"
    return f"the key {text!r} is not its payload's key {wanted!r}"


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
        self.store = WindowStore(models.max_window(), settings.idle_ttl_s, settings.max_keys, settings.max_future_s,
                                 settings.max_seq_jump)
        spec = settings.cycle_spec()
        self.cycles = CycleCutter(spec, settings.max_keys) if spec is not None else None
        self.monitors: dict[str, ModelMonitor] = {}
        # Fixed at construction: a lookup per reading, no entry per stream name a device invents.
        self._routes = {stream: list(names) for stream, names in settings.routes.items()}
        self._default_route = self._routes.get("*", [])
        self._label_cache: dict[str, tuple[Any, Any]] = {}
        self._enrolment = load_enrolment(settings.enrolment) if settings.enrolment is not None else None
        self._detectors: dict[tuple[str, int], AnomalyDetector] = {}
        self.shadows: ShadowSet | None = None
        # Largest block result message; a larger one is split (services.block_results).
        self.result_max_bytes = RESULT_MAX_BYTES
        # Set by install() when a longer window emptied the store (see take_windows_dropped).
        self.windows_dropped = False
        for _name, model in models.items():
            self._watch(model)

    def _watch(self, model: LoadedModel) -> None:
        s = self.settings
        self.monitors[model.name] = ModelMonitor(model.manifest, s.mae_window, s.drift_window, s.mae_factor,
                                                 s.drift_z, s.retrain_min_interval_s)
        self.metrics.model_loaded(model.name, model.version)

    def install(self, model: LoadedModel) -> None:
        """Smoke-test ``model`` on recent windows and make it active (between batches).

        A model with a longer window than any before it would find every key short of samples
        and answer nothing until the keys refill (70 readings acknowledged with no result and no
        metric, before): the windows are dropped, the change counted in
        ``window_rebuilds_total{model}``, and :attr:`windows_dropped` set, so that the worker
        rebuilds every partition from the topic before its next reading (:meth:`take_windows_dropped`).

        Raises:
            ModelRejectedError: the old version keeps serving.
        """
        self.models.swap(model, self.recent_windows(model.window, self.settings.smoke_windows))
        held = self.store.capacity
        self.store.resize(self.models.max_window())
        if self.store.capacity > held:
            self.metrics.window_rebuilds.labels(model.name).inc()
            self.store.clear()
            self.windows_dropped = True
        self._watch(model)

    def take_windows_dropped(self) -> bool:
        """Whether the windows were dropped for a longer model window since the last call."""
        dropped, self.windows_dropped = self.windows_dropped, False
        return dropped

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

    def _admit(self, payload: bytes | None, source: Source) -> Job | Refusal:
        parsed = parse_message(payload)
        if isinstance(parsed, Rejection):
            return parsed.reason, parsed.detail, parsed.sample
        single = isinstance(parsed, Reading)
        wanted = parsed.key.encode()
        if source.key != wanted:
            return "key_mismatch", _key_detail(source.key, parsed.key), None
        if self._enrolment is not None and not self._enrolment.verify_message(
                payload or b"", parsed.device_id, source.auth):
            return "unauthenticated", f"not signed by the enrolled key of device {parsed.device_id!r}", None
        if self.settings.devices and not any(fnmatch.fnmatchcase(parsed.device_id, p) for p in self.settings.devices):
            return "unknown_device", f"device {parsed.device_id!r} is not in the allow-list", None
        names = self._routed(parsed.stream)
        if not names:
            return "unknown_stream", f"no model is routed to stream {parsed.stream!r}", None
        width = len(parsed.values) if isinstance(parsed, Reading) else parsed.values.shape[1]
        for name in names:
            model = self.models.get(name)
            if model is None:
                return "model_unavailable", f"model {name!r} routed to {parsed.stream!r} is not loaded", None
            # A cycle marker is each reading's last value, not a classifier feature.
            marker = int(self._marked(model))
            if model.manifest.n_features + marker != width:
                takes = f"{model.manifest.n_features} features" + (" and the cycle marker" if marker else "")
                return "wrong_feature_count", f"{width} values but {name} takes {takes}", None
        ext = self.store.accept(parsed, source.timestamp, source.partition)
        if ext == "implausible_ts":
            bound = source.timestamp + self.store.max_future_s
            if isinstance(parsed, Reading):
                first_bad, sample = parsed.ts, None
            else:
                sample = int(np.argmax(parsed.ts > bound))
                first_bad = float(parsed.ts[sample])
            return (ext, f"ts {first_bad} is more than {self.store.max_future_s:g} s after its message's time "
                    f"{source.timestamp}", sample)
        if isinstance(ext, str):
            first_ts = parsed.ts if isinstance(parsed, Reading) else float(parsed.ts[0])
            return (ext, f"seq {parsed.seq} ts {first_ts} after seq {self._last(parsed.key)}", None if single else 0)
        return Job(parsed, source, ext, names, payload)

    def _last(self, key: str) -> str:
        state = self.store.get(key)
        return f"{state.last_seq} ts {state.last_ts}" if state is not None else "none"

    def process(self, batch: Sequence[tuple[bytes | None, Source]], emit: bool = True) -> list[Output]:
        """Run one micro-batch; returns the messages to produce, in order.

        Args:
            batch: ``(payload, source)`` pairs in consumption order; a payload is a single
                reading or a reading block.
            emit: False while rebuilding state: windows, pending forecasts and monitors are
                updated, nothing is returned or counted.
        """
        now = self.clock()
        outputs: list[Output] = []
        jobs: list[Job] = []
        evicted, resets = self.store.evicted, self.store.resets
        samples = 0
        for payload, source in batch:
            admitted = self._admit(payload, source)
            if isinstance(admitted, Job):
                collect_windows(admitted, self.models, self.settings.classify_stride, self.cycles)
                jobs.append(admitted)
                samples += 1 if admitted.single is not None else len(admitted.block)
            elif emit:
                reason, detail, sample = admitted
                samples += 1
                outputs.append(self._dead_letter(payload, source, reason, detail, now, sample))
        if emit:
            self.metrics.readings.inc(samples)
        infer(jobs, self.models, self.metrics, self.shadows, emit)
        for job in jobs:
            self._emit(job, now, outputs, emit)
        if emit:
            self._set_mae()
        expired = self.store.expire()
        if emit:
            self.metrics.keys_dropped.labels("idle").inc(expired)
            self.metrics.keys_dropped.labels("capacity").inc(self.store.evicted - evicted)
            self.metrics.key_restarts.inc(self.store.resets - resets)
            self.metrics.active_keys.set(len(self.store))
        return outputs

    def _dead_letter(self, payload: bytes | None, source: Source, reason: str, detail: str, now: float,
                     sample: int | None = None) -> Output:
        self.metrics.dead_letters.labels(reason).inc()
        value = dead_letter(payload, source, reason, detail, now, self.settings.dead_letter_max_bytes, sample)
        return Output("dead_letters", dead_letter_key(source.key), value)

    def _emit(self, job: Job, now: float, outputs: list[Output], emit: bool) -> None:
        if job.failures and emit:
            reason, detail, sample = next(iter(job.failures.values()))
            outputs.append(self._dead_letter(job.payload, job.source, reason, detail, now, sample))
        single = job.single
        if single is not None:
            self._emit_one(job, single, now, outputs, emit)
            return
        for name in job.models:
            model = self.models.get(name)
            if model is None:
                continue
            if emit:  # replayed readings (state rebuild) were already seen by the monitors once
                values = job.block.values
                if self._marked(model):
                    values = values[:, :-1]  # the cycle marker is no input of the classifier
                self.monitors[name].add_inputs(values)
            if model.manifest.task == "forecast":
                self._forecast(job, model, now, outputs, emit)
            elif emit and name in job.outputs:
                self._classify(job, model, now, outputs)

    def _emit_one(self, job: Job, reading: Reading, now: float, outputs: list[Output], emit: bool) -> None:
        """The per-reading path of a single reading: plain floats, per-reading results."""
        key = reading.key.encode()
        for name in job.models:
            model = self.models.get(name)
            if model is None:
                continue
            monitor = self.monitors[name]
            if emit:
                monitor.add_input(reading.values[:-1] if self._marked(model) else reading.values)
            steps = job.row.get(name)
            if model.manifest.task == "forecast":
                self._score_one(job, reading, model, monitor, now, outputs, emit)
                if self.shadows is not None and name in self.shadows:
                    shadow = job.shadow.get(name)
                    self.shadows.observe(name, job.ext.state, reading, shadow[0] if shadow else None)
                if steps is None:
                    continue
                job.ext.state.pending[name] = PendingForecast(reading.seq, name, model.version, tuple(steps[0]))
                if emit:
                    body = {"horizon": model.manifest.horizon, "features": model.manifest.features, "forecast": steps}
                    value = result("forecast", reading, job.source, name, model.version, body, now)
                    outputs.append(Output("forecasts", key, value, reading.ts))
            elif steps is not None and emit:
                labels = model.manifest.class_labels
                best = max(range(len(steps)), key=steps.__getitem__)
                body = {"label": labels[best], "probability": steps[best],
                        "probabilities": dict(zip(labels, steps, strict=True)), "window": model.window}
                value = result("classification", reading, job.source, name, model.version, body, now)
                outputs.append(Output("classifications", key, value, reading.ts))

    def _score_one(self, job: Job, reading: Reading, model: LoadedModel, monitor: ModelMonitor, now: float,
                   outputs: list[Output], emit: bool) -> None:
        pending = job.ext.state.pending.pop(model.name, None)
        if pending is None or pending.seq != reading.seq - 1:
            return
        actual = reading.values
        residual = [a - f for a, f in zip(actual, pending.values, strict=True)]
        error = sum(abs(r) for r in residual) / len(residual)
        if not (all(math.isfinite(r) for r in residual) and math.isfinite(error)):
            return  # values near the float limit overflow: nothing to score, nothing JSON could carry
        # The detector steps in rebuild mode too, so a rebuilt key alarms as the live one would.
        detector = self._detector(model)
        state = job.ext.state.detectors[model.name] = detector.state_for(job.ext.state.detectors.get(model.name))
        verdict = detector.step(state, residual)
        if not emit:
            return
        monitor.add_error(error)
        if not verdict.alarm:
            return
        self._children(model.name)[1].inc()
        body = {"actual": list(actual), "forecast": list(pending.values), "residual": residual, "score": verdict.score,
                "threshold": verdict.threshold, "k": self.settings.anomaly_k, "residual_std": model.residual_std(),
                "forecast_seq": pending.seq, "features": model.manifest.features}
        value = result("anomaly", reading, job.source, model.name, pending.version, body, now)
        outputs.append(Output("anomalies", reading.key.encode(), value, reading.ts))

    def _detector(self, model: LoadedModel) -> AnomalyDetector:
        """The anomaly detector of ``model``'s version (built once per version)."""
        detector = self._detectors.get((model.name, model.version))
        if detector is None:
            manifest = model.manifest
            detector = AnomalyDetector(model.residual_std(), manifest.normalisation["std"],
                                       int(manifest.hyperparameters.get("season") or 1), model.version,
                                       DetectorConfig(k=self.settings.anomaly_k))
            self._detectors = {k: v for k, v in self._detectors.items() if k[0] != model.name}
            self._detectors[(model.name, model.version)] = detector
        return detector

    def _forecast(self, job: Job, model: LoadedModel, now: float, outputs: list[Output], emit: bool) -> None:
        name, block, state = model.name, job.block, job.ext.state
        n = len(block)
        picks = job.picks.get(name)
        steps = job.outputs.get(name)
        pending = state.pending.pop(name, None)
        if self.shadows is not None and name in self.shadows:
            self._observe_shadow(job, name)
        # predicted[i]: the one-step forecast for sample i made at sample i - 1 (NaN: none). Scored
        # in rebuild mode too (the anomaly detector's state), emitting nothing.
        predicted = np.full(block.values.shape, np.nan)
        if pending is not None and pending.seq == block.seq - 1:
            predicted[0] = pending.values
        if picks is not None and steps is not None:
            nxt = picks + 1
            inside = nxt < n
            first_steps = np.where(job.ok[name][:, None], steps[:, 0, :], np.nan)
            predicted[nxt[inside]] = first_steps[inside]
        version = pending.version if pending is not None and pending.seq == block.seq - 1 else model.version
        self._score(job, model, version, predicted, now, outputs, emit)
        if picks is None or steps is None:
            return
        ok = job.ok[name]
        if picks[-1] == n - 1 and ok[-1]:
            state.pending[name] = PendingForecast(block.last_seq, name, model.version, tuple(steps[-1, 0].tolist()))
        if not emit or not ok.any():
            return
        outputs += forecast_messages(block, job.source, model, picks, steps, ok, now, self.result_max_bytes)

    def _score(self, job: Job, model: LoadedModel, version: int, predicted: npt.NDArray[np.float64], now: float,
               outputs: list[Output], emit: bool) -> None:
        """Score every sample with a one-step forecast; emit the alarms (unless rebuilding)."""
        block = job.block
        with np.errstate(over="ignore", invalid="ignore"):
            residual = block.values - predicted
            errors = np.abs(residual).mean(axis=1)
        # No forecast, or values near the float limit (a residual or error that overflows):
        # nothing to score, and nothing that JSON could carry.
        scored = np.isfinite(residual).all(axis=1) & np.isfinite(errors)
        if not scored.any():
            return
        if emit:
            self.monitors[model.name].add_errors(errors[scored].tolist())
        detector = self._detector(model)
        state = job.ext.state.detectors[model.name] = detector.state_for(job.ext.state.detectors.get(model.name))
        score = np.full(len(block), np.nan)
        threshold = np.full(len(block), np.nan)
        alarms = []
        for index in np.flatnonzero(scored).tolist():
            verdict = detector.step(state, residual[index].tolist())
            score[index], threshold[index] = verdict.score, verdict.threshold
            if verdict.alarm:
                alarms.append(index)
        if not (alarms and emit):
            return
        broke = np.asarray(alarms, dtype=np.intp)
        self._children(model.name)[1].inc(len(broke))
        outputs += anomaly_messages(block, job.source, model, version, broke, predicted, residual, score, threshold,
                                    self.settings.anomaly_k, now, self.result_max_bytes)

    def _observe_shadow(self, job: Job, name: str) -> None:
        """Shadow scoring per sample (a diagnostic mode, off the hot path)."""
        assert self.shadows is not None
        picks = job.picks.get(name)
        rows = job.shadow.get(name)
        found = dict(zip(picks.tolist(), rows, strict=True)) if picks is not None and rows is not None else {}
        for index in range(len(job.block)):
            self.shadows.observe(name, job.ext.state, job.block.reading(index), found.get(index))

    def _marked(self, model: LoadedModel) -> bool:
        """Whether ``model``'s readings carry a cycle marker after its features."""
        return self.cycles is not None and self.cycles.spec.marker and model.manifest.task == "classify"

    def _classify(self, job: Job, model: LoadedModel, now: float, outputs: list[Output]) -> None:
        ok = job.ok[model.name]
        if ok.any():
            outputs += classification_messages(job.block, job.source, model, job.picks[model.name][ok],
                                               job.outputs[model.name][ok], now, self.result_max_bytes)

    def _set_mae(self) -> None:
        for name, monitor in self.monitors.items():
            mae = monitor.mae
            if mae is not None:
                self._children(name)[0].set(mae)

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
