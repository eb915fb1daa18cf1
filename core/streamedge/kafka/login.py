"""Check Kafka credentials up front, so a wrong password is one clear line, not a client timeout.

A Kafka client given a wrong SASL password retries its bootstrap until a timeout and then
reports only that it could not bootstrap. :func:`check_login` instead performs the SASL exchange
itself (TLS as configured, SaslHandshake, SaslAuthenticate; SCRAM-SHA-256/512 per RFC 5802, or
PLAIN) against the first reachable bootstrap server and raises :class:`KafkaLoginError` with the
broker's own reason. :func:`access_errors` turns the client's authorization refusals into
:class:`KafkaAccessError` naming the user and the topic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from streamedge.errors import StreamedgeError
from streamedge.kafka._wire import OutOfOrderError, request
from streamedge.kafka.settings import KafkaSettings

__all__ = ["KafkaAccessError", "KafkaLoginError", "access_errors", "check_login"]

_SASL_HANDSHAKE = 17
_SASL_AUTHENTICATE = 36
# Kafka's own SCRAM iteration limit; a larger count from a broker would only stall the login.
_MAX_ITERATIONS = 16384


class KafkaAccessError(StreamedgeError, PermissionError):
    """The broker refused the credentials or the operation."""


class KafkaLoginError(KafkaAccessError):
    """SASL authentication failed (wrong user or password, mechanism not enabled) or no broker answered."""


class _Connection:
    """One request/response connection speaking request header v1 (no tagged fields)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._correlation = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        self._correlation += 1
        try:
            return request(self._sock, api_key, version, self._correlation, b"streamedge-login", body)
        except OutOfOrderError as exc:
            raise KafkaLoginError("the broker answered out of order") from exc


def _string(value: bytes) -> bytes:
    return struct.pack(">h", len(value)) + value


def _authenticate(conn: _Connection, token: bytes) -> bytes:
    """SaslAuthenticate v0: send ``token``, return the server's bytes or raise with its message."""
    response = conn.request(_SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
    error, length = struct.unpack(">hh", response[:4])
    message = response[4:4 + length].decode() if length >= 0 else ""
    offset = 4 + max(length, 0)
    if error != 0:
        raise KafkaLoginError(message or f"SASL authentication failed (error {error})")
    (size,) = struct.unpack(">i", response[offset:offset + 4])
    return response[offset + 4:offset + 4 + max(size, 0)]


def _server_first(message: bytes, nonce: str) -> tuple[str, bytes, int]:
    """The server-first-message's combined nonce, salt and iteration count (RFC 5802 section 5.1).

    Raises:
        KafkaLoginError: the message is not one (not UTF-8, a part without ``=``, ``r``, ``s`` or
            ``i`` missing or malformed), or its nonce does not extend ``nonce``.
    """
    try:
        text = message.decode()
        fields = dict(part.split("=", 1) for part in text.split(","))
    except ValueError as exc:  # UnicodeDecodeError, or a part without "=" (a 1-element split)
        raise KafkaLoginError(f"the broker's SCRAM server-first-message is malformed: {message[:80]!r}") from exc
    missing = [name for name in ("r", "s", "i") if name not in fields]
    if missing:
        raise KafkaLoginError(f"the broker's SCRAM server-first-message lacks {', '.join(missing)}: {text[:80]!r}")
    if not fields["r"].startswith(nonce) or fields["r"] == nonce:
        raise KafkaLoginError("the broker's SCRAM nonce does not extend ours")
    try:
        salt = base64.b64decode(fields["s"], validate=True)
        iterations = int(fields["i"])
    except ValueError as exc:  # binascii.Error is a ValueError
        raise KafkaLoginError(f"the broker's SCRAM salt or iteration count is malformed: {text[:80]!r}") from exc
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise KafkaLoginError(f"the broker's SCRAM iteration count {iterations} is outside 1..{_MAX_ITERATIONS}")
    return fields["r"], salt, iterations


def _scram(conn: _Connection, user: str, password: str, digest: str) -> None:
    """The RFC 5802 client exchange; verifies the server's signature too."""
    escaped = user.replace("=", "=3D").replace(",", "=2C")
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n={escaped},r={nonce}"
    server_first = _authenticate(conn, f"n,,{first_bare}".encode())
    combined_nonce, salt, iterations = _server_first(server_first, nonce)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", digest)
    without_proof = f"c=biws,r={combined_nonce}"
    auth_message = f"{first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(digest, client_key).digest(), auth_message, digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = _authenticate(conn, f"{without_proof},p={proof}".encode())
    expected = hmac.digest(hmac.digest(salted, b"Server Key", digest), auth_message, digest)
    if not hmac.compare_digest(server_final, b"v=" + base64.b64encode(expected)):
        raise KafkaLoginError("the broker's SCRAM signature is wrong (not the broker that holds these credentials)")


def _login(settings: KafkaSettings, host: str, port: int, timeout: float) -> None:
    assert settings.sasl_mechanism is not None and settings.sasl_username and settings.sasl_password is not None
    mechanism = settings.sasl_mechanism
    raw = socket.create_connection((host, port), timeout=timeout)
    context = settings.ssl_context()
    sock = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
    with sock:
        conn = _Connection(sock)
        response = conn.request(_SASL_HANDSHAKE, 1, _string(mechanism.encode()))
        (error,) = struct.unpack(">h", response[:2])
        if error != 0:
            raise KafkaLoginError(f"the broker at {host}:{port} does not enable SASL mechanism {mechanism}")
        user, password = settings.sasl_username, settings.sasl_password.get_secret_value()
        if mechanism == "PLAIN":
            _authenticate(conn, b"\0" + user.encode() + b"\0" + password.encode())
        else:
            _scram(conn, user, password, "sha512" if mechanism == "SCRAM-SHA-512" else "sha256")


def check_login(settings: KafkaSettings, timeout: float = 10.0) -> None:
    """Log in to the first reachable bootstrap server with ``settings``' SASL credentials.

    A no-op for PLAINTEXT and SSL (no SASL credentials to check).

    Raises:
        KafkaLoginError: ``Kafka login as '<user>' at <host:port> failed: <the broker's reason>``,
            a TLS verification failure, or no bootstrap server reachable.
    """
    if not settings.uses_sasl:
        return
    unreachable: list[str] = []
    for server in settings.bootstrap_list:
        host, _, port = server.rpartition(":")
        try:
            _login(settings, host, int(port), timeout)
            return
        except KafkaLoginError as exc:
            raise KafkaLoginError(f"Kafka login as {settings.sasl_username!r} at {server} failed: {exc}") from exc
        except ssl.SSLError as exc:
            raise KafkaLoginError(f"TLS with {server} failed: {exc.reason or exc}") from exc
        except (OSError, struct.error, ValueError) as exc:
            unreachable.append(f"{server} ({exc})")
    raise KafkaLoginError(f"no Kafka broker reachable for login: {', '.join(unreachable)}")


@contextmanager
def access_errors(settings: KafkaSettings) -> Iterator[None]:
    """Re-raise kafka-python's authorization refusals as :class:`KafkaAccessError` (one line)."""
    from kafka.errors import AuthorizationError

    try:
        yield
    except AuthorizationError as exc:
        who = settings.sasl_username or "the client"
        raise KafkaAccessError(f"Kafka refused {who!r}: {exc}") from exc
