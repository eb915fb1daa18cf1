"""``--augment-with GAN_DIR``: top up the small classes of a ``.ts`` training file with windows
sampled from a ``streamedge train gan`` generator (through the TFLite runner).

The augmented set is written as a ``.ts`` file (real series first, then the synthetic ones) so
the classifier trains on it through its ordinary loader; the test file is never touched.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamedge.contracts.generator import GENERATOR_FILE, read_generator_spec
from streamedge.training.data import load_ts
from streamedge.training.errors import DataError

__all__ = ["augment_ts", "write_ts"]


def write_ts(path: Path, name: str, x: npt.NDArray[np.float32], labels: list[str], classes: list[str]) -> Path:
    """Write ``(n, length, channels)`` series and their labels as an equal-length ``.ts`` file."""
    header = [f"@problemName {name}", "@timeStamps false", "@missing false",
              f"@univariate {'true' if x.shape[2] == 1 else 'false'}"]
    if x.shape[2] > 1:
        header.append(f"@dimensions {x.shape[2]}")
    header += ["@equalLength true", f"@seriesLength {x.shape[1]}", f"@classLabel true {' '.join(classes)}", "@data"]
    rows = [":".join(",".join(f"{v:.7g}" for v in series[:, c]) for c in range(x.shape[2])) + f":{label}"
            for series, label in zip(x, labels, strict=True)]
    path.write_text("\n".join(header + rows) + "\n")
    return path


def augment_ts(train_path: Path, generator: Path, out: Path, ratio: float = 1.0, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Write ``out/augmented/<train file name>``: every class topped up with synthetic windows to ``ratio``
    times the largest class's count. Returns its path and what was added per class (also in
    ``out/augmentation.json``).

    Raises:
        DataError: the generator's window, channels or classes do not fit the training file.
    """
    from streamedge.contracts.runner import TFLiteRunner

    if not 0 < ratio <= 100:
        raise DataError(f"--augment-ratio must be in (0, 100], got {ratio}")
    train = load_ts(train_path)
    spec = read_generator_spec(generator)
    if (spec.window, spec.n_features) != train.x.shape[1:]:
        raise DataError(f"the generator makes ({spec.window}, {spec.n_features}) windows; {train_path.name} has "
                        f"{tuple(train.x.shape[1:])}")
    unknown = sorted(set(spec.classes) - set(train.class_labels))
    if unknown:
        raise DataError(f"the generator's classes {unknown} are not in {train_path.name}")
    counts = Counter(train.labels)
    target = round(ratio * max(counts.values()))
    wanted = {c: max(0, target - counts[c]) for c in spec.classes}
    labels = np.array([spec.classes.index(c) for c, n in wanted.items() for _ in range(n)], dtype=np.int64)
    synthetic = np.empty((0, spec.window, spec.n_features), dtype=np.float32)
    if len(labels):
        runner = TFLiteRunner(Path(generator) / GENERATOR_FILE)
        noise = np.random.default_rng(seed).standard_normal((len(labels), spec.window, spec.noise_dim))
        out_flat = runner.run(spec.model_input(noise.astype(np.float32), labels))
        synthetic = spec.denormalise(out_flat).astype(np.float32)
    (out / "augmented").mkdir(parents=True, exist_ok=True)
    path = write_ts(out / "augmented" / train_path.name, train_path.stem, np.concatenate([train.x, synthetic]),
                    list(train.labels) + [spec.classes[i] for i in labels], list(train.class_labels))
    added: dict[str, Any] = {"generator": str(generator), "ratio": ratio, "real": dict(counts), "synthetic": wanted}
    (out / "augmentation.json").write_text(json.dumps(added, indent=2))
    return path, added
