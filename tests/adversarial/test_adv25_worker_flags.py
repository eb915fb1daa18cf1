"""Issue 25: "config through TOML, env and flags ... every setting reachable from each".

Every stream worker setting (the ``[stream]`` table, ``STREAMEDGE_STREAM_*``) must also be a flag
of ``streamedge stream worker``; the issue's break 3 was settings only the environment could set.
"""

from __future__ import annotations

import pytest

from streamedge.cli.main import main
from streamedge.services.settings import StreamSettings

# Same setting, flag spelled differently.
_FLAG_NAMES = {"batch_wait_s": "--batch-wait"}


def test_every_worker_setting_is_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["stream", "worker", "--help"])
    text = capsys.readouterr().out
    missing = [name for name in StreamSettings.model_fields
               if _FLAG_NAMES.get(name, "--" + name.replace("_", "-")) not in text]
    assert missing == [], f"stream worker settings with no flag: {missing}"
