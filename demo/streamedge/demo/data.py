"""The demo's readings: the vendored real data, replayed, with one injected spike and one level shift.

- ``power``: every ItalyPowerDemand *test* series as one device (``meter-NNNN``), 24 hourly readings;
  the true labels come back for the streamed confusion matrix.
- ``passengers``: the Airline series for :data:`AIRPORTS` airports (``airport-0..8``, each but the
  first with 2 % noise of its own); ``airport-2`` has a
  spike (x1.8) at month :data:`SPIKE_AT` the forecaster's band should flag. From month
  :data:`SHIFT_AT` on, every airport's level is shifted up by ``shift`` passengers: the drift.
- after the retrain, three more airports (``airport-9..11``) replay the whole series at the shifted
  level: the error of the version that learnt the new level.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamedge.contracts.reading import Reading

__all__ = ["AIRPORTS", "SHIFT_AT", "SPIKE_AT", "TRAIN_MONTHS", "DemoData", "airline", "edge_readings", "load",
           "write_training_csv"]

# 2011-03-13: the twelve years of monthly Airline history end before today, so no reading is stamped
# in the future (the stream worker dead-letters a stamp more than MAX_FUTURE_S past its message time).
EPOCH = 1_300_000_000.0
MONTH_S = 30.44 * 86400.0
# Month of the spike: before the shift (judged by the model trained on that level), after the
# forecaster's first window (36 months).
SPIKE_AT = 40
# Month where the level shift starts. The retrainer learns from the readings since the shift only
# (``history``), and needs window + 3 * horizon + 1 = 73 of them beside a hold-out of at least
# max(20 %, 2 * horizon): 100 months at the new level.
SHIFT_AT = 44
# The level shift in units of the series' standard deviation: a window of shifted readings lies
# far beyond the drift rule's 3 reference standard deviations.
SHIFT_STDS = 4.0
# Version 1 of the forecaster learns from the first 8 years (1949-1956) only: the stream then runs on
# into years no version has seen, as a live one does.
TRAIN_MONTHS = 96
# Airports replaying the series (each but the first with its own 2 % noise): the retrainer learns
# the new level from all of them.
AIRPORTS = 9


@dataclass(frozen=True)
class DemoData:
    """Readings per phase and what the checks need to know about them.

    Attributes:
        steady: classification readings and the airports before the shift.
        drifted: the airports from :data:`SHIFT_AT` on, shifted.
        after: the fresh airports, shifted throughout.
        labels: true class of every ``meter-NNNN`` device.
        values: every sent passengers value by ``(key, seq)`` (the truth forecasts are scored on).
        shift: the level shift, passengers.
    """

    steady: list[Reading]
    drifted: list[Reading]
    after: list[Reading]
    labels: dict[str, str]
    values: dict[tuple[str, int], float]
    shift: float


def _ts_series(path: Path) -> Iterator[tuple[str, list[float]]]:
    """(label, values) of every series in a univariate UCR ``.ts`` file."""
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            values, label = line.rsplit(":", 1)
            yield label, [float(v) for v in values.split(",")]


def airline(data_dir: Path) -> list[float]:
    """The 144 monthly Airline passenger counts (1949-1960)."""
    rows = (data_dir / "forecasting" / "Airline.csv").read_text().splitlines()[1:]
    return [float(row.split(",")[1]) for row in rows if row.strip()]


def write_training_csv(data_dir: Path, path: Path) -> Path:
    """Write the first :data:`TRAIN_MONTHS` rows of Airline.csv (with its header) to ``path``."""
    rows = (data_dir / "forecasting" / "Airline.csv").read_text().splitlines()
    path.write_text("\n".join(rows[:TRAIN_MONTHS + 1]) + "\n")
    return path


def _airport(index: int, values: list[float]) -> list[Reading]:
    return [Reading(f"airport-{index}", "passengers", EPOCH + MONTH_S * j, (v,), j) for j, v in enumerate(values)]


def load(data_dir: Path, meters: int | None = None) -> DemoData:
    """The demo's readings; ``meters`` caps the ItalyPowerDemand devices (None: all 1,029)."""
    steady: list[Reading] = []
    labels: dict[str, str] = {}
    series = list(_ts_series(data_dir / "ucr" / "ItalyPowerDemand_TEST.ts"))[:meters]
    for i, (label, values) in enumerate(series):
        device = f"meter-{i:04d}"
        labels[device] = label
        steady += [Reading(device, "power", EPOCH + 3600.0 * j, (v,), j) for j, v in enumerate(values)]
    base = airline(data_dir)
    mean = sum(base) / len(base)
    shift = round(SHIFT_STDS * (sum((v - mean) ** 2 for v in base) / len(base)) ** 0.5)
    drifted: list[Reading] = []
    for k in range(AIRPORTS):
        noise = random.Random(k)
        values = [v * (1.0 + (noise.gauss(0.0, 0.02) if k else 0.0)) + (shift if j >= SHIFT_AT else 0.0)
                  for j, v in enumerate(base)]
        if k == 2:
            values[SPIKE_AT] *= 1.8
        readings = _airport(k, values)
        steady += readings[:SHIFT_AT]
        drifted += readings[SHIFT_AT:]
    after = [r for k in range(AIRPORTS, AIRPORTS + 3) for r in _airport(k, [v + shift for v in base])]
    values_by_key = {(r.key, r.seq): r.values[0] for r in (*steady, *drifted, *after) if r.stream == "passengers"}
    # Interleave the airports month by month, as live feeds arrive.
    drifted.sort(key=lambda r: (r.seq, r.device_id))
    after.sort(key=lambda r: (r.seq, r.device_id))
    return DemoData(steady, drifted, after, labels, values_by_key, float(shift))


def edge_readings(data_dir: Path, device: str, streams: int) -> list[Reading]:
    """``streams`` copies of the Airline series on one device, interleaved month by month."""
    base = airline(data_dir)
    return [Reading(device, f"passengers-{k}", EPOCH + MONTH_S * j, (v,), j) for j, v in enumerate(base)
            for k in range(streams)]
