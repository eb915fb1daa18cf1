"""Issue 25: cycle classification, "so a device sending cycles gets one classification per cycle".

The cycle contract says the stream worker, the edge agent and ``predict`` share it; ``predict``
(the agent's windowing, offline) must give a marker-cut file one class per cycle, with the marker
column no feature, as the worker's ``--cycle marker`` does.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels


def test_predict_classifies_each_marked_cycle_once(tiny_models: TinyModels, tmp_path: Path) -> None:
    source = tmp_path / "press.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", "device_id", "value", "cycle_end"])
        i = 0
        for _cycle in range(3):
            for j in range(12):
                writer.writerow([1.7e9 + i, "press-1", f"{10 + 3 * math.sin(2 * math.pi * j / 16):.5f}", int(j == 11)])
                i += 1
    out = tmp_path / "out.csv"
    code = main(["predict", str(source), "--model", str(tiny_models.classifier), "--out", str(out),
                 "--cycle", "marker"])
    assert code == 0
    with out.open() as handle:
        classes = [row["class"] for row in csv.DictReader(handle) if row["class"]]
    assert len(classes) == 3, classes
