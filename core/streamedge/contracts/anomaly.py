"""The anomaly detector every part runs: the stream worker, the edge agent and ``streamedge predict``.

A Telemanom-style detector (Hundman et al., "Detecting Spacecraft Anomalies Using LSTMs and
Nonparametric Dynamic Thresholding", KDD 2018) over one-step forecast residuals, one state per
key and model, fed the residuals in order. Per scored reading (residual ``r``, ``(n_features,)``
original units):

1. **Per-feature scale.** ``z_f = |r_f| / scale_f`` with ``scale_f = residual_std * std_f /
   mean(std)`` (the manifest's validation residual spread, shared out by each feature's
   normalisation std), so features in different units are judged each on its own scale.
2. **No echo.** A forecaster that reads the last season (seasonal naive, the LSTM's seasonal
   base) forecasts a spike again one season later, and the normal reading there then misses the
   forecast by the spike's size, with the opposite sign. When the reading one season back (in
   scored readings) belonged to an event, ``|r_f|`` is replaced by ``min(|r_f|, |r_f + r'_f|)``,
   ``r'`` the residual one season back: the echo cancels, a new departure does not.
3. **Smoothing.** ``s_f`` is an exponentially weighted mean of ``z_f`` (``span`` readings), as in
   the paper: a lasting departure builds up, single noisy readings do not.
4. **Dynamic threshold** per feature, from the last ``history`` smoothed errors of readings
   outside events (an alarmed spike kept there would raise the threshold over every smaller
   spike after it), recomputed every ``refresh`` such readings: among ``eps = mean + z * std``
   for ``z`` in ``z_grid``, the one that most reduces the mean and spread of the errors below
   it, per reading and per run of readings above it
   (``(dmean / mean + dstd / std) / (n_above + n_runs ** 2)``), with at most half the readings
   and ``max_runs`` runs above it; ``mean + z_grid[-1] * std`` when none qualifies. It is never
   below ``floor`` (validation residual spreads). Before ``min_history`` such readings the
   threshold is ``k`` (the former fixed band).
5. **Pruning.** An event alarms only when its smoothed error also stands ``prune`` above the
   largest smoothed error of that history (the paper's minimum percent decrease over the largest
   nominal error; the history holds nominal readings only): the effective threshold is
   ``max(eps, max_nominal / (1 - prune))``.
6. **Alarms per event.** A reading whose smoothed error passes the effective threshold on any
   feature, with no event open, *alarms* and opens an event; the event stays open while any
   feature is above its threshold and closes after ``gap`` readings below. Readings inside an
   open event never alarm again.

The score of a reading is ``max_f s_f / effective_threshold_f``: above 1 on an alarm. Everything
is plain Python and numpy; the same residuals in the same order give the same alarms in every
part (tests check worker, agent and predict against each other). The state holds
``(history + season) * n_features`` floats per key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["AnomalyDetector", "DetectorConfig", "DetectorState", "Verdict"]

# Largest scaled error kept: one absurd reading (near the float limit) alarms but cannot make the
# history infinite and so blind the threshold for ``history`` readings.
_CLIP = 1e9


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's knobs (defaults: docs/training.md, "Anomaly detection").

    Attributes:
        k: threshold in smoothed validation residual spreads until ``min_history`` readings.
        span: smoothing span in readings (EWMA weight ``2 / (span + 1)``).
        history: smoothed errors kept per feature for the dynamic threshold.
        min_history: readings outside events before the dynamic threshold replaces ``k``.
        refresh: readings outside events between threshold recomputations.
        z_grid: candidate thresholds, in standard deviations above the mean smoothed error.
        max_runs: most runs above a candidate threshold for it to qualify.
        prune: minimum relative height of an alarm over the largest nominal smoothed error.
        floor: lowest threshold, in validation residual spreads.
        gap: readings below threshold that close an event.
    """

    k: float = 4.0
    span: int = 5
    history: int = 500
    min_history: int = 100
    refresh: int = 25
    z_grid: tuple[float, ...] = tuple(2.5 + 0.5 * i for i in range(20))
    max_runs: int = 5
    prune: float = 0.13
    floor: float = 2.0
    gap: int = 24

    def __post_init__(self) -> None:
        if not (self.k > 0 and self.floor >= 0 and 0 <= self.prune < 1):
            raise ValueError(f"need k > 0, floor >= 0 and 0 <= prune < 1, got {self}")
        if min(self.span, self.history, self.min_history, self.refresh, self.gap, self.max_runs) < 1:
            raise ValueError(f"span, history, min_history, refresh, gap and max_runs must be >= 1, got {self}")
        if not self.z_grid or self.min_history > self.history:
            raise ValueError(f"need a z_grid and min_history <= history, got {self}")


@dataclass
class DetectorState:
    """One key's detector state for one model version (created by :meth:`AnomalyDetector.new_state`)."""

    version: int
    smoothed: list[float]
    thresholds: list[float]
    effective: list[float]
    errors: npt.NDArray[np.float64]
    echo: list[tuple[list[float], bool] | None]
    scored: int = 0
    held: int = 0
    open_event: bool = False
    quiet: int = 0


@dataclass(frozen=True)
class Verdict:
    """What the detector says about one scored reading."""

    score: float
    alarm: bool
    in_event: bool
    threshold: float


class AnomalyDetector:
    """The detector for one forecaster (see the module docstring).

    Args:
        residual_std: the manifest's validation residual standard deviation (original units, > 0).
        feature_std: per-feature normalisation std (``(n_features,)``, > 0).
        season: the forecaster's season in readings (the echo lag; at least 1).
        version: the model version; a state of another version is started afresh.
        config: the knobs.
    """

    def __init__(self, residual_std: float, feature_std: Sequence[float], season: int, version: int = 0,
                 config: DetectorConfig | None = None) -> None:
        stds = [float(s) for s in feature_std]
        if not (residual_std > 0 and math.isfinite(residual_std)) or not stds or min(stds) <= 0:
            raise ValueError(f"need residual_std > 0 and positive feature stds, got {residual_std}, {stds}")
        mean_std = sum(stds) / len(stds)
        self.scale = [residual_std * s / mean_std for s in stds]
        self.season = max(1, int(season))
        self.version = version
        self.config = config or DetectorConfig()
        self._alpha = 2.0 / (self.config.span + 1)

    @classmethod
    def from_manifest(cls, manifest: Any, k: float = 4.0) -> AnomalyDetector | None:
        """The detector for a forecaster's manifest, or None (no validation error, or a classifier)."""
        residual_std = manifest.residual_std()
        if manifest.task != "forecast" or residual_std is None:
            return None
        season = int(manifest.hyperparameters.get("season") or 1)
        return cls(residual_std, manifest.normalisation["std"], season, manifest.version, DetectorConfig(k=k))

    def new_state(self) -> DetectorState:
        """A fresh state: no history, the warm-up threshold ``k``."""
        n = len(self.scale)
        k = self.config.k
        return DetectorState(version=self.version, smoothed=[0.0] * n, thresholds=[k] * n, effective=[k] * n,
                             errors=np.zeros((self.config.history, n)), echo=[None] * self.season)

    def state_for(self, state: DetectorState | None) -> DetectorState:
        """``state`` when it belongs to this model version and width, else a fresh one."""
        if state is None or state.version != self.version or len(state.smoothed) != len(self.scale):
            return self.new_state()
        return state

    def step(self, state: DetectorState, residual: Sequence[float]) -> Verdict:
        """Score one reading's residual (``actual - forecast`` per feature, finite) and move ``state`` on."""
        cfg, scale = self.config, self.scale
        slot = state.scored % self.season
        back = state.echo[slot]
        raw = [float(r) for r in residual]
        z = [abs(r) for r in raw]
        if back is not None and back[1]:
            z = [min(a, abs(r + p)) for a, r, p in zip(z, raw, back[0], strict=True)]
        smoothed = state.smoothed
        first = state.scored == 0
        for f, value in enumerate(z):
            value = min(value / scale[f], _CLIP)
            smoothed[f] = value if first else self._alpha * value + (1 - self._alpha) * smoothed[f]
        state.scored += 1
        ratio = max(s / e for s, e in zip(smoothed, state.effective, strict=True))
        above = any(s > t for s, t in zip(smoothed, state.thresholds, strict=True))
        alarm = False
        if state.open_event:
            state.quiet = 0 if above else state.quiet + 1
            if state.quiet >= cfg.gap:
                state.open_event = False
        elif ratio > 1.0:
            alarm = state.open_event = True
            state.quiet = 0
        worst = max(range(len(smoothed)), key=lambda f: smoothed[f] / state.effective[f])
        verdict = Verdict(score=ratio, alarm=alarm, in_event=state.open_event,
                          threshold=state.effective[worst] * scale[worst])
        state.echo[slot] = (raw, alarm or state.open_event)
        if not (alarm or state.open_event):
            state.errors[state.held % cfg.history] = smoothed
            state.held += 1
            if state.held >= cfg.min_history and (state.held - cfg.min_history) % cfg.refresh == 0:
                self._refresh(state)
        return verdict

    def run(self, state: DetectorState, residuals: npt.ArrayLike) -> list[Verdict | None]:
        """:meth:`step` over ``(n, n_features)`` residuals in order; a row with a non-finite value
        (no forecast for it) is skipped and gets None."""
        rows = np.asarray(residuals, dtype=np.float64)
        finite = np.isfinite(rows).all(axis=1)
        return [self.step(state, row.tolist()) if ok else None for row, ok in zip(rows, finite, strict=True)]

    def _refresh(self, state: DetectorState) -> None:
        cfg = self.config
        held = state.errors[: min(state.held, cfg.history)]
        for f in range(held.shape[1]):
            threshold, nominal = _threshold(held[:, f], cfg)
            state.thresholds[f] = threshold
            state.effective[f] = max(threshold, nominal / (1 - cfg.prune))


def _threshold(errors: npt.NDArray[np.float64], cfg: DetectorConfig) -> tuple[float, float]:
    """The dynamic threshold of one feature's nominal smoothed errors, and their largest."""
    mean, std = float(errors.mean()), float(errors.std())
    best, chosen = -1.0, mean + cfg.z_grid[-1] * std
    if std > 0 and mean > 0:
        for z in cfg.z_grid:
            eps = mean + z * std
            above = errors > eps
            n_above = int(above.sum())
            if n_above == 0 or n_above > len(errors) // 2:
                continue
            runs = int(np.count_nonzero(np.diff(np.concatenate([[0], above.astype(np.int8)])) == 1))
            if runs > cfg.max_runs:
                continue
            below = errors[~above]
            gain = (mean - below.mean()) / mean + (std - below.std()) / std
            score = gain / (n_above + runs**2)
            if score > best:
                best, chosen = score, eps
    return max(chosen, cfg.floor), float(errors.max())
