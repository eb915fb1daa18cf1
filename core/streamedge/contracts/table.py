"""The reading-file format: one CSV/TSV layout read the same way by the trainer, ``stream replay``
and the edge agent's file source.

A file is a header row and one row per sample. Its columns play these roles:

- **time** (optional): named by ``time_column``, else the one column called ``ts``, ``time``,
  ``timestamp``, ``datetime``, ``date``, ``epoch`` or ``unix_time`` (any case, with or without a
  unit or zone suffix such as ``_s``, ``_ms``, ``_us``, ``_ns`` or ``_utc``: ``timestamp_ms`` is a
  time column, never a feature), else the one column whose every sampled
  value is an ISO 8601 date. Values are ISO 8601 (``2024-03-01T10:00:00Z``, ``2024-03-01 10:00``,
  ``2024-03``; no UTC offset reads as UTC), dates as 8-digit ``YYYYMMDD`` numbers (``20240301``,
  midnight UTC; detected when every sampled value is one) or epoch numbers in seconds,
  milliseconds, microseconds or nanoseconds, the unit detected from their magnitude (below 1e11:
  seconds, below 1e14: ms, below 1e17: us, else ns) unless ``time_unit`` says. Times come out as
  epoch seconds. ISO times with different UTC offsets in one column (a summer-time change) are each
  converted to UTC and the layout states the offsets seen; a column that mixes times with an offset
  and times without one is an error naming a line of each (no offset would silently read as UTC).
- **device** (optional): named by ``id_column``, else a column called ``device_id``. Each distinct
  value is one series (long format); without one the whole file is one series (wide format).
- ``seq`` and ``stream``, when present, are carried along and never features.
- **features**: ``features`` when given (each must exist and be neither the time nor the device
  column), else every other column whose sampled values are at least half numbers (missing
  tokens ``""``, ``?``, ``nan``, ``NA``, ``null``, ``None`` aside) or that is empty in every sampled
  row (its type is decided by its later, non-empty values: a text cell is then an error naming its
  line); other text columns are ignored and said so.

The file is UTF-8 (a BOM is dropped), one row per line (no line breaks inside quoted cells), each
line at most :data:`MAX_LINE_BYTES`. The layout is decided from the header and the first
:data:`SAMPLE_ROWS` rows, then every row is read by it; a later row that does not fit (a line too
long or not UTF-8, another field count, an infinite value, a time in another epoch unit than the
sampled rows) raises :class:`TableError` with its line number; the edge agent counts it as one
rejected reading instead. A
missing feature value reads as NaN (the trainer interpolates it, a stream worker dead-letters it);
any other text in a feature or time cell is an error. Anything ambiguous (two time candidates,
mixed epoch magnitudes, no feature) is an error that says which option to pass.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, Literal, get_args

from streamedge.errors import StreamedgeError

# The longest line a table may have (a reader may ask for less); longer lines are read through in
# chunks, never held whole, and come out as a BadLine.
MAX_LINE_BYTES: Final = 1 << 20
_CHUNK: Final = 64 * 1024

__all__ = [
    "MAX_LINE_BYTES",
    "BadLine",
    "LongLine",
    "SAMPLE_ROWS",
    "TableError",
    "TableLayout",
    "TableReader",
    "TableRow",
    "TimeUnit",
    "open_table",
    "read_line",
    "read_table",
]

TimeUnit = Literal["auto", "iso", "yyyymmdd", "s", "ms", "us", "ns"]
SAMPLE_ROWS: Final = 1000
_TIME_NAMES: Final = ("ts", "time", "timestamp", "datetime", "date")
_TIME_SUFFIXES: Final = ("_seconds", "_millis", "_micros", "_nanos", "_secs", "_sec", "_utc", "_ms", "_us", "_ns",
                         "_s")
_MISSING: Final = frozenset({"", "?", "nan", "NaN", "NA", "null", "None"})
_SCALE: Final = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_UNIT_WORDS: Final = {"iso": "ISO 8601", "yyyymmdd": "dates YYYYMMDD", "s": "epoch seconds", "ms": "epoch milliseconds",
                      "us": "epoch microseconds", "ns": "epoch nanoseconds"}


class TableError(StreamedgeError, ValueError):
    """The file cannot be read as a reading table; the message names the file, line or column."""


@dataclass(frozen=True)
class TableRow:
    """One sample: ``line`` in the file (header is 1), ``device`` (None in wide format), ``ts`` epoch
    seconds (None without a time column), ``values`` one float per feature (NaN when missing),
    ``seq`` and ``stream`` when the file has those columns."""

    line: int
    device: str | None
    ts: float | None
    values: tuple[float, ...]
    seq: int | None = None
    stream: str | None = None


@dataclass(frozen=True)
class TableLayout:
    """How a file's columns are read (see the module docstring).

    Attributes:
        path: the file.
        header: its column names.
        time_column: the time column, or None.
        time_unit: ``iso``, ``yyyymmdd``, ``s``, ``ms``, ``us`` or ``ns`` (``s`` when there is no time column).
        time_detected: True when the unit was detected rather than given.
        time_offsets: ``iso``: the UTC offsets of the sampled times (``("+01:00", "+02:00")``), empty
            when they carry none (read as UTC).
        id_column: the device column, or None (wide format).
        features: feature columns, in file order unless given.
        ignored: text columns that are neither role nor feature.
    """

    path: Path
    header: tuple[str, ...]
    time_column: str | None
    time_unit: str
    time_detected: bool
    id_column: str | None
    features: tuple[str, ...]
    ignored: tuple[str, ...]
    time_offsets: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line stating every decision, for logs and reports."""
        if self.time_column is None:
            time = "no time column"
        else:
            how = "detected" if self.time_detected else "given"
            offsets = (f" with UTC offsets {', '.join(self.time_offsets)}, each converted to UTC"
                       if len(self.time_offsets) > 1
                       else f" at UTC offset {self.time_offsets[0]}" if self.time_offsets not in ((), ("+00:00",))
                       else "")
            time = f"time column {self.time_column!r} ({_UNIT_WORDS[self.time_unit]}{offsets}, {how})"
        device = f"device column {self.id_column!r}" if self.id_column else "no device column (one series)"
        text = f"{self.path.name}: {time}; {device}; features {list(self.features)}"
        return text + (f"; ignored text column(s) {list(self.ignored)}" if self.ignored else "")


def _is_missing(cell: str) -> bool:
    return cell.strip() in _MISSING


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _iso_moment(cell: str) -> datetime | None:
    text = cell.strip()
    if len(text) == 7 and text[4] == "-":
        text += "-01"
    if text.isdigit():  # fromisoformat takes 20240301 too: that is a YYYYMMDD number, not ISO text
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _iso(cell: str) -> float | None:
    moment = _iso_moment(cell)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _offset(moment: datetime) -> str | None:
    """``moment``'s UTC offset as ``+HH:MM`` (``Z`` is ``+00:00``), or None when it has none."""
    delta = moment.utcoffset()
    if delta is None:
        return None
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _yyyymmdd(cell: str) -> float | None:
    """An 8-digit ``YYYYMMDD`` date (years 1900-2199) as epoch seconds at midnight UTC, else None."""
    text = cell.strip()
    if len(text) != 8 or not text.isdigit() or not "1900" <= text[:4] <= "2199":
        return None
    try:
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _epoch_unit(values: Sequence[float]) -> str | None:
    """Unit implied by the magnitude of every value, or None when they disagree."""
    def unit(value: float) -> str:
        size = abs(value)
        return "s" if size < 1e11 else "ms" if size < 1e14 else "us" if size < 1e17 else "ns"

    units = {unit(v) for v in values if v != 0.0} or {"s"}
    return units.pop() if len(units) == 1 else None


@dataclass(frozen=True)
class BadLine:
    """A data line that is no row: longer than the line limit (``too_large``), not UTF-8
    (``not_utf8``), or not CSV of the header's width (``wrong_type``). The reasons are the
    reading contract's, so a line source can hand it on as a rejection."""

    line: int
    reason: Literal["too_large", "not_utf8", "wrong_type"]
    detail: str


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit, read through and dropped: its size in bytes (line end included)."""

    size: int


def read_line(handle: BinaryIO, limit: int = MAX_LINE_BYTES) -> bytes | LongLine | None:
    """The next line of a binary stream without its line end; None at the end of the stream.

    The one bounded line reader of the project (reading tables, the edge agent's file and stdin
    sources, ``streamedge predict``): a line with more than ``limit`` bytes before its ``\n`` is
    read through in chunks of 64 KiB, never held whole, and comes back as a :class:`LongLine`.
    """
    raw = handle.readline(limit + 1)
    if not raw:
        return None
    if len(raw) > limit and not raw.endswith(b"\n"):
        size = len(raw)
        while more := handle.readline(_CHUNK):
            size += len(more)
            if more.endswith(b"\n"):
                break
        return LongLine(size)
    return raw.rstrip(b"\r\n")


class _Rows:
    """The data lines of a CSV/TSV file with their line numbers, read lazily as bytes, one line at a
    time and never more than ``max_line_bytes`` of one line held; a bad line is a :class:`BadLine`."""

    def __init__(self, path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if not path.is_file():
            raise TableError(f"{path} does not exist")
        self.path = path
        self._limit = max_line_bytes
        self._line = 0
        self._handle = path.open("rb")
        self._delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        first = self._next_line()
        header = self._cells(first[1]) if first is not None and isinstance(first[1], str) else None
        if not header or not any(h.strip() for h in header):
            self.close()
            raise TableError(f"{path}: needs a header row (UTF-8, at most {self._limit} bytes)")
        self.header = tuple(h.strip() for h in header)
        duplicates = sorted({h for h in self.header if self.header.count(h) > 1})
        if duplicates:
            self.close()
            raise TableError(f"{path}: duplicate column name(s) {duplicates}")

    def _next_line(self) -> tuple[int, str | BadLine] | None:
        raw = read_line(self._handle, self._limit)
        if raw is None:
            return None
        self._line += 1
        if isinstance(raw, LongLine):
            return self._line, BadLine(self._line, "too_large", f"line longer than {self._limit} bytes")
        try:
            return self._line, raw.decode("utf-8-sig" if self._line == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            return self._line, BadLine(self._line, "not_utf8", f"not UTF-8 at byte {exc.start}")

    def _cells(self, text: str) -> list[str] | None:
        try:
            return next(csv.reader([text], delimiter=self._delimiter), [])
        except csv.Error:
            return None

    def __iter__(self) -> Iterator[tuple[int, list[str] | BadLine]]:
        while (item := self._next_line()) is not None:
            line, text = item
            if isinstance(text, BadLine):
                yield line, text
                continue
            if not text.strip():
                continue
            row = self._cells(text)
            if row is None:
                yield line, BadLine(line, "wrong_type", "not CSV (one row per line; no line breaks inside quotes)")
            elif not any(cell.strip() for cell in row):
                continue
            elif len(row) != len(self.header):
                yield line, BadLine(line, "wrong_type", f"{len(row)} fields, header has {len(self.header)}")
            else:
                yield line, row

    def tell(self) -> int:
        """Bytes read so far."""
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


def _is_time_name(name: str) -> bool:
    """A common time-column name: ``ts``, ``time``, ... or ``epoch``/``unix_time``, with or without a
    unit or zone suffix (``timestamp_ms``, ``ts_s``, ``time_utc``)."""
    words = name.strip().lower().replace("-", "_").replace(" ", "_")
    for suffix in _TIME_SUFFIXES:
        if words.endswith(suffix):
            words = words[: -len(suffix)]
            break
    return words in _TIME_NAMES or words in ("epoch", "unix_time", "unixtime", "unix_ts", "event_time")


def _pick_time(header: Sequence[str], sample: dict[str, list[str]], time_column: str | None,
               excluded: set[str], path: Path) -> str | None:
    if time_column is not None:
        if time_column not in header:
            raise TableError(f"{path}: no time column {time_column!r}; columns are {list(header)}")
        return time_column
    named = [h for h in header if _is_time_name(h) and h not in excluded]
    if len(named) > 1:
        raise TableError(f"{path}: columns {named} could each be the time column; pass the time column by name")
    if named:
        return named[0]
    dated = [h for h in header if h not in excluded and sample[h]
             and all(not _is_number(c) and _iso(c) is not None for c in sample[h])]
    if len(dated) > 1:
        raise TableError(f"{path}: columns {dated} all hold dates; pass the time column by name")
    return dated[0] if dated else None


def _offsets(cells: list[tuple[int, str]], column: str, path: Path) -> tuple[str, ...]:
    """The UTC offsets of ISO ``(line, cell)`` pairs; an error when some have one and some none."""
    seen: dict[str | None, tuple[int, str]] = {}
    for line, cell in cells:
        moment = _iso_moment(cell)
        if moment is not None:
            seen.setdefault(_offset(moment), (line, cell.strip()))
    if None in seen and len(seen) > 1:
        (naive_line, naive), (line, aware) = seen[None], next(v for k, v in seen.items() if k is not None)
        raise TableError(f"{path}: time column {column!r} mixes times with a UTC offset (line {line}: {aware!r}) and "
                         f"without one (line {naive_line}: {naive!r}); a time without an offset would read as UTC: "
                         "write every time with its offset (or pass another time column)")
    return tuple(sorted(k for k in seen if k is not None))


SNIFF_STRAYS = 50
"""One stray time cell per this many sniffed cells is tolerated when the unit is detected: the
stray row is later one rejection with its line number, not a layout error for the whole file."""


def _fits(cells: list[str], test: Callable[[str], bool]) -> bool:
    """Whether all of ``cells`` but the tolerated strays (``len // SNIFF_STRAYS``) pass ``test``."""
    misfits = sum(1 for c in cells if not test(c))
    return misfits <= len(cells) // SNIFF_STRAYS and misfits < len(cells)


def _pick_unit(cells: list[str], column: str, unit: TimeUnit, path: Path) -> tuple[str, bool]:
    present = [c for c in cells if c.strip()]
    if unit != "auto":
        return unit, False
    if present and _fits(present, lambda c: _yyyymmdd(c) is not None):
        return "yyyymmdd", True
    numbers = [float(c) for c in present if _is_number(c) and math.isfinite(float(c))]
    if present and _fits(present, lambda c: _is_number(c) and math.isfinite(float(c))):
        units = [_epoch_unit([n]) or "s" for n in numbers]
        found = max(sorted(set(units)), key=units.count)
        if not _fits(units, lambda u: u == found):
            raise TableError(f"{path}: time column {column!r} mixes epoch magnitudes (seconds and milliseconds?); "
                             "pass the time unit (s, ms, us or ns)")
        return found, True
    if present and _fits(present, lambda c: _iso(c) is not None):
        return "iso", True
    bad = next((c for c in present if _iso(c) is None), "")
    raise TableError(f"{path}: time column {column!r} is neither ISO 8601 nor epoch numbers (e.g. {bad!r}); "
                     "pass the time column by name, or fix the value")


def _pick_features(header: Sequence[str], sample: dict[str, list[str]], features: Sequence[str] | None,
                   roles: dict[str, str], path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if features:
        unknown = [f for f in features if f not in header]
        if unknown:
            raise TableError(f"{path}: no column(s) {unknown}; columns are {list(header)}")
        clash = [f"{f!r} is the {roles[f]} column" for f in features if f in roles]
        if clash:
            raise TableError(f"{path}: a feature cannot be a role column: {'; '.join(clash)}")
        return tuple(features), ()
    numeric, ignored = [], []
    for name in header:
        if name in roles:
            continue
        present = [c for c in sample[name] if not _is_missing(c)]
        # At least half numbers: a numeric column with a stray text cell stays a feature, and that
        # cell is an error naming its line, not a reason to drop the column silently. A column
        # empty in every sampled row (a sensor added later) is judged by its later values: a
        # feature, whose first text cell is such an error.
        if not present or 2 * sum(_is_number(c) for c in present) >= len(present):
            numeric.append(name)
        else:
            ignored.append(name)
    if not numeric:
        raise TableError(f"{path}: no numeric column among {[h for h in header if h not in roles]}; "
                         "pass the feature columns by name")
    return tuple(numeric), tuple(ignored)


class TableReader:
    """An open reading table: its :attr:`layout` and its rows (iterate once, then :meth:`close`)."""

    def __init__(self, rows: _Rows, layout: TableLayout, head: list[tuple[int, list[str] | BadLine]]) -> None:
        self._rows = rows
        self.layout = layout
        self._head = head
        names = layout.header
        self._time = names.index(layout.time_column) if layout.time_column else None
        self._id = names.index(layout.id_column) if layout.id_column else None
        self._seq = names.index("seq") if "seq" in names and "seq" not in layout.features else None
        self._stream = names.index("stream") if "stream" in names and "stream" not in layout.features else None
        self._features = [names.index(f) for f in layout.features]

    def __iter__(self) -> Iterator[TableRow]:
        """Every row, parsed.

        Raises:
            TableError: a bad line or cell, naming its line.
        """
        for line, cells in self.raw():
            if isinstance(cells, BadLine):
                raise TableError(f"{self.layout.path}:{line}: {cells.detail}")
            yield self.parse(line, cells)

    def raw(self) -> Iterator[tuple[int, list[str] | BadLine]]:
        """Every data line as ``(line, cells)`` (or a :class:`BadLine`), unparsed: for a reader that
        handles a bad row itself."""
        yield from self._head
        yield from self._rows

    def bytes_read(self) -> int:
        """How far into the file reading has got, in bytes (for progress)."""
        return self._rows.tell()

    def cell(self, cells: list[str], column: str | None) -> str | None:
        """The raw text of ``column`` in ``cells`` (None for no column)."""
        return None if column is None else cells[self.layout.header.index(column)]

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._rows.close()

    def _where(self, line: int, column: str) -> str:
        return f"{self.layout.path}:{line}: column {column!r}"

    def parse(self, line: int, cells: list[str]) -> TableRow:
        """One row of :meth:`raw` read by the layout.

        Raises:
            TableError: a value, time, seq or device cell that does not read, naming line and column.
        """
        values = []
        for index, name in zip(self._features, self.layout.features, strict=True):
            cell = cells[index].strip()
            if cell in _MISSING:
                values.append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                raise TableError(f"{self._where(line, name)}: {cell[:40]!r} is not a number (a text column? pass "
                                 "the feature columns by name)") from None
            if math.isinf(value):
                raise TableError(f"{self._where(line, name)}: {cell[:40]!r} is not a finite number")
            values.append(value)
        device = None
        if self._id is not None:
            device = cells[self._id].strip()
            if not device:
                raise TableError(f"{self._where(line, self.layout.id_column or '')}: empty device id")
        seq = None
        if self._seq is not None and cells[self._seq].strip():
            try:
                seq = int(cells[self._seq])
            except ValueError:
                raise TableError(f"{self._where(line, 'seq')}: {cells[self._seq][:40]!r} is not an integer") from None
        stream = cells[self._stream].strip() or None if self._stream is not None else None
        return TableRow(line, device, self._ts(line, cells), tuple(values), seq, stream)

    def _ts(self, line: int, cells: list[str]) -> float | None:
        if self._time is None:
            return None
        cell, column = cells[self._time].strip(), self.layout.time_column or ""
        if self.layout.time_unit == "iso":
            moment = _iso_moment(cell)
            if moment is None:
                raise TableError(f"{self._where(line, column)}: {cell[:40]!r} is not an ISO 8601 time")
            if (moment.tzinfo is None) == bool(self.layout.time_offsets):
                first = "UTC offsets" if self.layout.time_offsets else "no UTC offset"
                raise TableError(f"{self._where(line, column)}: {cell[:40]!r} " +
                                 ("has no UTC offset" if moment.tzinfo is None else "has a UTC offset") +
                                 f" where the first rows had {first}; write every time with its offset (or none)")
            return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
        if self.layout.time_unit == "yyyymmdd":
            date = _yyyymmdd(cell)
            if date is None:
                raise TableError(f"{self._where(line, column)}: {cell[:40]!r} is not a YYYYMMDD date as the first "
                                 "rows were; pass the time unit (s, ms, us or ns) if these are epoch numbers")
            return date
        try:
            number = float(cell)
        except ValueError:
            raise TableError(f"{self._where(line, column)}: {cell[:40]!r} is not an epoch number "
                             f"({_UNIT_WORDS[self.layout.time_unit]})") from None
        if not math.isfinite(number):
            raise TableError(f"{self._where(line, column)}: {cell!r} is not a finite time")
        unit = self.layout.time_unit
        if self.layout.time_detected and _epoch_unit([number]) != unit:
            raise TableError(f"{self._where(line, column)}: {cell[:40]!r} is not in {_UNIT_WORDS[unit]} as the "
                             f"first rows were; the file mixes units: pass the time unit")
        return number * _SCALE[unit]


def open_table(path: Path, time_column: str | None = None, id_column: str | None = None,
               features: Sequence[str] | None = None, time_unit: TimeUnit = "auto", *,
               max_line_bytes: int = MAX_LINE_BYTES) -> TableReader:
    """Open ``path`` and decide its layout (see the module docstring) from its first good rows.

    Args:
        path: ``.csv`` (comma) or ``.tsv``/``.tab`` (tab) file with a header row.
        time_column: the time column; default by name or content.
        id_column: the device column; default ``device_id`` when present.
        features: feature columns; default every numeric column that has no role.
        time_unit: ``auto`` (detect), ``iso``, ``s``, ``ms``, ``us`` or ``ns``.
        max_line_bytes: the longest line read; a longer one is a :class:`BadLine`.

    Raises:
        TableError: missing file, no header, ambiguous or unreadable layout.
    """
    if time_unit not in get_args(TimeUnit):
        raise TableError(f"time unit must be one of {list(get_args(TimeUnit))}, got {time_unit!r}")
    path = Path(path)
    rows = _Rows(path, max_line_bytes)
    try:
        header = rows.header
        head: list[tuple[int, list[str] | BadLine]] = []
        good: list[list[str]] = []
        for line, cells in rows:
            head.append((line, cells))
            if not isinstance(cells, BadLine):
                good.append(cells)
            if len(good) >= SAMPLE_ROWS:
                break
        if not good:
            raise TableError(f"{path}: no data row after the header (bad lines aside)")
        sample = {name: [cells[i] for cells in good] for i, name in enumerate(header)}
        if id_column is not None and id_column not in header:
            raise TableError(f"{path}: no device column {id_column!r}; columns are {list(header)}")
        device = id_column if id_column is not None else next((h for h in header if h.lower() == "device_id"), None)
        carried = {c for c in ("seq", "stream") if c in header and c not in (features or ())}
        excluded = carried | ({device} if device else set())
        time = _pick_time(header, sample, time_column, excluded, path)
        if time is not None and time == device:
            raise TableError(f"{path}: {time!r} cannot be both the time and the device column")
        unit, detected = _pick_unit(sample[time], time, time_unit, path) if time else ("s", False)
        offsets: tuple[str, ...] = ()
        if time is not None and unit == "iso":
            lines = [line for line, cells in head if not isinstance(cells, BadLine)]
            offsets = _offsets(list(zip(lines, sample[time], strict=True)), time, path)
        roles: dict[str, str] = {c: c for c in carried}
        if device:
            roles[device] = "device"
        if time:
            roles[time] = "time"
        chosen, ignored = _pick_features(header, sample, features, roles, path)
    except BaseException:
        rows.close()
        raise
    layout = TableLayout(path, header, time, unit, detected, device, chosen, ignored, offsets)
    return TableReader(rows, layout, head)


def read_table(path: Path, time_column: str | None = None, id_column: str | None = None,
               features: Sequence[str] | None = None,
               time_unit: TimeUnit = "auto") -> tuple[TableLayout, list[TableRow]]:
    """Every row of ``path`` with its layout; arguments and errors as :func:`open_table`."""
    with open_table(path, time_column, id_column, features, time_unit) as reader:
        return reader.layout, list(reader)
