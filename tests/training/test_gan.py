"""The conditional GAN: train tiny, checkpoint and resume, export behind the parity gate, sample
without TensorFlow through the runner, score; hostile generator folders are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamedge.cli.main import main
from streamedge.contracts.generator import GENERATOR_FILE, SPEC_FILE, read_generator_spec
from streamedge.errors import ManifestError, VerificationError
from streamedge.paths import data_dir
from streamedge.simulate.run import Tally, compose
from streamedge.simulate.settings import SimulateSettings
from streamedge.simulate.sources import GeneratorSource
from streamedge.training.errors import DataError
from streamedge.training.gan import GanConfig, TrainedGan, export_generator, sample, train_gan
from streamedge.training.gan_data import GanData, load_gan_data, sine_data
from streamedge.training.gan_eval import evaluate_gan

_TINY = GanConfig(noise_dim=3, hidden=8, steps=12, n_critic=2, batch_size=32, checkpoint_every=6, seed=5)


def _two_class_sines() -> GanData:
    low, high = sine_data(48, window=16, n_features=2, seed=1), sine_data(48, window=16, n_features=2, seed=2)
    x = np.concatenate([low.x, high.x * 3 + 5])
    labels = np.repeat(np.array([0, 1], dtype=np.int64), 48)
    return GanData(x, labels, ["low", "high"], ["a", "b"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedGan, Path]:
    folder = tmp_path_factory.mktemp("gan")
    result = train_gan(_two_class_sines(), _TINY, folder, progress=False)
    export_generator(result, folder)
    return result, folder


def test_sine_benchmark_data_follows_the_paper() -> None:
    data = sine_data(100, seed=0)
    assert data.x.shape == (100, 24, 5) and data.x.dtype == np.float32
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0 and data.classes == ["all"]
    assert np.array_equal(sine_data(100, seed=0).x, data.x)


def test_export_writes_a_verified_generator_and_spec(trained: tuple[TrainedGan, Path]) -> None:
    result, folder = trained
    spec = read_generator_spec(folder)
    assert (spec.window, spec.n_features, spec.noise_dim, spec.classes) == (16, 2, 3, ["low", "high"])
    assert (folder / "checkpoints" / "state.json").is_file()
    assert json.loads((folder / "checkpoints" / "state.json").read_text())["step"] == 12
    assert len(result.history["critic_loss"]) >= 2


def test_sampling_through_the_runner_matches_keras(trained: tuple[TrainedGan, Path]) -> None:
    result, folder = trained
    spec = read_generator_spec(folder)
    from streamedge.contracts.runner import TFLiteRunner

    labels = np.array([0, 1, 1, 0], dtype=np.int64)
    noise = np.random.default_rng(0).standard_normal((4, 16, 3)).astype(np.float32)
    tflite = spec.denormalise(TFLiteRunner(folder / GENERATOR_FILE).run(spec.model_input(noise, labels)))
    keras_out = spec.denormalise(np.asarray(result.generator.predict(spec.model_input(noise, labels), verbose=0)))
    np.testing.assert_allclose(tflite, keras_out, atol=1e-3)
    assert sample(result, labels, 0).shape == (4, 16, 2)


def test_simulator_streams_generated_windows(trained: tuple[TrainedGan, Path]) -> None:
    _, folder = trained
    spec = read_generator_spec(folder)
    settings = SimulateSettings(devices=3, rate=100.0, count=120, block_size=10, generator=folder, seed=2)
    source = GeneratorSource(folder, 3, 2)
    tally = Tally()
    messages = [m for batch in compose(settings, source, 1_700_000_000.0, tally) for m in batch]
    assert tally.readings == 120 and len(messages) == 12
    values = np.array([json.loads(v)["values"] for _, v in messages])
    low, high = np.array(spec.minimum), np.array(spec.maximum)
    assert values.shape == (12, 10, 2) and ((values >= low - 1e-6) & (values <= high + 1e-6)).all()


def test_training_resumes_from_its_checkpoint(trained: tuple[TrainedGan, Path], tmp_path: Path) -> None:
    _, folder = trained
    copy = tmp_path / "resume"
    (copy / "checkpoints").mkdir(parents=True)
    for path in (folder / "checkpoints").iterdir():
        (copy / "checkpoints" / path.name).write_bytes(path.read_bytes())
    longer = GanConfig(**{**_TINY.__dict__, "steps": 14})
    resumed = train_gan(_two_class_sines(), longer, copy, progress=False)
    assert resumed.history["step"][0] >= 12
    assert json.loads((copy / "checkpoints" / "state.json").read_text())["step"] == 14


def test_scores_are_in_range(trained: tuple[TrainedGan, Path]) -> None:
    scores = evaluate_gan(trained[0], seed=0, disc_iterations=1, pred_iterations=1)
    assert 0.0 <= scores["discriminative"] <= 0.5
    assert scores["predictive"] > 0 and scores["predictive_real"] > 0


def test_tampered_or_malformed_generator_folders_are_refused(trained: tuple[TrainedGan, Path],
                                                             tmp_path: Path) -> None:
    _, folder = trained
    for name in (GENERATOR_FILE, SPEC_FILE):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    model = bytearray((tmp_path / GENERATOR_FILE).read_bytes())
    model[-1] ^= 1
    (tmp_path / GENERATOR_FILE).write_bytes(bytes(model))
    with pytest.raises(VerificationError):
        read_generator_spec(tmp_path)
    spec = json.loads((folder / SPEC_FILE).read_text())
    for change in ({"window": 0}, {"maximum": spec["minimum"]}, {"classes": []}, {"extra": 1},
                   {"minimum": [float("nan")] * 2}):
        (tmp_path / SPEC_FILE).write_text(json.dumps({**spec, **change}))
        with pytest.raises(ManifestError):
            read_generator_spec(tmp_path)
    (tmp_path / SPEC_FILE).write_text("[1]")
    with pytest.raises(ManifestError):
        read_generator_spec(tmp_path)


def test_bad_data_and_config_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        train_gan(GanData(np.full((4, 8, 1), np.nan, np.float32), np.zeros(4, np.int64), ["a"], ["x"]), _TINY)
    with pytest.raises(ValueError):
        GanConfig(steps=0)
    table = tmp_path / "t.csv"
    table.write_text("v\n1\n2\n")
    with pytest.raises(DataError):
        load_gan_data(table, window=None)


def test_cli_trains_exports_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gan"
    code = main(["train", "gan", "--data", str(data_dir() / "ucr" / "ItalyPowerDemand_TRAIN.ts"), "--out", str(out),
                 "--steps", "6", "--hidden", "8", "--disc-iterations", "1", "--pred-iterations", "1", "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tflite"]["parity"] == "passed" and metrics["classes"] == ["1", "2"]
    assert {"discriminative", "predictive", "predictive_real"} <= metrics["scores"].keys()
    assert all((out / name).is_file() for name in ("index.html", "pca.png", "tsne.png", "samples.png", GENERATOR_FILE))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)


def test_a_table_is_cut_into_windows_conditioned_on_a_column(tmp_path: Path) -> None:
    table = tmp_path / "plant.csv"
    rows = [f"{m},{i},{(i % 7) + (10 if m == 'press' else 0)}" for m in ("lathe", "press") for i in range(40)]
    table.write_text("machine,step,value\n" + "\n".join(rows) + "\n")
    data = load_gan_data(table, condition="machine", window=8)
    assert data.classes == ["lathe", "press"] and data.x.shape[1] == 8
    assert np.bincount(data.labels).tolist() == [9, 9]  # 40 rows, windows of 8 every 4 rows
    assert data.features == ["step", "value"]
    assert data.x[data.labels == 1, :, 1].min() >= 10 and data.x[data.labels == 0, :, 1].max() < 10


def test_sampling_a_generator_imports_no_tensorflow(trained: tuple[TrainedGan, Path]) -> None:
    code = ("import sys; from streamedge.simulate.sources import GeneratorSource; "
            f"print(GeneratorSource({str(trained[1])!r}, 2, 0).samples(0, 40).shape, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["(2,", "40,", "2)", "False"]
