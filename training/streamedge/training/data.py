"""Load training data: UCR/UEA ``.ts`` files and CSV/TSV tables (wide or long format).

Everything comes back as float32 numpy arrays with a :class:`DataReport` that says what was
repaired: missing values are filled by linear interpolation along time (edge gaps take the
nearest observed value) and counted, unequal-length ``.ts`` series are linearly *resampled*
to the longest length (not padded), and irregular time steps in a CSV time column are counted.
Nothing is dropped silently: a series or column that cannot be repaired raises
:class:`~training.errors.DataError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamedge.contracts.table import TableError, TableRow, TimeUnit, read_table
from streamedge.training.errors import DataError

__all__ = [
    "DataReport",
    "LabelledData",
    "SeriesData",
    "fill_missing",
    "load_table",
    "load_ts",
]

FloatArray = npt.NDArray[np.float32]
_MISSING_TOKENS = frozenset({"", "?", "nan", "NaN", "NA", "null", "None"})


@dataclass
class DataReport:
    """What loading had to repair, for the training report.

    Attributes:
        missing_filled: number of missing values filled by interpolation.
        resampled_series: number of series resampled to a common length (``.ts`` only).
        irregular_steps: number of time steps whose spacing differs from the median step.
        notes: human-readable lines, one per repair.
        skipped: readings left out by reason (a Kafka replay: ``device_not_allowed``,
            ``wrong_feature_count``).
    """

    missing_filled: int = 0
    resampled_series: int = 0
    irregular_steps: int = 0
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy."""
        return {
            "missing_filled": self.missing_filled,
            "resampled_series": self.resampled_series,
            "irregular_steps": self.irregular_steps,
            "notes": list(self.notes),
            "skipped": dict(self.skipped),
        }


@dataclass
class LabelledData:
    """A labelled set of series for classification.

    Attributes:
        x: ``(n_series, length, n_channels)`` float32.
        labels: one label per series, as written in the file.
        class_labels: the distinct labels in declaration (or first-seen) order.
        report: what loading repaired.
    """

    x: FloatArray
    labels: list[str]
    class_labels: list[str]
    report: DataReport

    def label_indices(self, class_labels: list[str] | None = None) -> npt.NDArray[np.int64]:
        """Labels as integer indices into ``class_labels`` (default: this set's own)."""
        order = class_labels if class_labels is not None else self.class_labels
        index = {label: i for i, label in enumerate(order)}
        unknown = sorted({label for label in self.labels if label not in index})
        if unknown:
            raise DataError(f"labels {unknown} are not among the training classes {order}")
        return np.array([index[label] for label in self.labels], dtype=np.int64)


@dataclass
class SeriesData:
    """One or more (multivariate) series for forecasting.

    Attributes:
        series: list of ``(length_i, n_features)`` float32 arrays, in time order.
        ids: one identifier per series (the id column's value, or the file stem).
        features: feature (column) names, one per channel.
        report: what loading repaired.
    """

    series: list[FloatArray]
    ids: list[str]
    features: list[str]
    report: DataReport


def fill_missing(values: npt.ArrayLike, where: str, report: DataReport) -> FloatArray:
    """Fill NaNs in a 1-D series by linear interpolation, counting them in ``report``.

    Args:
        values: 1-D array-like, NaN marks a missing value.
        where: what the series is, for messages (e.g. ``"column 'x' of a.csv"``).
        report: updated in place.

    Returns:
        float32 copy without NaN.

    Raises:
        DataError: every value is missing.
    """
    arr = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(arr)
    count = int(missing.sum())
    if count == 0:
        return arr.astype(np.float32)
    if count == arr.size:
        raise DataError(f"{where}: every value is missing")
    positions = np.arange(arr.size)
    arr[missing] = np.interp(positions[missing], positions[~missing], arr[~missing])
    report.missing_filled += count
    report.notes.append(f"{where}: filled {count} missing value(s) by linear interpolation")
    return arr.astype(np.float32)


def _parse_float(token: str) -> float:
    token = token.strip()
    if token in _MISSING_TOKENS:
        return math.nan
    return float(token)


def _resample(values: FloatArray, length: int) -> FloatArray:
    if values.shape[0] == length:
        return values
    old = np.linspace(0.0, 1.0, values.shape[0])
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, values[:, c]) for c in range(values.shape[1])], axis=1).astype(np.float32)


def load_ts(path: Path) -> LabelledData:
    """Read a UCR/UEA ``.ts`` file (univariate or multivariate, equal or unequal length).

    Unequal-length series are resampled (linear interpolation) to the longest length;
    missing values (``?`` or ``NaN``) are interpolated. Both are recorded in the report.

    Args:
        path: the ``.ts`` file; it must have ``@classLabel true`` and a ``@data`` section.

    Returns:
        :class:`LabelledData` with ``x`` of shape ``(n_series, length, n_channels)``.

    Raises:
        DataError: the file is missing, malformed, or holds no labelled series.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    declared: list[str] = []
    in_data = False
    rows: list[FloatArray] = []
    labels: list[str] = []
    report = DataReport()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            lower = line.lower()
            if lower.startswith("@classlabel"):
                parts = line.split()
                if len(parts) < 2 or parts[1].lower() != "true":
                    raise DataError(f"{path}: @classLabel is not true; a classifier needs labels")
                declared = parts[2:]
            elif lower.startswith("@data"):
                in_data = True
            continue
        dims = line.split(":")
        if len(dims) < 2:
            raise DataError(f"{path}:{number}: expected 'values:...:label', got {line[:60]!r}")
        labels.append(dims[-1].strip())
        try:
            channels = [[_parse_float(tok) for tok in dim.split(",")] for dim in dims[:-1]]
        except ValueError as exc:
            raise DataError(f"{path}:{number}: {exc}") from exc
        length = max(len(c) for c in channels)
        filled = []
        for c, values in enumerate(channels):
            series = fill_missing(values, f"{path.name} series {len(rows)} channel {c}", report)
            if len(series) != length:
                series = _resample(series[:, None], length)[:, 0]
            filled.append(series)
        rows.append(np.stack(filled, axis=1))
    if not in_data or not rows:
        raise DataError(f"{path}: no @data section with series")
    n_channels = {r.shape[1] for r in rows}
    if len(n_channels) != 1:
        raise DataError(f"{path}: series have different channel counts {sorted(n_channels)}")
    longest = max(r.shape[0] for r in rows)
    resampled = sum(1 for r in rows if r.shape[0] != longest)
    if resampled:
        report.resampled_series = resampled
        report.notes.append(f"{path.name}: resampled {resampled} series to length {longest} (linear interpolation)")
    x = np.stack([_resample(r, longest) for r in rows]).astype(np.float32)
    class_labels = declared or list(dict.fromkeys(labels))
    return LabelledData(x=x, labels=labels, class_labels=class_labels, report=report)


def _month_steps(times: list[float]) -> list[float] | None:
    """Month indexes when every stamp is the first of a month at midnight UTC (months vary in length)."""
    moments = [datetime.fromtimestamp(t, UTC) for t in times]
    if any((m.day, m.hour, m.minute, m.second, m.microsecond) != (1, 0, 0, 0, 0) for m in moments):
        return None
    return [float(m.year * 12 + m.month - 1) for m in moments]


def _count_irregular(times: list[float], where: str, report: DataReport) -> None:
    if len(times) < 3:
        return
    steps = np.diff(np.array(_month_steps(times) or times, dtype=np.float64))
    if np.any(steps <= 0):
        raise DataError(f"{where}: time column is not strictly increasing")
    median = float(np.median(steps))
    irregular = int(np.sum(np.abs(steps - median) > 1e-9 * max(1.0, median)))
    if irregular:
        report.irregular_steps += irregular
        report.notes.append(f"{where}: {irregular} irregular time step(s) (median step {median:g}); "
                            "values are used in order, gaps are not filled")


def load_table(path: Path, columns: list[str] | None = None, id_column: str | None = None,
               time_column: str | None = None, time_unit: TimeUnit = "auto") -> SeriesData:
    """Read a CSV/TSV reading table (:mod:`streamedge.contracts.table`, the format every component reads).

    Wide format (no device column): one series. Long format: rows grouped by the device column
    (order of first appearance), each group one series, rows in file order. The time column is
    never a feature; its times are used to report irregular steps. The layout's one-line
    description is the report's first note.

    Args:
        path: ``.csv`` (comma) or ``.tsv`` (tab) file with a header row.
        columns: feature columns to use; default every numeric column without a role.
        id_column: the series id column for long format; default ``device_id`` when present.
        time_column: the time column; default by name (``ts``, ``time``, ...) or ISO 8601 content.
        time_unit: ``auto`` or ``iso``, ``s``, ``ms``, ``us``, ``ns``.

    Returns:
        :class:`SeriesData`; each series ``(length, n_features)`` float32.

    Raises:
        DataError: unknown or non-numeric columns, ambiguous layout, empty file, unrepairable series.
    """
    path = Path(path)
    try:
        layout, rows = read_table(path, time_column, id_column, columns, time_unit)
    except TableError as exc:
        raise DataError(str(exc)) from exc
    features = list(layout.features)
    empty = [name for i, name in enumerate(features) if not any(math.isfinite(r.values[i]) for r in rows)]
    if empty:
        raise DataError(f"{path}: column(s) {empty} are not numeric or have no value at all")
    report = DataReport(notes=[layout.describe()])
    groups: dict[str, list[TableRow]] = {}
    for row in rows:
        groups.setdefault(path.stem if row.device is None else row.device, []).append(row)
    series: list[FloatArray] = []
    for sid, members in groups.items():
        channels = [fill_missing([r.values[c] for r in members], f"{path.name} series {sid!r} column {name!r}", report)
                    for c, name in enumerate(features)]
        if layout.time_column is not None:
            _count_irregular([r.ts for r in members if r.ts is not None], f"{path.name} series {sid!r}", report)
        series.append(np.stack(channels, axis=1))
    return SeriesData(series=series, ids=list(groups), features=features, report=report)
