"""Loaders on the vendored files and on small hand-written ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamedge.paths import data_dir
from streamedge.training.data import load_table, load_ts
from streamedge.training.errors import DataError

DATA = data_dir()


def test_univariate_ts() -> None:
    data = load_ts(DATA / "ucr" / "GunPoint_TRAIN.ts")
    assert data.x.shape == (50, 150, 1)
    assert data.x.dtype == np.float32
    assert data.class_labels == ["1", "2"]
    assert sorted(set(data.labels)) == ["1", "2"]
    assert data.report.missing_filled == 0


def test_multivariate_ts() -> None:
    data = load_ts(DATA / "ucr" / "BasicMotions_TEST.ts")
    assert data.x.shape == (40, 100, 6)
    assert data.class_labels == ["Standing", "Running", "Walking", "Badminton"]
    assert data.label_indices().max() == 3


def test_italy_power_demand_ts() -> None:
    train, test = load_ts(DATA / "ucr" / "ItalyPowerDemand_TRAIN.ts"), load_ts(DATA / "ucr" / "ItalyPowerDemand_TEST.ts")
    assert train.x.shape == (67, 24, 1)
    assert test.x.shape == (1029, 24, 1)


def test_unequal_length_and_missing_values_are_repaired_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "odd.ts"
    path.write_text("@problemName odd\n@classLabel true a b\n@data\n1,2,3,4:a\n1,?,3:b\n0,0,0,0:a\n")
    data = load_ts(path)
    assert data.x.shape == (3, 4, 1)
    assert data.report.missing_filled == 1
    assert data.report.resampled_series == 1
    np.testing.assert_allclose(data.x[1, :, 0], [1.0, 5 / 3, 7 / 3, 3.0], rtol=1e-6)
    assert any("resampled" in note for note in data.report.notes)


def test_ts_without_labels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nolabel.ts"
    path.write_text("@classLabel false\n@data\n1,2,3\n")
    with pytest.raises(DataError, match="classLabel is not true"):
        load_ts(path)


def test_airline_wide_csv() -> None:
    data = load_table(DATA / "forecasting" / "Airline.csv")
    assert data.features == ["Passengers"]
    assert len(data.series) == 1
    assert data.series[0].shape == (144, 1)
    assert data.series[0][0, 0] == 112.0
    assert data.report.irregular_steps == 0


def test_long_format_with_ids_missing_values_and_irregular_steps(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "id,time,a,b\n"
        "s1,2020-01-01,1,10\ns1,2020-01-02,,11\ns1,2020-01-03,3,12\ns1,2020-01-05,4,13\n"
        "s2,2020-01-01,5,20\ns2,2020-01-02,6,21\ns2,2020-01-03,7,22\n"
    )
    data = load_table(path, id_column="id")
    assert data.ids == ["s1", "s2"]
    assert data.features == ["a", "b"]
    np.testing.assert_array_equal(data.series[0][:, 0], [1, 2, 3, 4])
    assert data.series[1].shape == (3, 2)
    assert data.report.missing_filled == 1
    assert data.report.irregular_steps == 1


def test_tsv_and_column_selection(tmp_path: Path) -> None:
    path = tmp_path / "wide.tsv"
    path.write_text("x\ty\n1\t2\n3\t4\n")
    data = load_table(path, columns=["y"])
    assert data.features == ["y"]
    np.testing.assert_array_equal(data.series[0][:, 0], [2, 4])
    with pytest.raises(DataError, match=r"no column\(s\) \['z'\]"):
        load_table(path, columns=["z"])


def test_all_missing_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("t,v\n1,\n2,?\n")
    with pytest.raises(DataError, match=r"\['v'\] are not numeric or have no value"):
        load_table(path, columns=["v"])
    path.write_text("t,v\na,\nb,?\n")
    with pytest.raises(DataError, match=r"no numeric column|not numeric or have no value"):
        load_table(path)


def test_a_numeric_ts_column_is_the_time_never_a_feature(tmp_path: Path) -> None:
    path = tmp_path / "epoch.csv"
    path.write_text("ts,value\n" + "".join(f"{1_700_000_000_000 + 3_600_000 * i},{i % 5}\n" for i in range(6)))
    data = load_table(path)
    assert data.features == ["value"]
    assert data.report.irregular_steps == 0
    assert "time column 'ts' (epoch milliseconds, detected)" in data.report.notes[0]


def test_iso_stamps_and_a_device_id_column_make_one_series_per_device(tmp_path: Path) -> None:
    path = tmp_path / "pumps.csv"
    rows = [f"2026-03-01T{h:02d}:00:00Z,pump-{p},{h + p},{40 + h}" for h in range(4) for p in (1, 2, 3)]
    path.write_text("timestamp,device_id,vibration,temperature\n" + "\n".join(rows) + "\n")
    data = load_table(path)
    assert data.ids == ["pump-1", "pump-2", "pump-3"]
    assert data.features == ["vibration", "temperature"]
    np.testing.assert_array_equal(data.series[1][:, 0], [2, 3, 4, 5])
