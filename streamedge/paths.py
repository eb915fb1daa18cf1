"""Where streamedge finds its packaged data and keeps its state, independent of the working folder.

State (the local broker, the registry, scratch folders of the retrainer, the demo and the
benchmarks) lives under one user folder: ``$STREAMEDGE_HOME`` if set, else
``$XDG_STATE_HOME/streamedge``, else ``~/.local/state/streamedge``. Every command that keeps state
also takes its own folder flag, so nothing ever depends on the folder a command is run from.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "user_state_dir"]


def data_dir() -> Path:
    """The vendored UCR/UEA and forecasting files shipped inside the package (``ucr/``, ``forecasting/``)."""
    return Path(__file__).resolve().parent / "data"


def user_state_dir() -> Path:
    """The absolute user state folder (see the module docstring); not created here."""
    home = os.environ.get("STREAMEDGE_HOME")
    if home:
        return Path(home).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return (base / "streamedge").resolve()
