"""The hand-sent Kafka requests (framing, the SCRAM server-first parser) and the secret files, without a broker."""

from __future__ import annotations

import base64
import os
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamedge.kafka._wire import OutOfOrderError, recv_exact, request
from streamedge.kafka.broker import LocalBroker
from streamedge.kafka.login import KafkaLoginError, _server_first
from streamedge.kafka.security import BrokerSecurity, write_secret

NONCE = "client-nonce"
SALT = base64.b64encode(b"salt-bytes").decode()


def test_a_well_formed_server_first_message_parses() -> None:
    assert _server_first(f"r={NONCE}srv,s={SALT},i=4096".encode(), NONCE) == (f"{NONCE}srv", b"salt-bytes", 4096)
    # An "=" inside a value (base64 padding) belongs to the value; extensions are ignored.
    padded = base64.b64encode(b"salt").decode()
    assert padded.endswith("=")
    assert _server_first(f"r={NONCE}x,s={padded},i=1,e1=v".encode(), NONCE)[1] == b"salt"


@pytest.mark.parametrize(("reply", "match"), [
    (f"r={NONCE}srv,i=4096", "lacks s"),
    (f"r={NONCE}srv,s={SALT}", "lacks i"),
    (f"s={SALT},i=4096", "lacks r"),
    ("", "malformed"),
    (f"r={NONCE}srv,s={SALT},i=4096,junk", "malformed"),
    (f"r={NONCE}srv,s={SALT},i=many", "salt or iteration count is malformed"),
    (f"r={NONCE}srv,s=not*base64,i=4096", "salt or iteration count is malformed"),
    (f"r={NONCE}srv,s={SALT},i=0", "iteration count 0 is outside"),
    (f"r={NONCE}srv,s={SALT},i=99999999", "iteration count 99999999 is outside"),
    (f"r=other-nonce,s={SALT},i=4096", "does not extend ours"),
    (f"r={NONCE},s={SALT},i=4096", "does not extend ours"),
])
def test_a_malformed_server_first_message_is_one_login_error(reply: str, match: str) -> None:
    with pytest.raises(KafkaLoginError, match=match) as refused:
        _server_first(reply.encode(), NONCE)
    assert "\n" not in str(refused.value)


def test_a_server_first_message_that_is_not_utf8_is_a_login_error() -> None:
    with pytest.raises(KafkaLoginError, match="malformed"):
        _server_first(b"r=\xff\xfe,s=x,i=1", NONCE)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    with client, server:
        yield client, server


def _answer(server: socket.socket, correlation_id: int, payload: bytes) -> threading.Thread:
    """Read one request off ``server`` and answer it with ``correlation_id`` and ``payload``."""
    def serve() -> None:
        (size,) = struct.unpack(">i", recv_exact(server, 4))
        recv_exact(server, size)
        server.sendall(struct.pack(">ii", 4 + len(payload), correlation_id) + payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_request_frames_header_v1_and_returns_the_body(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    seen: list[bytes] = []

    def serve() -> None:
        (size,) = struct.unpack(">i", recv_exact(server, 4))
        seen.append(recv_exact(server, size))
        server.sendall(struct.pack(">ii", 6, 7) + b"\x00\x2a")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert request(client, 17, 1, 7, b"cid", b"BODY") == b"\x00\x2a"
    thread.join(timeout=5)
    assert seen == [struct.pack(">hhih", 17, 1, 7, 3) + b"cid" + b"BODY"]


def test_request_refuses_an_answer_to_another_request(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    thread = _answer(server, 8, b"")
    with pytest.raises(OutOfOrderError, match="correlation id 8"):
        request(client, 3, 0, 7, b"cid", b"")
    thread.join(timeout=5)


def test_a_connection_closed_mid_response_is_a_connection_error(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    server.sendall(struct.pack(">i", 100) + b"short")
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError, match="mid-response"):
        recv_exact(client, 4 + 100)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_secret_creates_0600_even_with_an_open_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_secret(tmp_path / "new", b"secret")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "new") == 0o600 and (tmp_path / "new").read_bytes() == b"secret"
    existing = tmp_path / "existing"
    existing.write_text("old")
    existing.chmod(0o644)
    write_secret(existing, b"secret")
    assert _mode(existing) == 0o600 and existing.read_bytes() == b"secret"


def test_a_secure_brokers_server_properties_are_owner_only(tmp_path: Path) -> None:
    security = BrokerSecurity.ensure(tmp_path / "security")
    broker = LocalBroker(tmp_path / "state", 19092, 19093, security=security)
    broker.state_dir.mkdir()
    (broker.state_dir / "server.properties").write_text("left by an older run\n")
    (broker.state_dir / "server.properties").chmod(0o644)
    previous = os.umask(0)
    try:
        config = broker._write_config()
    finally:
        os.umask(previous)
    assert _mode(config) == 0o600
    text = config.read_text()
    assert security.password("admin").get_secret_value() in text and "left by an older run" not in text
