"""Settings of one load-generation run (frozen; the CLI builds them once and passes them down)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamedge.contracts.reading import MAX_BLOCK_SAMPLES, MAX_FEATURES, MAX_TS

__all__ = ["SimulateSettings"]


class SimulateSettings(BaseModel):
    """What to send, how fast and with which faults.

    Attributes:
        devices: simulated devices, ``<device_prefix>-<i>``, one stream each.
        rate: readings per second over all devices; 0 sends as fast as the broker takes them.
        count: readings to send in all (samples, not messages); stop after ``duration_s`` otherwise.
        duration_s: wall-clock seconds to run, when ``count`` is not given.
        block_size: samples per message; 1 sends single readings, more sends reading blocks.
        period_s: event-time seconds between a device's samples; default ``devices / rate``
            (1 ms when unpaced).
        generator: a ``streamedge train gan`` output folder to sample values from.
        replay: a CSV/TSV table (header row, numeric columns) whose rows are replayed, looping.
        n_features: values per sample of the built-in sine source.
        drift_at_s: event-time seconds after the start from which every sample drifts.
        drift_shift: the drift, a level shift in units of the source's scale.
        anomalies: probability that a sample is an anomaly (a spike of 6 scale units).
        garbage: probability that a malformed message is sent after a good one.
        seed: seeds every random choice: the same settings send the same bytes.
        start_ts: event time of every device's first sample (default: the wall clock at start).
        stream, device_prefix: naming of the keys ``<device_prefix>-<i>/<stream>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: int = Field(default=10, ge=1, le=1_000_000)
    rate: float = Field(default=1000.0, ge=0.0, le=1e9, allow_inf_nan=False)
    count: int | None = Field(default=None, ge=1, le=10**12)
    duration_s: float | None = Field(default=None, gt=0.0, le=1e7, allow_inf_nan=False)
    block_size: int = Field(default=1, ge=1, le=MAX_BLOCK_SAMPLES)
    period_s: float | None = Field(default=None, gt=0.0, le=86_400.0, allow_inf_nan=False)
    generator: Path | None = None
    replay: Path | None = None
    n_features: int = Field(default=1, ge=1, le=MAX_FEATURES)
    drift_at_s: float | None = Field(default=None, ge=0.0, le=1e9, allow_inf_nan=False)
    drift_shift: float = Field(default=3.0, ge=-1e6, le=1e6, allow_inf_nan=False)
    anomalies: float = Field(default=0.0, ge=0.0, le=1.0)
    garbage: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, lt=2**63)
    start_ts: float | None = Field(default=None, ge=0.0, le=MAX_TS / 2, allow_inf_nan=False)
    stream: str = Field(default="signal", pattern=r"^[A-Za-z0-9._:\-]{1,64}$")
    device_prefix: str = Field(default="sim", pattern=r"^[A-Za-z0-9._:\-]{1,48}$")

    @model_validator(mode="after")
    def _check(self) -> SimulateSettings:
        if self.count is None and self.duration_s is None:
            raise ValueError("give count or duration_s (or both)")
        if self.generator is not None and self.replay is not None:
            raise ValueError("generator and replay are alternatives: give one")
        return self

    @property
    def period(self) -> float:
        """Event-time seconds between one device's samples."""
        if self.period_s is not None:
            return self.period_s
        return self.devices / self.rate if self.rate > 0 else 1e-3
