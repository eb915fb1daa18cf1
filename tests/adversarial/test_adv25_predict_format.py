"""Issue 25: one reading format for files, used by the trainer, replay, the agent *and predict*.

The quickstart's own file shape (an ISO ``timestamp`` column, ``device_id``, value columns) is read
by the trainer and replay; ``predict`` must read the same file the same way (time column by name,
ISO detected, never a value).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels


def _iso_file(path: Path, n: int = 40) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "device_id", "value"])
        for i in range(n):
            writer.writerow([f"2026-03-01T{i // 60:02d}:{i % 60:02d}:00Z", "pump-1",
                             f"{10.0 + 3.0 * math.sin(2 * math.pi * i / 16):.6f}"])
    return path


def test_predict_reads_an_iso_timestamp_file_like_the_trainer(tiny_models: TinyModels, tmp_path: Path) -> None:
    source = _iso_file(tmp_path / "pumps.csv")
    out = tmp_path / "out.csv"
    code = main(["predict", str(source), "--model", str(tiny_models.forecaster), "--out", str(out)])
    assert code == 0, "predict refused a file in the documented reading format (ISO 'timestamp' column)"
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert sum(1 for r in rows if r.get("error")) == 0, rows[:3]
