"""``python -m streamedge.edge [ACTION] [flags]``: the same as ``streamedge edge ...`` (ACTION defaults to ``run``)."""

from __future__ import annotations

import sys

from streamedge.cli.main import main

__all__: list[str] = []

_ACTIONS = ("run", "status", "rollback", "install", "-h", "--help")

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(["edge", *(argv if argv and argv[0] in _ACTIONS else ["run", *argv])]))
