"""Seasonal-lag inputs for long seasons: which readings of a window the forecaster looks at.

The exported forecaster always takes the last ``window`` readings, ``(batch, window, n_features)``
float32, normalised; nothing changes for the stream worker or the edge agent. With a long season
(half-hourly readings, weekly season 336) an LSTM over ``window - season`` readings is slow to
train (1,008 unrolled steps for the old default window of three seasons). In seasonal-lag mode
(``ForecasterConfig.recent > 0``) the model cuts two kinds of input out of that same window:

- the **recent** block: the last ``recent`` readings and their seasonal differences
  ``x[t] - x[t - season]``, which the LSTM reads (``recent`` unrolled steps);
- one **lag block** per whole season in the window, ``m = 1 .. window // season``: the readings
  at the forecast hours ``m`` seasons back, ``x[t + 1 + h - m * season]`` for ``h = 0 .. horizon - 1``.
  Lag 1 is the seasonal-naive forecast. The model adds to lag 1 a dense correction of the LSTM
  state that starts at zero, so training starts from seasonal naive. Lag blocks ``m >= 2`` are
  not read by the model: a head that also read ``lag m - lag 1`` (the first version) scored
  worse on every held-out week of ``taylor`` (docs/training.md); :func:`seasonal_lag_inputs`
  still returns them, for the index tests.

Index rules for a window ``w[0 .. window - 1]`` whose last reading ``w[window - 1]`` is time ``t``:
the recent block is ``w[window - recent :]``, its seasonal partner ``w[window - recent - season :
window - season]``, and lag block ``m`` is ``w[window - m * season : window - m * season + horizon]``.
The functions here are the numpy statement of those rules; the Keras model crops the same slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["BASE_DIFFS", "CORRECTION_SCALES", "LONG_SEASON", "SeasonalLagLayout", "default_recent",
           "seasonal_lag_base", "seasonal_lag_inputs"]

# Seasons longer than this use the seasonal-lag input by default. At 48 (half-hourly data with a
# daily season) the classic input is 96 unrolled LSTM steps and trains in seconds per epoch; the
# weekly season of the same data (336) would be 672 steps.
LONG_SEASON: Final = 48
# The seasonal-lag defaults (chosen on taylor's selection weeks, docs/training.md "Long seasons"):
# the base adds the mean of the last BASE_DIFFS seasonal differences to seasonal naive, and after
# training the correction is scaled by the factor of CORRECTION_SCALES that scores best on
# validation. Only 0 by default: there, keeping the trained correction whenever it won on
# validation (0 or 1), or scaling it (0 to 1 in quarters), lost to the base alone on average over
# the selection weeks and three seeds, by a wide margin on some seeds, and validation could not
# tell which seeds. ``--correction-scales 0,1`` lets the correction compete again.
BASE_DIFFS: Final = 4
CORRECTION_SCALES: Final = (0.0,)


def default_recent(season: int, horizon: int) -> int:
    """Recent readings the LSTM reads in seasonal-lag mode; 0 (classic input) for seasons up to ``LONG_SEASON``.

    Two horizons of recent readings (at least 8), never more than a season.
    """
    if season <= LONG_SEASON or horizon > season:
        return 0
    return min(season, max(2 * horizon, 8))


@dataclass(frozen=True)
class SeasonalLagLayout:
    """Where the recent block and the lag blocks sit in a window.

    Attributes:
        window: readings per input window.
        season: season length in readings.
        horizon: forecast steps (at most ``season``).
        recent: readings in the recent block (``recent + season <= window``).
    """

    window: int
    season: int
    horizon: int
    recent: int

    def __post_init__(self) -> None:
        if self.recent < 1 or self.recent + self.season > self.window:
            raise ValueError(f"recent ({self.recent}) + season ({self.season}) must fit in window ({self.window})")
        if self.horizon > self.season:
            raise ValueError(f"seasonal-lag input needs horizon ({self.horizon}) <= season ({self.season})")

    @property
    def lags(self) -> int:
        """Number of lag blocks: whole seasons in the window."""
        return self.window // self.season

    def lag_start(self, m: int) -> int:
        """Window index of the first reading of lag block ``m`` (1-based)."""
        return self.window - m * self.season


def seasonal_lag_inputs(windows: npt.ArrayLike, layout: SeasonalLagLayout) -> dict[str, npt.NDArray[np.float32]]:
    """Cut a batch of windows into the blocks the seasonal-lag forecaster reads.

    Args:
        windows: ``(batch, window, n_features)`` readings, oldest first.
        layout: the positions (``window`` must equal the windows' length).

    Returns:
        ``{"recent": (batch, recent, F), "seasonal_diff": (batch, recent, F),
        "lags": (batch, lags, horizon, F)}`` float32; ``lags[:, 0]`` is the seasonal-naive forecast.
    """
    arr = np.asarray(windows, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != layout.window:
        raise ValueError(f"windows must be (batch, {layout.window}, features), got {arr.shape}")
    w, r, s, h = layout.window, layout.recent, layout.season, layout.horizon
    recent = arr[:, w - r:]
    partner = arr[:, w - r - s: w - s]
    lags = np.stack([arr[:, layout.lag_start(m): layout.lag_start(m) + h] for m in range(1, layout.lags + 1)], axis=1)
    return {"recent": recent, "seasonal_diff": recent - partner, "lags": lags}


def seasonal_lag_base(windows: npt.ArrayLike, layout: SeasonalLagLayout, diffs: int) -> npt.NDArray[np.float32]:
    """The forecast the correction is added to: lag block 1 plus the mean of the last ``diffs`` seasonal differences.

    ``diffs = 0`` is seasonal naive. The sum runs oldest difference first and is then multiplied
    by ``1 / diffs`` in float32, the order the Keras model uses, so the two agree bit for bit.

    Returns:
        ``(batch, horizon, n_features)`` float32.
    """
    if not 0 <= diffs <= layout.recent:
        raise ValueError(f"diffs must be from 0 to recent ({layout.recent}), got {diffs}")
    blocks = seasonal_lag_inputs(windows, layout)
    naive = blocks["lags"][:, 0]
    if not diffs:
        return naive
    changes = blocks["seasonal_diff"][:, layout.recent - diffs:]
    total = changes[:, :1]
    for j in range(1, diffs):
        total = total + changes[:, j:j + 1]
    if diffs > 1:
        total = total * np.float32(1.0 / diffs)
    base: npt.NDArray[np.float32] = naive + total
    return base
