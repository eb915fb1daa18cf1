"""Training windows for the GAN: the sine benchmark, UCR/UEA ``.ts`` files, CSV/TSV tables.

Everything comes back as :class:`GanData`: ``x`` ``(n, window, n_features)`` float32 in the
data's units, an integer condition label per window and the label names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamedge.training.data import load_table, load_ts
from streamedge.training.errors import DataError
from streamedge.training.windowing import make_windows

__all__ = ["GanData", "load_gan_data", "sine_data"]


@dataclass(frozen=True)
class GanData:
    """Windows and their conditions.

    Attributes:
        x: ``(n, window, n_features)`` float32.
        labels: ``(n,)`` int64 indices into ``classes``.
        classes: condition names (one, ``"all"``, when unconditioned).
        features: channel names.
    """

    x: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    classes: list[str]
    features: list[str]


def sine_data(n: int, window: int = 24, n_features: int = 5, seed: int = 0) -> GanData:
    """The sine benchmark of Yoon et al. 2019 (TimeGAN): every feature ``sin(f * t + p)`` with its
    own frequency ``f`` and phase ``p`` drawn from U(0, 0.1), scaled to [0, 1]; one class."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.0, 0.1, (n, 1, n_features))
    phase = rng.uniform(0.0, 0.1, (n, 1, n_features))
    t = np.arange(window, dtype=np.float64)[np.newaxis, :, np.newaxis]
    x = ((np.sin(freq * t + phase) + 1.0) * 0.5).astype(np.float32)
    return GanData(x, np.zeros(n, dtype=np.int64), ["all"], [f"sine{i}" for i in range(n_features)])


def load_gan_data(path: Path, condition: str | None = None, window: int | None = None) -> GanData:
    """Windows from a file.

    A ``.ts`` file gives its series, conditioned on their class (``condition`` must be unset).
    A CSV/TSV table is cut into windows of ``window`` rows (half-overlapping); with ``condition``
    the table is in long format and each window is conditioned on that column's value.

    Raises:
        DataError: unreadable data, a table without ``window``, or too few rows for one window.
    """
    path = Path(path)
    if path.suffix.lower() == ".ts":
        if condition is not None:
            raise DataError(".ts files are conditioned on their class labels; leave --condition unset")
        data = load_ts(path)
        channels = data.x.shape[2]
        return GanData(data.x, data.label_indices(), list(data.class_labels), [f"ch{i}" for i in range(channels)])
    if window is None:
        raise DataError(f"{path}: a table needs --window (rows per generated window)")
    if window < 2:
        raise DataError(f"--window must be at least 2, got {window}")
    table = load_table(path, id_column=condition)
    parts, labels = [], []
    classes = list(table.ids) if condition is not None else ["all"]
    for index, series in enumerate(table.series):
        x, _ = make_windows(series, window, 0, stride=max(1, window // 2))
        parts.append(x)
        labels.append(np.full(len(x), index if condition is not None else 0, dtype=np.int64))
    x_all = np.concatenate(parts)
    if len(x_all) == 0:
        raise DataError(f"{path}: no series has {window} rows for one window")
    return GanData(x_all, np.concatenate(labels), classes, list(table.features))
