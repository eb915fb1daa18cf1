"""The reading-file format every component reads: roles, time units and the errors that say what to pass."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from streamedge.contracts.table import TableError, open_table, read_table

_PUMPS = (
    "timestamp,device_id,vibration,temperature\n"
    "2026-03-01T00:00:00Z,pump-1,0.5,40\n"
    "2026-03-01T00:00:00Z,pump-2,0.7,41\n"
    "2026-03-01T01:00:00,pump-1,,42\n"
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
    assert [r.ts for r in rows] == [start, start, start + 3600, start + 3600]  # no offset reads as UTC
    assert math.isnan(rows[2].values[0]) and rows[2].values[1] == 42.0
    text = layout.describe()
    assert "time column 'timestamp' (ISO 8601, detected)" in text and "device column 'device_id'" in text


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
