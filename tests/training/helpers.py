"""Tiny synthetic data sets for the training tests (seconds to fit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ts(path: Path, per_class: int, length: int = 32, channels: int = 1, seed: int = 0) -> Path:
    """A two-class ``.ts`` file: noisy sines (class ``up``) and noisy square waves (``down``)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, length)
    lines = ["@problemName tiny", f"@univariate {'true' if channels == 1 else 'false'}",
             f"@dimensions {channels}", "@classLabel true up down", "@data"]
    for label in ("up", "down"):
        for _ in range(per_class):
            base = np.sin(t) if label == "up" else np.sign(np.sin(t))
            dims = [",".join(f"{v:.5f}" for v in base + 0.1 * rng.standard_normal(length)) for _ in range(channels)]
            lines.append(":".join([*dims, label]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_seasonal_csv(path: Path, length: int = 120, season: int = 8, seed: int = 0) -> Path:
    """Wide CSV with a trending seasonal series ``load`` and a second feature ``temp``."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    load = 50 + 0.2 * t + 10 * np.sin(2 * np.pi * t / season) + rng.standard_normal(length)
    temp = 20 + 3 * np.cos(2 * np.pi * t / season) + 0.5 * rng.standard_normal(length)
    rows = ["step,load,temp", *(f"{i},{a:.4f},{b:.4f}" for i, a, b in zip(t, load, temp, strict=True))]
    path.write_text("\n".join(rows) + "\n")
    return path
