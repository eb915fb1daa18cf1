"""Table files for offline scoring: CSV always, Parquet when pyarrow is installed.

Readers stream rows with their line numbers (CSV: the physical line the row ends on, header is
line 1; Parquet: the 1-based row number plus one, so both count the header the same way) and
say how far through the file they are; writers take rows one at a time and keep at most one
batch in memory. pyarrow is imported only for a Parquet file (``pip install 'streamedge-edge[parquet]'``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Protocol

from streamedge.contracts.reading import MAX_READING_BYTES
from streamedge.edge.offline import BAD_LINE

__all__ = ["SUFFIXES", "TableReader", "TableWriter", "open_reader", "open_writer"]

SUFFIXES: Final = (".csv", ".parquet")
_BATCH_ROWS: Final = 65_536
# Output column types for Parquet (CSV writes text); any other column is a string.
_PARQUET_TYPES: Final = {"line": "int64", "anomaly_score": "float64", "anomaly": "int8", "version": "int64"}


class TableReader(Protocol):
    """Rows of one input table."""

    header: list[str]

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, {column: cell})`` in file order."""
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


class _CsvReader:
    """A CSV read as the agent's file source reads it: UTF-8 (a BOM dropped), one row per line, each
    line at most :data:`~streamedge.contracts.reading.MAX_READING_BYTES`; a line too long, not UTF-8
    or not CSV of the header's width is one bad row (its reason under ``BAD_LINE``), never fatal."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("rb")
        self._size = max(path.stat().st_size, 1)
        self._read = 0
        self._line = 0
        first = self._next()
        header = None if first is None or not isinstance(first, bytes) else _cells(first, "utf-8-sig")
        if not header or isinstance(header, str):
            self._handle.close()
            raise ValueError(f"{path}: a CSV needs a UTF-8 header row of at most {MAX_READING_BYTES} bytes")
        self.header = [name.strip() for name in header]

    def _next(self) -> bytes | str | None:
        """The next line without its end, a bad line's reason, or None at the end."""
        raw = self._handle.readline(MAX_READING_BYTES + 1)
        if not raw:
            return None
        self._line += 1
        self._read += len(raw)
        if len(raw) > MAX_READING_BYTES and not raw.endswith(b"\n"):
            while (more := self._handle.readline(64 * 1024)) and not more.endswith(b"\n"):
                self._read += len(more)
            self._read += len(more)
            return f"too_large: line longer than {MAX_READING_BYTES} bytes"
        return raw.rstrip(b"\r\n")

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            while (line := self._next()) is not None:
                if isinstance(line, str):
                    yield self._line, {BAD_LINE: line}
                    continue
                if not line.strip():
                    continue
                cells = _cells(line, "utf-8")
                if isinstance(cells, str):
                    yield self._line, {BAD_LINE: cells}
                elif len(cells) != len(self.header):
                    yield self._line, {BAD_LINE: f"wrong_type: {len(cells)} fields, header has {len(self.header)}"}
                else:
                    yield self._line, dict(zip(self.header, cells, strict=True))
        finally:
            self._handle.close()

    def fraction(self) -> float:
        return min(self._read / self._size, 1.0)


def _cells(line: bytes, encoding: str) -> list[str] | str:
    """One CSV line's cells, or the reason it has none."""
    try:
        text = line.decode(encoding)
    except UnicodeDecodeError as exc:
        return f"not_utf8: not UTF-8 at byte {exc.start}"
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        return f"wrong_type: not CSV ({exc})"


class _ParquetReader:
    def __init__(self, path: Path) -> None:
        pa = _pyarrow()
        self._file = pa.parquet.ParquetFile(path)
        self.header = list(self._file.schema_arrow.names)
        self._total = max(int(self._file.metadata.num_rows), 1)
        self._done = 0

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for batch in self._file.iter_batches(batch_size=_BATCH_ROWS):
            for row in batch.to_pylist():
                self._done += 1
                yield self._done + 1, row

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


def open_reader(path: Path) -> TableReader:
    """A reader for a ``.csv`` or ``.parquet`` file; ValueError for another suffix or an empty CSV."""
    return _CsvReader(path) if _format(path) == ".csv" else _ParquetReader(path)


def open_writer(path: Path, columns: list[str]) -> TableWriter:
    """A writer of ``columns`` to a ``.csv`` or ``.parquet`` file (created or replaced)."""
    return _CsvWriter(path, columns) if _format(path) == ".csv" else _ParquetWriter(path, columns)
