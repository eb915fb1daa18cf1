"""The benchmark run cache: a run is reused only under the key it was computed with."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from streamedge import errors, timing
from streamedge.benchmarks import run_cache
from streamedge.benchmarks.run_cache import read_run, run_key, source_digest, write_run


def _data(folder: Path, text: str = "1,2,3\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "series.csv"
    path.write_text(text)
    return path


def test_a_run_is_reused_only_under_the_same_flags_data_and_code(tmp_path: Path) -> None:
    data = _data(tmp_path / "a")
    key = run_key({"config": {"epochs": 100, "features": 84}, "baselines": True}, [data])
    write_run(tmp_path / "run", key, {"mase": 0.9})
    assert read_run(tmp_path / "run", run_key({"baselines": True, "config": {"features": 84, "epochs": 100}},
                                              [data])) == {"mase": 0.9}
    stale = [
        run_key({"config": {"epochs": 50, "features": 84}, "baselines": True}, [data]),  # a flag
        run_key({"config": {"epochs": 100, "features": 84}, "baselines": False}, [data]),  # another
        run_key({"config": {"epochs": 100, "features": 84}, "baselines": True}, [_data(tmp_path / "b")]),  # folder
    ]
    _data(tmp_path / "a", "1,2,4\n")  # same file, new content
    stale.append(run_key({"config": {"epochs": 100, "features": 84}, "baselines": True}, [data]))
    for other in stale:
        assert read_run(tmp_path / "run", other) is None, other


def test_another_code_version_makes_every_cached_run_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(tmp_path / "a")
    key = run_key({"seed": 0}, [data])
    assert "streamedge-training==" in key["code"] and "sha256:" in key["code"]
    write_run(tmp_path / "run", key, {"accuracy": 90.0})
    monkeypatch.setattr(run_cache, "code_version", lambda: "streamedge-training==0.2.0 sha256:0")
    assert read_run(tmp_path / "run", run_key({"seed": 0}, [data])) is None


def test_a_cached_run_from_before_keys_is_stale(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / run_cache.RUN_FILE).write_text('{"accuracy": 90.0}\n')
    assert read_run(tmp_path / "run", run_key({}, [])) is None


def test_the_source_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "forecast.py").write_text("EPOCHS = 100\n")
    before = source_digest([package])
    (package / "forecast.py").write_text("EPOCHS = 50\n")
    assert source_digest([package]) != before


def test_the_code_version_covers_every_module_and_runtime_that_moves_a_result(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    files = run_cache.source_files()
    # outside the three hashed packages: latency timing and errors (core), reached through imports of imports
    assert files["streamedge.timing"].samefile(timing.__file__)
    assert files["streamedge.errors"].samefile(errors.__file__)
    # run as a child process, not imported: the trainer's runtime probe (every runtime latency figure)
    assert "streamedge.training._probe" in files and "streamedge.contracts.runner" in files
    version = run_cache.code_version()
    installed = metadata.packages_distributions()
    for package in ("tensorflow", "numpy", "tflite_runtime", "ai_edge_litert", "keras"):
        dist = installed[package][0]
        assert f"{dist}=={metadata.version(dist)}" in version, package
    edited = tmp_path / "timing.py"
    edited.write_text(files["streamedge.timing"].read_text() + "\n# another timer\n")
    monkeypatch.setattr(run_cache, "source_files", lambda: {**files, "streamedge.timing": edited})
    assert run_cache.code_version.__wrapped__() != version


def test_a_missing_runtime_is_part_of_the_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.packages_distributions()
    monkeypatch.setattr(metadata, "packages_distributions",
                        lambda: {k: v for k, v in installed.items() if k != "tflite_runtime"})
    assert "tflite_runtime==absent" in run_cache.code_version.__wrapped__()
