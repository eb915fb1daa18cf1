"""A training run's stderr holds what an operator must see, not TensorFlow's internal log lines."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

# Lines TensorFlow prints on every run, none of which an operator can act on: its C++ start-up and
# tf.data lines (kept out by TF_CPP_MIN_LOG_LEVEL set before TensorFlow is imported) and the
# converter's Python warning on every int8 export (streamedge.cli.quiet).
_NOISE = ("NodeDef mentions attribute", "oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard",
          "Statistics for quantized inputs were expected", "warnings.warn(", "Reading SavedModel", "Assets written to")


def _ts_file(path: Path, count: int, rng: random.Random) -> None:
    lines = ["@problemName noise", "@timeStamps false", "@missing false", "@univariate true", "@equalLength true",
             "@seriesLength 20", "@classLabel true ok worn", "@data"]
    for i in range(count):
        label, noise = (("ok", 0.02), ("worn", 0.6))[i % 2]
        lines.append(",".join(f"{math.sin(math.pi * t / 19) + rng.gauss(0, noise):.4f}" for t in range(20)) + f":{label}")
    path.write_text("\n".join(lines) + "\n")


def test_training_from_the_cli_prints_no_tensorflow_internals_on_stderr(tmp_path: Path) -> None:
    rng = random.Random(0)
    _ts_file(tmp_path / "train.ts", 20, rng)
    _ts_file(tmp_path / "test.ts", 10, rng)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    run = subprocess.run([sys.executable, "-m", "streamedge.cli.main", "train", "classifier", "--train",
                          str(tmp_path / "train.ts"), "--test", str(tmp_path / "test.ts"), "--features", "1008",
                          "--out", str(tmp_path / "run"), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "selected variant" in run.stdout  # the run's own results are there
    noise = [line for line in run.stderr.splitlines() if any(n in line for n in _NOISE)]
    assert not noise, noise[:10]
