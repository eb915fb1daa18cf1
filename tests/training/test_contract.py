"""Contract suite: every model family, tiny, through build -> fit -> export -> TFLite vs Keras parity."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamedge.contracts.manifest import read_manifest, verify_model_file
from streamedge.contracts.runner import TFLiteRunner
from streamedge.training.classify import train_classifier
from streamedge.training.config import ClassifierConfig, ForecasterConfig
from streamedge.training.export import EDGE_RUNTIMES, VARIANTS
from streamedge.training.forecast import train_forecaster
from tests.training.helpers import write_seasonal_csv, write_ts

_REPO = Path(__file__).resolve().parents[2]
# Full-int8 outputs carry quantisation error: allow this much (in normalised units / probability).
_INT8_TOLERANCE = 0.35


def _classify(tmp: Path, config: ClassifierConfig) -> tuple[dict[str, Any], np.ndarray]:
    train = write_ts(tmp / "tiny_TRAIN.ts", per_class=8, seed=1)
    test = write_ts(tmp / "tiny_TEST.ts", per_class=6, seed=2)
    metrics = train_classifier(train, test, tmp / "out", config, progress=False)
    from streamedge.training.data import load_ts

    return metrics, load_ts(test).x


def _fcn(tmp: Path) -> tuple[dict[str, Any], np.ndarray]:
    return _classify(tmp, ClassifierConfig(model="fcn", filters=(8, 16, 8), epochs=4, patience=2, min_epochs=0,
                                           seed=3))


def _minirocket(tmp: Path) -> tuple[dict[str, Any], np.ndarray]:
    return _classify(tmp, ClassifierConfig(model="minirocket", features=168, seed=3))


def _forecaster(tmp: Path) -> tuple[dict[str, Any], np.ndarray]:
    data = write_seasonal_csv(tmp / "tiny.csv")
    config = ForecasterConfig(window=16, horizon=4, season=8, units=8, epochs=4, patience=2, seed=3)
    metrics = train_forecaster(data, tmp / "out", config, columns=["load", "temp"], progress=False)
    series = np.loadtxt(data, delimiter=",", skiprows=1, usecols=(1, 2), dtype=np.float32)
    from streamedge.training.windowing import make_windows

    x, _ = make_windows(series, 16, 0, stride=7)
    return metrics, x


FAMILIES: dict[str, Callable[[Path], tuple[dict[str, Any], np.ndarray]]] = {
    "classify-fcn": _fcn,
    "classify-minirocket": _minirocket,
    "forecast": _forecaster,
}


def _task(family: str) -> str:
    return family.split("-")[0]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict[str, Any], np.ndarray]:
    tmp = tmp_path_factory.mktemp(request.param)
    metrics, raw_windows = FAMILIES[request.param](tmp)
    return request.param, tmp / "out", metrics, raw_windows


def test_metrics_json_follows_the_contract(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    family, out, metrics, _ = trained
    task = _task(family)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["task"] == task == metrics["task"]
    keys = ("accuracy", "f1_macro") if task == "classify" else ("mae", "rmse", "mape", "mase")
    for key in keys:
        assert isinstance(on_disk["keras"][key], float)
    assert set(on_disk["tflite"]) == set(VARIANTS)
    for variant in VARIANTS:
        entry = on_disk["tflite"][variant]
        assert all(isinstance(entry[k], float) for k in keys)
        assert entry["size_bytes"] == (out / "variants" / f"{variant}.tflite").stat().st_size
        assert entry["latency_ms_p50"] > 0
        assert set(entry["runtimes"]) == set(EDGE_RUNTIMES)
    if task == "forecast":
        assert all(isinstance(on_disk["baselines"]["seasonal_naive"][k], float) for k in keys)
    assert on_disk["selected_variant"] in VARIANTS


def test_manifest_describes_the_selected_model(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    family, out, metrics, _ = trained
    task = _task(family)
    manifest = read_manifest(out)
    assert manifest.task == task
    assert manifest.version == 1 and manifest.signature is None
    assert manifest.quantization == metrics["selected_variant"]
    verify_model_file(manifest, out)
    assert (out / "model.tflite").read_bytes() == (out / "variants" / f"{manifest.quantization}.tflite").read_bytes()
    assert set(manifest.runtimes) == set(EDGE_RUNTIMES)
    assert manifest.hyperparameters["model"] == {"classify-fcn": "fcn", "classify-minirocket": "minirocket",
                                                 "forecast": "lstm"}[family]
    feature = manifest.features[0]
    assert set(manifest.reference_stats["features"][feature]) >= {"mean", "std", "quantiles", "histogram"}
    if task == "forecast":
        assert manifest.validation_error["mae"] > 0 and manifest.validation_error["residual_std"] > 0
        assert manifest.output_shape == [-1, manifest.horizon * manifest.n_features]
    TFLiteRunner(out / "model.tflite", manifest=manifest)  # shapes agree with the manifest


def test_every_variant_matches_keras(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    import keras

    family, out, metrics, raw = trained
    task = _task(family)
    manifest = read_manifest(out)
    mean, std = np.array(manifest.normalisation["mean"]), np.array(manifest.normalisation["std"])
    windows = ((raw - mean) / std).astype(np.float32)
    expected = np.asarray(keras.saving.load_model(out / "model.keras").predict(windows, verbose=0))
    for variant in VARIANTS:
        got = TFLiteRunner(out / "variants" / f"{variant}.tflite", runtime="ai_edge_litert").run(windows)
        tolerance = _INT8_TOLERANCE if variant == "int8" else (0.05 if variant != "float32" else 1e-4)
        np.testing.assert_allclose(got, expected, atol=tolerance, err_msg=variant)
    assert metrics["tflite"]["float32"][("accuracy" if task == "classify" else "mae")] == pytest.approx(
        metrics["keras"]["accuracy" if task == "classify" else "mae"], rel=1e-3)


def test_report_has_plots_and_page(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    family, out, _, _ = trained
    pngs = sorted(p.name for p in (out / "report").glob("*.png"))
    curve = "ridge_penalty.png" if family == "classify-minirocket" else "learning_curves.png"
    assert curve in pngs and len(pngs) >= 2
    page = (out / "report" / "index.html").read_text()
    assert all(name in page for name in pngs)
    assert all(png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for png in (out / "report").glob("*.png"))


@pytest.mark.parametrize("trained", ["forecast"], indirect=True)
def test_lstm_conversion_routes_are_measured(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    _, out, _, raw = trained
    import keras

    from streamedge.training.lstm_conversions import compare_conversions

    manifest = read_manifest(out)
    config = ForecasterConfig(**{k: v for k, v in manifest.hyperparameters.items() if k != "model"})
    windows = ((raw - np.array(manifest.normalisation["mean"])) / np.array(manifest.normalisation["std"]))
    model = keras.saving.load_model(out / "model.keras")
    results = compare_conversions(model, config, manifest.n_features, windows.astype(np.float32), out / "conv")
    assert results["unrolled"]["runtimes"] == {"tflite_runtime": "ok", "ai_edge_litert": "ok"}
    assert results["unrolled"]["max_abs_diff"] < 1e-4
    assert results["while_fixed_batch"]["max_abs_diff"] < 1e-4
    assert not results["while_dynamic"]["converted"]
    assert all(status != "ok" for status in results["select_tf_ops"]["runtimes"].values())


_RUN_ONCE = """
import json, sys
from pathlib import Path
from tests.training.test_contract import FAMILIES
Path(sys.argv[2]).mkdir(parents=True)
metrics, _ = FAMILIES[sys.argv[1]](Path(sys.argv[2]))
keras = {k: v for k, v in metrics["keras"].items() if k != "latency_ms_p50"}
print(json.dumps({"history": metrics["history"], "keras": keras}))
"""


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_repeats_the_run(family: str, tmp_path: Path) -> None:
    """A seed repeats a run, as a user's ``streamedge train ...`` command runs it: in a fresh process.

    Two fits in one process are not compared: TensorFlow keeps process-wide state between them
    (traced functions, op-seed counters), and the refit's losses were seen to differ there.
    """
    runs = []
    for attempt in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _RUN_ONCE, family, str(tmp_path / attempt)], cwd=_REPO,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("trained", ["classify-fcn", "classify-minirocket"], indirect=True)
def test_small_data_is_flagged(trained: tuple[str, Path, dict[str, Any], np.ndarray]) -> None:
    family, _, metrics, _ = trained
    low, high = metrics["keras"]["accuracy_ci95"]
    assert low <= metrics["keras"]["accuracy"] <= high and high - low > 10  # 12 test series
    assert any("fewer than 20" in w for w in metrics["warnings"])
    assert any("95 % interval" in w for w in metrics["warnings"])
    if family == "classify-fcn":
        assert metrics["data"]["n_validation"] == 4 and metrics["best_epoch"] >= 1
    else:
        assert metrics["n_features"] == 168 and metrics["ridge_alpha"] in metrics["history"]["alpha"]
