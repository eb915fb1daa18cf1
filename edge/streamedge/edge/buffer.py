"""The durable store-and-forward buffer: an SQLite outbox in WAL mode.

Every result and heartbeat is first committed here; a row is *acknowledged* once its
transaction commits, and a SIGKILL (or, with ``fsync=True``, a power cut) loses no
acknowledged row. The forwarder sends rows in ``id`` order and deletes them only after the
broker acknowledged them, so delivery is at-least-once and in order; duplicates carry the
same ``(device_id, seq)`` and can be dropped downstream.

Drop policy (documented in docs/edge.md): the buffer is bounded by payload bytes and by age.
When a commit would exceed ``max_bytes``, or rows are older than ``max_age_s``, the OLDEST
rows are deleted first and counted (``reason="size"`` or ``"age"``); newer data is worth more
to an operator than older data once the link has been down for that long.

The sequence counter lives in the same database and is advanced in the same transaction as
the rows, so sequence numbers never repeat across restarts; the buffer's ``epoch`` (a random
64-bit id drawn when the database is created, shown as 16 hex digits) goes into every result
key, so a lost buffer (deleted, quarantined as corrupt) that starts the counter at 0 again
never reuses a ``(device_id, epoch, seq)``. So do the per-key windows the
results were computed from (``windows`` table: key, last seq, recent values as JSON): after a
restart the agent resumes with exactly the windows its committed results saw, and a source
that replays unacknowledged readings finds their ``seq`` already seen. The table keeps the
``keep_windows`` most recently written keys.

Faults the buffer absorbs itself (docs/edge.md, "Failure modes"):

- a corrupt database (bad header, damaged pages: ``PRAGMA quick_check`` at open) is renamed
  aside as ``<name>.corrupt-<unix time>-<random>`` with its WAL and a fresh one opened; :attr:`Outbox.lost`
  says so (the agent counts and alerts);
- a database, or its WAL, deleted while the agent runs is noticed by :meth:`Outbox.recover` (same
  path, another file or none): the rows and windows still open are copied into a fresh database;
- a full disk: a reserve file of :data:`RESERVE_BYTES` beside the database is deleted when a
  delete of forwarded rows fails for lack of space, so the delete (which needs WAL space)
  goes through and frees pages for intake; the reserve is written again once there is room.

Paths it refuses at open with :class:`OutboxError` (the agent exits 1 with one line), touching
nothing: a folder, a read-only file, a folder it cannot write, and an SQLite database of another
schema (another program's data is neither written to nor renamed aside as corrupt).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamedge.edge.errors import OutboxError

__all__ = ["RESERVE_BYTES", "BufferStats", "Outbox", "OutboxRow", "steady_clock"]

_LOG = logging.getLogger(__name__)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    key TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    tick INTEGER NOT NULL
);
"""
# The buffer's tables and the columns it reads; a database holding anything else is not a buffer.
_TABLES: Final = {"outbox": {"id", "topic", "key", "value", "created"}, "meta": {"name", "value"},
                  "windows": {"key", "last_seq", "state", "tick"}}
# Prune the windows table every this many appends, down to the most recent keys.
_PRUNE_EVERY: Final = 256
# Space held back for the deletes that free a full disk (deleting a forwarded pass writes a few pages of WAL).
RESERVE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class OutboxRow:
    """One buffered message: ``created`` is seconds since the epoch."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    created: float


@dataclass(frozen=True)
class BufferStats:
    """Depth (rows), payload bytes, age of the oldest row (s, 0 when empty), rows dropped so far."""

    depth: int
    bytes: int
    oldest_age_s: float
    dropped: int
    next_seq: int


def steady_clock(floor: float = 0.0) -> Callable[[], float]:
    """The buffer's clock: ``floor`` (the time the buffer last recorded), or the wall clock for a
    new buffer (``floor`` 0), plus the monotonic time elapsed since the call.

    The wall clock is read only for a buffer that has no time yet, so neither an NTP step while
    the agent runs nor one between two runs (a device that booted at 1970 and synced later)
    moves the backlog's age: it counts the time the agent ran.
    """
    start, mono = (floor if floor > 0 else time.time()), time.monotonic()
    return lambda: start + (time.monotonic() - mono)


class Outbox:
    """The SQLite outbox; safe to share between the agent thread and the forwarder thread.

    Args:
        path: database file (created with its folder).
        max_bytes: bound on buffered payload bytes.
        max_age_s: rows older than this are dropped.
        fsync: ``synchronous=FULL`` (power-cut safe) instead of ``NORMAL`` (SIGKILL safe).
        on_drop: called with ``(reason, count)`` whenever rows are dropped.
        clock: the buffer's seconds; default :func:`steady_clock` resumed from the newest time
            the buffer recorded (its newest row, or the time saved at the last :meth:`expire` or
            :meth:`close`), so a clock jump either way, while running or between runs, neither
            ages nor rejuvenates the backlog.

    Attributes:
        epoch: this database's random id, 16 hex digits (results carry it).
        lost: ``(reason, path)`` when the database found at ``path`` was unusable and replaced
            by a fresh one (``"corrupt"``: renamed to ``path``); None otherwise.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 7 * 24 * 3600.0,
        fsync: bool = True,
        on_drop: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._fsync = fsync
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self.lost: tuple[str, Path] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot open buffer {self.path}: {exc}") from exc
        _check_writable(self.path)
        try:
            self._db = self._open()
        except sqlite3.OperationalError as exc:  # permissions, a missing mount: not the file's fault
            raise OutboxError(f"cannot open buffer {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self.lost = ("corrupt", self._quarantine(exc))
            try:
                self._db = self._open()
            except sqlite3.Error as again:
                raise OutboxError(f"cannot open a fresh buffer {self.path}: {again}") from again
        self.epoch = f"{self._meta('epoch'):016x}"
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM outbox").fetchone()[0])
        newest = self._db.execute("SELECT COALESCE(MAX(created), 0) FROM outbox").fetchone()[0]
        self._clock = clock or steady_clock(max(float(newest), self._meta("clock_ms") / 1000))
        self._ident = _identity(self.path)
        self._wal_ident = _identity(self._wal)
        self._write_reserve()

    @property
    def _wal(self) -> Path:
        return self.path.with_name(f"{self.path.name}-wal")

    def _open(self) -> sqlite3.Connection:
        """Connect, check the file (``quick_check``, then its tables) and create the schema and the epoch if new.

        Raises:
            sqlite3.DatabaseError: the file is not a sound SQLite database.
            OutboxError: it is a sound database of another schema (left untouched).
        """
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            verdict = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
            if verdict != ["ok"]:
                raise sqlite3.DatabaseError(f"quick_check: {'; '.join(verdict)[:300]}")
            _check_schema(db, self.path)  # before the first write: another program's database stays as it was
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?)", (secrets.randbits(63),))
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, exc: BaseException) -> Path:
        """Rename the unusable database and its WAL aside; returns the new name of the database."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{_stamp()}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        _LOG.error("buffer %s is corrupt (%s): moved to %s, a fresh buffer opened", self.path, exc, aside,
                   extra={"reason": "buffer_corrupt", "path": str(aside)})
        return aside

    @property
    def _reserve(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def _write_reserve(self) -> None:
        """Hold :data:`RESERVE_BYTES` of disk for the deletes that free a full disk (best effort)."""
        if self._reserve.exists():
            return
        try:
            with self._reserve.open("wb") as handle:
                handle.write(bytes(RESERVE_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:  # no room yet: written at a later expire()
            with contextlib.suppress(OSError):
                self._reserve.unlink()

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def append(
        self,
        build: Callable[[int], Sequence[tuple[str, bytes | None, bytes]]],
        count: int,
        counter: str = "next_seq",
        windows: Sequence[tuple[str, int, str]] = (),
        keep_windows: int = 10_000,
    ) -> int:
        """Reserve ``count`` sequence numbers and commit the rows ``build(first_seq)`` returns, atomically.

        Args:
            build: called with the first reserved sequence number; returns ``(topic, key, value)``
                rows (results use ``first_seq + i`` as their ``seq``).
            count: sequence numbers to reserve (results in this batch).
            counter: which durable counter to draw from (results and telemetry count apart, so
                result sequence numbers have no gaps).
            windows: ``(key, last_seq, state_json)`` of the keys this batch changed, saved in
                the same transaction.
            keep_windows: how many most recently saved keys the windows table keeps.

        Returns:
            The first reserved sequence number.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                first = self._meta(counter)
                older = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0])
                rows = build(first)
                now = self._clock()
                self._db.executemany(
                    "INSERT INTO outbox (topic, key, value, created) VALUES (?, ?, ?, ?)",
                    [(topic, key, value, now) for topic, key, value in rows],
                )
                self._set_meta(counter, first + count)
                if windows:
                    self._save_windows(windows, keep_windows)
                self._bytes += sum(len(value) for _, _, value in rows)
                dropped = self._enforce_bounds(now, older)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                if "full" in str(exc):  # the WAL's space back, for the forwarder's deletes and the retry
                    self._fold_wal()
                raise OutboxError(f"cannot write buffer {self.path}: {exc}") from exc
            except BaseException:
                # e.g. ``build`` failed: never leave the transaction open for the next writer.
                self._rollback()
                raise
        self._report(dropped)
        return first

    def _save_windows(self, windows: Sequence[tuple[str, int, str]], keep: int) -> None:
        tick = self._meta("window_tick") + 1
        self._set_meta("window_tick", tick)
        self._db.executemany(
            "INSERT OR REPLACE INTO windows (key, last_seq, state, tick) VALUES (?, ?, ?, ?)",
            [(key, last_seq, state, tick) for key, last_seq, state in windows],
        )
        if tick % _PRUNE_EVERY == 0:
            self._db.execute("DELETE FROM windows WHERE key NOT IN "
                             "(SELECT key FROM windows ORDER BY tick DESC LIMIT ?)", (keep,))

    def load_windows(self, limit: int) -> list[tuple[str, int, str]]:
        """The ``limit`` most recently saved ``(key, last_seq, state_json)``, least recent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, last_seq, state FROM windows ORDER BY tick DESC, key LIMIT ?", (limit,)
            ).fetchall()
        return [(str(k), int(seq), str(state)) for k, seq, state in reversed(rows)]

    def _rollback(self) -> None:
        """Undo the open transaction (if any) and re-read the byte count it may have changed."""
        with contextlib.suppress(sqlite3.Error):  # no transaction open: nothing to undo
            self._db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            self._bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM outbox").fetchone()[0])

    def _enforce_bounds(self, now: float, older: int | None = None) -> dict[str, int]:
        """Drop rows past the age bound, then the oldest rows until the bytes fit; the size bound
        never drops rows after id ``older`` (the transaction being committed keeps its own rows,
        even when that leaves the buffer over its bound until the next commit or delete)."""
        dropped: dict[str, int] = {}
        cursor = self._db.execute("DELETE FROM outbox WHERE created < ? RETURNING LENGTH(value)", (now - self.max_age_s,))
        sizes = [int(row[0]) for row in cursor.fetchall()]
        if sizes:
            dropped["age"] = len(sizes)
            self._bytes -= sum(sizes)
        n_size = 0
        while self._bytes > self.max_bytes:
            # Oldest first, in chunks, until the payload bytes fit again.
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id <= ? ORDER BY id LIMIT 64) "
                "RETURNING LENGTH(value)", (older if older is not None else 2**63 - 1,))
            sizes = [int(row[0]) for row in cursor.fetchall()]
            if not sizes:
                break
            n_size += len(sizes)
            self._bytes -= sum(sizes)
        if n_size:
            dropped["size"] = n_size
        if dropped:
            self._set_meta("dropped", self._meta("dropped") + sum(dropped.values()))
        return dropped

    def _report(self, dropped: dict[str, int]) -> None:
        if self._on_drop is not None:
            for reason, count in dropped.items():
                self._on_drop(reason, count)

    def expire(self) -> None:
        """Apply the age bound now (the agent calls it periodically, also while idle)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                now = self._clock()
                dropped = self._enforce_bounds(now)
                self._set_meta("clock_ms", int(now * 1000))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"cannot write buffer {self.path}: {exc}") from exc
            self._write_reserve()
        self._report(dropped)

    def recover(self) -> bool:
        """Notice a database deleted or replaced under the running agent and carry on in a fresh one.

        The rows, windows and counters still readable through the open connection are copied
        into a new database at :attr:`path` (a new :attr:`epoch`). Rows keep their ids, so an id the
        forwarder remembers as delivered still names the same row. Returns True when that happened.

        Raises:
            OutboxError: the fresh database could not be written.
        """
        with self._lock:
            wal = _identity(self._wal)
            if self._wal_ident is None:  # the WAL appears with the first write
                self._wal_ident = wal
            if _identity(self.path) == self._ident and wal == self._wal_ident:
                return False
            old = self._db
            rows = old.execute("SELECT id, topic, key, value, created FROM outbox ORDER BY id").fetchall()
            windows = old.execute("SELECT key, last_seq, state, tick FROM windows").fetchall()
            meta = old.execute("SELECT name, value FROM meta WHERE name != 'epoch'").fetchall()
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, self.path.with_name(f"{self.path.name}.replaced-{_stamp()}"))
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            try:
                db = self._open()
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO outbox (id, topic, key, value, created) VALUES (?, ?, ?, ?, ?)", rows)
                db.executemany("INSERT INTO windows (key, last_seq, state, tick) VALUES (?, ?, ?, ?)", windows)
                db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", meta)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot recreate buffer {self.path}: {exc}") from exc
            old.close()
            self._db = db
            self._ident = _identity(self.path)
            self._wal_ident = _identity(self._wal)
            self.epoch = f"{self._meta('epoch'):016x}"
            self.lost = ("deleted", self.path)
        _LOG.error("buffer %s (or its WAL) was deleted or replaced while running: %d rows carried into a fresh one (epoch %s)",
                   self.path, len(rows), self.epoch, extra={"reason": "buffer_deleted", "rows": len(rows)})
        return True

    def peek(self, limit: int, after: int = 0) -> list[OutboxRow]:
        """The oldest ``limit`` rows with ``id > after``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, key, value, created FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [OutboxRow(int(r[0]), str(r[1]), r[2], bytes(r[3]), float(r[4])) for r in rows]

    def delete_through(self, last_id: int) -> None:
        """Forget every row with ``id <= last_id`` (they were delivered).

        A delete needs disk space (WAL frames). When it fails for lack of it, space is freed
        before the delete is tried once more: the reserve file is deleted and the WAL folded into
        the database and truncated (:meth:`_fold_wal`); after the delete the WAL is folded again,
        so the pages it freed are in the database for intake, and the reserve written back.
        """
        with self._lock:
            try:
                self._delete_through(last_id)
            except sqlite3.Error as exc:
                if "full" not in str(exc):
                    raise OutboxError(f"cannot write buffer {self.path}: {exc}") from exc
                with contextlib.suppress(FileNotFoundError):
                    self._reserve.unlink()
                self._fold_wal()
                _LOG.warning("disk full: the buffer's reserve and WAL freed to delete forwarded rows",
                             extra={"reason": "disk_full"})
                try:
                    self._delete_through(last_id)
                except sqlite3.Error as again:
                    raise OutboxError(f"cannot write buffer {self.path}: {again}") from again
                self._fold_wal()
                self._write_reserve()

    def _fold_wal(self) -> None:
        """Copy the WAL into the database and truncate it (best effort: a reader may hold it).

        On a full disk the WAL cannot grow and SQLite's own checkpoint waits for 1,000 pages, which
        a small disk never holds: folding it returns its space.
        """
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            _LOG.info("buffer WAL not folded: %s", exc)

    def _delete_through(self, last_id: int) -> None:
        cursor = self._db.execute("DELETE FROM outbox WHERE id <= ? RETURNING LENGTH(value)", (last_id,))
        self._bytes -= sum(int(row[0]) for row in cursor.fetchall())

    def stats(self) -> BufferStats:
        """Current depth, bytes, oldest age, dropped count and next sequence number."""
        with self._lock:
            depth, oldest = self._db.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
            dropped, next_seq = self._meta("dropped"), self._meta("next_seq")
        age = max(0.0, self._clock() - float(oldest)) if oldest is not None else 0.0
        return BufferStats(int(depth), self._bytes, age, dropped, next_seq)

    def close(self) -> None:
        """Save the clock, checkpoint the WAL and close the database."""
        with self._lock:
            try:
                self._set_meta("clock_ms", int(self._clock() * 1000))
            except sqlite3.Error as exc:  # a full disk: the newest row still bounds the next start's clock
                _LOG.warning("buffer clock not saved at close: %s", exc)
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                _LOG.info("buffer checkpoint deferred (another reader holds the WAL): %s", exc)
            self._db.close()


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a database that holds anything but the buffer's own tables (or a subset of them).

    Raises:
        OutboxError: a table, view or trigger of another schema, or one of ours without its columns.
    """
    entries = db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') "
                         "AND name NOT LIKE 'sqlite_%'").fetchall()
    for kind, name in entries:
        columns = {str(row[1]) for row in db.execute("SELECT * FROM pragma_table_info(?)", (name,))}
        if kind != "table" or name not in _TABLES or not _TABLES[name] <= columns:
            found = ", ".join(sorted(f"{k} {n}" for k, n in entries))[:300]
            raise OutboxError(f"buffer {path} is an SQLite database of another schema ({found}), not an "
                              "edge buffer: left as it is; give another --buffer-path")


def _check_writable(path: Path) -> None:
    """Refuse, before SQLite touches anything, a buffer path the agent could not write.

    Raises:
        OutboxError: the path is a folder, a read-only file, or in a folder the agent cannot write
            (the WAL, its index and the reserve are created beside the buffer).
    """
    if path.is_dir():
        raise OutboxError(f"buffer path {path} is a folder: give the buffer's file, e.g. {path / 'buffer.sqlite'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutboxError(f"cannot open buffer {path}: the file is read-only")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutboxError(f"cannot open buffer {path}: its folder {path.parent} is not writable "
                          "(the WAL and the reserve live beside the buffer)")


def _stamp() -> str:
    """A name part for a file set aside: the time, and random hex so two in one second never clash
    (a device without a real-time clock boots at the same time every boot)."""
    return f"{int(time.time())}-{secrets.token_hex(4)}"


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
