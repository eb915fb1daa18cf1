"""Serve a model registry's artefacts over HTTP(S): ``streamedge models serve``.

Routes (GET and HEAD)::

    /models/<name>/<version>/manifest.json     the signed manifest
    /models/<name>/<version>/<model_file>      the model file the manifest names
    /healthz                                   200 "ok" (no token needed)

Nothing else is served: names must be registry models, versions digits, files exactly those
two, so no request can walk the file system. With a bearer token configured every artefact
request must carry ``Authorization: Bearer <token>`` (compared in constant time), else 401.
Responses carry a strong ``ETag`` (the file's sha256, quoted), honour ``If-None-Match`` (304),
a single ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` (206, 416 when unsatisfiable) and
``If-Range`` (a stale ETag gets the whole file). A token and TLS are required unless
``insecure`` is set (a loopback demo, a test): the token is a fleet credential and must not
cross the network in clear. What clients trust is the signature and the sha256, not this
server: it only moves bytes. The TLS handshake runs in each connection's own thread under
``HANDSHAKE_TIMEOUT_S``, never in the accept loop: a silent connection stalls nobody else.
"""

from __future__ import annotations

import hmac
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from streamedge.contracts.manifest import MANIFEST_FILE, file_sha256
from streamedge.errors import ConfigError, StreamedgeError
from streamedge.registry import ModelRegistry

__all__ = ["RegistryServer"]

_ROUTE: Final = re.compile(r"^/models/([^/]{1,256})/([0-9]{1,12})/([^/]{1,256})$")
_RANGE: Final = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")
_CHUNK: Final = 64 * 1024
HANDSHAKE_TIMEOUT_S: Final = 10.0


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server that, given ``tls``, does each TLS handshake in the connection's own thread."""

    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            secure = self.tls.wrap_socket(request, server_side=True)  # handshakes here, in this thread
        except (OSError, ValueError):  # a silent, slow or non-TLS client: drop this connection only
            return
        try:
            secure.settimeout(None)
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)


class RegistryServer:
    """A threaded HTTP(S) server for one registry folder.

    Args:
        registry: the registry to serve (read only).
        host, port: where to listen (port 0: any free port, see :attr:`port`).
        token: bearer token required for artefacts, or None (only with ``insecure``).
        certfile, keyfile: PEM certificate chain and key for HTTPS, or None for HTTP (only with ``insecure``).
        insecure: allow serving without a token or over plain HTTP.

    Raises:
        ConfigError: no token or no certificate, and not ``insecure``.
    """

    def __init__(self, registry: ModelRegistry, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None, certfile: Path | None = None, keyfile: Path | None = None, *,
                 insecure: bool = False) -> None:
        if not insecure and (not token or certfile is None):
            raise ConfigError("the registry server needs a token and TLS (a certificate and key); "
                              "--insecure serves without them (loopback demos and tests only)")
        self.registry = registry
        self.token = token
        self._etags: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _handler_class(self))
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if certfile is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
            self._httpd.tls = context
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give ``promote --serve-url`` (host as bound)."""
        host = self._httpd.server_address[0]
        return f"{self.scheme}://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (blocking)."""
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="registry-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def authorised(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the token (always, with no token set)."""
        if not self.token:
            return True
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def locate(self, path: str) -> Path | None:
        """The file a request path names, or None when it names nothing servable."""
        match = _ROUTE.match(path)
        if match is None:
            return None
        name, version, file = unquote(match.group(1)), int(match.group(2)), unquote(match.group(3))
        if "/" in name or name.startswith(".") or name not in self.registry.names():
            return None
        try:
            manifest = self.registry.manifest(name, version)
        except (StreamedgeError, OSError):
            return None
        if file not in (MANIFEST_FILE, manifest.model_file):
            return None
        target = self.registry.path(name, version) / file
        return target if target.is_file() else None

    def etag(self, path: Path) -> str:
        """The quoted sha256 of ``path``, cached per (path, size, mtime)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._etags.get(key)
        if cached is None:
            cached = f'"{file_sha256(path)}"'
            with self._lock:
                self._etags[key] = cached
        return cached


def _handler_class(server: RegistryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "streamedge-registry"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a device fleet polling would flood stderr."""

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _reply(self, code: int, text: str = "", headers: dict[str, str] | None = None) -> None:
            payload = text.encode()
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)

        def _serve(self, body: bool) -> None:
            if self.path == "/healthz":
                self._reply(200, "ok")
                return
            if not server.authorised(self.headers.get("Authorization")):
                self._reply(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
                return
            target = server.locate(self.path)
            if target is None:
                self._reply(404, "not found")
                return
            etag = server.etag(target)
            size = target.stat().st_size
            if self.headers.get("If-None-Match") == etag:
                self._reply(304, "", {"ETag": etag})
                return
            start, end = 0, size - 1
            code = 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted is not None and (if_range is None or if_range == etag):
                span = _parse_range(wanted, size)
                if span is None:
                    self._reply(416, "range not satisfiable", {"Content-Range": f"bytes */{size}", "ETag": etag})
                    return
                start, end, code = span[0], span[1], 206
            self.send_response(code)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            with target.open("rb") as handle:
                handle.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = handle.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)

    return Handler


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a single ``bytes=`` range within ``size``, or None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        return (max(0, size - suffix), size - 1) if suffix else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end else None
