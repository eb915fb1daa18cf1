"""Issue 23 item 9 / docs *Sources*: "one row per line, a bad line is one rejection"; bad input lines
are "rejected and counted, never fatal". One garbled time cell among a CSV's first rows stops the
agent at start, as a configuration error, on every run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels


def _run(csv: Path, tmp_path: Path, tiny_models: TinyModels, model_dir: Path) -> int:
    return main(["edge", "run", "--source", "file", "--source-path", str(csv), "--model-dir", str(model_dir),
                 "--public-key", str(tiny_models.public_key), "--buffer-path", str(tmp_path / "b.sqlite"),
                 "--metrics-port", "0", "--model-updates", "false", "--kafka-timeout-s", "0.5",
                 "--drain-timeout-s", "0", "--bootstrap-servers", "127.0.0.1:9", "--log-format", "text"])


@pytest.mark.parametrize("bad_cell", ["17000000x9.0", "1e300", "\x001700000009.0"],
                         ids=["garbled_digit", "out_of_range_epoch", "nul_byte"])
def test_one_bad_time_cell_is_one_rejection(bad_cell: str, tmp_path: Path, tiny_models: TinyModels,
                                            model_dir: Path) -> None:
    rows = [f"{1.7e9 + i},{10.0 + (i % 16) / 8}" for i in range(50)]
    rows[9] = f"{bad_cell},11.0"
    csv = tmp_path / "day.csv"
    csv.write_text("ts,value\n" + "\n".join(rows) + "\n")
    code = _run(csv, tmp_path, tiny_models, model_dir)
    assert code == 3, f"exit {code}: one bad row of 50 stopped the agent before it scored anything"
    db = sqlite3.connect(tmp_path / "b.sqlite")
    try:
        results = db.execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%edge-results'").fetchone()[0]
    finally:
        db.close()
    assert results > 0
