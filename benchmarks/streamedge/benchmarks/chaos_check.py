"""Accounting of a chaos run: every reading's expected results, found by idempotency key.

Pure functions, lists in and figures out, so the rules are tested without Kafka.

- A reading *expects* one forecast and one classification from each model once its key's
  window is full (``seq >= window - 1``); each is named ``<kind>:<model>:<device>/<stream>:<seq>``,
  the result's idempotency key up to its ``@<partition>:<offset>`` (``services.records.reading_of``).
- **lost**: readings with at least one expected result missing (``lost_results`` counts the
  results).
- **duplicates**: extra copies of a result (same reading and model), what a consumer receives
  more than once.
- **duplicates_after_dedup**: extra copies that a consumer keeping the first copy per
  idempotency key could not drop safely, because they *disagree* with it (another forecast, label
  or probability for the same reading and model, beyond 6 significant digits). Copies equal up to
  the fields that describe the delivery (``produced_at``, ``source`` offset, model ``version``)
  are harmless and dropped.
- **conflicting_keys**: idempotency keys that carry two different results (beyond 6 significant
  digits); a consumer deduplicating by key would keep one and silently drop the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamedge.services.records import reading_of

__all__ = ["Tally", "expected_keys", "tally"]

# Fields that say how and when a result was delivered, not what it says.
_DELIVERY_FIELDS = ("produced_at", "source", "model")


@dataclass(frozen=True)
class Tally:
    """What the results say about the readings (definitions in the module doc)."""

    expected_results: int
    results_seen: int
    lost: int
    lost_results: int
    duplicates: int
    duplicates_after_dedup: int
    conflicting_keys: int
    missing_examples: list[str]


def expected_keys(devices: Iterable[str], stream: str, seqs: int, window: int,
                  models: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """Reading and model (:func:`reading_of`) -> (device, seq) of every expected result.

    Args:
        devices: device ids; the reading key is ``<device>/<stream>``.
        stream: the stream name of every reading.
        seqs: readings per device, ``seq`` 0 to ``seqs - 1``.
        window: the models' window: the first result comes at ``seq = window - 1``.
        models: result kind (``forecast``, ``classification``) -> model name.
    """
    return {f"{kind}:{model}:{device}/{stream}:{seq}": (device, seq)
            for device in devices for seq in range(window - 1, seqs) for kind, model in models.items()}


def _rounded(value: Any) -> Any:
    # Batches of another size may change the last float32 bits of a model output; that is the
    # same answer, so values compare to 6 significant digits.
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def _content(result: Mapping[str, Any]) -> str:
    import json

    return json.dumps(_rounded({k: v for k, v in result.items() if k not in _DELIVERY_FIELDS}), sort_keys=True)


def tally(expected: Mapping[str, tuple[str, int]], results: Iterable[Mapping[str, Any]]) -> Tally:
    """Count lost, duplicated and conflicting results among ``results`` (decoded result records).

    Results about readings not expected (anomalies, other streams) are ignored.
    """
    copies: dict[str, list[str]] = {}
    by_key: dict[str, set[str]] = {}
    for result in results:
        key = str(result.get("idempotency_key", ""))
        try:
            named = reading_of(key)
        except ValueError:  # no "@<partition>:<offset>": not a stream worker's result
            continue
        if named in expected:
            content = _content(result)
            copies.setdefault(named, []).append(content)
            by_key.setdefault(key, set()).add(content)
    missing = sorted(set(expected) - set(copies))
    lost_readings = {expected[key] for key in missing}
    duplicates = sum(len(found) - 1 for found in copies.values())
    conflicting = sum(len(found) - found.count(found[0]) for found in copies.values())
    return Tally(expected_results=len(expected), results_seen=sum(len(found) for found in copies.values()),
                 lost=len(lost_readings), lost_results=len(missing), duplicates=duplicates,
                 duplicates_after_dedup=conflicting,
                 conflicting_keys=sum(len(contents) > 1 for contents in by_key.values()),
                 missing_examples=missing[:10])
