"""The stream worker's settings: one frozen pydantic-settings class, env prefix ``STREAMEDGE_STREAM_``.

Kafka connection and credentials live in :class:`streamedge.kafka.settings.KafkaSettings`
(``STREAMEDGE_KAFKA_*``); this class holds what the worker itself does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamedge.contracts.cycles import CycleSpec
from streamedge.paths import user_state_dir
from streamedge.services.records import DEAD_LETTER_LIMIT_BYTES

__all__ = ["StreamSettings"]


class StreamSettings(BaseSettings):
    """How a stream worker routes, batches, scores and monitors.

    Attributes:
        app_id: Faust app id, also the Kafka consumer group id.
        topic_prefix: prefix of every topic name (see :class:`~streamedge.kafka.topics.TopicLayout`).
        model_dir: installed models, ``<model_dir>/<name>/<version>/`` (manifest + model file);
            hot reloads install new versions here too.
        data_dir: Faust's data folder (the worker keeps no table there; Faust wants one).
        public_key: Ed25519 public key (PEM) that every model must be signed with.
        routes: stream name -> model names applied to it; ``"*"`` matches every stream.
            A stream with no route is dead-lettered as ``unknown_stream``.
        devices: allowed device ids as ``fnmatch`` patterns; empty allows every device,
            others are dead-lettered as ``unknown_device``.
        enrolment: enrolment file (``edge enrol``): a reading counts only when its
            ``streamedge-auth`` header is signed by the enrolled device it names; others are
            dead-lettered as ``unauthenticated`` (:mod:`streamedge.contracts.identity`). None: no check.
        batch_size: most windows (and readings) per micro-batch, i.e. per TFLite invoke.
        batch_wait_s: longest wait for a micro-batch to fill, seconds (bounds latency at low rates).
        classify_stride: classify the window ending at reading ``seq`` when ``seq % stride == 0``.
        cycle: ``none`` classifies a window per reading (every ``classify_stride``-th); ``marker``,
            ``gap`` or ``period`` classifies each machine cycle once, resampled to the classifier's
            window (:mod:`streamedge.contracts.cycles`: marker = each reading's last value, not a
            feature of the classifier).
        cycle_gap_s: ``gap``: seconds between readings that end a cycle.
        cycle_period: ``period``: readings per cycle (aligned on ``seq``).
        cycle_max_samples: most readings in one cycle; a cycle that reaches it ends there.
        anomaly_k: anomaly when ``|actual - one-step forecast| > anomaly_k * residual_std`` for any feature.
        idle_ttl_s: a key unseen for this long (Kafka message time) is dropped, seconds.
        max_keys: most keys held per worker; the least recently seen is dropped beyond it. The
            default fits the shipped 512 MiB limit (arithmetic in docs/stream.md, "Memory").
        max_future_s: a reading stamped more than this after its Kafka message time is
            dead-lettered alone (``implausible_ts``), seconds. Ten minutes: clock skew beyond that
            is a broken clock, and a stamp the key accepted blocks the readings stamped before it
            (``out_of_order``) for at most this long.
        max_seq_jump: a reading whose ``seq`` is more than this past its key's last is
            dead-lettered alone (``implausible_seq``) unless the next one continues it
            (:mod:`services.windows`).
        rebuild_max_messages: most readings re-read per partition to rebuild windows on assignment.
        web_host, web_port: the worker's HTTP server (``/metrics``).
        commit_interval_s: Faust offset commit interval, seconds.
        session_timeout_s: consumer group session timeout, seconds: how soon a killed worker's
            partitions move to the others (Faust's default is 60).
        metadata_max_age_s: the consumer refreshes topic metadata at least this often, seconds;
            a worker that joined while its readings topic was missing from the metadata (created
            late, or a broker still catching up after a restart) is assigned nothing and only
            rejoins for it at the next refresh (Kafka's default of 300 s left it idle that long).
        mae_window: readings in the rolling forecast MAE.
        drift_window: readings in the rolling input mean used for drift.
        drift_z: input drift when ``|rolling mean - reference mean| / reference std`` exceeds it.
        mae_factor: error alarm when rolling MAE exceeds ``mae_factor * validation mae``.
        retrain_min_interval_s: at most one retrain request per model per interval, seconds.
        smoke_windows: recent windows a new model version must run on before it serves.
        follow_updates: follow the model-updates topic for hot reloads.
        shadow: model name -> candidate version (installed in ``model_dir``) run in shadow of the
            active version: same windows, comparison exported as metrics, no results.
        runtime: TFLite runtime for :class:`~streamedge.contracts.runner.TFLiteRunner`.
        processing_guarantee: ``at_least_once`` (results acknowledged before offsets commit; a
            crash replays uncommitted readings and consumers drop duplicates by idempotency key)
            or ``exactly_once`` (Kafka transactions, :mod:`services.exactly_once`: results and
            offsets commit together; ``read_committed`` consumers see every result once).
        dead_letter_max_bytes: largest dead letter produced, bytes; an original that does not fit
            is kept as a prefix plus its size and sha256. At most 997,952
            (:data:`~services.records.DEAD_LETTER_LIMIT_BYTES`): the producer's request limit
            (1,000,000) less room for the dead letter's key (up to 1024 bytes) and the record's
            framing. Keep it below the dead-letter topic's ``max.message.bytes`` too.
        unhealthy_after_s: ``/health`` answers 503 once a batch has waited this long for the
            broker to acknowledge its results, seconds.
        exit_after_s: the worker exits non-zero once a batch has waited this long, seconds; a
            restart resumes from the committed offsets.
        max_model_bytes: largest model file fetched over ``http(s)://``; bigger ones are refused.
        registry_token_file: file holding the bearer token for the registry's HTTP(S) server.
        registry_cafile: CA bundle (PEM) trusted for ``https://`` model URIs (None: the system store).
        registry_url: the registry origin (``https://registry:8765``) the token was issued for; the
            token is sent there only (required with a token; ``http://`` only on loopback).
    """

    model_config = SettingsConfigDict(env_prefix="STREAMEDGE_STREAM_", frozen=True, extra="forbid")

    app_id: str = "streamedge-stream"
    topic_prefix: str = "streamedge."
    model_dir: Path = Field(default_factory=lambda: user_state_dir() / "models")
    data_dir: Path = Field(default_factory=lambda: user_state_dir() / "stream")
    public_key: Path | None = None
    routes: dict[str, list[str]] = Field(default_factory=dict)
    devices: list[str] = Field(default_factory=list)
    enrolment: Path | None = None
    batch_size: int = Field(default=256, ge=1, le=100_000)
    batch_wait_s: float = Field(default=0.02, gt=0, le=10)
    classify_stride: int = Field(default=1, ge=1)
    cycle: Literal["none", "marker", "gap", "period"] = "none"
    cycle_gap_s: float = Field(default=0.0, ge=0)
    cycle_period: int = Field(default=0, ge=0)
    cycle_max_samples: int = Field(default=4096, ge=1, le=1_000_000)
    anomaly_k: float = Field(default=4.0, gt=0)
    idle_ttl_s: float = Field(default=3600.0, gt=0)
    max_keys: int = Field(default=30_000, ge=1)
    max_future_s: float = Field(default=600.0, ge=0)
    max_seq_jump: int = Field(default=1_000_000, ge=1)
    rebuild_max_messages: int = Field(default=500_000, ge=0)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    commit_interval_s: float = Field(default=1.0, gt=0)
    session_timeout_s: float = Field(default=10.0, ge=6)
    metadata_max_age_s: float = Field(default=10.0, ge=1)
    mae_window: int = Field(default=500, ge=1)
    drift_window: int = Field(default=1000, ge=10)
    drift_z: float = Field(default=3.0, gt=0)
    mae_factor: float = Field(default=2.0, gt=0)
    retrain_min_interval_s: float = Field(default=3600.0, ge=0)
    smoke_windows: int = Field(default=16, ge=1)
    follow_updates: bool = True
    shadow: dict[str, int] = Field(default_factory=dict)
    runtime: str = "auto"
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    dead_letter_max_bytes: int = Field(default=900_000, ge=4096, le=DEAD_LETTER_LIMIT_BYTES)
    unhealthy_after_s: float = Field(default=60.0, gt=0)
    exit_after_s: float = Field(default=300.0, gt=0)
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    registry_token_file: Path | None = None
    registry_cafile: Path | None = None
    registry_url: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StreamSettings:
        if self.runtime not in ("auto", "ai_edge_litert", "tflite_runtime", "tensorflow"):
            raise ValueError(f"runtime must be auto, ai_edge_litert, tflite_runtime or tensorflow, got {self.runtime!r}")
        for stream, names in self.routes.items():
            if not names:
                raise ValueError(f"route for stream {stream!r} names no model")
        if self.exit_after_s < self.unhealthy_after_s:
            raise ValueError(f"exit_after_s ({self.exit_after_s:g}) must be >= unhealthy_after_s "
                             f"({self.unhealthy_after_s:g})")
        self.cycle_spec()  # a gap or period cycle without its length is refused at start
        return self

    def cycle_spec(self) -> CycleSpec | None:
        """Where classification cycles end, or None (``cycle`` none: a window per reading)."""
        if self.cycle == "none":
            return None
        return CycleSpec(self.cycle, self.cycle_gap_s, self.cycle_period, self.cycle_max_samples)

    def models_for(self, stream: str) -> list[str]:
        """Model names routed to ``stream`` (its own route, else ``"*"``, else none)."""
        return list(self.routes.get(stream, self.routes.get("*", [])))

    def model_names(self) -> list[str]:
        """Every model name named by a route, sorted."""
        return sorted({name for names in self.routes.values() for name in names})
