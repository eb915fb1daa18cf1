"""One CLI shape: ``NAME VERSION`` positional everywhere, errors with the subcommand's own usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.training.tiny import TinyModels


def test_models_show_and_verify_take_the_version_like_promote(
        tiny_models: TinyModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ["--registry", str(tmp_path / "registry")]
    assert main(["models", "add", str(tiny_models.forecaster), *registry,
                 "--signing-key", str(tiny_models.signing_key)]) == 0
    capsys.readouterr()
    assert main(["models", "show", "tiny-forecaster", "1", *registry]) == 0
    assert '"version": 1' in capsys.readouterr().out
    assert main(["models", "verify", "tiny-forecaster", "1", *registry,
                 "--public-key", str(tiny_models.public_key)]) == 0
    assert "tiny-forecaster v1: ok" in capsys.readouterr().out
    assert main(["models", "show", "tiny-forecaster", "--version", "1", *registry]) == 0
    captured = capsys.readouterr()
    assert '"version": 1' in captured.out
    assert "--version is deprecated; write 'streamedge models show tiny-forecaster 1'" in captured.err


def test_an_unknown_flag_is_reported_by_its_subcommand_with_the_nearest_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["stream", "replay", "--flie", "pumps.csv"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: streamedge stream replay")
    assert "unrecognized argument --flie; did you mean --file?" in err
    assert "required" not in err
