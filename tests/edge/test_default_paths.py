"""The agent's default model folder and buffer are under the state folder, not the working folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.edge.settings import EdgeSettings
from streamedge.training.tiny import TinyModels


def test_default_paths_are_the_same_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMEDGE_HOME", str(tmp_path / "home"))
    seen = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        settings = EdgeSettings()
        seen.append((settings.model_dir, settings.buffer_path))
    assert seen == [(tmp_path / "home" / "edge" / "models", tmp_path / "home" / "edge" / "buffer.sqlite")] * 2


def test_a_model_installed_from_one_folder_is_served_from_another(
        tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMEDGE_HOME", str(tmp_path / "home"))
    key = ["--public-key", str(tiny_models.public_key)]
    for folder in ("install-here", "run-there"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "install-here")
    assert main(["edge", "install", str(tiny_models.forecaster), *key]) == 0
    monkeypatch.chdir(tmp_path / "run-there")
    capsys.readouterr()
    assert main(["edge", "status", *key]) == 0
    assert json.loads(capsys.readouterr().out)["active"] == 1
