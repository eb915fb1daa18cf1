"""The demo's child processes: each a public ``streamedge`` command, logged to the work folder.

Every process started is recorded in ``<workdir>/pids`` while it runs, and :meth:`Stack.stop`
(called on any exit, Ctrl-C included) stops them all, newest first: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from streamedge.errors import StreamedgeError
from streamedge.processes import stop_process

__all__ = ["Stack", "cli", "scrape"]


def cli(*args: str, log: Path) -> None:
    """Run one ``streamedge`` command to its end, output in ``log``; raise with its last lines on failure.

    Ctrl-C kills the command (``subprocess.run`` kills its child on any exception).
    """
    print(f"$ streamedge {' '.join(args[:2])} ...  (log: {log.name})", flush=True)
    with log.open("wb") as out:
        code = subprocess.run([sys.executable, "-m", "streamedge.cli.main", *args], stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise StreamedgeError(f"`streamedge {args[0]} {args[1]}` failed ({code}): {' | '.join(tail)}")


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` on ``127.0.0.1:port``: sample value by full series name (``{}`` when it is down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamedge_") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class Stack:
    """The long-running children of one demo run."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``streamedge <args>`` as ``name``, logging to ``<workdir>/<name>.log`` (a fresh one)."""
        with (self._workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "streamedge.cli.main", *args], stdout=log,
                                    stderr=subprocess.STDOUT,
                                    # Unbuffered: what a child printed is in its log when it is stopped.
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self._procs[name] = proc
        self._write_pids()
        return proc

    def running(self, name: str) -> bool:
        """Whether ``name`` was started and has not exited."""
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def wait(self, name: str, timeout: float) -> int:
        """Wait for ``name`` to exit; its exit status."""
        return self._procs[name].wait(timeout=timeout)

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of ``name``'s log, joined with `` | ``."""
        text = (self._workdir / f"{name}.log").read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop every child, newest first (idempotent)."""
        for name in reversed(list(self._procs)):
            stop_process(self._procs.pop(name), timeout=20)
            self._write_pids()

    def _write_pids(self) -> None:
        (self._workdir / "pids").write_text("".join(f"{p.pid} {n}\n" for n, p in self._procs.items()))
