"""The agent's machine cycles: the shared :class:`~streamedge.contracts.cycles.CycleCutter`, one
reading at a time, with each key's open cycle saved and restored alongside its window.

An open cycle is saved as ``{"values": [[...], ...], "seq": first seq, "ts": [first ts, last ts]}``
(values without the marker). Restoring feeds those samples back to a fresh cutter (first ``ts``
to last evenly spaced; a marker of 0): an open cycle holds no end, so the cutter holds the same
cycle as before and the next readings end it where they would have without the restart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.cycles import Cycle, CycleCutter, CycleSpec
from streamedge.contracts.reading import Reading

__all__ = ["EdgeCycles"]


class EdgeCycles:
    """Each key's open cycle (at most ``spec.max_samples`` readings each, ``max_keys`` keys).

    Args:
        spec: where cycles end.
        max_keys: keys kept; beyond it the key cut least recently loses its open cycle.
    """

    def __init__(self, spec: CycleSpec, max_keys: int) -> None:
        self.spec = spec
        self._cutter = CycleCutter(spec, max_keys)

    def __len__(self) -> int:
        return len(self._cutter)

    def cut(self, reading: Reading) -> list[Cycle]:
        """Add one reading (its last value the marker in ``marker`` mode); the cycles it ends, oldest first."""
        values = np.asarray(reading.values, dtype=np.float64)[np.newaxis]
        return self._cutter.cut(reading.key, reading.seq, np.array([reading.ts]), values)

    def saved(self, key: str) -> dict[str, Any] | None:
        """``key``'s open cycle as JSON-ready data, or None when it has none."""
        cycle = self._cutter.flush(key)
        if cycle is None:
            return None
        self._feed(key, cycle.values, cycle.first_seq, cycle.first_ts, cycle.last_ts)
        return {"values": cycle.values.tolist(), "seq": cycle.first_seq, "ts": [cycle.first_ts, cycle.last_ts]}

    def restore(self, key: str, saved: Any, width: int | None) -> None:
        """Put back an open cycle :meth:`saved` gave; raises ValueError (TypeError, KeyError) when
        it is malformed, over ``max_samples``, or its rows are not ``width`` features wide."""
        values = np.asarray(saved["values"], dtype=np.float64)
        first_seq, (first_ts, last_ts) = int(saved["seq"]), (float(t) for t in saved["ts"])
        if values.ndim != 2 or not 1 <= len(values) <= self.spec.max_samples:
            raise ValueError(f"saved cycle of shape {values.shape} is not 1 to {self.spec.max_samples} rows")
        if width is not None and values.shape[1] != width:
            raise ValueError(f"saved cycle rows have {values.shape[1]} features, the model takes {width}")
        if not (np.all(np.isfinite(values)) and np.isfinite(first_ts) and first_ts <= last_ts
                and (first_ts < last_ts or len(values) == 1)):
            raise ValueError("saved cycle has non-finite values or times out of order")
        self._feed(key, values, first_seq, first_ts, last_ts)

    def _feed(self, key: str, values: npt.NDArray[np.float64], first_seq: int, first_ts: float,
              last_ts: float) -> None:
        """Give the cutter an open cycle's samples again (they end no cycle: see the module docstring)."""
        ts = np.linspace(first_ts, last_ts, len(values))
        if self.spec.marker:
            values = np.hstack([values, np.zeros((len(values), 1))])
        ended = self._cutter.cut(key, first_seq, ts, values)
        if ended:  # a saved cycle that the spec ends (another spec than the one it was saved under)
            self._cutter.flush(key)
            raise ValueError("saved cycle is not open under this cycle setting")
