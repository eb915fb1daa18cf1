"""Supervised background threads: a crash is logged, counted and followed by a restart with backoff.

The agent's forwarder and update follower each run one loop. Their expected failures (the
broker away, a refused update) are handled inside the loop; anything else (SQLite errors, a
full disk, a bug) used to end the thread silently while inference went on. Under
:class:`Supervised` such an exception is logged with its traceback, reported through
``on_restart`` (the agent counts ``streamedge_edge_thread_restarts_total{thread}``) and the
loop is started again after a backoff that doubles from ``initial_backoff_s`` up to
``max_backoff_s`` and resets once a run lasted longer than ``max_backoff_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Supervised"]

_LOG = logging.getLogger(__name__)


class Supervised:
    """Runs ``target`` in a daemon thread until ``stop_event`` is set, restarting it when it raises.

    Args:
        name: thread name and the ``thread`` label of the restart counter.
        target: the loop; it should return only once ``stop_event`` is set.
        stop_event: set to end supervision (the target must watch it too).
        on_restart: called with ``name`` before each restart.
        on_crash: called with the exception, e.g. to mark the broker unreachable.
        initial_backoff_s, max_backoff_s: the restart backoff bounds.
    """

    def __init__(self, name: str, target: Callable[[], None], stop_event: threading.Event,
                 on_restart: Callable[[str], None] | None = None,
                 on_crash: Callable[[BaseException], None] | None = None,
                 initial_backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        self.name = name
        self._target = target
        self._stop = stop_event
        self._on_restart = on_restart or (lambda name: None)
        self._on_crash = on_crash or (lambda exc: None)
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self.restarts = 0
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    def start(self) -> None:
        """Start the supervised thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stop_event`` is set)."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the supervising thread runs."""
        return self._thread.is_alive()

    def _supervise(self) -> None:
        backoff = self._initial
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._target()
            except Exception as exc:  # the supervision policy: any crash is logged, counted and restarted
                _LOG.error("%s thread crashed, restarting in %.1f s: %s", self.name, backoff, exc, exc_info=True,
                           extra={"worker_thread": self.name, "reason": type(exc).__name__})
                self._on_crash(exc)
            else:
                if self._stop.is_set():
                    return
                _LOG.error("%s thread returned while not stopping; restarting", self.name,
                           extra={"worker_thread": self.name})
            if time.monotonic() - started > self._max:
                backoff = self._initial
            if self._stop.wait(backoff):
                return
            self.restarts += 1
            self._on_restart(self.name)
            backoff = min(backoff * 2, self._max)
