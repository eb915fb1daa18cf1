"""Whether a worker makes progress: the ``/health`` answer and the decision to exit.

A worker is **healthy** while no batch has waited longer than ``unhealthy_after_s`` for the broker
to acknowledge its output and nothing failed for good. It is **stuck** once a batch has waited
``exit_after_s``, or at once after a failure it cannot recover from in-process (an exception
while processing a batch leaves its events held and the state unknown): the worker then exits
non-zero, and a restart resumes from the committed offsets with windows rebuilt from the topic.
"""

from __future__ import annotations

from typing import Any, Literal

from streamedge.services.metrics import StreamMetrics

__all__ = ["Health", "HealthState"]

HealthState = Literal["ok", "unhealthy", "stuck"]


class Health:
    """Progress verdict from the age of the oldest undelivered batch.

    Args:
        metrics: sets ``streamedge_stream_healthy`` and ``streamedge_stream_oldest_unacked_seconds``.
        unhealthy_after_s: oldest undelivered batch age at which ``/health`` turns 503, seconds.
        exit_after_s: age at which the worker is stuck and exits, seconds (>= unhealthy_after_s).
    """

    def __init__(self, metrics: StreamMetrics, unhealthy_after_s: float, exit_after_s: float) -> None:
        self.metrics = metrics
        self.unhealthy_after_s = unhealthy_after_s
        self.exit_after_s = exit_after_s
        self.failure: str | None = None
        self.state: HealthState = "ok"
        self.oldest_s = 0.0

    def fail(self, reason: str) -> None:
        """Record a failure the worker cannot recover from in-process: stuck from now on."""
        self.failure = reason
        self.state = "stuck"
        self.metrics.healthy.set(0)

    def update(self, oldest_undelivered_s: float) -> HealthState:
        """Judge from the oldest undelivered batch's age, seconds; returns the new state."""
        self.oldest_s = oldest_undelivered_s
        self.metrics.oldest_unacked.set(oldest_undelivered_s)
        if self.failure is not None or oldest_undelivered_s >= self.exit_after_s:
            self.state = "stuck"
        elif oldest_undelivered_s >= self.unhealthy_after_s:
            self.state = "unhealthy"
        else:
            self.state = "ok"
        self.metrics.healthy.set(1 if self.state == "ok" else 0)
        return self.state

    def report(self) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON body)`` of ``/health``: 200 when ok, else 503 with the reason."""
        body: dict[str, Any] = {"status": self.state, "oldest_undelivered_s": round(self.oldest_s, 3)}
        if self.failure is not None:
            body["failure"] = self.failure
        elif self.state != "ok":
            body["failure"] = (f"a batch has waited {self.oldest_s:.0f} s for the broker to acknowledge its "
                               "results")
        return (200 if self.state == "ok" else 503), body
