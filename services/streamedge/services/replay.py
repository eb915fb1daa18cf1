"""Replay a recorded file into the readings topic as reading blocks.

``.csv``/``.tsv``: the reading-file format of :mod:`streamedge.contracts.table` (the trainer and
the edge agent read it the same way): a device column (``device_id`` by default) makes one series
per device, else the whole file is the ``device`` series; a time column (ISO 8601 or epoch
s/ms/us/ns, detected and stated) gives every sample its own time, else sample ``i`` is at
``start_ts + i * period``; the time column is never a value.

``.ts`` (UCR/UEA archive format): header lines (``#``, ``@...``) up to ``@data``, then one series
per line: channels separated by ``:``, values by ``,``, and a trailing class label when the header
says ``@classLabel true``. Series ``i`` becomes device ``<device>-<i>``, evenly spaced by
``period`` from ``start_ts``.

A file's ``stream`` column splits a device's rows into one series per stream (keyed
``device/stream``; rows without one take the ``--stream`` name) and its ``seq`` column is kept as
written; a series is then cut where its seqs are not consecutive.

Each series is cut into blocks of ``block_size`` consecutive samples (``seq`` from the file, else
counting from the device's first seq, 0 unless given: see :func:`next_seq` to continue a device's
numbering); a block of one is written as a single reading. Missing values are not judged here: a
missing (``?``) value becomes NaN and the worker dead-letters its block with the reason and the
sample index, as it would for any producer. Everything else is checked against the reading
contract the worker uses (:func:`check_payload`) before anything is sent: a seq, time or feature
count the contract refuses is a :class:`ReplayFileError` naming the device, seq and reason. Text in
a value or time cell is an error naming its line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.reading import Rejection, parse_message
from streamedge.contracts.table import TableError, TableRow, TimeUnit, read_table
from streamedge.services.errors import ServicesError

__all__ = ["ReplayFileError", "Series", "TableOptions", "block_payloads", "check_payload", "next_seq", "read_series"]


class ReplayFileError(ServicesError, ValueError):
    """The file cannot be read as a series (missing, no header, no value column, no data)."""


@dataclass(frozen=True)
class Series:
    """One recorded series: ``values`` ``(n, n_features)`` float64, ``ts`` ``(n,)`` seconds or None,
    ``stream`` the file's stream name (None: the replay's ``--stream``), ``seq`` ``(n,)`` the file's
    seqs or None."""

    device_id: str
    values: npt.NDArray[np.float64]
    ts: npt.NDArray[np.float64] | None = None
    stream: str | None = None
    seq: npt.NDArray[np.int64] | None = None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _table(path: Path, device_id: str, table: TableOptions) -> tuple[list[Series], str]:
    try:
        layout, rows = read_table(path, table.time_column, table.id_column, table.features, table.time_unit)
    except TableError as exc:
        raise ReplayFileError(str(exc)) from exc
    groups: dict[tuple[str, str | None], list[TableRow]] = {}
    for row in rows:
        groups.setdefault((row.device or device_id, row.stream), []).append(row)
    series = []
    for (device, stream), members in groups.items():
        values = np.array([r.values for r in members], dtype=np.float64)
        ts = None if layout.time_column is None else np.array([r.ts for r in members], dtype=np.float64)
        seq = None
        if any(r.seq is not None for r in members):
            missing = next((r for r in members if r.seq is None), None)
            if missing is not None:
                raise ReplayFileError(f"{path}:{missing.line}: column 'seq' is empty (every row needs one, or none)")
            seq = np.array([r.seq for r in members], dtype=np.int64)
        series.append(Series(device, values, ts, stream, seq))
    return series, layout.describe()


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


@dataclass(frozen=True)
class TableOptions:
    """How to read a ``.csv``/``.tsv`` file (:func:`streamedge.contracts.table.open_table` arguments)."""

    time_column: str | None = None
    id_column: str | None = None
    features: tuple[str, ...] | None = None
    time_unit: TimeUnit = "auto"


def read_series(path: Path, device_id: str, table: TableOptions | None = None) -> tuple[list[Series], str]:
    """The series of a ``.csv``/``.tsv`` or ``.ts`` file, and a line stating how it was read.

    Raises:
        ReplayFileError: missing file, unknown suffix, ambiguous or unreadable layout, no data.
    """
    if not path.is_file():
        raise ReplayFileError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab"):
        return _table(path, device_id, table or TableOptions())
    if suffix == ".ts":
        series = _ts_file(path, device_id)
        return series, f"{path.name}: {len(series)} UCR/UEA series, devices {device_id}-0..{len(series) - 1}"
    raise ReplayFileError(f"{path}: expected a .csv, .tsv or .ts file")


def next_seq(body: bytes) -> int | None:
    """The seq that follows a readings-topic message (a reading or a block), or None if it is neither."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("seq"), int):
        return None
    values = obj.get("values")
    return int(obj["seq"]) + (len(values) if isinstance(values, list) else 1)


def check_payload(value: bytes) -> None:
    """Refuse a replay message the worker's reading contract would refuse for anything but a missing value.

    Missing values (NaN) pass: the worker dead-letters them with the sample index, as for any producer.

    Raises:
        ReplayFileError: the contract's reason and detail, with the message's device, stream and seq.
    """
    obj = json.loads(value)
    where = f"{obj.get('device_id')}/{obj.get('stream')} seq {obj.get('seq')}"
    if "values" in obj:
        obj["values"] = np.nan_to_num(np.array(obj["values"], dtype=np.float64), nan=0.0).tolist()
    elif isinstance(obj.get("value"), (float, list)):
        obj["value"] = np.nan_to_num(np.array(obj["value"], dtype=np.float64), nan=0.0).tolist()
    parsed = parse_message(json.dumps(obj).encode())
    if isinstance(parsed, Rejection):
        raise ReplayFileError(f"{where}: the reading contract refuses it ({parsed.reason}: {parsed.detail}); "
                              "nothing was sent")


def _runs(one: Series, start_seq: int) -> list[tuple[int, int, int]]:
    """``(first index, end index, seq of first)`` of the runs of consecutive seqs in a series."""
    n = len(one.values)
    if one.seq is None:
        return [(0, n, start_seq)]
    cuts = [0, *(int(i) + 1 for i in np.flatnonzero(np.diff(one.seq) != 1)), n]
    return [(a, b, int(one.seq[a])) for a, b in pairwise(cuts)]


def block_payloads(series: list[Series], stream: str, block_size: int, start_ts: float, period: float,
                   first_seq: Mapping[str, int] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every block of every series, series after series, in sample order.

    Args:
        series: from :func:`read_series`.
        stream: the stream name of every key.
        block_size: samples per message (>= 1; 1 writes single readings).
        start_ts, period: times of series without their own ``ts``, seconds.
        first_seq: ``device/stream`` key or device id -> ``seq`` of its series' first sample (0 for
            one not named); a series with the file's own seqs keeps them.
    """
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    for one in series:
        n = len(one.values)
        times = one.ts if one.ts is not None else start_ts + period * np.arange(n, dtype=np.float64)
        name = one.stream or stream
        key = f"{one.device_id}/{name}".encode()
        start_seq = (first_seq or {}).get(key.decode(), (first_seq or {}).get(one.device_id, 0))
        for begin, end, run_seq in _runs(one, start_seq):
            for first in range(begin, end, block_size):
                last = min(first + block_size, end)
                rows = one.values[first:last]
                samples: list[Any] = rows[:, 0].tolist() if rows.shape[1] == 1 else rows.tolist()
                body: dict[str, Any] = {"device_id": one.device_id, "stream": name, "seq": run_seq + first - begin}
                if block_size == 1:
                    body.update(ts=float(times[first]), value=samples[0])
                elif one.ts is None:
                    body.update(ts=float(times[first]), period=period, values=samples)
                else:
                    body.update(ts=times[first:last].tolist(), values=samples)
                yield key, json.dumps(body, separators=(",", ":")).encode()
