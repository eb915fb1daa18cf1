"""Table files for offline scoring: CSV always, Parquet when pyarrow is installed.

Readers stream each row as the wire-format reading the edge agent would make of it, with its
line number (CSV: the physical line, header is line 1; Parquet: the 1-based row number plus one,
so both count the header the same way), and say how far through the file they are; writers take
rows one at a time and keep at most one batch in memory. A CSV is read by the agent's own code,
:func:`streamedge.contracts.table.open_table` and :func:`streamedge.edge.sources.table_payloads`,
so predict accepts and rejects the rows the agent does. pyarrow is imported only for a Parquet
file (``pip install 'streamedge-edge[parquet]'``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

from streamedge.contracts.reading import MAX_READING_BYTES
from streamedge.contracts.table import TableError, open_table
from streamedge.edge.sources import Payload, RowNumbers, row_payload, table_payloads

__all__ = ["SUFFIXES", "RESERVED_COLUMNS", "TableReader", "TableWriter", "open_reader", "open_writer", "value_columns"]

SUFFIXES: Final = (".csv", ".parquet")
# Columns of the agent's CSV format that are not values (edge.sources: ts, optional device_id, stream, seq).
RESERVED_COLUMNS: Final = ("device_id", "stream", "ts", "seq")
_BATCH_ROWS: Final = 65_536
# Output column types for Parquet (CSV writes text); any other column is a string.
_PARQUET_TYPES: Final = {"line": "int64", "anomaly_score": "float64", "anomaly": "int8", "version": "int64"}


class TableReader(Protocol):
    """Readings of one input table."""

    def rows(self) -> Iterator[tuple[int, Payload]]:
        """``(line number, payload or rejection)`` in file order."""
        ...

    def fraction(self) -> float:
        """How much of the file has been read, 0 to 1."""
        ...


class TableWriter(Protocol):
    """One output table."""

    def write(self, row: dict[str, Any]) -> None:
        """Append a row (missing columns are blank)."""
        ...

    def close(self) -> None:
        """Flush and close the file."""
        ...


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError("Parquet needs pyarrow: pip install 'streamedge-edge[parquet]' (or use CSV)") from exc
    return pyarrow


def value_columns(header: list[str], features: list[str]) -> list[str]:
    """The value columns of a Parquet table, in the model's feature order.

    Every column but ``device_id``, ``stream``, ``ts`` and ``seq`` when that gives as many columns
    as the model has features; else the model's feature names, when the header has them all.

    Raises:
        ValueError: the header has no ``ts`` column, or neither rule finds the model's columns.
    """
    if "ts" not in header:
        raise ValueError(f"the header needs a 'ts' column (seconds since the epoch), got {header}")
    agent_rule = [c for c in header if c not in RESERVED_COLUMNS]
    if len(agent_rule) == len(features):
        return agent_rule
    if all(f in header for f in features):
        return list(features)
    raise ValueError(f"the model takes {len(features)} value(s) {features}; the header's value columns are "
                     f"{agent_rule}: name them as the model's features or keep only {len(features)}")


class _CsvReader:
    """A CSV read as the agent's file source reads it (:mod:`streamedge.contracts.table`, lines of
    at most :data:`~streamedge.contracts.reading.MAX_READING_BYTES`): the same layout rules, the
    same row rule, the same rejections. The value columns are the table's when it has as many as
    the model has features, else the model's feature names."""

    def __init__(self, path: Path, features: list[str], device_id: str) -> None:
        self._size = max(path.stat().st_size, 1)
        self._device_id = device_id
        try:
            reader = open_table(path, max_line_bytes=MAX_READING_BYTES)
            if len(reader.layout.features) != len(features) and all(f in reader.layout.header for f in features):
                reader.close()
                reader = open_table(path, features=features, max_line_bytes=MAX_READING_BYTES)
        except TableError as exc:
            raise ValueError(str(exc)) from exc
        layout = reader.layout
        if layout.time_column is None or len(layout.features) != len(features):
            reader.close()
            raise ValueError(f"{path}: the model takes {len(features)} value(s) {features} and a time column; "
                             f"the table reads as {layout.describe()}")
        self._reader = reader

    def rows(self) -> Iterator[tuple[int, Payload]]:
        with self._reader:
            yield from table_payloads(self._reader, self._device_id)

    def fraction(self) -> float:
        return min(self._reader.bytes_read() / self._size, 1.0)


class _ParquetReader:
    """A Parquet table: typed columns, ``ts`` in epoch seconds, rows by :func:`~streamedge.edge.sources.row_payload`."""

    def __init__(self, path: Path, features: list[str], device_id: str) -> None:
        pa = _pyarrow()
        self._file = pa.parquet.ParquetFile(path)
        self._columns = value_columns(list(self._file.schema_arrow.names), features)
        self._device_id = device_id
        self._total = max(int(self._file.metadata.num_rows), 1)
        self._done = 0

    def rows(self) -> Iterator[tuple[int, Payload]]:
        numbers = RowNumbers()
        for batch in self._file.iter_batches(batch_size=_BATCH_ROWS):
            for row in batch.to_pylist():
                self._done += 1
                yield self._done + 1, row_payload(row, self._columns, self._device_id, numbers)

    def fraction(self) -> float:
        return min(self._done / self._total, 1.0)


class _CsvWriter:
    def __init__(self, path: Path, columns: list[str]) -> None:
        self._handle = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=columns, restval="", extrasaction="ignore")
        self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)

    def close(self) -> None:
        self._handle.close()


class _ParquetWriter:
    def __init__(self, path: Path, columns: list[str]) -> None:
        pa = self._pa = _pyarrow()
        self._columns = columns
        self._schema = pa.schema([(c, getattr(pa, _PARQUET_TYPES.get(c, "string"))()) for c in columns])
        self._writer = pa.parquet.ParquetWriter(path, self._schema)
        self._batch: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self._batch.append(row)
        if len(self._batch) >= _BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            data = {c: [row.get(c) for row in self._batch] for c in self._columns}
            self._writer.write_table(self._pa.table(data, schema=self._schema))
            self._batch = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: only {', '.join(SUFFIXES)} files are read and written")
    return suffix


def open_reader(path: Path, features: list[str], device_id: str) -> TableReader:
    """A reader of a ``.csv`` or ``.parquet`` file for a model of ``features``, rows without a
    device named ``device_id``.

    Raises:
        ValueError: another suffix, or a table that cannot feed the model (no header or data row,
            no time column, not the model's value columns).
    """
    if _format(path) == ".csv":
        return _CsvReader(path, features, device_id)
    return _ParquetReader(path, features, device_id)


def open_writer(path: Path, columns: list[str]) -> TableWriter:
    """A writer of ``columns`` to a ``.csv`` or ``.parquet`` file (created or replaced)."""
    return _CsvWriter(path, columns) if _format(path) == ".csv" else _ParquetWriter(path, columns)
