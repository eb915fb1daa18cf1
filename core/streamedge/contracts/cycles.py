"""Cycle (segment) boundaries: one classification per machine cycle instead of one per sample.

A device that runs cycles (a press stroke, a wash programme, a gesture) sends them back to back.
:class:`CycleCutter` collects each key's samples into its current cycle and hands back each cycle
once, when it ends; :func:`fit_cycle` brings it to the classifier's window length the way the
trainer brings unequal series to one length (linear interpolation per feature), so a cycle of any
length gets exactly one classification. Where a cycle ends, by :class:`CycleSpec` ``mode``:

- ``marker``: at a sample whose marker (the last value of each sample: an end-of-cycle flag such
  as a PLC's cycle-done bit) is non-zero. The marker is not a model feature: cycles hold the other
  values only.
- ``gap``: before a sample more than ``gap_s`` seconds after the previous one. The gap is seen when
  that next sample arrives, so a cycle ends then, or at :meth:`CycleCutter.flush` (the end of a file).
- ``period``: every ``period`` samples, aligned on ``seq``: the sample with ``(seq + 1) % period == 0``
  ends one (seq 0..period-1 is the first cycle), so a restart or a state rebuild cuts the same cycles.

A cycle that reaches ``max_samples`` ends there (bounded memory for a marker that never comes);
a key whose ``seq`` goes backwards or jumps starts a new cycle (the samples between are unknown).
Pure numpy, no Kafka: the stream worker, the edge agent and ``predict`` share it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = ["CYCLE_MODES", "Cycle", "CycleCutter", "CycleMode", "CycleSpec", "fit_cycle"]

CycleMode = Literal["marker", "gap", "period"]
CYCLE_MODES: Final[tuple[str, ...]] = get_args(CycleMode)


@dataclass(frozen=True)
class CycleSpec:
    """How cycles end (see the module docstring).

    Attributes:
        mode: ``marker``, ``gap`` or ``period``.
        gap_s: ``gap`` mode: seconds between samples that end a cycle (> 0).
        period: ``period`` mode: samples per cycle (>= 1).
        max_samples: most samples of one cycle (>= 1).
    """

    mode: CycleMode
    gap_s: float = 0.0
    period: int = 0
    max_samples: int = 4096

    def __post_init__(self) -> None:
        if self.mode not in CYCLE_MODES:
            raise ValueError(f"cycle mode {self.mode!r} is not one of {', '.join(CYCLE_MODES)}")
        if self.mode == "gap" and not self.gap_s > 0:
            raise ValueError("cycles by gap need a gap in seconds > 0 (--cycle-gap-s)")
        if self.mode == "period" and self.period < 1:
            raise ValueError("cycles by period need a period in samples >= 1 (--cycle-period)")
        if self.max_samples < 1:
            raise ValueError(f"max cycle samples must be >= 1, not {self.max_samples}")

    @property
    def marker(self) -> bool:
        """Whether each sample's last value is the marker (not a feature)."""
        return self.mode == "marker"


@dataclass(frozen=True)
class Cycle:
    """One ended cycle: its samples ``(n, n_features)`` float64 (the marker left out) and where it ended.

    Attributes:
        end: index, in the samples given to :meth:`CycleCutter.cut`, of the cycle's last sample
            (-1: it ended before them, at a gap, or at a flush).
        first_seq, last_seq: sequence numbers of its first and last samples.
        first_ts, last_ts: times of its first and last samples (epoch s).
    """

    values: npt.NDArray[np.float64]
    end: int
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float


@dataclass
class _Open:
    values: list[npt.NDArray[np.float64]]
    first_seq: int
    first_ts: float
    last_seq: int
    last_ts: float


class CycleCutter:
    """Each key's open cycle; :meth:`cut` returns the cycles that end in the samples it is given.

    Args:
        spec: where cycles end.
        max_keys: keys kept at most; beyond it the key cut least recently loses its open cycle.
    """

    def __init__(self, spec: CycleSpec, max_keys: int = 100_000) -> None:
        self.spec = spec
        self.max_keys = max_keys
        self._open: OrderedDict[str, _Open] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def cut(self, key: str, seq: int, ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> list[Cycle]:
        """Add ``values`` (``(n, width)`` float64, sample ``i`` at ``seq + i`` and ``ts[i]``) to ``key``'s cycle.

        In ``marker`` mode the last column is the marker. Returns the cycles that ended, oldest first.
        """
        spec = self.spec
        current = self._open.pop(key, None)
        if current is not None and (seq != current.last_seq + 1 or float(ts[0]) <= current.last_ts):
            current = None  # a restart or a jump: the samples between are not known
        features = values[:, :-1] if spec.marker else values
        ended: list[Cycle] = []
        start = 0  # first sample of values not yet in a cycle
        for i in self._boundaries(seq, ts, values, current):
            if i < 0:  # the open cycle ended before sample 0 (a gap)
                if current is not None:
                    ended.append(self._close(current, [], -1, current.last_ts))
                current = None
                continue
            piece = features[start : i + 1]
            if current is None:
                ended.append(Cycle(piece.copy(), i, seq + start, seq + i, float(ts[start]), float(ts[i])))
            else:
                ended.append(self._close(current, [piece], i, float(ts[i])))
                current = None
            start = i + 1
        if start < len(values):
            piece = features[start:].copy()
            if current is None:
                current = _Open([piece], seq + start, float(ts[start]), seq + len(values) - 1, float(ts[-1]))
            else:
                current.values.append(piece)
                current.last_seq, current.last_ts = seq + len(values) - 1, float(ts[-1])
        if current is not None:
            self._open[key] = current
            while len(self._open) > self.max_keys:
                self._open.popitem(last=False)
        return ended

    def flush(self, key: str) -> Cycle | None:
        """End ``key``'s open cycle now (the end of its file), or None when it has none."""
        current = self._open.pop(key, None)
        return self._close(current, [], -1, current.last_ts) if current is not None else None

    @staticmethod
    def _close(current: _Open, more: list[npt.NDArray[np.float64]], end: int, last_ts: float) -> Cycle:
        values = np.concatenate([*current.values, *more])
        last_seq = current.last_seq + (len(more[0]) if more else 0)
        return Cycle(values, end, current.first_seq, last_seq, current.first_ts, last_ts)

    def _boundaries(self, seq: int, ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64],
                    current: _Open | None) -> list[int]:
        """Indexes of the samples that end a cycle (-1 first: the open cycle ended before sample 0)."""
        spec, n = self.spec, len(ts)
        if spec.mode == "marker":
            ends = np.flatnonzero(values[:, -1] != 0).tolist()
        elif spec.mode == "period":
            ends = list(range((-seq - 1) % spec.period, n, spec.period))
        else:
            gaps = np.flatnonzero(np.diff(ts) > spec.gap_s).tolist()  # sample g ends a cycle before g + 1
            opened_gap = current is not None and float(ts[0]) - current.last_ts > spec.gap_s
            ends = ([-1] if opened_gap else []) + gaps
        return self._capped(ends, n, 0 if current is None else sum(len(v) for v in current.values))

    def _capped(self, ends: list[int], n: int, carried: int) -> list[int]:
        """``ends`` plus the ends that ``max_samples`` forces (``carried``: the open cycle's samples)."""
        limit, out, size, previous = self.spec.max_samples, [], carried, -1
        for end, real in [*((e, True) for e in ends), (n - 1, False)]:
            if end == -1:
                out.append(-1)
                size = 0
                continue
            while size + (end - previous) > limit:  # the cap is reached before this end
                previous += limit - size
                out.append(previous)
                size = 0
            if real:
                out.append(end)
                previous, size = end, 0
        return out


def fit_cycle(values: npt.NDArray[np.float64], length: int) -> npt.NDArray[np.float64]:
    """``values`` ``(n, f)`` resampled to ``(length, f)`` by linear interpolation per feature (n >= 1)."""
    n = len(values)
    if n == length:
        return values
    if n == 1:
        return np.repeat(values, length, axis=0)
    old = np.linspace(0.0, 1.0, n)
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, values[:, j]) for j in range(values.shape[1])], axis=1)
