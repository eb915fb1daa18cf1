"""The retrainer: answer the stream workers' retrain requests with a validated, promoted model.

Loop (``streamedge train watch``): consume the retrain-requests topic in a consumer group, one
request at a time, committing each offset after its request was handled (at-least-once). For
a request ``{"model", "version", "trigger", "requested_at", ...}`` (see
:class:`services.monitor.ModelMonitor`):

1. **stale**: the requested version is no longer the registry's active one (a duplicate, or
   a request answered already): skipped;
2. **needs_labels**: classifiers are not retrained, the stream carries no labels;
3. **rate_limited**: a model is retrained at most once per ``min_interval_s``;
4. replay the readings topic with bounded memory, keep the streams routed to the model, the
   devices of the worker's allow-list, the readings of the model's feature count (others are
   skipped and counted) and the last ``history`` readings of each key; admit them by policy
   (:mod:`training.admission`: enrolled devices only,
   a data check against the current model's training spread, no device above a stated share);
   hold the newest ``holdout_fraction`` of every series out;
5. train with the active version's hyperparameters (:func:`training.forecast.train_forecaster`,
   whose export runs the TFLite parity gate); the shipped variant must have passed it;
6. champion/challenger (:mod:`training.challenger`): the candidate's held-out MAE must be at
   least ``min_improvement`` (relative) below the active model's, else **rejected**;
7. register (signed), verify, promote and publish on the model-updates topic: **promoted**.
   The promotion is staged by default (``promote_to="canary:10"``): only a canary share of the
   devices serves it, ``streamedge models watch-canary`` rolls it back when they do worse, and
   it reaches the whole fleet only when an operator promotes it to ``all`` once the watcher
   judged it healthy. While a canary is out, requests are ``stale``. Workers serve the fleet
   version (:mod:`services.updates`).

Every request ends in one :class:`RetrainOutcome`, logged and counted in
``streamedge_retrain_outcomes_total{model,outcome}``. A failed attempt is committed too: the
worker's monitor asks again after its own rate limit.

Requests are untrusted: any bytes (a tombstone, invalid UTF-8, nested JSON, 400-digit numbers,
wrong types, a model name that is no file name) end as ``invalid`` and are committed, so no
request stops the service or comes back after a restart. The ``model`` label is bounded: a name
routed to this retrainer, else ``other`` (``-`` for an unreadable request).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, Counter

from streamedge.contracts.keys import TrustAnchor
from streamedge.contracts.manifest import ModelManifest, read_manifest, write_manifest
from streamedge.contracts.rollout import parse_target
from streamedge.errors import StreamedgeError
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.training.admission import AdmissionPolicy, admit
from streamedge.training.config import ForecasterConfig
from streamedge.training.data import SeriesData
from streamedge.training.errors import DataError, TrainingError

__all__ = [
    "OUTCOMES",
    "RetrainError",
    "RetrainMetrics",
    "RetrainOutcome",
    "RetrainPolicy",
    "Retrainer",
    "parse_request",
    "serve",
]

_log = logging.getLogger(__name__)
# Commit retries while the broker is down: first wait, and the cap of the doubling.
_COMMIT_BACKOFF_S: Final = 0.5
_COMMIT_MAX_BACKOFF_S: Final = 5.0

OutcomeKind = Literal["promoted", "rejected", "stale", "rate_limited", "needs_labels", "invalid", "failed"]
OUTCOMES: Final = ("promoted", "rejected", "stale", "rate_limited", "needs_labels", "invalid", "failed")
# A retrain takes minutes; the consumer must not be thrown out of its group meanwhile.
_MAX_POLL_INTERVAL_MS: Final = 3_600_000
_KEPT_OUTCOMES: Final = 1000
_METADATA_TIMEOUT_S: Final = 30.0
# Metadata refresh: a rejoin while a restarted broker still catches up can find the topic
# missing and assign nothing until the next refresh (Kafka's default: five minutes).
_METADATA_MAX_AGE_MS: Final = 10_000
# Model names double as registry folder names: no separators, no "." or "..".
_MODEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RetrainError(TrainingError):
    """A retrain request is malformed or cannot be served."""


@dataclass(frozen=True)
class RetrainOutcome:
    """What became of one retrain request.

    Attributes:
        model: model name (``""`` when the request was unreadable).
        requested_version: the version the request was about.
        outcome: one of :data:`OUTCOMES`.
        reason: one line for people.
        trigger: the monitor rule that fired (``drift``, ``error``).
        new_version: the promoted version (``promoted`` only).
        champion_mae, candidate_mae: held-out MAE in original units, when both were measured.
    """

    model: str
    requested_version: int | None
    outcome: OutcomeKind
    reason: str
    trigger: str = ""
    new_version: int | None = None
    champion_mae: float | None = None
    candidate_mae: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RetrainPolicy:
    """How much history a retrain uses and what a candidate must do to be promoted.

    Attributes:
        history: newest readings kept per ``device/stream`` key.
        holdout_fraction: newest share of every kept series held out for champion/challenger.
        min_improvement: the candidate's held-out MAE must be below ``(1 - min_improvement)``
            times the champion's (0.02 = at least 2 % better).
        min_interval_s: at most one retrain per model per interval, seconds.
        epochs: cap on the stored hyperparameters' epochs (None keeps them).
        admission: which replayed readings may be learnt from (:class:`training.admission.AdmissionPolicy`).
        promote_to: the rollout target of an automatic promotion: ``"canary:<pct>"`` (default
            10 %), ``"group:<name>"`` or ``"all"``.
    """

    history: int = 2000
    holdout_fraction: float = 0.2
    min_improvement: float = 0.02
    min_interval_s: float = 600.0
    epochs: int | None = None
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    promote_to: str = "canary:10"

    def __post_init__(self) -> None:
        if self.history < 8:
            raise ValueError(f"history must be at least 8 readings, got {self.history}")
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"min_improvement must be in [0, 1), got {self.min_improvement}")
        if self.min_interval_s < 0 or (self.epochs is not None and self.epochs < 1):
            raise ValueError("min_interval_s must be >= 0 and epochs >= 1")
        parse_target(self.promote_to)


class RetrainMetrics:
    """``streamedge_retrain_outcomes_total{model,outcome}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter("streamedge_retrain_outcomes", "Retrain requests handled, by model and outcome",
                                ["model", "outcome"], registry=registry)


def parse_request(payload: bytes | None) -> tuple[str, int, str]:
    """``(model, version, trigger)`` of a retrain request.

    ``model`` is 1-128 chars of ``[A-Za-z0-9._-]`` starting with a letter or digit, ``version``
    an integer in [1, 2**31), ``trigger`` a string (at most 64 chars kept).

    Raises:
        RetrainError: for any other bytes (``None`` included); no other exception comes out.
    """
    if payload is None:
        raise RetrainError("retrain request is empty (null value)")
    try:
        body = json.loads(payload)
    except ValueError as exc:  # UnicodeDecodeError and over-long integers included
        raise RetrainError(f"retrain request is not JSON: {str(exc)[:200]}") from exc
    except RecursionError as exc:
        raise RetrainError("retrain request is not JSON: nested too deeply") from exc
    if not isinstance(body, dict):
        raise RetrainError("retrain request is not a JSON object")
    model, version, trigger = body.get("model"), body.get("version"), body.get("trigger", "")
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise RetrainError("retrain request needs 'model': 1-128 chars of [A-Za-z0-9._-]")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
        raise RetrainError("retrain request needs 'version': an integer in [1, 2**31)")
    if not isinstance(trigger, str):
        raise RetrainError("retrain request 'trigger' must be a string")
    return model, version, trigger[:64]


class Retrainer:
    """Handles retrain requests against a registry and a readings topic.

    Args:
        registry: the model registry (active versions, where candidates are added).
        signing_key: signs added versions.
        public_key: verifies the active version before its manifest is trusted, and the new one.
        kafka: connection for the replay and for publishing model updates.
        layout: topic names (readings, model_updates).
        routes: stream name -> model names, as the stream worker takes them (``"*"`` = all).
        work_dir: scratch folder for candidates (removed after each request).
        policy: history, holdout and promotion rules.
        metrics: outcome counter, optional.
        clock: monotonic seconds, for the rate limit.
        progress: show training progress bars.
    """

    def __init__(self, registry: ModelRegistry, signing_key: Ed25519PrivateKey, public_key: TrustAnchor,
                 kafka: KafkaSettings, layout: TopicLayout, routes: dict[str, list[str]], work_dir: Path,
                 policy: RetrainPolicy | None = None, metrics: RetrainMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, progress: bool = False) -> None:
        self.registry = registry
        self.signing_key = signing_key
        self.public_key = public_key
        self.kafka = kafka
        self.layout = layout
        self.routes = routes
        self.work_dir = work_dir
        self.policy = policy or RetrainPolicy()
        self.metrics = metrics
        self.clock = clock
        self.progress = progress
        self._last_attempt: dict[str, float] = {}

    def handle(self, payload: bytes | None) -> RetrainOutcome:
        """Handle one request message end to end.

        Never raises for a bad request or a failed retrain: every case ends in an outcome, so the
        consumer commits and a poison request cannot stop the service.
        """
        try:
            model, version, trigger = parse_request(payload)
        except RetrainError as exc:
            return self._done(RetrainOutcome("", None, "invalid", str(exc)))
        try:
            outcome = self._handle(model, version, trigger)
        except (StreamedgeError, OSError, ValueError) as exc:
            outcome = RetrainOutcome(model, version, "failed", f"{type(exc).__name__}: {exc}", trigger)
        except Exception as exc:  # TensorFlow raises many types; one bad retrain must not stop the service
            _log.exception("retrain %s v%d crashed", model, version)
            outcome = RetrainOutcome(model, version, "failed", f"unexpected {type(exc).__name__}: {exc}", trigger)
        return self._done(outcome)

    def _done(self, outcome: RetrainOutcome) -> RetrainOutcome:
        level = logging.WARNING if outcome.outcome in ("failed", "invalid", "needs_labels") else logging.INFO
        _log.log(level, "retrain %s v%s (%s): %s: %s", outcome.model or "?", outcome.requested_version,
                 outcome.trigger or "-", outcome.outcome, outcome.reason)
        if self.metrics is not None:
            self.metrics.outcomes.labels(self._label(outcome.model), outcome.outcome).inc()
        return outcome

    def _label(self, model: str) -> str:
        """The metric label of ``model``: bounded to the routed names, ``other``, and ``-``."""
        if not model:
            return "-"
        return model if any(model in names for names in self.routes.values()) else "other"

    def _handle(self, model: str, version: int, trigger: str) -> RetrainOutcome:
        active = self.registry.active_version(model)
        if active is None:
            return RetrainOutcome(model, version, "failed", "no promoted version in the registry", trigger)
        if version != active:
            return RetrainOutcome(model, version, "stale", f"v{version} is no longer active (v{active} is)", trigger)
        staged = self.registry.canary(model)
        if staged is not None:
            return RetrainOutcome(model, version, "stale", f"v{staged[0]} is out to {staged[1]}: judged (watch-canary) "
                                  "and widened or rolled back before another retrain", trigger)
        manifest = self.registry.verify(model, active, self.public_key)
        if manifest.task != "forecast":
            return RetrainOutcome(model, version, "needs_labels", "classifier retraining needs labelled data; "
                                  "the readings stream carries no labels", trigger)
        now = self.clock()
        last = self._last_attempt.get(model)
        if last is not None and now - last < self.policy.min_interval_s:
            return RetrainOutcome(model, version, "rate_limited", f"retrained {now - last:.0f} s ago "
                                  f"(at most once per {self.policy.min_interval_s:g} s)", trigger)
        self._last_attempt[model] = now
        return self._retrain(manifest, trigger)

    def _config(self, manifest: ModelManifest) -> ForecasterConfig:
        stored = manifest.hyperparameters
        if stored.get("model") not in ("lstm", "linear"):
            raise RetrainError(f"{manifest.name} v{manifest.version} stores no forecaster training hyperparameters "
                               "(it was not made by 'streamedge train forecaster')")
        names = {f.name for f in dataclasses.fields(ForecasterConfig)}
        config = ForecasterConfig(**{k: v for k, v in stored.items() if k in names})
        # One test block: the readings since a shift are few, and the champion/challenger gate, not
        # rolling origins, judges a retrained candidate (v1's three origins refused 100 readings a key).
        config = dataclasses.replace(config, origins=1)
        if self.policy.epochs is not None and self.policy.epochs < config.epochs:
            config = dataclasses.replace(config, epochs=self.policy.epochs)
        return config

    def _history(self, champion: ModelManifest, config: ForecasterConfig) -> tuple[SeriesData, int]:
        from streamedge.training.challenger import holdout_size
        from streamedge.training.kafka_source import replay_topic

        model = champion.name
        streams = {stream for stream, names in self.routes.items() if model in names}
        if not streams:
            raise RetrainError(f"no stream is routed to {model}")
        # Bounded by what is kept (keys * history readings), not by the topic's length.
        replayed = replay_topic(self.kafka, self.layout.readings, streams=streams,
                                enrolment=self.policy.admission.enrolment, features=champion.n_features,
                                devices=self.policy.admission.devices, history=self.policy.history)
        if replayed.report.skipped:
            _log.warning("retrain %s: replayed readings left out: %s", model, replayed.report.skipped)
        admission = admit(replayed, champion, self.policy.admission)
        for device, reason in sorted(admission.refused.items()):
            _log.warning("retrain %s: readings of %.80r not admitted: %s", model, device, reason)
        if admission.capped:
            _log.info("retrain %s: readings left out to bound each device's share: %s", model, admission.capped)
        data = admission.data
        # A key too short for a training window beside its held-out tail is left out, not fatal.
        need = config.window + 3 * config.horizon + 1
        keep = [i for i, s in enumerate(data.series)
                if len(s) - holdout_size(len(s), self.policy.holdout_fraction, config.horizon) >= need]
        if not keep:
            raise DataError(f"no key of streams {sorted(streams)} has enough readings for window {config.window}, "
                            f"horizon {config.horizon} and the hold-out (found {len(data.series)} key(s))")
        skipped = len(data.series) - len(keep)
        return dataclasses.replace(data, series=[data.series[i] for i in keep], ids=[data.ids[i] for i in keep]), skipped

    def _retrain(self, champion: ModelManifest, trigger: str) -> RetrainOutcome:
        from streamedge.training.challenger import holdout_mae, split_holdout
        from streamedge.training.forecast import train_forecaster

        name, version = champion.name, champion.version
        config = self._config(champion)
        data, skipped = self._history(champion, config)
        train_data, sizes = split_holdout(data, self.policy.holdout_fraction, config.horizon)
        _log.info("retrain %s v%d: %d key(s), %d readings (%d held out), %d key(s) too short", name, version,
                  len(data.series), sum(len(s) for s in data.series), sum(sizes), skipped)
        out = self.work_dir / f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            # config holds the champion's per-series scaling decision: the retrain makes the same one
            metrics = train_forecaster(train_data, out, config, name=name, progress=self.progress)
            selected = metrics["selected_variant"]
            if metrics["tflite"][selected]["parity"] != "passed":
                why = metrics["refused_variants"].get(selected) or metrics["selection_reason"]
                return RetrainOutcome(name, version, "rejected", f"parity gate: {selected}: {why}", trigger)
            candidate = read_manifest(out)
            champion_mae = holdout_mae(self.registry.path(name, version), champion, data.series, sizes)
            candidate_mae = holdout_mae(out, candidate, data.series, sizes)
            limit = champion_mae * (1.0 - self.policy.min_improvement)
            if not candidate_mae < limit:
                return RetrainOutcome(name, version, "rejected", f"candidate held-out MAE {candidate_mae:.4g} does "
                                      f"not beat champion v{version} ({champion_mae:.4g}) by "
                                      f"{self.policy.min_improvement:.0%}", trigger,
                                      champion_mae=champion_mae, candidate_mae=candidate_mae)
            provenance = {"parent_version": version, "trigger": trigger, "keys": len(data.series),
                          "holdout_readings": sum(sizes),
                          "champion_mae": champion_mae, "candidate_mae": candidate_mae}
            write_manifest(candidate.replace(metrics={**candidate.metrics, "retrain": provenance}), out)
            added = self.registry.add(out, self.signing_key)
            self.registry.verify(name, added.version, self.public_key)
            update = self.registry.promote(name, added.version, self.signing_key, target=self.policy.promote_to)
            try:
                publish_model_update(self.kafka, self.layout, update)
            except Exception as exc:  # kafka-python raises many types; the promotion must not stay unannounced
                self.registry.rollback(name, self.signing_key)
                raise RetrainError(f"v{added.version} registered but not announced ({exc}); promotion rolled "
                                   "back") from exc
            return RetrainOutcome(name, version, "promoted", f"v{added.version} promoted to "
                                  f"{self.policy.promote_to}: held-out MAE "
                                  f"{candidate_mae:.4g} vs {champion_mae:.4g}", trigger, added.version,
                                  champion_mae, candidate_mae)
        finally:
            shutil.rmtree(out, ignore_errors=True)


def serve(retrainer: Retrainer, group_id: str, max_requests: int | None = None, stop: Event | None = None,
          poll_s: float = 1.0) -> list[RetrainOutcome]:
    """Consume retrain requests in consumer group ``group_id`` until ``stop`` or ``max_requests``.

    Each offset is committed after its request was handled (at-least-once: a crash mid-retrain
    redelivers the request; once the retrain was promoted the redelivery is ``stale``).

    Returns:
        The outcomes, newest last (at most the last 1000).
    """
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    outcomes: deque[RetrainOutcome] = deque(maxlen=_KEPT_OUTCOMES)
    handled = 0
    topic = retrainer.layout.retrain_requests
    consumer = KafkaConsumer(group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=1, max_poll_interval_ms=_MAX_POLL_INTERVAL_MS,
                             metadata_max_age_ms=_METADATA_MAX_AGE_MS,
                             **retrainer.kafka.kafka_python_config())
    try:
        # Subscribing before the client knows the topic's partitions joins the group with no
        # assignment until the next metadata refresh (minutes): fetch them first.
        deadline = time.monotonic() + _METADATA_TIMEOUT_S
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise RetrainError(f"topic {topic!r} has no partitions after {_METADATA_TIMEOUT_S:g} s; "
                                   "create the topics first ('streamedge kafka topics')")
            time.sleep(0.5)
        consumer.subscribe([topic])
        while not (stop is not None and stop.is_set()) and (max_requests is None or handled < max_requests):
            for tp, records in consumer.poll(timeout_ms=int(poll_s * 1000)).items():
                for record in records:
                    outcomes.append(retrainer.handle(record.value))
                    handled += 1
                    _commit(consumer, {tp: OffsetAndMetadata(record.offset + 1, "", -1)}, stop)
        return list(outcomes)
    finally:
        consumer.close()


def _commit(consumer: Any, offsets: dict[Any, Any], stop: Event | None) -> None:
    """Commit ``offsets``, retrying with backoff while the broker is unreachable.

    A broker that dies mid-retrain must not stop the retrainer: the commit waits for it (or for
    ``stop``). A commit the group refuses (the partition moved in a rebalance) is given up, as is
    one still pending at ``stop``: the request is then redelivered, and a redelivered request
    whose retrain was already promoted ends as ``stale`` (at-least-once, never lost).
    """
    from kafka.errors import CommitFailedError, KafkaError

    backoff = _COMMIT_BACKOFF_S
    while True:
        try:
            consumer.commit(offsets)
            return
        except CommitFailedError as exc:
            _log.warning("commit refused after a rebalance; the request will be redelivered: %s", exc)
            return
        except KafkaError as exc:
            if stop is not None and stop.is_set():
                _log.warning("stopping with a commit pending; the request will be redelivered: %s", exc)
                return
            _log.warning("commit failed (%s); retrying in %.1f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, _COMMIT_MAX_BACKOFF_S)
