"""Kafka's request/response framing on a blocking socket, for the few requests sent by hand.

The broker probes (Metadata, SaslHandshake) and the up-front login (SaslHandshake,
SaslAuthenticate) need no client library: a size-prefixed request with header v1
(``api_key, api_version, correlation_id, client_id``, no tagged fields) and a size-prefixed
response that starts with the same correlation id.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["OutOfOrderError", "recv_exact", "request"]


class OutOfOrderError(ValueError):
    """The response carries another correlation id than the request's."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes.

    Raises:
        ConnectionError: the peer closed the connection first.
    """
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the broker closed the connection mid-response")
        chunks.extend(chunk)
    return bytes(chunks)


def request(sock: socket.socket, api_key: int, version: int, correlation_id: int, client_id: bytes,
            body: bytes) -> bytes:
    """Send one request (header v1) and return its response after the correlation id.

    Raises:
        OutOfOrderError: the response answers another request.
        ConnectionError: the connection closed mid-response.
        struct.error: the response is shorter than its correlation id.
    """
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    response = recv_exact(sock, size)
    (answered,) = struct.unpack(">i", response[:4])
    if answered != correlation_id:
        raise OutOfOrderError(f"correlation id {answered} answers no request (expected {correlation_id})")
    return response[4:]
