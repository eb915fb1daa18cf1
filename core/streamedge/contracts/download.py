"""Size-capped, resumable, hashed HTTP(S) download of one model file.

The bytes stream into a partial file named after the expected sha256, hashed as they arrive.
An interrupted transfer resumes with a ``Range`` request guarded by ``If-Range`` (the
registry's ETag is the file's sha256), within one call (a few attempts) and across calls (the
partial file stays). The download stops as soon as it exceeds ``max_bytes``, and the result is
returned only when its sha256 equals the expected one; anything else removes the partial file
and raises :class:`~streamedge.errors.VerificationError`.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamedge.errors import ConfigError, StreamedgeError, VerificationError

__all__ = ["FetchOptions", "download", "fetch_options"]

_CHUNK: Final = 64 * 1024
_ATTEMPTS: Final = 4
_BACKOFF_S: Final = 0.2  # between attempts, doubling: a dropped link resumes at once, a busy server gets air


@dataclass(frozen=True)
class FetchOptions:
    """How a subscriber fetches model files over the network.

    Attributes:
        max_bytes: largest model file accepted (bytes); a larger one is refused mid-stream.
        token: bearer token sent to the registry's HTTP server, or None.
        cafile: CA bundle (PEM) trusted for ``https://``, or None for the system store.
        timeout_s: bound on each connect and read.
    """

    max_bytes: int = 64 * 1024 * 1024
    token: str | None = None
    cafile: Path | None = None
    timeout_s: float = 10.0


def fetch_options(max_bytes: int, token_file: Path | None, cafile: Path | None, timeout_s: float) -> FetchOptions:
    """FetchOptions with the bearer token read (and stripped) from ``token_file``, if given.

    Raises:
        ConfigError: the token file cannot be read.
    """
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read registry token file {token_file}: {exc}") from exc
    return FetchOptions(max_bytes=max_bytes, token=token or None, cafile=cafile, timeout_s=timeout_s)


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
    context = ssl.create_default_context(cafile=str(options.cafile) if options.cafile else None)
    last: Exception | None = None
    streamed = ""
    for attempt in range(_ATTEMPTS):
        try:
            streamed = _transfer(url, expected_sha256, partial, options, context)
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


def _transfer(url: str, expected: str, partial: Path, options: FetchOptions, context: ssl.SSLContext) -> str:
    """One attempt: resume ``partial`` from its size; returns the sha256 of the whole file.

    Raises:
        OSError: a short read (retried, resuming); VerificationError: over the size cap.
    """
    have = partial.stat().st_size if partial.exists() else 0
    if have > options.max_bytes:
        partial.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if options.token:
        headers["Authorization"] = f"Bearer {options.token}"
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = f'"{expected}"'
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=options.timeout_s, context=context) as response:
        resumed = have > 0 and response.status == 206
        start = have if resumed else 0
        length_header = response.headers.get("Content-Length", "")
        length = int(length_header) if length_header.isdigit() else None
        if length is not None and start + length > options.max_bytes:
            partial.unlink(missing_ok=True)
            raise VerificationError(f"{url}: {start + length} bytes exceeds the {options.max_bytes}-byte cap")
        digest = hashlib.sha256()
        received = 0
        with partial.open("r+b" if resumed else "wb") as handle:
            if resumed:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if start + received > options.max_bytes:
                    handle.close()
                    partial.unlink(missing_ok=True)
                    raise VerificationError(f"{url}: more than the {options.max_bytes}-byte cap")
                digest.update(chunk)
                handle.write(chunk)
        if length is not None and received < length:
            raise OSError(f"{url}: short read ({received} of {length} bytes)")
    return digest.hexdigest()
