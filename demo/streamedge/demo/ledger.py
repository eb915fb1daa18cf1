"""Counting what came back against what was sent: lost, duplicates, order, errors, latencies.

Pure functions over :class:`~streamedge.demo.collect.Arrival` lists, so the live view, the summary
and the report all count the same way. A result's identity is its ``idempotency_key`` (a dead
letter's is its partition and offset, each one a distinct rejected record).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from streamedge.contracts.results import ResultFormatError, result_rows
from streamedge.demo.collect import Arrival
from streamedge.services.records import reading_of

__all__ = ["Tally", "edge_order", "edge_rows", "latencies", "one_step_errors", "tally"]


@dataclass(frozen=True)
class Tally:
    """One component's count: ``expected`` sent for, ``unique`` arrived, ``duplicates`` beyond those.

    ``lost`` is ``expected - unique`` (never negative; ``extra`` counts unexpected identities).
    """

    name: str
    expected: int
    unique: int
    duplicates: int
    extra: int

    @property
    def lost(self) -> int:
        """Expected records that never arrived."""
        return max(0, self.expected - self.unique)

    def line(self) -> str:
        """``name: expected N, received U, lost L, duplicates D`` (plus ``unexpected E`` when any)."""
        text = f"{self.name}: expected {self.expected}, received {self.unique}, lost: {self.lost}, duplicates: {self.duplicates}"
        return text + (f", unexpected {self.extra}" if self.extra else "")


def _identity(arrival: Arrival) -> str:
    body = arrival.body
    if isinstance(body, dict) and isinstance(body.get("idempotency_key"), str):
        # A stream worker's key ends in "@<partition>:<offset>" (the source message); the result is
        # named by the part before it, which the demo knows in advance. An edge result's key has no suffix.
        key = str(body["idempotency_key"])
        try:
            return reading_of(key)
        except ValueError:
            return key
    return f"{arrival.topic}:{arrival.partition}:{arrival.offset}"


def tally(name: str, arrivals: Iterable[Arrival], expected: set[str] | int) -> Tally:
    """Count ``arrivals`` against ``expected`` identities (or an expected count when identities are unknown)."""
    seen = Counter(_identity(a) for a in arrivals)
    duplicates = sum(n - 1 for n in seen.values())
    if isinstance(expected, int):
        return Tally(name, expected, min(len(seen), expected), duplicates, max(0, len(seen) - expected))
    unique = len(expected & seen.keys())
    return Tally(name, len(expected), unique, duplicates, len(seen.keys() - expected))


def edge_rows(arrivals: Iterable[Arrival]) -> list[Arrival]:
    """One arrival per edge result: a result block (:mod:`streamedge.contracts.results`) gives one per
    row, each with the block's topic, partition, offset and arrival time; a single result, or a
    record that is neither form, stays as it came."""
    rows: list[Arrival] = []
    for arrival in arrivals:
        try:
            rows.extend(replace(arrival, body=row) for row in result_rows(arrival.body))
        except ResultFormatError:
            rows.append(arrival)
    return rows


def edge_order(arrivals: list[Arrival]) -> tuple[int, int, bool]:
    """``(unique, duplicates, in_order)`` of one device's edge results in the order they were read.

    The forwarder delivers at least once: a pass whose acknowledgement timed out is sent again
    with the same outbox sequence numbers, which the reader drops (``duplicates``).
    ``in_order``: the first arrival of each sequence number, in offset order, is strictly
    increasing and leaves no gap.
    """
    seqs = [int(a.body["seq"]) for a in sorted(arrivals, key=lambda a: (a.partition, a.offset))
            if isinstance(a.body, dict) and "seq" in a.body]
    first = list(dict.fromkeys(seqs))
    in_order = bool(first) and first == list(range(first[0], first[0] + len(first)))
    return len(first), len(seqs) - len(first), in_order


def _first_step(body: dict[str, Any]) -> float | None:
    """The one-step-ahead forecast of a single-reading forecast result (first feature)."""
    steps = body.get("forecast")
    while isinstance(steps, list) and steps:
        steps = steps[0]
    return float(steps) if isinstance(steps, int | float) else None


def one_step_errors(arrivals: Iterable[Arrival], truth: dict[tuple[str, int], float]
                    ) -> list[tuple[str, int, int, float, float]]:
    """``(key, seq, version, forecast, actual)`` of every distinct forecast whose next value was sent.

    A forecast made at ``seq`` is scored on the value sent at ``seq + 1``.
    """
    scored: dict[tuple[str, int], tuple[str, int, int, float, float]] = {}
    for a in arrivals:
        body = a.body
        if not isinstance(body, dict):
            continue
        key, seq = str(body.get("key")), int(body.get("seq", -1))
        forecast, actual = _first_step(body), truth.get((key, seq + 1))
        if forecast is not None and actual is not None:
            scored.setdefault((key, seq), (key, seq, int(body["model"]["version"]), forecast, actual))
    return sorted(scored.values(), key=lambda row: (row[0], row[1]))


def latencies(arrivals: Iterable[Arrival], sent: dict[tuple[str, int], float]) -> list[float]:
    """Seconds from sending a result's reading to reading the result back (first arrival of each)."""
    first: dict[tuple[str, int], float] = {}
    for a in arrivals:
        body = a.body
        if isinstance(body, dict) and "key" in body and "seq" in body:
            first.setdefault((str(body["key"]), int(body["seq"])), a.at)
    return [at - sent[k] for k, at in first.items() if k in sent]
