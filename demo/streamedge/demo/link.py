"""A local TCP proxy standing for an edge device's network link, which the demo cuts and restores.

While the link is up, every accepted connection is piped to ``target`` both ways. :meth:`cut`
closes every open connection and, until :meth:`restore`, closes each new one as soon as it is
accepted: to the client the broker is unreachable.

Kafka clients bootstrap through the address they are given and then connect to the addresses the
broker advertises; the proxy therefore carries the device's *bootstrap* path. The demo cuts it before
the device first connects (a device that starts offline), which holds every result on the device
until the link returns.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["LinkProxy"]

_CHUNK = 65536


class LinkProxy:
    """TCP proxy on ``127.0.0.1:<port>`` to ``target``; thread-based, for the demo only.

    Attributes:
        port: the listening port (chosen by the system).
        refused: connections closed because the link was cut.
        piped: connections piped to the target.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.refused = 0
        self.piped = 0
        self._thread = threading.Thread(target=self._accept, name="demo-link", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        """Whether the link carries traffic now."""
        return self._up.is_set()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until :meth:`restore`."""
        self._up.clear()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        """Carry traffic again."""
        self._up.set()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed = True
        self.cut()
        _close(self._server)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused += 1
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            self.piped += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass  # a cut or a peer's close ends the pipe; both ends are closed below
        finally:
            with self._lock:
                self._open -= {source, sink}
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected (any more): closing is all that is left
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
