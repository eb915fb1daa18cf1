"""A global model over many short series: too-short series are skipped or only tested, and counted.

The training run over many short series is in ``tests/test_bench_forecasters.py`` (one fit serves both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamedge.training.config import ForecasterConfig
from streamedge.training.errors import DataError
from streamedge.training.forecast import train_forecaster
from streamedge.training.windowing import partition_series

_LENGTHS = (15, 17, 20, 22, 30, 35, 40, 45, 50, 50)


def write_long_csv(path: Path, lengths: tuple[int, ...]) -> Path:
    rng = np.random.default_rng(3)
    rows = ["series,step,value"]
    for i, length in enumerate(lengths):
        level, slope = rng.uniform(50, 150), rng.uniform(-1, 3)
        rows += [f"s{i},{t},{level + slope * t + rng.standard_normal():.4f}" for t in range(length)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_partition_sorts_series_by_what_their_length_allows() -> None:
    # window 12 + horizon 6: 18 points for the test window, 24 for a training window too
    trained, test_only, skipped = partition_series(list(_LENGTHS), window=12, horizon=6, season=1)
    assert skipped == [0, 1] and test_only == [2, 3] and trained == [4, 5, 6, 7, 8, 9]
    # the MASE scale needs a history longer than the season
    assert partition_series([30], window=12, horizon=6, season=24) == ([], [], [0])
    assert partition_series([24, 23, 18, 17], 12, 6, 1) == ([0], [1, 2], [3])


def test_all_series_too_short_is_a_clear_error(tmp_path: Path) -> None:
    data = write_long_csv(tmp_path / "tiny.csv", (15, 20, 22))
    config = ForecasterConfig(window=12, horizon=6, season=1, epochs=1)
    with pytest.raises(DataError, match="none of the 3 series has 24 points: window 12 \\+ horizon 6 needs at least 24"):
        train_forecaster(data, tmp_path / "out", config, id_column="series", progress=False)
