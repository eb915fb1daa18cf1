"""Wall-clock timing of repeated calls, shared by the trainer's latency figures and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["time_calls"]


def time_calls(call: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Call ``call`` ``warmup`` times untimed, then ``runs`` times; returns each timed call's seconds."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples
