"""Reading sources: where the agent pulls raw reading payloads from.

A source hands out raw bytes (one wire-format JSON reading each); the agent validates them
with :func:`streamedge.contracts.reading.parse_reading`, so a source never needs to be trusted.
A line a source cannot even turn into a payload (longer than :data:`MAX_LINE_BYTES`, a CSV row
that is not UTF-8) is handed out as a :class:`~streamedge.contracts.reading.Rejection` instead,
which the agent counts like any other: no input line stops a source. Every source is
pull-based with a queue bounded in payloads and in bytes, so a fast producer waits for
inference (backpressure) and memory stays bounded whatever the input rate and line length.

A new source (a serial port, a GPIO pin) is a few lines::

    def serial_lines(port):            # any iterator of bytes
        with open(port, "rb") as tty:
            yield from tty

    source = IteratorSource(serial_lines("/dev/ttyUSB0"), queue_size=1024)
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

from streamedge.contracts.reading import MAX_BLOCK_BYTES, MAX_READING_BYTES, Rejection
from streamedge.contracts.table import BadLine, LongLine, TableError, TableReader, TimeUnit, open_table, read_line
from streamedge.edge.errors import SourceError

if TYPE_CHECKING:
    from streamedge.edge.settings import EdgeSettings

__all__ = [
    "MAX_LINE_BYTES",
    "IteratorSource",
    "KafkaSource",
    "Payload",
    "RowNumbers",
    "Source",
    "TableOptions",
    "bounded_lines",
    "file_payloads",
    "open_source",
    "row_payload",
    "table_payloads",
    "simulator_payloads",
    "stdin_payloads",
]

_END: Final = object()
_T = TypeVar("_T")
_LOG = logging.getLogger(__name__)
# The longest line a line source reads: a reading block plus its line end. Longer lines are
# skipped in chunks (never held whole) and handed out as a ``too_large`` rejection.
MAX_LINE_BYTES: Final = MAX_BLOCK_BYTES + 2

Payload = bytes | Rejection
"""What a source hands out: raw bytes to validate, or a line already refused."""


@dataclass(frozen=True)
class TableOptions:
    """How to read a reading table (:func:`streamedge.contracts.table.open_table` arguments)."""

    time_column: str | None = None
    id_column: str | None = None
    features: tuple[str, ...] | None = None
    time_unit: TimeUnit = "auto"


@runtime_checkable
class Source(Protocol):
    """What the agent reads from."""

    def read(self, max_items: int, timeout: float) -> list[Payload] | None:
        """Up to ``max_items`` raw payloads; ``[]`` when none arrived within ``timeout`` seconds;
        ``None`` once the source is exhausted (and everything was handed out)."""
        ...

    def commit(self) -> None:
        """Called after everything read so far is committed to the buffer (Kafka offsets, file marks)."""
        ...

    def drain(self, max_items: int) -> list[Payload]:
        """Stop taking input; up to ``max_items`` payloads already taken in that cannot be read
        again (a pipe's lines), ``[]`` once none is left. Called on a stop request until ``[]``."""
        ...

    def close(self) -> None:
        """Release the source; payloads not drained are dropped (they were never acknowledged)."""
        ...


class IteratorSource:
    """Adapts any iterator of payloads: a thread fills a bounded queue the agent drains.

    Args:
        payloads: the iterator (blocking is fine: it runs in its own daemon thread).
        queue_size: payloads held ahead of the agent; the thread blocks when full.
        queue_bytes: bytes held ahead of the agent (at least one payload is always let in).
        read_bytes: a :meth:`read` returns once it holds this many bytes.
    """

    def __init__(self, payloads: Iterable[Payload], queue_size: int = 1024, queue_bytes: int = 16 * 1024 * 1024,
                 read_bytes: int = 4 * 1024 * 1024) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._queue_bytes = queue_bytes
        self._read_bytes = read_bytes
        self._held = 0  # bytes in the queue
        self._putting = False  # the pump holds a payload it took from the iterator
        self._room = threading.Condition()
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, args=(iter(payloads),), name="edge-source", daemon=True)
        self._thread.start()

    def _pump(self, payloads: Iterator[Payload]) -> None:
        try:
            while not self._stop.is_set():
                try:
                    payload = next(payloads)
                except StopIteration:
                    break
                self._putting = True
                if not self._put(payload):
                    return
                self._putting = False
        except Exception as exc:  # surfaced to the agent by read()
            self._error = exc
        self._put(_END)

    def _put(self, item: object) -> bool:
        """Queue ``item`` once there is room; False when the source was abandoned first."""
        size = _size(item)
        with self._room:
            while self._held and self._held + size > self._queue_bytes:
                if self._abandon.is_set():
                    return False
                self._room.wait(0.2)
            self._held += size
        while not self._abandon.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, timeout: float) -> object:
        item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        with self._room:
            self._held -= _size(item)
            self._room.notify_all()
        return item

    def read(self, max_items: int, timeout: float) -> list[Payload] | None:
        if self._done:
            return None
        items: list[Payload] = []
        size = 0
        deadline = time.monotonic() + timeout
        while len(items) < max_items and size < self._read_bytes:
            remaining = deadline - time.monotonic() if not items else 0.0
            try:
                item = self._take(max(remaining, 0.0))
            except queue.Empty:
                break
            if item is _END:
                self._done = True
                if self._error is not None:
                    raise SourceError(f"source failed: {self._error}") from self._error
                break
            items.append(item)  # type: ignore[arg-type]
            size += _size(item)
        if self._done and not items:
            return None
        return items

    def commit(self) -> None:
        """Nothing to commit: an iterator cannot be rewound."""

    def drain(self, max_items: int) -> list[Payload]:
        """Stop pulling from the iterator; the payloads queued so far, ``max_items`` at a time
        (including the one the pump holds while the queue is full)."""
        self._stop.set()
        try:
            return self.read(max_items, 0.0) or self.read(max_items, 0.5 if self._putting else 0.0) or []
        except SourceError:
            return []

    def close(self) -> None:
        self._stop.set()
        self._abandon.set()


def _size(item: object) -> int:
    return len(item) if isinstance(item, bytes) else 0


def bounded_lines(handle: Any, limit: int = MAX_LINE_BYTES) -> Iterator[Payload]:
    """The non-blank lines of a binary stream without their line ends, each at most ``limit`` bytes
    (:func:`streamedge.contracts.table.read_line`).

    A longer line is read through in chunks (never held whole) and yields one ``too_large``
    :class:`~streamedge.contracts.reading.Rejection`.
    """
    while (line := read_line(handle, limit)) is not None:
        if isinstance(line, LongLine):
            yield Rejection("too_large", f"input line of {line.size} bytes, at most {limit} read")
        elif line.strip():
            yield bytes(line)


def _paced(items: Iterable[_T], rate: float) -> Iterator[_T]:
    """Yield ``items`` at ``rate`` per second (0: unpaced), without drift."""
    start = time.monotonic()
    for index, item in enumerate(items):
        if rate > 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item


def _csv_rows(path: Path, device_id: str, table: TableOptions) -> Iterator[Payload]:
    """A reading table (:mod:`streamedge.contracts.table`) as readings; it must have a time column.

    One row per line, read as bytes with a bounded length: a row that is not UTF-8, longer than
    :data:`~streamedge.contracts.reading.MAX_READING_BYTES` or not CSV is one rejection (``not_utf8``,
    ``too_large``, ``wrong_type``) and the next row is read. A row whose cells do not read (text in a
    value or time cell) still becomes a payload, with the cell's text in place, so the agent rejects
    that one reading with a reason and goes on. Without a ``seq`` column a row's ``seq`` is its time
    in microseconds, so each day's file continues the stream where the last one ended and a file
    replayed after a restart repeats its numbers.
    """
    try:
        reader = open_table(path, table.time_column, table.id_column, table.features, table.time_unit,
                            max_line_bytes=MAX_READING_BYTES)
    except TableError as exc:
        raise SourceError(str(exc)) from exc
    with reader:
        layout = reader.layout
        if layout.time_column is None:
            raise SourceError(f"{path}: no time column found among {list(layout.header)}; name it with "
                              "--source-time-column (STREAMEDGE_EDGE_SOURCE_TIME_COLUMN)")
        _LOG.info("reading %s", layout.describe())
        for _line, payload in table_payloads(reader, device_id):
            yield payload


def table_payloads(reader: TableReader, device_id: str) -> Iterator[tuple[int, Payload]]:
    """Every data line of an open reading table as the agent reads it: ``(line number, payload)``.

    The agent's row rule, shared with ``streamedge predict``: a line that is no row is a
    :class:`~streamedge.contracts.reading.Rejection` (``not_utf8``, ``too_large``, ``wrong_type``);
    a row whose cells do not read still becomes a payload with the cell's text in place, for
    ``parse_reading`` to reject with its reason; a row without ``seq`` is numbered by
    :class:`RowNumbers`.
    """
    numbers = RowNumbers()
    for line, cells in reader.raw():
        if isinstance(cells, BadLine):
            yield line, Rejection(cells.reason, f"line {line}: {cells.detail}")
            continue
        try:
            row = reader.parse(line, cells)
        except TableError:
            yield line, _raw_payload(reader, cells, device_id, numbers)
            continue
        values: list[float] = list(row.values)
        device, stream = row.device or device_id, row.stream or "csv"
        record = {"device_id": device, "stream": stream, "ts": row.ts,
                  "value": values[0] if len(values) == 1 else values,
                  "seq": row.seq if row.seq is not None else numbers.seq(device, stream, row.ts)}
        # NaN cells become the non-standard JSON token, which parse_reading rejects as non_finite.
        yield line, json.dumps(record).encode()


def _number(text: Any) -> Any:
    """A CSV cell as a number when it is one, else the text (parse_reading rejects it with a reason).

    A cell that is already a number (a Parquet column) passes unchanged; a Parquet time becomes epoch
    seconds and a decimal a float; any other type becomes its text (for validation to refuse).
    """
    if isinstance(text, datetime):
        return (text if text.tzinfo else text.replace(tzinfo=UTC)).timestamp()
    if isinstance(text, Decimal):
        return float(text)
    if text is None or isinstance(text, bool | int | float):
        return text
    if not isinstance(text, str):
        return str(text)
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _raw_payload(reader: TableReader, cells: list[str], device_id: str, numbers: RowNumbers) -> bytes:
    """A row that does not read, cells as written: parse_reading names what is wrong with it."""
    layout = reader.layout
    seq = reader.cell(cells, "seq" if "seq" in layout.header else None)
    values = [_number(reader.cell(cells, c)) for c in layout.features]
    ts = _number(reader.cell(cells, layout.time_column))
    device = reader.cell(cells, layout.id_column) or device_id
    stream = reader.cell(cells, "stream" if "stream" in layout.header else None) or "csv"
    record = {
        "device_id": device,
        "stream": stream,
        "ts": ts,
        "value": values[0] if len(values) == 1 else values,
        "seq": _number(seq) if seq else numbers.seq(device, stream, ts),
    }
    return json.dumps(record).encode()


def row_payload(row: dict[str, Any], value_columns: list[str], device_id: str, numbers: RowNumbers) -> bytes:
    """One table row (CSV text cells or Parquet values) as a wire-format reading: ``streamedge predict``'s
    row rule, for tables with a ``ts`` column in epoch seconds (the agent's file source reads any
    layout of :mod:`streamedge.contracts.table`).

    ``device_id`` and ``stream`` default to ``device_id`` and ``"csv"``, ``seq`` to the agent's
    rule for rows without one (:class:`RowNumbers`). Whatever the row holds is passed on:
    ``parse_reading`` judges it.
    """
    values = [_number(row.get(c)) for c in value_columns]
    device, stream, ts = row.get("device_id") or device_id, row.get("stream") or "csv", _number(row.get("ts"))
    record = {
        "device_id": device,
        "stream": stream,
        "ts": ts,
        "value": values[0] if len(values) == 1 else values,
        "seq": _number(row.get("seq")) if row.get("seq") else numbers.seq(device, stream, ts),
    }
    # NaN/inf cells become the non-standard JSON tokens, which parse_reading rejects as non_finite.
    return json.dumps(record).encode()


class RowNumbers:
    """The ``seq`` of table rows that have none, per ``(device, stream)``: the key's first row gets
    its time in whole microseconds, each later row one more. Consecutive within a file (so the
    predictor scores every step), and the next file of the same key starts past the last one's
    numbers unless it holds more rows than microseconds; a file replayed repeats its numbers."""

    def __init__(self) -> None:
        self._next: dict[tuple[Any, Any], int] = {}

    def seq(self, device: Any, stream: Any, ts: Any) -> Any:
        """The next number of this key (``ts`` itself when it is no usable time: validation refuses it)."""
        key = (device, stream)
        number = self._next.get(key)
        if number is None:
            number = _ts_seq(ts)
            if not isinstance(number, int):
                return number
        self._next[key] = number + 1
        return number


def _ts_seq(ts: Any) -> Any:
    """The ``seq`` of a CSV row without one: its ``ts`` in whole microseconds (``ts`` itself when
    not a usable number, which the reading's validation then refuses)."""
    if isinstance(ts, int | float) and math.isfinite(ts) and ts >= 0:
        return round(ts * 1_000_000)
    return ts


def file_payloads(path: Path, rate: float = 0.0, device_id: str = "edge-1",
                  table: TableOptions | None = None) -> Iterator[Payload]:
    """Replay a ``.csv``/``.tsv`` reading table or a JSON-lines file at ``rate`` readings per second.

    A table's device column (``device_id`` by default) names each row's device, else ``device_id``;
    its time column (ISO 8601 or epoch s/ms/us/ns, see :mod:`streamedge.contracts.table`) becomes
    the reading's ``ts`` in seconds.

    Raises:
        SourceError: the file is missing (here), or a table's layout is ambiguous or has no time
            column (when reading starts).
    """
    if not path.is_file():
        raise SourceError(f"source file {path} does not exist")
    rows: Iterable[Payload]
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        rows = _csv_rows(path, device_id, table or TableOptions())
    else:
        rows = _lines(path)
    return _paced(rows, rate)


def _lines(path: Path) -> Iterator[Payload]:
    with path.open("rb") as handle:
        yield from bounded_lines(handle)


def stdin_payloads(stream: Any) -> Iterator[Payload]:
    """JSON lines from a binary stream (``sys.stdin.buffer``); blank lines skipped, lines
    longer than :data:`MAX_LINE_BYTES` refused (see :func:`bounded_lines`)."""
    return bounded_lines(stream)


def simulator_payloads(
    keys: int = 2,
    n_features: int = 1,
    rate: float = 0.0,
    total: int = 0,
    seed: int = 0,
    clock: Callable[[], float] = time.time,
) -> Iterator[bytes]:
    """Simulated sensors: a daily-like sine per stream plus noise, with a rare spike (anomaly).

    Args:
        keys: number of simulated streams (``sim-<i>/signal``).
        n_features: values per reading.
        rate: readings per second over all streams (0: unpaced).
        total: readings in all (0: endless).
        seed: random seed, for reproducible runs.
        clock: event-time source, seconds.
    """
    rng = random.Random(seed)

    def _generate() -> Iterator[bytes]:
        index = 0
        while total == 0 or index < total:
            key, step = index % keys, index // keys
            values = [
                10.0 + 3.0 * math.sin(2 * math.pi * step / 48 + key + f) + rng.gauss(0.0, 0.3)
                for f in range(n_features)
            ]
            if rng.random() < 0.002:
                values = [v + 15.0 for v in values]
            record = {"device_id": f"sim-{key}", "stream": "signal", "ts": round(clock(), 6),
                      "value": values[0] if n_features == 1 else values, "seq": step}
            yield json.dumps(record, separators=(",", ":")).encode()
            index += 1

    return _paced(_generate(), rate)


class KafkaSource:
    """Readings from a Kafka topic (kafka-python), offsets committed only after the buffer commit.

    Args:
        kafka_config: ``KafkaSettings.kafka_python_config()``.
        topic: the readings topic.
        group_id: consumer group (one per device, so each device sees every reading).
        timeout_s: bound on one Kafka call.
    """

    def __init__(self, kafka_config: dict[str, Any], topic: str, group_id: str, timeout_s: float = 5.0) -> None:
        from kafka import KafkaConsumer

        self._timeout_s = timeout_s
        self._consumer = KafkaConsumer(
            topic, group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            bootstrap_timeout_ms=int(timeout_s * 1000), request_timeout_ms=int(max(timeout_s, 5.0) * 2000),
            **kafka_config,
        )

    def read(self, max_items: int, timeout: float) -> list[Payload] | None:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_items)
        return [record.value for records in batches.values() for record in records]

    def drain(self, max_items: int) -> list[Payload]:
        """Nothing to drain: what was not committed is read again at the next start."""
        return []

    def commit(self) -> None:
        """Commit the offsets read so far, asynchronously: a slow coordinator never stalls inference.

        At-least-once: offsets whose commit fails are read again after a restart, and results
        carry ``(device_id, key, source_seq)`` so the repeats can be recognised.
        """
        self._consumer.commit_async(callback=_log_commit_failure)

    def close(self) -> None:
        self._consumer.close(autocommit=False, timeout_ms=int(self._timeout_s * 1000))


def _log_commit_failure(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        _LOG.warning("kafka offset commit failed: %s", response)


def open_source(settings: EdgeSettings, kafka_config: dict[str, Any], readings_topic: str,
                stdin: Any = None) -> Source:
    """The source ``settings.source`` names.

    Args:
        settings: the agent's settings.
        kafka_config: for ``source=kafka``.
        readings_topic: default topic for ``source=kafka``.
        stdin: binary stream for ``source=stdin`` (standard input when None).
    """
    if settings.source == "kafka":
        return KafkaSource(kafka_config, settings.source_topic or readings_topic,
                           group_id=f"streamedge-edge-{settings.device_id}", timeout_s=settings.kafka_timeout_s)
    payloads: Iterable[Payload]
    if settings.source == "file":
        assert settings.source_path is not None  # checked by EdgeSettings
        columns = tuple(c.strip() for c in settings.source_columns.split(",") if c.strip())
        table = TableOptions(settings.source_time_column or None, settings.source_id_column or None,
                             columns or None, settings.source_time_unit)
        payloads = file_payloads(settings.source_path, settings.rate, settings.device_id, table)
    elif settings.source == "stdin":
        # A handle of its own on a copy of fd 0: the source thread may be blocked reading it when
        # the process exits, and sys.stdin.buffer held by a daemon thread aborts the interpreter.
        payloads = stdin_payloads(stdin if stdin is not None else open(os.dup(sys.stdin.fileno()), "rb"))  # noqa: SIM115
    else:
        payloads = simulator_payloads(settings.simulator_keys, settings.n_features or 1, settings.rate,
                                      settings.simulator_readings)
    return IteratorSource(payloads, settings.queue_size)
