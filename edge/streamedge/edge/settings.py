"""The edge agent's settings: one frozen pydantic-settings class, env prefix ``STREAMEDGE_EDGE_``.

Kafka connection settings (TLS, SASL) are not repeated here: they come from
:class:`streamedge.kafka.settings.KafkaSettings` (``STREAMEDGE_KAFKA_*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamedge.contracts.cycles import CycleSpec
from streamedge.contracts.results import MAX_BLOCK_RESULTS, MAX_RESULT_BLOCK_BYTES
from streamedge.edge.forwarder import DEFAULT_BLOCK_BYTES
from streamedge.paths import user_state_dir

__all__ = ["EdgeSettings", "SourceKind"]

SourceKind = Literal["simulator", "file", "stdin", "kafka"]


class EdgeSettings(BaseSettings):
    """Everything one edge agent needs besides the Kafka connection.

    Sizes are bytes, durations seconds, rates readings per second. Default paths are absolute,
    under the state folder (:func:`streamedge.paths.user_state_dir`, ``$STREAMEDGE_HOME``), so an
    agent started from any folder finds the same models and buffer.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMEDGE_EDGE_", frozen=True, extra="forbid")

    device_id: str = Field(default="edge-1", pattern=r"^[A-Za-z0-9._:\-]{1,128}$",
                           description="this device's id, carried by every result and heartbeat")
    group: str = Field(default="", pattern=r"^[A-Za-z0-9._:\-]{0,128}$",
                       description="device group a staged promotion may target (promote --to GROUP); empty: none")
    model_dir: Path = Field(default_factory=lambda: user_state_dir() / "edge" / "models",
                            description="local model folder: <model_dir>/<name>/<version>/ + current")
    model_name: str = Field(default="", description="model to serve (empty: the only name in model_dir)")
    public_key: Path | None = Field(default=None, description="trusted Ed25519 public key (PEM); models are verified with it")
    source: SourceKind = Field(default="simulator", description="where readings come from: simulator, file, stdin or kafka")
    source_path: Path | None = Field(default=None, description="CSV or JSONL file for source=file")
    source_time_column: str = Field(default="", description="source=file table: time column (empty: ts/time/"
                                    "timestamp/datetime/date or the one with ISO dates)")
    source_time_unit: Literal["auto", "iso", "s", "ms", "us", "ns"] = Field(
        default="auto", description="source=file table: ISO 8601 or epoch s/ms/us/ns (auto: detected and logged)")
    source_id_column: str = Field(default="", description="source=file table: device column (empty: device_id "
                                  "if present, else --device-id)")
    source_columns: str = Field(default="", description="source=file table: feature columns, comma-separated "
                                "(empty: every numeric column but time, device, seq, stream)")
    rate: float = Field(default=0.0, ge=0.0, description="replay/simulator rate in readings/s (0: as fast as possible)")
    source_topic: str = Field(default="", description="Kafka topic for source=kafka (default: the readings topic)")
    simulator_keys: int = Field(default=2, ge=1, le=1000, description="simulated streams")
    simulator_readings: int = Field(default=0, ge=0, description="simulated readings in all, 0 for endless")
    n_features: int = Field(default=0, ge=0, description="features per reading the source sends (0: learn from the model)")
    buffer_path: Path = Field(default_factory=lambda: user_state_dir() / "edge" / "buffer.sqlite",
                              description="SQLite (WAL) store-and-forward buffer")
    buffer_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, description="buffer bound; oldest rows dropped beyond")
    buffer_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0, description="rows older than this are dropped")
    buffer_fsync: bool = Field(default=True, description="fsync each commit (survives power loss, not only SIGKILL)")
    batch_size: int = Field(default=64, ge=1, le=10_000, description="payloads (readings or blocks) read per loop iteration")
    batch_max_samples: int = Field(default=4096, ge=1, le=1_000_000,
                                   description="results per buffer transaction: a batch of blocks commits in parts")
    batch_max_bytes: int = Field(default=1024 * 1024, ge=1024,
                                 description="result bytes per buffer transaction (at most buffer_max_bytes)")
    queue_size: int = Field(default=1024, ge=1, description="readings a source may hold ahead of inference (backpressure)")
    max_keys: int = Field(default=10_000, ge=1, description="windows kept in memory; least recently seen evicted beyond")
    stride: int = Field(default=1, ge=1, description="emit a result every N readings per key")
    cycle: Literal["none", "marker", "gap", "period"] = Field(
        default="none", description="classify once per machine cycle: cycles end at a reading whose last value "
                                    "(the marker, not a feature) is non-zero, after a time gap, or every N readings "
                                    "(none: a classification per reading, every stride-th)")
    cycle_gap_s: float = Field(default=0.0, ge=0, description="cycle=gap: seconds between readings that end a cycle")
    cycle_period: int = Field(default=0, ge=0, description="cycle=period: readings per cycle, aligned on seq")
    cycle_max_samples: int = Field(default=4096, ge=1, le=1_000_000,
                                   description="most readings of one open cycle; a cycle that reaches it ends there")
    anomaly_sigmas: float = Field(default=4.0, gt=0, description="anomaly band half-width in validation residual std")
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime"] = Field(
        default="auto", description="TFLite interpreter: auto prefers ai-edge-litert, else tflite-runtime")
    heartbeat_interval_s: float = Field(default=30.0, gt=0, description="telemetry heartbeat period")
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="Prometheus port on metrics_host (0: disabled)")
    metrics_host: str = Field(default="127.0.0.1", description="address the metrics endpoint binds")
    model_updates: bool = Field(default=True, description="follow the model-updates topic")
    error_window: int = Field(default=256, ge=1, le=100_000,
                              description="scored forecasts in the live error (rolling MAE) a heartbeat reports")
    max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1024,
                                 description="largest model file a device downloads; bigger ones are refused")
    registry_token_file: Path | None = Field(
        default=None, description="file holding the bearer token for the registry's HTTP(S) server")
    registry_cafile: Path | None = Field(default=None, description="CA bundle (PEM) trusted for https:// model URIs")
    device_key_file: Path | None = Field(
        default=None, description="this device's telemetry key (hex, from 'edge enrol'): heartbeats are signed "
                                  "with it so the canary watcher knows they are this device's")
    registry_url: str | None = Field(
        default=None, description="registry origin the token was issued for (https://host:port); the token goes "
                                  "there only (http:// only on loopback)")
    forward_block_rows: int = Field(
        default=256, ge=1, le=MAX_BLOCK_RESULTS,
        description="results per Kafka message: consecutive results go as one result block (1: one message each)")
    forward_block_bytes: int = Field(
        default=DEFAULT_BLOCK_BYTES, ge=4096, le=MAX_RESULT_BLOCK_BYTES,
        description="largest result block in bytes; a result larger than that goes alone")
    kafka_timeout_s: float = Field(default=5.0, gt=0, description="bound on any one Kafka call; a dead broker never blocks")
    drain_timeout_s: float = Field(default=10.0, ge=0, description="when the source ends, time to forward the buffer; "
                                   "on a stop request, time to score what the source already queued")
    log_format: Literal["json", "text"] = Field(default="json", description="structured JSON logs or plain text")

    @model_validator(mode="after")
    def _check_source(self) -> EdgeSettings:
        if self.source == "file" and self.source_path is None:
            raise ValueError("source=file needs source_path")
        if self.buffer_max_bytes < self.batch_max_bytes:
            raise ValueError(f"buffer_max_bytes ({self.buffer_max_bytes}) is below one transaction's results "
                             f"(batch_max_bytes, {self.batch_max_bytes}): every commit would drop its own rows")
        self.cycle_spec()  # a gap or period cycle without its length is refused at start
        return self

    def cycle_spec(self) -> CycleSpec | None:
        """Where classification cycles end, or None (``cycle`` none: a classification per reading)."""
        if self.cycle == "none":
            return None
        return CycleSpec(self.cycle, self.cycle_gap_s, self.cycle_period, self.cycle_max_samples)
