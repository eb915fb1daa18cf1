"""The shared TFLite runner: shape checks, batches, and every installed runtime agreeing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamedge.contracts.manifest import read_manifest
from streamedge.contracts.runner import TFLiteRunner, available_runtimes
from streamedge.errors import RunnerError
from streamedge.training.tiny import TINY_WINDOW, TinyModels


def test_batch_equals_single_windows(tiny_models: TinyModels) -> None:
    manifest = read_manifest(tiny_models.forecaster)
    runner = TFLiteRunner(tiny_models.forecaster / "model.tflite", manifest)
    windows = np.random.default_rng(0).normal(size=(7, TINY_WINDOW, 1)).astype(np.float32)
    batch = runner.run(windows)
    singles = np.stack([runner.run_one(w) for w in windows])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-5)
    assert runner.run(windows[:0]).shape == (0, 2)


def test_wrong_input_shape_is_refused(tiny_models: TinyModels) -> None:
    runner = TFLiteRunner(tiny_models.classifier / "model.tflite")
    with pytest.raises(RunnerError, match="does not fit"):
        runner.run(np.zeros((2, TINY_WINDOW + 1, 1), dtype=np.float32))


def test_manifest_mismatch_is_refused(tiny_models: TinyModels) -> None:
    forecaster = read_manifest(tiny_models.forecaster)
    with pytest.raises(RunnerError, match="outputs but manifest says"):
        TFLiteRunner(tiny_models.classifier / "model.tflite", forecaster.replace(horizon=1, output_shape=[-1, 1]))


def test_corrupt_model_is_a_runner_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(RunnerError, match="cannot load"):
        TFLiteRunner(bad)


_PROBE = """
import json, sys
import numpy as np
from streamedge.contracts.runner import TFLiteRunner
runner = TFLiteRunner(sys.argv[1], runtime=sys.argv[2])
x = np.linspace(-1, 1, 3 * {w}, dtype=np.float32).reshape(3, {w}, 1)
print(json.dumps(runner.run(x).tolist()))
"""


def test_every_installed_runtime_gives_the_same_answer(tiny_models: TinyModels) -> None:
    runtimes = available_runtimes()
    assert {"ai_edge_litert", "tflite_runtime"} <= set(runtimes)
    outputs = {}
    for runtime in runtimes:
        # One runtime per process: two TFLite builds in one process may clash.
        result = subprocess.run([sys.executable, "-c", _PROBE.format(w=TINY_WINDOW),
                                 str(tiny_models.classifier / "model.tflite"), runtime],
                                capture_output=True, text=True, check=True)
        outputs[runtime] = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    reference = outputs.pop("ai_edge_litert")
    for runtime, output in outputs.items():
        np.testing.assert_allclose(output, reference, atol=1e-5, err_msg=runtime)


def test_fixed_batch_model_runs_any_batch(tmp_path: Path) -> None:
    import tensorflow as tf

    inputs = tf.keras.Input((TINY_WINDOW, 1), batch_size=2)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(inputs)))
    path = tmp_path / "fixed.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    runner = TFLiteRunner(path)
    windows = np.random.default_rng(1).normal(size=(5, TINY_WINDOW, 1)).astype(np.float32)
    expected = model(windows[:4].reshape(2, 2, TINY_WINDOW, 1)[0]).numpy()
    out = runner.run(windows)
    assert out.shape == (5, 2) and runner.run(windows[:1]).shape == (1, 2)
    np.testing.assert_allclose(out[:2], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runner.run(windows[4:]), out[4:], rtol=1e-5, atol=1e-5)
