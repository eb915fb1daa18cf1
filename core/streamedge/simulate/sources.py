"""Where simulated values come from: a built-in sine source, a GAN generator, a replayed table.

Every source returns the next ``n`` samples of every device at once, ``(devices, n,
n_features)`` float64, and is deterministic for its seed. Devices advance together: the run
asks each round for the samples ``first .. first + n - 1`` of every device.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamedge.contracts.generator import GENERATOR_FILE, read_generator_spec
from streamedge.contracts.reading import MAX_FEATURES
from streamedge.errors import ConfigError

__all__ = ["GeneratorSource", "ReplaySource", "SampleSource", "SineSource", "load_replay_table"]

FloatArray = npt.NDArray[np.float64]
# The generator is asked for at most this many windows per call (bounded memory for big fleets).
_MAX_BATCH = 4096
_MAX_REPLAY_ROWS = 10_000_000


class SampleSource(Protocol):
    """A deterministic source of sample values for a fleet of devices."""

    n_features: int
    scale: float  # typical amplitude of a feature, in the data's units (anomaly and drift sizes)

    def samples(self, first: int, n: int) -> FloatArray:
        """Samples ``first .. first + n - 1`` of every device, ``(devices, n, n_features)`` float64."""
        ...


class SineSource:
    """A sine per device and feature (its own period of 32-256 samples, phase and level) plus
    Gaussian noise: level 10, amplitude 3, noise 0.3."""

    def __init__(self, devices: int, n_features: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self.n_features, self.scale = n_features, 3.0
        self._cycle = rng.uniform(32.0, 256.0, (devices, 1, n_features))
        self._phase = rng.uniform(0.0, 2 * math.pi, (devices, 1, n_features))
        self._level = 10.0 + rng.normal(0.0, 1.0, (devices, 1, n_features))
        self._noise = np.random.default_rng([seed, 2])
        self._devices = devices

    def samples(self, first: int, n: int) -> FloatArray:
        steps = np.arange(first, first + n, dtype=np.float64)[np.newaxis, :, np.newaxis]
        clean = self._level + self.scale * np.sin(2 * math.pi * steps / self._cycle + self._phase)
        noisy: FloatArray = clean + self._noise.normal(0.0, 0.3, (self._devices, n, self.n_features))
        return noisy


class GeneratorSource:
    """Windows sampled from a ``streamedge train gan`` generator through the TFLite runner.

    Device ``i`` is conditioned on class ``i % n_classes``; its stream is generated windows
    laid end to end (a window boundary is not smoothed: the generator makes windows, not an
    endless series).
    """

    def __init__(self, folder: Path, devices: int, seed: int) -> None:
        from streamedge.contracts.runner import TFLiteRunner

        self.spec = read_generator_spec(folder)
        self._runner = TFLiteRunner(Path(folder) / GENERATOR_FILE)
        expected = (self.spec.window, self.spec.noise_dim + self.spec.n_classes)
        if (self._runner.window, self._runner.n_features) != expected or \
                self._runner.n_outputs != self.spec.window * self.spec.n_features:
            raise ConfigError(f"{folder}: the generator's shapes do not match {folder}/generator.json")
        self.n_features = self.spec.n_features
        self.scale = float(np.mean(np.subtract(self.spec.maximum, self.spec.minimum))) / 4
        self._labels = np.arange(devices, dtype=np.int64) % self.spec.n_classes
        self._rng = np.random.default_rng([seed, 3])
        self._buffer = np.empty((devices, 0, self.n_features))

    def samples(self, first: int, n: int) -> FloatArray:
        del first  # the buffer holds exactly the samples not yet handed out
        short = n - self._buffer.shape[1]
        if short > 0:
            windows = -(-short // self.spec.window)
            self._buffer = np.concatenate([self._buffer, self._generate(windows)], axis=1)
        out, self._buffer = self._buffer[:, :n], self._buffer[:, n:]
        return out

    def _generate(self, windows: int) -> FloatArray:
        labels = np.repeat(self._labels, windows)
        parts = []
        for start in range(0, len(labels), _MAX_BATCH):
            chunk = labels[start:start + _MAX_BATCH]
            noise = self._rng.standard_normal((len(chunk), self.spec.window, self.spec.noise_dim)).astype(np.float32)
            parts.append(self.spec.denormalise(self._runner.run(self.spec.model_input(noise, chunk))))
        generated = np.concatenate(parts)
        return generated.reshape(len(self._labels), windows * self.spec.window, self.n_features)


def load_replay_table(path: Path) -> tuple[list[str], FloatArray]:
    """Numeric columns of a CSV/TSV table with a header row: names and ``(rows, columns)`` float64.

    A column is kept when every row holds a finite number in it.

    Raises:
        ConfigError: unreadable file, no header, no numeric column, too many columns or rows.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
            rows = list(_bounded(csv.reader(handle, delimiter=delimiter)))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read replay file {path}: {exc}") from exc
    if len(rows) < 2:
        raise ConfigError(f"replay file {path} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    names, columns = [], []
    for index, name in enumerate(header):
        values = [_float(row[index]) if index < len(row) else None for row in body]
        if all(v is not None for v in values):
            names.append(name)
            columns.append(values)
    if not columns:
        raise ConfigError(f"replay file {path} has no column of finite numbers in every row")
    if len(columns) > MAX_FEATURES:
        raise ConfigError(f"replay file {path} has {len(columns)} numeric columns, at most {MAX_FEATURES}")
    return names, np.array(columns, dtype=np.float64).T


def _bounded(reader: Iterable[list[str]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in reader:
        rows.append(row)
        if len(rows) > _MAX_REPLAY_ROWS:
            raise ConfigError(f"replay file has more than {_MAX_REPLAY_ROWS} rows")
    return rows


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class ReplaySource:
    """Rows of a table replayed in a loop; device ``i`` starts ``i * rows / devices`` rows in."""

    def __init__(self, path: Path, devices: int) -> None:
        self.features, self._table = load_replay_table(path)
        self.n_features = self._table.shape[1]
        spread = float(np.mean(np.std(self._table, axis=0)))
        self.scale = spread if spread > 0 else 1.0
        rows = len(self._table)
        self._offsets = (np.arange(devices, dtype=np.int64) * rows) // devices

    def samples(self, first: int, n: int) -> FloatArray:
        index = (self._offsets[:, np.newaxis] + np.arange(first, first + n)[np.newaxis, :]) % len(self._table)
        rows: FloatArray = self._table[index]
        return rows
