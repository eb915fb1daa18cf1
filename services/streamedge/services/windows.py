"""Per-key sliding windows filled by whole reading blocks, with ordering checks, idle expiry and a
key cap (pure, no Kafka).

A key keeps its last ``capacity`` samples as one ``(k, n_features)`` float64 array (k <=
capacity). :meth:`WindowStore.accept` appends a whole block at once and returns the key's
previous samples followed by the block's (:class:`Extension`), from which every full window of
the block is a numpy view (:func:`numpy.lib.stride_tricks.sliding_window_view`), never a Python
loop per sample. A single reading is a block of one.

State choice (see docs/stream.md): windows live in memory and are *rebuilt from the readings
topic itself* when a partition is assigned (:mod:`services.rebuild`), instead of a Faust table
with a changelog topic. A changelog costs one extra produce per reading and, under at-least-once,
holds updates from readings whose offsets were never committed, so a replay after a crash
would see its own readings as duplicates. Rebuilding from the source topic up to the committed
offset gives exactly the state the replayed readings expect.

Memory is bounded: a key holds at most ``capacity`` readings (the longest model window), keys
unseen for ``idle_ttl_s`` (Kafka message time, so a rebuild expires the same keys) are dropped,
and beyond ``max_keys`` the least recently seen key is dropped.

Plausibility: one reading must never be able to block its device. A block whose last sample is
stamped more than ``max_future_s`` after its Kafka message time (a clock in 2198) is
``implausible_ts``, and one whose ``seq`` jumps more than ``max_seq_jump`` past the key's last
(``2**63 - 1``) is ``implausible_seq``; either is refused alone and the key's state stays as it
was, so the device's next reading is judged against its real history. A ``seq`` jump that the
next block continues (its ``seq`` within ``max_seq_jump`` after the refused one, its time later)
was real: the key restarts from that block. A counter reset (a ``seq`` below the key's last with
a later time: a device that rebooted) restarts the key too: its window starts empty, and
:attr:`WindowStore.resets` counts both.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamedge.contracts.anomaly import DetectorState
from streamedge.contracts.reading import Reading, ReadingBlock

__all__ = ["Extension", "KeyState", "OrderRejection", "PendingForecast", "WindowStore"]

OrderRejection = Literal["duplicate", "out_of_order", "implausible_ts", "implausible_seq"]


@dataclass
class PendingForecast:
    """The one-step-ahead forecast made at reading ``seq``, waiting for reading ``seq + 1``.

    Attributes:
        seq: sequence number of the last reading in the forecast's input window.
        model: model name.
        version: model version.
        values: the first forecast step, one float per feature, original units.
    """

    seq: int
    model: str
    version: int
    values: tuple[float, ...]


@dataclass
class KeyState:
    """One key's recent samples: ``values`` is ``(k, n_features)`` float64, oldest first."""

    values: npt.NDArray[np.float64]
    last_seq: int
    last_ts: float
    last_seen: float
    pending: dict[str, PendingForecast] = field(default_factory=dict)
    # Per forecaster name: the anomaly detector's state (streamedge.contracts.anomaly).
    detectors: dict[str, DetectorState] = field(default_factory=dict)
    n_features: int = field(default=0)
    # (last seq, last ts) of the block last refused as implausible_seq, to recognise a real jump.
    jumped: tuple[int, float] | None = field(default=None)

    def window(self, length: int) -> npt.NDArray[np.float32] | None:
        """The last ``length`` readings as ``(length, n_features)`` float32, or None if fewer."""
        if len(self.values) < length:
            return None
        return self.values[len(self.values) - length:].astype(np.float32)


@dataclass(frozen=True)
class Extension:
    """What appending a block did to its key.

    Attributes:
        state: the key's state, already updated.
        rows: ``(start + n, n_features)`` float64: the key's previous samples (at most the
            capacity), then the block's ``n`` samples. The window of ``w`` samples ending at block
            sample ``i`` is ``rows[start + i - w + 1 : start + i + 1]`` when ``start + i + 1 >= w``.
        start: index in ``rows`` of the block's first sample.
    """

    state: KeyState
    rows: npt.NDArray[np.float64]
    start: int


class WindowStore:
    """Windows of every key of one worker, bounded in length, age and count.

    Args:
        capacity: readings kept per key (the longest window of any model).
        idle_ttl_s: seconds (message time) after which an unseen key is dropped.
        max_keys: most keys; the least recently seen is dropped beyond it.
        max_future_s: latest a sample may be stamped after its Kafka message time, seconds.
        max_seq_jump: largest step of ``seq`` from a key's last sample to the next block's first.
    """

    def __init__(self, capacity: int, idle_ttl_s: float, max_keys: int, max_future_s: float = 600.0,
                 max_seq_jump: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError(f"window capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.idle_ttl_s = idle_ttl_s
        self.max_keys = max_keys
        self.max_future_s = max_future_s
        self.max_seq_jump = max_seq_jump
        self._keys: OrderedDict[str, KeyState] = OrderedDict()
        self._partition_keys: dict[int, set[str]] = {}
        self._now = 0.0
        self.expired_idle = 0
        self.evicted = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> KeyState | None:
        """The state of ``key``, or None."""
        return self._keys.get(key)

    def recent(self) -> Iterator[KeyState]:
        """Key states, most recently seen first."""
        return reversed(list(self._keys.values()))

    def resize(self, capacity: int) -> None:
        """Change the readings kept per key (a new model version with a longer window)."""
        if capacity == self.capacity:
            return
        self.capacity = capacity
        for state in self._keys.values():
            state.values = state.values[len(state.values) - min(capacity, len(state.values)):].copy()

    def accept(self, block: ReadingBlock | Reading, seen_at: float, partition: int = 0) -> Extension | OrderRejection:
        """Append a whole block to its key's window, or say why it cannot be appended.

        The block's first sample must be strictly newer than the key's last one in both ``seq``
        and ``ts`` (the block's own samples are ordered by the contract): an equal seq or ts is a
        ``duplicate``, a smaller one ``out_of_order``; a smaller seq with a later ts is a counter
        reset. Implausible times and seq jumps are refused (module doc). A rejected block leaves
        the key's window and last seq and ts untouched.

        Args:
            block: a validated block (a single reading is a block of one).
            seen_at: the Kafka message timestamp, seconds (drives idle expiry).
            partition: the source partition (so a revoked partition's keys can be dropped).
        """
        if isinstance(block, Reading):
            return self._accept_one(block, seen_at, partition)
        self._now = max(self._now, seen_at)
        key = block.key
        state = self._keys.get(key)
        last_seq, last_ts = block.last_seq, float(block.ts[-1])
        if seen_at > 0 and last_ts > seen_at + self.max_future_s:
            return "implausible_ts"
        if state is not None:
            verdict = self._order(state, block.seq, float(block.ts[0]), last_seq, last_ts)
            if verdict == "restart":
                self.resets += 1
                self._keys.pop(key)
                state = None
            elif verdict is not None:
                return verdict
        if state is not None:
            if block.values.shape[1] != state.n_features:
                # A key that changes its feature count starts a fresh window.
                state.values = state.values[:0].reshape(0, block.values.shape[1])
                state.pending.clear()
            rows = np.concatenate([state.values, block.values]) if len(state.values) else block.values
            start = len(state.values)
            state.values = rows[len(rows) - min(self.capacity, len(rows)):].copy()
            state.last_seq, state.last_ts, state.last_seen = last_seq, last_ts, seen_at
            state.n_features = block.values.shape[1]
            self._keys.move_to_end(key)
            return Extension(state, rows, start)
        keep = block.values[len(block.values) - min(self.capacity, len(block.values)):].copy()
        state = KeyState(keep, last_seq, last_ts, seen_at, n_features=block.values.shape[1])
        self._keys[key] = state
        self._partition_keys.setdefault(partition, set()).add(key)
        while len(self._keys) > self.max_keys:
            self._drop(next(iter(self._keys)))
            self.evicted += 1
        return Extension(state, block.values, 0)

    def _accept_one(self, reading: Reading, seen_at: float, partition: int) -> Extension | OrderRejection:
        """:meth:`accept` for a single reading of a known key and feature count: one row copied in
        place of a block's arrays (a numpy call costs more than the work here). A new key or a
        changed feature count takes the block path."""
        key = reading.key
        state = self._keys.get(key)
        width = len(reading.values)
        if state is None or state.n_features != width or (seen_at > 0 and reading.ts > seen_at + self.max_future_s):
            return self.accept(ReadingBlock.from_reading(reading), seen_at, partition)
        if seen_at > self._now:
            self._now = seen_at
        verdict = self._order(state, reading.seq, reading.ts, reading.seq, reading.ts)
        if verdict == "restart":
            return self.accept(ReadingBlock.from_reading(reading), seen_at, partition)
        if verdict is not None:
            return verdict
        kept = state.values
        start = len(kept)
        rows = np.empty((start + 1, width))
        rows[:start] = kept
        rows[start] = reading.values
        # A view of the fresh ``rows``: at most one row more than the capacity stays allocated.
        state.values = rows[1:] if start + 1 > self.capacity else rows
        state.last_seq, state.last_ts, state.last_seen = reading.seq, reading.ts, seen_at
        self._keys.move_to_end(key)
        return Extension(state, rows, start)

    def _order(self, state: KeyState, seq: int, first_ts: float, last_seq: int,
               last_ts: float) -> OrderRejection | Literal["restart"] | None:
        """How a block (first ``seq``/``first_ts``, last ``last_seq``/``last_ts``) follows ``state``:
        None (in order), ``"restart"`` (a counter reset or a confirmed jump) or why it is refused.
        A restart verdict is final: the caller replaces the key's state."""
        if seq == state.last_seq or first_ts == state.last_ts:
            return "duplicate"
        if first_ts < state.last_ts:
            return "out_of_order"
        if seq < state.last_seq:
            return "restart"
        if seq - state.last_seq > self.max_seq_jump:
            jumped = state.jumped
            if jumped is not None and jumped[0] < seq <= jumped[0] + self.max_seq_jump and first_ts > jumped[1]:
                return "restart"
            state.jumped = (last_seq, last_ts)
            return "implausible_seq"
        state.jumped = None
        return None

    def expire(self) -> int:
        """Drop keys idle for longer than ``idle_ttl_s``; returns how many were dropped."""
        horizon = self._now - self.idle_ttl_s
        dropped = 0
        while self._keys:
            key, state = next(iter(self._keys.items()))
            if state.last_seen >= horizon:
                break
            self._drop(key)
            dropped += 1
        self.expired_idle += dropped
        return dropped

    def clear(self) -> None:
        """Forget every key."""
        self._keys.clear()
        self._partition_keys.clear()

    def drop_partition(self, partition: int) -> int:
        """Forget every key that came from ``partition`` (revoked); returns how many."""
        keys = self._partition_keys.pop(partition, set())
        for key in keys:
            self._keys.pop(key, None)
        return len(keys)

    def _drop(self, key: str) -> None:
        self._keys.pop(key, None)
        for keys in self._partition_keys.values():
            keys.discard(key)
