"""The reading-file format every component reads: roles, time units and the errors that say what to pass."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from streamedge.contracts.table import SAMPLE_ROWS, TableError, open_table, read_table

_PUMPS = (
    "timestamp,device_id,vibration,temperature\n"
    "2026-03-01T00:00:00Z,pump-1,0.5,40\n"
    "2026-03-01T00:00:00Z,pump-2,0.7,41\n"
    "2026-03-01T01:00:00Z,pump-1,,42\n"
    "2026-03-01 02:00:00+01:00,pump-1,0.6,43\n"
)


def _write(tmp_path: Path, text: str, name: str = "r.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_iso_times_and_a_device_column_are_found_and_stated(tmp_path: Path) -> None:
    layout, rows = read_table(_write(tmp_path, _PUMPS))
    assert (layout.time_column, layout.time_unit, layout.id_column) == ("timestamp", "iso", "device_id")
    assert layout.features == ("vibration", "temperature")
    assert [r.device for r in rows] == ["pump-1", "pump-2", "pump-1", "pump-1"]
    start = 1772323200.0  # 2026-03-01T00:00:00Z
    assert [r.ts for r in rows] == [start, start, start + 3600, start + 3600]  # each offset converted to UTC
    assert math.isnan(rows[2].values[0]) and rows[2].values[1] == 42.0
    text = layout.describe()
    assert "time column 'timestamp' (ISO 8601 with UTC offsets +00:00, +01:00, each converted to UTC, detected)" in text
    assert "device column 'device_id'" in text


def test_times_without_an_offset_read_as_utc_and_the_statement_says_nothing_more(tmp_path: Path) -> None:
    layout, rows = read_table(_write(tmp_path, "ts,v\n2026-03-01T00:00:00,1\n2026-03-01 01:00,2\n"))
    assert [r.ts for r in rows] == [1772323200.0, 1772326800.0] and layout.time_offsets == ()
    assert "(ISO 8601, detected)" in layout.describe()


def test_a_summer_time_change_in_one_column_is_converted_and_stated(tmp_path: Path) -> None:
    # Berlin, 2026-03-29: 01:30 CET (+01:00) is 00:30Z, 03:30 CEST (+02:00) is 01:30Z, one hour later.
    layout, rows = read_table(_write(tmp_path, "time,v\n2026-03-29T01:30:00+01:00,1\n2026-03-29T03:30:00+02:00,2\n"))
    assert rows[1].ts - rows[0].ts == 3600.0 and layout.time_offsets == ("+01:00", "+02:00")
    assert "ISO 8601 with UTC offsets +01:00, +02:00, each converted to UTC" in layout.describe()
    layout, _ = read_table(_write(tmp_path, "time,v\n2026-03-29T01:30:00-05:00,1\n"))
    assert "(ISO 8601 at UTC offset -05:00, detected)" in layout.describe()


def test_times_with_and_without_an_offset_in_one_column_are_an_error_naming_a_line_of_each(tmp_path: Path) -> None:
    text = "ts,v\n2026-03-01T00:00:00Z,1\n2026-03-01T01:00:00,2\n"
    with pytest.raises(TableError, match=r"mixes times with a UTC offset \(line 2: '2026-03-01T00:00:00Z'\) and without "
                                         r"one \(line 3: '2026-03-01T01:00:00'\).*write every time with its offset"):
        read_table(_write(tmp_path, text))
    # Past the sampled rows: the row is named.
    late = "ts,v\n" + "2026-03-01T00:00:00+01:00,1\n" * SAMPLE_ROWS + "2026-03-01T00:59:00,3\n"
    with pytest.raises(TableError, match=rf"r.csv:{SAMPLE_ROWS + 2}: column 'ts': '2026-03-01T00:59:00' has no UTC "
                                         r"offset where the first rows had UTC offsets"):
        read_table(_write(tmp_path, late))


def test_yyyymmdd_integer_dates_are_detected_and_stated_not_read_as_epoch_seconds(tmp_path: Path) -> None:
    layout, rows = read_table(_write(tmp_path, "date,device_id,kwh\n20260301,m-1,5.5\n20260302,m-1,6.0\n"))
    assert (layout.time_column, layout.time_unit, layout.features) == ("date", "yyyymmdd", ("kwh",))
    assert [r.ts for r in rows] == [1772323200.0, 1772409600.0]  # midnight UTC, a day apart
    assert "time column 'date' (dates YYYYMMDD, detected)" in layout.describe()
    # Epoch seconds that happen to look like dates (August 1970) are read as such when the unit says so.
    layout, rows = read_table(_write(tmp_path, "date,kwh\n20260301,5.5\n"), time_unit="s")
    assert rows[0].ts == 20260301.0 and "epoch seconds, given" in layout.describe()


@pytest.mark.parametrize(("cell", "match"), [("20260230", "is not a YYYYMMDD date"), ("1772323200", "is not a YYYYMMDD")])
def test_a_later_row_that_is_no_yyyymmdd_date_is_an_error_that_says_what_to_pass(
        tmp_path: Path, cell: str, match: str) -> None:
    text = "date,kwh\n" + "20260301,1\n" * SAMPLE_ROWS + f"{cell},2\n"
    with pytest.raises(TableError, match=rf"r.csv:{SAMPLE_ROWS + 2}: column 'date': '{cell}' {match}.*pass the time unit"):
        read_table(_write(tmp_path, text))


@pytest.mark.parametrize(("scale", "unit"), [(1, "s"), (1_000, "ms"), (1_000_000, "us"), (1_000_000_000, "ns")])
def test_epoch_units_are_detected_from_magnitude_and_give_seconds(tmp_path: Path, scale: int, unit: str) -> None:
    path = _write(tmp_path, f"ts,value\n{1_700_000_000 * scale},1\n{1_700_000_001 * scale},2\n")
    layout, rows = read_table(path)
    assert layout.time_unit == unit and layout.features == ("value",)
    assert [r.ts for r in rows] == pytest.approx([1_700_000_000.0, 1_700_000_001.0])


def test_a_given_unit_overrides_detection(tmp_path: Path) -> None:
    layout, rows = read_table(_write(tmp_path, "t,value\n5000,1\n"), time_column="t", time_unit="ms")
    assert not layout.time_detected and rows[0].ts == 5.0 and "given" in layout.describe()


def test_the_time_column_is_never_a_feature_and_text_columns_are_named_as_ignored(tmp_path: Path) -> None:
    layout, _ = read_table(_write(tmp_path, "Date,site,seq,stream,y\n2026-01,north,0,s,1\n2026-02,north,1,s,2\n"))
    assert layout.time_column == "Date" and layout.features == ("y",) and layout.ignored == ("site",)


@pytest.mark.parametrize("name", ["timestamp_ms", "ts_s", "time_utc", "epoch_ms", "Unix_Time"])
def test_a_time_column_named_with_a_unit_or_zone_suffix_is_the_time_never_a_feature(
        tmp_path: Path, name: str) -> None:
    text = f"{name},device_id,vibration\n" + "".join(
        f"{1772323200000 + i * 3_600_000},pump-1,{0.5 + 0.01 * i:.3f}\n" for i in range(50))
    layout, rows = read_table(_write(tmp_path, text))
    assert (layout.time_column, layout.time_unit, layout.features) == (name, "ms", ("vibration",))
    assert rows[1].ts == 1772323200.0 + 3600


def test_a_numeric_column_empty_in_every_sampled_row_is_judged_by_its_later_values(tmp_path: Path) -> None:
    late = "ts,vibration,temperature\n" + "".join(
        f"{1772323200 + i * 60},{0.5 + 0.01 * (i % 7):.3f},{'' if i < SAMPLE_ROWS else 40 + i % 3}\n"
        for i in range(SAMPLE_ROWS + 200))
    layout, rows = read_table(_write(tmp_path, late))
    assert layout.features == ("vibration", "temperature") and layout.ignored == ()
    assert math.isnan(rows[0].values[1]) and rows[SAMPLE_ROWS].values[1] == 40 + SAMPLE_ROWS % 3
    texty = late.replace(f",{40 + SAMPLE_ROWS % 3}\n", ",north\n", 1)
    with pytest.raises(TableError, match=r"column 'temperature': 'north' is not a number.*pass the feature columns"):
        read_table(_write(tmp_path, texty, "t.csv"))


@pytest.mark.parametrize(("text", "kwargs", "match"), [
    ("ts,time,v\n1,2,3\n", {}, r"could each be the time column; pass the time column"),
    ("a,b,v\n2026-01-01,2026-01-02,3\n", {}, r"all hold dates; pass the time column"),
    ("ts,v\n1700000000,1\n1700000000000,2\n", {}, r"mixes epoch magnitudes.*pass the time unit"),
    ("ts,v\nyesterday,1\n", {}, r"neither ISO 8601 nor epoch"),
    ("ts,v\n1,2\n", {"features": ["ts", "v"]}, r"'ts' is the time column"),
    ("ts,v\n1,2\n", {"features": ["w"]}, r"no column\(s\) \['w'\]"),
    ("ts,name\n1,a\n", {}, r"no numeric column.*pass the feature columns"),
    ("ts,v\n1,2\n", {"id_column": "pump"}, r"no device column 'pump'"),
    ("ts,v\n", {}, r"no data row"),
    ("ts,ts\n1,2\n", {}, r"duplicate column"),
    ("ts,v\n1,2\n3,4,5\n", {}, r"r.csv:3: 3 fields, header has 2"),
])
def test_ambiguous_or_unreadable_layouts_are_errors_that_say_what_to_pass(
        tmp_path: Path, text: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TableError, match=match):
        read_table(_write(tmp_path, text), **kwargs)  # type: ignore[arg-type]


def test_a_bad_cell_names_its_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "ts,v\n1,2\n2,oops\n")
    with pytest.raises(TableError, match=r"r.csv:3: column 'v': 'oops' is not a number"):
        read_table(path)
    with open_table(path) as reader:
        raw = list(reader.raw())
    assert [line for line, _ in raw[:2]] == [2, 3]


def test_tab_separated_files_read_the_same(tmp_path: Path) -> None:
    layout, rows = read_table(_write(tmp_path, "time\tv\n1\t2\n", name="r.tsv"))
    assert layout.time_column == "time" and rows[0].values == (2.0,)


def test_a_bom_header_and_a_device_column_in_any_case_read_as_named(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftimestamp,Device_ID,a\n1700000000,d0,1\n1700000060,d1,2\n".encode())
    layout, rows = read_table(path)
    assert (layout.time_column, layout.id_column, layout.features) == ("timestamp", "Device_ID", ("a",))
    assert [r.device for r in rows] == ["d0", "d1"]


@pytest.mark.parametrize(("body", "error"), [
    (b"ts,a\n1700000000,1\n1700000060,\xff\n", "bad.csv:3: not UTF-8"),
    (b"ts,a\n1700000000,1\n1700000060,inf\n", "bad.csv:3: column 'a': 'inf' is not a finite number"),
    (b"ts,a\n" + b"".join(b"%d,1\n" % (1700000000 + 60 * i) for i in range(1100)) + b"1700066000000,1\n",
     "bad.csv:1102: column 'ts': '1700066000000' is not in epoch seconds as the first rows were"),
])
def test_a_bad_line_past_the_sampled_rows_is_an_error_naming_its_line(tmp_path: Path, body: bytes, error: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(body)
    with pytest.raises(TableError, match=re.escape(error)):
        read_table(path)
