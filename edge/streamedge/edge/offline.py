"""Offline scoring: a table of readings in, one result row per reading out (``streamedge predict``).

Each input row becomes a wire-format reading by the edge agent's own row rule
(:func:`streamedge.edge.sources.table_payloads` for a CSV, as the agent's file source), is
validated by ``parse_reading``, windowed by
:class:`~streamedge.edge.predictor.WindowStore` and scored by
:meth:`~streamedge.edge.predictor.Predictor.step`: the code the agent serves with, so a file
scored here gives the agent's results for the same rows (tests/edge/test_predict.py proves it).

Memory is bounded by the model's window times ``max_keys`` (the windows) plus one batch of rows
on each side; nothing is held per row. A row that is not a valid reading (a missing or
non-numeric cell, a non-finite value, a ``seq`` that goes backwards) still gets its output row,
with the reason in ``error``; it is reported with its line number and never stops the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from streamedge.contracts.reading import Rejection, parse_reading
from streamedge.edge.errors import NonFiniteOutputError
from streamedge.edge.predictor import Predictor, WindowStore
from streamedge.edge.sources import Payload

__all__ = ["BadRow", "ScoreSummary", "output_columns", "score_rows"]

_SEPARATORS: Final = (",", ":")


@dataclass(frozen=True)
class BadRow:
    """An input row that gave no reading or no result: its line number and why."""

    line: int
    reason: str


@dataclass
class ScoreSummary:
    """What one scoring run did."""

    rows: int = 0
    bad: int = 0
    scored: int = 0
    anomalies: int = 0
    first_bad: list[BadRow] = field(default_factory=list)


def output_columns(predictor: Predictor) -> list[str]:
    """The result columns for this model's task, after ``line`` and ``key``."""
    task = ["forecast", "anomaly_score", "anomaly"] if predictor.manifest.task == "forecast" \
        else ["class", "probabilities"]
    return ["line", "key", *task, "model", "version", "error"]


def score_rows(rows: Iterable[tuple[int, Payload]], predictor: Predictor,
               summary: ScoreSummary, *, stride: int = 1, max_keys: int = 10_000,
               keep_bad: int = 100, on_row: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Score ``(line number, row)`` pairs in order; yields one output row per input row.

    Args:
        rows: the table's rows as the agent's payloads (or rejections) with their 1-based line
            numbers (:func:`streamedge.edge.offline_io.open_reader`).
        predictor: the loaded model.
        summary: counts and the first bad rows, updated as rows go by.
        stride: results for classifiers every ``stride`` readings per key, as the agent's
            ``--stride`` (a forecaster scores every reading).
        max_keys: keys whose windows are kept (least recently seen evicted beyond).
        keep_bad: bad rows kept in the summary for the report.
        on_row: called with the running row count after each row (progress).
    """
    windows = WindowStore(history=predictor.manifest.window, max_keys=max_keys)
    m = predictor.manifest
    base = {"model": m.name, "version": m.version}
    for line, payload in rows:
        summary.rows += 1
        out, error = _score_one(payload, windows, predictor, stride)
        if error:
            summary.bad += 1
            if len(summary.first_bad) < keep_bad:
                summary.first_bad.append(BadRow(line, error))
        elif "forecast" in out or "class" in out:
            summary.scored += 1
            summary.anomalies += int(out.get("anomaly") == 1)
        yield {"line": line, **out, **base, "error": error}
        if on_row is not None:
            on_row(summary.rows)


def _score_one(payload: Payload, windows: WindowStore, predictor: Predictor, stride: int) -> tuple[dict[str, Any], str]:
    """One row's result fields and error text (empty when fine)."""
    if isinstance(payload, Rejection):
        return {}, f"{payload.reason}: {payload.detail}"
    parsed = parse_reading(payload)
    if isinstance(parsed, Rejection):
        return {}, f"{parsed.reason}: {parsed.detail}"
    out: dict[str, Any] = {"key": parsed.key}
    state = windows.add(parsed)
    if state is None:
        return out, f"out_of_order: seq {parsed.seq} is not after the last seq of {parsed.key}"
    if predictor.manifest.task == "classify" and state.count % stride:
        return out, ""
    try:
        body, _ = predictor.step(parsed, state)
    except NonFiniteOutputError as exc:
        return out, f"non_finite_output: {exc}"
    if body is None:  # the key's window is not full yet
        return out, ""
    if body["type"] == "classification":
        out.update({"class": body["label"], "probabilities": json.dumps(body["probabilities"], separators=_SEPARATORS)})
        return out, ""
    out["forecast"] = json.dumps(body["forecast"], separators=_SEPARATORS)
    if body["anomaly"] is not None:
        out["anomaly"] = int(body["anomaly"])
    if body.get("anomaly_score") is not None:
        out["anomaly_score"] = body["anomaly_score"]
    return out, ""
