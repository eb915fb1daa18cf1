"""Reading sources: where the agent pulls raw reading payloads from.

A source hands out raw bytes (one wire-format JSON reading each); the agent validates them
with :func:`streamedge.contracts.reading.parse_reading`, so a source never needs to be trusted.
Every source is pull-based with a bounded queue, so a fast producer waits for inference
(backpressure) and memory stays bounded whatever the input rate.

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
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from streamedge.contracts.table import TableError, TableReader, TimeUnit, open_table
from streamedge.edge.errors import SourceError

if TYPE_CHECKING:
    from streamedge.edge.settings import EdgeSettings

__all__ = [
    "IteratorSource",
    "TableOptions",
    "KafkaSource",
    "Source",
    "file_payloads",
    "open_source",
    "row_payload",
    "simulator_payloads",
    "stdin_payloads",
]

_END: Final = object()
_LOG = logging.getLogger(__name__)


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

    def read(self, max_items: int, timeout: float) -> list[bytes] | None:
        """Up to ``max_items`` raw payloads; ``[]`` when none arrived within ``timeout`` seconds;
        ``None`` once the source is exhausted (and everything was handed out)."""
        ...

    def commit(self) -> None:
        """Called after everything read so far is committed to the buffer (Kafka offsets, file marks)."""
        ...

    def close(self) -> None:
        """Release the source; pending unread payloads are dropped (they were never acknowledged)."""
        ...


class IteratorSource:
    """Adapts any iterator of payloads: a thread fills a bounded queue the agent drains.

    Args:
        payloads: the iterator (blocking is fine: it runs in its own daemon thread).
        queue_size: readings held ahead of the agent; the thread blocks when full.
    """

    def __init__(self, payloads: Iterable[bytes], queue_size: int = 1024) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, args=(iter(payloads),), name="edge-source", daemon=True)
        self._thread.start()

    def _pump(self, payloads: Iterator[bytes]) -> None:
        try:
            for payload in payloads:
                while not self._stop.is_set():
                    try:
                        self._queue.put(payload, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except Exception as exc:  # surfaced to the agent by read()
            self._error = exc
        self._queue.put(_END)

    def read(self, max_items: int, timeout: float) -> list[bytes] | None:
        if self._done:
            return None
        items: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(items) < max_items:
            remaining = deadline - time.monotonic() if not items else 0.0
            try:
                item = self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._done = True
                if self._error is not None:
                    raise SourceError(f"source failed: {self._error}") from self._error
                break
            items.append(item)  # type: ignore[arg-type]
        if self._done and not items:
            return None
        return items

    def commit(self) -> None:
        """Nothing to commit: an iterator cannot be rewound."""

    def close(self) -> None:
        self._stop.set()


def _paced(items: Iterable[bytes], rate: float) -> Iterator[bytes]:
    """Yield ``items`` at ``rate`` per second (0: unpaced), without drift."""
    start = time.monotonic()
    for index, item in enumerate(items):
        if rate > 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item


def _csv_rows(path: Path, device_id: str, table: TableOptions) -> Iterator[bytes]:
    """A reading table (:mod:`streamedge.contracts.table`) as readings; it must have a time column.

    A row that does not read (text in a value or time cell) still becomes a payload, with the cell's
    text in place, so the agent rejects that one reading with a reason and goes on.
    """
    try:
        reader = open_table(path, table.time_column, table.id_column, table.features, table.time_unit)
    except TableError as exc:
        raise SourceError(str(exc)) from exc
    with reader:
        layout = reader.layout
        if layout.time_column is None:
            raise SourceError(f"{path}: no time column found among {list(layout.header)}; name it with "
                              "--source-time-column (STREAMEDGE_EDGE_SOURCE_TIME_COLUMN)")
        _LOG.info("reading %s", layout.describe())
        for index, (line, cells) in enumerate(reader.raw()):
            try:
                row = reader.parse(line, cells)
            except TableError:
                yield _raw_payload(reader, cells, device_id, index)
                continue
            values: list[float] = list(row.values)
            record = {"device_id": row.device or device_id, "stream": row.stream or "csv", "ts": row.ts,
                      "value": values[0] if len(values) == 1 else values,
                      "seq": row.seq if row.seq is not None else index}
            # NaN cells become the non-standard JSON token, which parse_reading rejects as non_finite.
            yield json.dumps(record).encode()


def _number(text: Any) -> Any:
    """A CSV cell as a number when it is one, else the text (parse_reading rejects it with a reason).

    A cell that is already a number (a Parquet column) passes unchanged.
    """
    if not isinstance(text, str):
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _raw_payload(reader: TableReader, cells: list[str], device_id: str, index: int) -> bytes:
    """A row that does not read, cells as written: parse_reading names what is wrong with it."""
    layout = reader.layout
    seq = reader.cell(cells, "seq" if "seq" in layout.header else None)
    values = [_number(reader.cell(cells, c)) for c in layout.features]
    record = {
        "device_id": reader.cell(cells, layout.id_column) or device_id,
        "stream": reader.cell(cells, "stream" if "stream" in layout.header else None) or "csv",
        "ts": _number(reader.cell(cells, layout.time_column)),
        "value": values[0] if len(values) == 1 else values,
        "seq": _number(seq) if seq else index,
    }
    return json.dumps(record).encode()


def row_payload(row: dict[str, Any], value_columns: list[str], device_id: str, index: int) -> bytes:
    """One table row (CSV text cells or Parquet values) as a wire-format reading: ``streamedge predict``'s
    row rule, for tables with a ``ts`` column in epoch seconds (the agent's file source reads any
    layout of :mod:`streamedge.contracts.table`; for such tables the two give the same readings).

    ``device_id`` and ``stream`` default to ``device_id`` and ``"csv"``, ``seq`` to the row's
    0-based ``index``. Whatever the row holds is passed on: ``parse_reading`` judges it.
    """
    values = [_number(row.get(c)) for c in value_columns]
    record = {
        "device_id": row.get("device_id") or device_id,
        "stream": row.get("stream") or "csv",
        "ts": _number(row.get("ts")),
        "value": values[0] if len(values) == 1 else values,
        "seq": _number(row.get("seq")) if row.get("seq") else index,
    }
    # NaN/inf cells become the non-standard JSON tokens, which parse_reading rejects as non_finite.
    return json.dumps(record).encode()


def file_payloads(path: Path, rate: float = 0.0, device_id: str = "edge-1",
                  table: TableOptions | None = None) -> Iterator[bytes]:
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
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        rows: Iterable[bytes] = _csv_rows(path, device_id, table or TableOptions())
    else:
        rows = (line.rstrip(b"\r\n") for line in _lines(path) if line.strip())
    return _paced(rows, rate)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def stdin_payloads(stream: Any) -> Iterator[bytes]:
    """JSON lines from a binary stream (``sys.stdin.buffer``); blank lines skipped."""
    for line in stream:
        if line.strip():
            yield bytes(line).rstrip(b"\r\n")


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

    def read(self, max_items: int, timeout: float) -> list[bytes] | None:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_items)
        return [record.value for records in batches.values() for record in records]

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
        stdin: binary stream for ``source=stdin`` (``sys.stdin.buffer`` when None).
    """
    if settings.source == "kafka":
        return KafkaSource(kafka_config, settings.source_topic or readings_topic,
                           group_id=f"streamedge-edge-{settings.device_id}", timeout_s=settings.kafka_timeout_s)
    payloads: Iterable[bytes]
    if settings.source == "file":
        assert settings.source_path is not None  # checked by EdgeSettings
        columns = tuple(c.strip() for c in settings.source_columns.split(",") if c.strip())
        table = TableOptions(settings.source_time_column or None, settings.source_id_column or None,
                             columns or None, settings.source_time_unit)
        payloads = file_payloads(settings.source_path, settings.rate, settings.device_id, table)
    elif settings.source == "stdin":
        payloads = stdin_payloads(stdin if stdin is not None else sys.stdin.buffer)
    else:
        payloads = simulator_payloads(settings.simulator_keys, settings.n_features or 1, settings.rate,
                                      settings.simulator_readings)
    return IteratorSource(payloads, settings.queue_size)
