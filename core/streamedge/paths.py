"""Where streamedge finds its packaged data and keeps its state, independent of the working folder.

State (the local broker, the registry, scratch folders of the retrainer, the demo and the
benchmarks) lives under one user folder: ``$STREAMEDGE_HOME`` if set, else
``$XDG_STATE_HOME/streamedge``, else ``~/.local/state/streamedge``. Every command that keeps state
also takes its own folder flag, so nothing ever depends on the folder a command is run from.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from streamedge.errors import StreamedgeError

__all__ = ["data_dir", "user_state_dir"]


def data_dir() -> Path:
    """The vendored UCR/UEA, forecasting and anomaly files (``ucr/``, ``forecasting/``, ``anomaly/``).

    They ship in the ``streamedge-training`` distribution as ``streamedge.data``; without it this
    raises :class:`~streamedge.errors.StreamedgeError` saying what to install.
    """
    spec = importlib.util.find_spec("streamedge.data")
    if spec is None or spec.origin is None:
        raise StreamedgeError("the vendored data sets ship with streamedge-training: pip install streamedge-training")
    return Path(spec.origin).resolve().parent


def user_state_dir() -> Path:
    """The absolute user state folder (see the module docstring); not created here."""
    home = os.environ.get("STREAMEDGE_HOME")
    if home:
        return Path(home).expanduser().resolve()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return (base / "streamedge").resolve()
