"""Replay a recorded file into the readings topic as reading blocks.

``.csv``: a header row; every column except ``ts``, ``seq``, ``device_id`` and ``stream`` is a
feature; a ``ts`` column (seconds) gives per-sample times, else sample ``i`` is at
``start_ts + i * period``. The whole file is one series (one device/stream key).

``.ts`` (UCR/UEA archive format): header lines (``#``, ``@...``) up to ``@data``, then one series
per line: channels separated by ``:``, values by ``,``, and a trailing class label when the header
says ``@classLabel true``. Series ``i`` becomes device ``<device>-<i>``, evenly spaced by
``period`` from ``start_ts``.

Each series is cut into blocks of ``block_size`` consecutive samples (``seq`` counting from
``first_seq``); a block of one is written as a single reading. Values are not judged here: a
missing (``?``) or non-numeric value becomes NaN and the worker dead-letters its block with the
reason and the sample index, as it would for any producer.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.services.errors import ServicesError

__all__ = ["ReplayFileError", "Series", "block_payloads", "read_series"]

_RESERVED = ("ts", "seq", "device_id", "stream")


class ReplayFileError(ServicesError, ValueError):
    """The file cannot be read as a series (missing, no header, no value column, no data)."""


@dataclass(frozen=True)
class Series:
    """One recorded series: ``values`` ``(n, n_features)`` float64, ``ts`` ``(n,)`` seconds or None."""

    device_id: str
    values: npt.NDArray[np.float64]
    ts: npt.NDArray[np.float64] | None = None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _csv(path: Path, device_id: str) -> list[Series]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in (reader.fieldnames or []) if c not in _RESERVED]
        if not columns:
            raise ReplayFileError(f"{path}: CSV needs a header with at least one value column")
        rows = list(reader)
    if not rows:
        raise ReplayFileError(f"{path}: CSV has no data row")
    values = np.array([[_float(row.get(c) or "") for c in columns] for row in rows], dtype=np.float64)
    ts = None
    if "ts" in (reader.fieldnames or []):
        ts = np.array([_float(row.get("ts") or "") for row in rows], dtype=np.float64)
    return [Series(device_id, values, ts)]


def _ts_file(path: Path, device_id: str) -> list[Series]:
    labelled, found = False, False
    series: list[Series] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not found:
                lower = text.lower()
                labelled = labelled or lower.startswith("@classlabel true")
                found = lower == "@data"
                continue
            channels = text.split(":")
            if labelled:
                channels = channels[:-1]
            parts = [[_float(v) for v in channel.split(",")] for channel in channels]
            length = min(len(p) for p in parts) if parts else 0
            if length:
                values = np.array([p[:length] for p in parts], dtype=np.float64).T
                series.append(Series(f"{device_id}-{len(series)}", values))
    if not series:
        raise ReplayFileError(f"{path}: no series after an @data line")
    return series


def read_series(path: Path, device_id: str) -> list[Series]:
    """The series of a ``.csv`` or ``.ts`` file.

    Raises:
        ReplayFileError: missing file, unknown suffix, no value column or no data.
    """
    if not path.is_file():
        raise ReplayFileError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv(path, device_id)
    if suffix == ".ts":
        return _ts_file(path, device_id)
    raise ReplayFileError(f"{path}: expected a .csv or .ts file")


def block_payloads(series: list[Series], stream: str, block_size: int, start_ts: float, period: float,
                   first_seq: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every block of every series, series after series, in sample order.

    Args:
        series: from :func:`read_series`.
        stream: the stream name of every key.
        block_size: samples per message (>= 1; 1 writes single readings).
        start_ts, period: times of series without their own ``ts``, seconds.
        first_seq: ``seq`` of every series' first sample.
    """
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    for one in series:
        n = len(one.values)
        times = one.ts if one.ts is not None else start_ts + period * np.arange(n, dtype=np.float64)
        key = f"{one.device_id}/{stream}".encode()
        for first in range(0, n, block_size):
            rows = one.values[first : first + block_size]
            samples: list[Any] = rows[:, 0].tolist() if rows.shape[1] == 1 else rows.tolist()
            body: dict[str, Any] = {"device_id": one.device_id, "stream": stream, "seq": first_seq + first}
            if block_size == 1:
                body.update(ts=float(times[first]), value=samples[0])
            elif one.ts is None:
                body.update(ts=float(times[first]), period=period, values=samples)
            else:
                body.update(ts=times[first : first + block_size].tolist(), values=samples)
            yield key, json.dumps(body, separators=(",", ":")).encode()
