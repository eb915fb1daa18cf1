"""Results of a whole reading block: one message per block and model, split only to fit.

A block's forecasts, anomalies and classifications normally go out as one message each
(:func:`~services.records.block_result`). A message must stay below the producer's request
limit and the topics' ``max.message.bytes`` (1,000,000 bytes by default), and a large block of a
many-feature, long-horizon model could exceed it (4,096 samples x 12 steps x 8 features is
about 4 MB of JSON): such a result is split in halves, recursively, until each part fits
:data:`RESULT_MAX_BYTES`. The parts tile the block: part ``j`` covers samples ``[start_j,
stop_j)`` and is encoded as a block of its own (its ``seq``, ``samples``, ``ts``, and
``sample_indexes`` relative to its ``seq``), so its idempotency key is
``"<kind>:<model>:<key>:<seq of its first sample>@<partition>:<offset>"`` (the block's source
message) and the same block always splits the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.reading import ReadingBlock
from streamedge.services.models import LoadedModel
from streamedge.services.records import Output, Source, block_result, float32_json

__all__ = ["RESULT_MAX_BYTES", "anomaly_messages", "classification_messages", "forecast_messages"]

# Same room as a dead letter: below the producer's 1,000,000-byte request limit with the record
# batch overhead.
RESULT_MAX_BYTES = 900_000

# Encodes the rows [lo, hi) of a result as (the part of the block they cover, message bytes).
_Encode = Callable[[int, int], tuple[ReadingBlock, bytes]]


def _span(block: ReadingBlock, rows: npt.NDArray[np.intp], lo: int, hi: int) -> ReadingBlock:
    """The part of ``block`` a message with rows ``[lo, hi)`` (at samples ``rows``) covers."""
    start = 0 if lo == 0 else int(rows[lo])
    stop = len(block) if hi == len(rows) else int(rows[hi])
    return block.part(start, stop)


def _fitted(encode: _Encode, lo: int, hi: int, limit: int) -> list[tuple[ReadingBlock, bytes]]:
    part, value = encode(lo, hi)
    if len(value) <= limit or hi - lo == 1:
        return [(part, value)]
    middle = (lo + hi) // 2
    return _fitted(encode, lo, middle, limit) + _fitted(encode, middle, hi, limit)


def _outputs(topic: str, encode: _Encode, count: int, limit: int) -> list[Output]:
    return [Output(topic, part.key.encode(), value, float(part.ts[-1])) for part, value in _fitted(encode, 0, count,
                                                                                                    limit)]


def forecast_messages(block: ReadingBlock, source: Source, model: LoadedModel, picks: npt.NDArray[np.intp],
                      steps: npt.NDArray[np.float32], ok: npt.NDArray[np.bool_], now: float,
                      limit: int = RESULT_MAX_BYTES) -> list[Output]:
    """``forecast_block`` message(s): ``steps`` ``(len(picks), horizon, n_features)`` for the
    consecutive samples ``picks``; rows not ``ok`` (non-finite) are ``null``."""
    manifest = model.manifest

    def encode(lo: int, hi: int) -> tuple[ReadingBlock, bytes]:
        part = _span(block, picks, lo, hi)
        body: dict[str, Any] = {"horizon": manifest.horizon, "features": manifest.features,
                                "forecast_seq": block.seq + int(picks[lo])}
        arrays: dict[str, str] = {}
        if ok[lo:hi].all():
            arrays["forecast"] = float32_json(steps[lo:hi])
        else:
            body["forecast"] = [row if good else None
                                for row, good in zip(steps[lo:hi].tolist(), ok[lo:hi].tolist(), strict=True)]
        return part, block_result("forecast_block", part, source, model.name, model.version, body, now, arrays)

    return _outputs("forecasts", encode, len(picks), limit)


def anomaly_messages(block: ReadingBlock, source: Source, model: LoadedModel, version: int,
                     broke: npt.NDArray[np.intp], predicted: npt.NDArray[np.float64],
                     residual: npt.NDArray[np.float64], score: npt.NDArray[np.float64],
                     threshold: npt.NDArray[np.float64], k: float,
                     now: float, limit: int = RESULT_MAX_BYTES) -> list[Output]:
    """``anomaly_block`` message(s) for the alarms ``broke`` (``predicted``, ``residual``: ``(n,
    n_features)``; ``score``, ``threshold``: ``(n,)`` over the whole block, the anomaly detector's
    verdicts, :mod:`streamedge.contracts.anomaly`)."""
    residual_std = model.residual_std()

    def encode(lo: int, hi: int) -> tuple[ReadingBlock, bytes]:
        part = _span(block, broke, lo, hi)
        rows = broke[lo:hi]
        body = {"sample_indexes": (rows - (part.seq - block.seq)).tolist(), "actual": block.values[rows].tolist(),
                "forecast": predicted[rows].tolist(), "residual": residual[rows].tolist(),
                "score": score[rows].tolist(), "threshold": threshold[rows].tolist(), "k": k, "residual_std": residual_std,
                "features": model.manifest.features}
        return part, block_result("anomaly_block", part, source, model.name, version, body, now)

    return _outputs("anomalies", encode, len(broke), limit)


def classification_messages(block: ReadingBlock, source: Source, model: LoadedModel, picks: npt.NDArray[np.intp],
                            probs: npt.NDArray[np.float32], now: float, limit: int = RESULT_MAX_BYTES) -> list[Output]:
    """``classification_block`` message(s): ``probs`` ``(len(picks), n_classes)`` (finite) for the
    samples ``picks``."""
    labels = model.manifest.class_labels
    best = probs.argmax(axis=1)
    chosen = probs[np.arange(len(probs)), best]

    def encode(lo: int, hi: int) -> tuple[ReadingBlock, bytes]:
        part = _span(block, picks, lo, hi)
        body = {"sample_indexes": (picks[lo:hi] - (part.seq - block.seq)).tolist(),
                "labels": [labels[i] for i in best[lo:hi].tolist()], "class_labels": list(labels),
                "window": model.window}
        arrays = {"probability": float32_json(chosen[lo:hi]), "probabilities": float32_json(probs[lo:hi])}
        return part, block_result("classification_block", part, source, model.name, model.version, body, now, arrays)

    return _outputs("classifications", encode, len(picks), limit)
