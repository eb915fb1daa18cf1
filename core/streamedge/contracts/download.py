"""Size-capped, deadline-bound, resumable, hashed HTTP(S) download of one model file.

The bytes stream into a partial file named after the expected sha256, hashed as they arrive.
An interrupted transfer resumes with a ``Range`` request guarded by ``If-Range`` (the
registry's ETag is the file's sha256), within one call (a few attempts) and across calls (the
partial file stays; it never outgrows ``max_bytes``, and starting a download removes the
partial files of other hashes, so at most one stays per folder). The download stops as soon as
it exceeds ``max_bytes``, its overall ``deadline_s``, or (past the first ``timeout_s``) runs
slower than ``min_rate_bps``: a server sending one byte a second cannot hold the caller. The
result is returned only when its sha256 equals the expected one; anything else raises
:class:`~streamedge.errors.VerificationError`.

The bearer token is bound to the registry origin it was issued for (``token_origin``): it is
sent to that origin only, never to another host a model ``uri`` names (the ``uri`` is not
signed), and :func:`fetch_options` accepts an ``http://`` origin for it only on loopback.
A redirect is followed only to ``https://`` (or ``http://`` on loopback): any other scheme is
refused, so every connection is one the deadline can shut down.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import math
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from streamedge.errors import ConfigError, StreamedgeError, VerificationError

__all__ = ["FetchOptions", "FetchRetries", "download", "fetch_options", "origin"]

_CHUNK: Final = 64 * 1024
_GUARD_S: Final = 0.25  # how often the guard thread checks the deadline and the minimum rate
_ATTEMPTS: Final = 4
_BACKOFF_S: Final = 0.2  # between attempts, doubling: a dropped link resumes at once, a busy server gets air


@dataclass(frozen=True)
class FetchOptions:
    """How a subscriber fetches model files over the network.

    Attributes:
        max_bytes: largest model file accepted (bytes); a larger one is refused mid-stream.
        token: bearer token for the registry's HTTP server, or None.
        token_origin: the only origin (``https://host:port``) the token is ever sent to.
        cafile: CA bundle (PEM) trusted for ``https://``, or None for the system store.
        timeout_s: bound on each connect and read.
        deadline_s: bound on a whole download, every attempt included.
        min_rate_bps: slowest transfer accepted (bytes per second) once ``timeout_s`` has passed.
    """

    max_bytes: int = 64 * 1024 * 1024
    token: str | None = None
    token_origin: str | None = None
    cafile: Path | None = None
    timeout_s: float = 10.0
    deadline_s: float = 600.0
    min_rate_bps: float = 16 * 1024


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports made explicit); raises ValueError when malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is no http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_options(max_bytes: int, token_file: Path | None, cafile: Path | None, timeout_s: float,
                  registry_url: str | None = None) -> FetchOptions:
    """FetchOptions with the bearer token read (and stripped) from ``token_file``, bound to ``registry_url``.

    Raises:
        ConfigError: the token file cannot be read; a token without the registry URL it was
            issued for, or for a plain ``http://`` registry that is not on loopback.
    """
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read registry token file {token_file}: {exc}") from exc
    bound = None
    if token:
        if not registry_url:
            raise ConfigError("a registry token needs the registry URL it was issued for (registry_url): "
                              "it is sent to that origin only")
        try:
            bound = origin(registry_url)
        except ValueError as exc:
            raise ConfigError(f"registry URL {registry_url!r}: {exc}") from exc
        if bound.startswith("http://") and not _loopback(urlsplit(bound).hostname or ""):
            raise ConfigError(f"registry URL {registry_url!r}: a token travels over https only (plain http on "
                              f"loopback)")
    return FetchOptions(max_bytes=max_bytes, token=token or None, token_origin=bound, cafile=cafile,
                        timeout_s=timeout_s)


def download(url: str, expected_sha256: str, partial_dir: Path, options: FetchOptions) -> bytes:
    """Fetch ``url`` and return its bytes once their sha256 equals ``expected_sha256``.

    Args:
        url: an ``http://`` or ``https://`` URL of the model file.
        expected_sha256: hex digest from the verified manifest.
        partial_dir: where the partial file lives between attempts and calls.
        options: size cap, credentials, TLS trust, timeouts.

    Raises:
        VerificationError: too large, wrong hash, refused by the server, or unreachable or
            answering garbage after retries; nothing the server sends raises anything else.
    """
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / f".partial-{expected_sha256}"
    for stale in partial_dir.glob(".partial-*"):
        if stale != partial:
            stale.unlink(missing_ok=True)
    context = ssl.create_default_context(cafile=str(options.cafile) if options.cafile else None)
    deadline = time.monotonic() + options.deadline_s
    last: Exception | None = None
    streamed = ""
    for attempt in range(_ATTEMPTS):
        try:
            streamed = _transfer(url, expected_sha256, partial, options, context, deadline)
            break
        except StreamedgeError:
            raise
        # A server's bytes are untrusted: a garbled status line or header (HTTPException, a
        # ValueError from a bad Content-Length) is a failed attempt like a dropped connection.
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 416 and partial.exists():
                # Nothing left to send: a previous call received the whole file before it stopped.
                streamed = hashlib.sha256(partial.read_bytes()).hexdigest()
                break
            if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
                partial.unlink(missing_ok=True)
                raise VerificationError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            last = exc
            time.sleep(_BACKOFF_S * 2**attempt)
    else:
        raise VerificationError(f"{url}: unreachable after {_ATTEMPTS} attempts: {last}") from last
    content = partial.read_bytes() if streamed == expected_sha256 else b""
    partial.unlink(missing_ok=True)
    actual = hashlib.sha256(content).hexdigest()
    if streamed != expected_sha256 or actual != expected_sha256:
        raise VerificationError(f"{url}: sha256 is {streamed[:16]}..., manifest says {expected_sha256[:16]}...")
    return content


def _transfer(url: str, expected: str, partial: Path, options: FetchOptions, context: ssl.SSLContext,
              deadline: float) -> str:
    """One attempt: resume ``partial`` from its size; returns the sha256 of the whole file.

    Raises:
        OSError: a short read (retried, resuming); VerificationError: over the size cap, past the
            deadline or slower than the minimum rate (the partial file stays for the next call).
    """
    have = partial.stat().st_size if partial.exists() else 0
    if have > options.max_bytes:
        partial.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = f'"{expected}"'
    request = urllib.request.Request(url, headers=headers)
    if options.token and options.token_origin is not None and origin(url) == options.token_origin:
        # Never copied onto a redirected request: the token goes to its registry origin only.
        request.add_unredirected_header("Authorization", f"Bearer {options.token}")
    watch = _Watch()
    done = threading.Event()
    guard = threading.Thread(target=watch.guard, args=(url, options, deadline, done), daemon=True)
    guard.start()
    try:
        digest = _receive(request, url, partial, options, context, deadline, have, watch)
    except (OSError, http.client.HTTPException) as exc:
        if watch.fired is not None:
            raise VerificationError(watch.fired) from exc
        raise
    finally:
        done.set()
    if watch.fired is not None:  # a shut-down socket can also read as a clean, short end
        raise VerificationError(watch.fired)
    return digest


class _Watch:
    """The sockets of one attempt, shut down when the overall deadline passes or, once the body began,
    the minimum rate is missed: a server trickling its status line, headers or a chunk-size line (no
    body byte at all) is cut off as surely as one trickling its body."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.fired: str | None = None
        self.began: float | None = None  # when the response's body began (set by _receive)
        self.received = 0  # body bytes so far (updated by _receive)

    def guard(self, url: str, options: FetchOptions, deadline: float, done: threading.Event) -> None:
        """Check the pace every ``_GUARD_S`` until ``done``; fire on the first miss."""
        while not done.wait(min(_GUARD_S, max(deadline - time.monotonic(), 0.0))):
            try:
                _check_pace(url, self.received, self.began, options, deadline)
            except VerificationError as exc:
                self.fire(str(exc))
                return

    def fire(self, reason: str) -> None:
        self.fired = reason
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _opener(context: ssl.SSLContext, watch: _Watch) -> urllib.request.OpenerDirector:
    """An opener whose connections register their sockets with ``watch``."""

    class Plain(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watch.sockets.append(self.sock)

    class Tls(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watch.sockets.append(self.sock)

    class PlainHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Plain, req)

    class TlsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Tls, req, context=context)

    return urllib.request.build_opener(PlainHandler(), TlsHandler(context=context), _Redirects())


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to ``https://`` (or ``http://`` on loopback, as a first request may be):
    any other scheme (``ftp://``, ``file://``) would open a connection the deadline cannot shut down."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        parts = urlsplit(newurl)
        if not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname or ""))):
            raise VerificationError(f"{req.full_url}: refused a redirect to {newurl[:200]!r} "
                                    "(only https, or http on loopback)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _receive(request: urllib.request.Request, url: str, partial: Path, options: FetchOptions,
             context: ssl.SSLContext, deadline: float, have: int, watch: _Watch) -> str:
    """The response of one attempt, streamed into ``partial``; its sha256 (see :func:`_transfer`)."""
    with _opener(context, watch).open(request, timeout=options.timeout_s) as response:
        resumed = have > 0 and response.status == 206
        start = have if resumed else 0
        length_header = response.headers.get("Content-Length", "")
        length = int(length_header) if length_header.isdigit() else None
        if length is not None and start + length > options.max_bytes:
            partial.unlink(missing_ok=True)
            raise VerificationError(f"{url}: {start + length} bytes exceeds the {options.max_bytes}-byte cap")
        digest = hashlib.sha256()
        received = 0
        began = watch.began = time.monotonic()
        with partial.open("r+b" if resumed else "wb") as handle:
            if resumed:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
            # read1: whatever has arrived (one recv at most), so the clock is checked between trickles.
            while chunk := response.read1(_CHUNK):
                _check_pace(url, received, began, options, deadline)
                received += len(chunk)
                watch.received = received
                if start + received > options.max_bytes:
                    handle.close()
                    partial.unlink(missing_ok=True)
                    raise VerificationError(f"{url}: more than the {options.max_bytes}-byte cap")
                digest.update(chunk)
                handle.write(chunk)
        if length is not None and received < length:
            raise OSError(f"{url}: short read ({received} of {length} bytes)")
    return digest.hexdigest()


def _check_pace(url: str, received: int, began: float | None, options: FetchOptions, deadline: float) -> None:
    """Raise :class:`VerificationError` past the deadline, or below the minimum rate after ``timeout_s``
    of body (``began``; None: the body has not begun, only the deadline applies)."""
    now = time.monotonic()
    if now >= deadline:
        raise VerificationError(f"{url}: not complete within the {options.deadline_s:.0f} s deadline")
    if began is None:
        return
    elapsed = now - began
    if elapsed > options.timeout_s and received < options.min_rate_bps * elapsed:
        raise VerificationError(f"{url}: {received} bytes in {elapsed:.1f} s is below the minimum rate of "
                                f"{options.min_rate_bps:.0f} bytes/s")


class FetchRetries:
    """The message whose fetch failed, per model, and when to try it again (doubling backoff).

    A subscriber moves past a message before it judges it, so without this a failed fetch (a
    registry restarting, a link down) would wait for the next message or a restart. It keeps the
    latest failed message per model; a newer failure of another message replaces it.

    Args:
        first_s: the first pause; each further failure of the same message doubles it.
        max_s: the longest pause.
    """

    def __init__(self, first_s: float = 2.0, max_s: float = 300.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._pending: dict[str, tuple[bytes, bytes | None, int, float]] = {}

    def failed(self, model: str, key: bytes, value: bytes | None, now: float) -> float:
        """Note that the fetch of ``value`` failed; returns the pause before its next try."""
        held = self._pending.get(model)
        attempt = held[2] + 1 if held is not None and held[1] == value else 0
        pause = min(self.max_s, self.first_s * 2.0**attempt)
        self._pending[model] = (key, value, attempt, now + pause)
        return pause

    def forget(self, model: str) -> None:
        """The model's update was applied (or superseded): nothing to retry."""
        self._pending.pop(model, None)

    def due(self, now: float) -> list[tuple[bytes, bytes | None]]:
        """The messages to try again now; each is not due again until it fails again (:meth:`failed`)."""
        ready: list[tuple[bytes, bytes | None]] = []
        for model, (key, value, attempt, at) in list(self._pending.items()):
            if at <= now:
                self._pending[model] = (key, value, attempt, math.inf)
                ready.append((key, value))
        return ready
