"""Issue 25: "every default path under the state folder; ``streamedge edge run`` from any folder
behaves the same" (break 6: a buffer and model folder that depend on the working folder).

A config file (``--config`` / ``STREAMEDGE_CONFIG``) naming ``buffer_path = "buf.sqlite"`` still
gives a buffer that moves with the working folder: run from two folders, the agent uses two
different buffers (and strands the results buffered in the first). Relative paths in a config
file must not depend on where the command is run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamedge.cli.main import main


def _effective(capsys: pytest.CaptureFixture[str], config: Path, name: str) -> Path:
    assert main(["--config", str(config), "config", "show", "edge", "run"]) == 0
    found = re.search(rf'^{name} = "([^"]*)"', capsys.readouterr().out, re.M)
    assert found is not None
    return Path(found.group(1))


def test_a_config_files_buffer_path_is_the_same_from_any_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "etc" / "streamedge.toml"
    config.parent.mkdir()
    config.write_text('buffer_path = "buf.sqlite"\nmodel_dir = "device-models"\n')
    seen = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        seen.append((_effective(capsys, config, "buffer_path").resolve(),
                     _effective(capsys, config, "model_dir").resolve()))
    assert seen[0] == seen[1], f"the same config file gives {seen[0]} in one folder and {seen[1]} in another"
