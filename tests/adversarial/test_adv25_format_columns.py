"""Issue 25: the reading-file format picks features "by rule that never includes the time column",
and anything ambiguous is an error that says what to pass.

Break 1 of the issue was a numeric time column silently normalised as a model feature. A time
column in epoch milliseconds named ``timestamp_ms`` still is; a numeric sensor column that is empty
in the sampled head is dropped as a "text column" while its later values are lost.
"""

from __future__ import annotations

from pathlib import Path

from streamedge.training.data import DataError, load_table


def test_an_epoch_ms_time_column_is_never_a_feature(tmp_path: Path) -> None:
    path = tmp_path / "pumps.csv"
    path.write_text("timestamp_ms,device_id,vibration\n" + "".join(
        f"{1772323200000 + i * 3_600_000},pump-1,{0.5 + 0.01 * (i % 7):.3f}\n" for i in range(50)))
    try:
        data = load_table(path)
    except DataError:
        return  # ambiguous, and said so: fine
    assert "timestamp_ms" not in data.features, data.report.notes[0]


def test_a_numeric_column_empty_in_the_head_is_not_dropped_as_text(tmp_path: Path) -> None:
    path = tmp_path / "late-sensor.csv"
    path.write_text("ts,device_id,vibration,temperature\n" + "".join(
        f"{1772323200 + i * 60},pump-1,{0.5 + 0.01 * (i % 7):.3f},{'' if i < 1000 else 40 + i % 3}\n"
        for i in range(1200)))
    try:
        data = load_table(path)
    except DataError:
        return  # refused with a reason: fine
    assert "temperature" in data.features, data.report.notes[0]
